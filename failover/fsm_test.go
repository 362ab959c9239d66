package failover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

type memSink struct {
	bytes.Buffer
	canceled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.canceled = true; return nil }
func (m *memSink) Close() error  { return nil }

func entry(t *testing.T, i uint64, c command) *raft.Log {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: i, Data: b}
}

// roundTrip snapshots f, restores the snapshot into a new FSM, checks
// that the two states are equal, and returns the new one.
func roundTrip(t *testing.T, f *fsm) *fsm {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := &fsm{}
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.read(), f.read()) {
		t.Fatalf("restored %+v, want %+v", g.read(), f.read())
	}
	return g
}

func TestFSMInitOnceAndSnapshotRestore(t *testing.T) {
	f := &fsm{}
	if r := f.Apply(entry(t, 1, command{Op: opInit, ClusterID: "a"})); r != nil {
		t.Fatalf("init: %v", r)
	}
	f.Apply(entry(t, 2, command{Op: opInit, ClusterID: "b"}))
	if got := f.read().ClusterID; got != "a" {
		t.Fatalf("got cluster ID %q after a second init, want the first (%q)", got, "a")
	}
	if r := f.Apply(&raft.Log{Index: 3, Data: []byte("{")}); r == nil {
		t.Fatal("a corrupt entry applied without error")
	}
	if r := f.Apply(entry(t, 4, command{Op: "from-the-future"})); r == nil {
		t.Fatal("an unknown command applied without error")
	}

	g := roundTrip(t, f)
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte("garbage")))); err == nil {
		t.Fatal("restoring garbage gave no error")
	}
}

func TestPromoterCapsVoters(t *testing.T) {
	stable := autopilot.ServerHealth{Healthy: true, StableSince: time.Now().Add(-time.Hour)}
	state := func(voters, stableNonvoters, unstable int) *autopilot.State {
		s := &autopilot.State{Servers: map[raft.ServerID]*autopilot.ServerState{}}
		add := func(prefix string, n int, st autopilot.RaftState, h autopilot.ServerHealth) {
			for i := range n {
				id := raft.ServerID(prefix + string(rune('a'+i)))
				s.Servers[id] = &autopilot.ServerState{State: st, Health: h}
			}
		}
		add("v", voters, autopilot.RaftVoter, stable)
		add("n", stableNonvoters, autopilot.RaftNonVoter, stable)
		add("u", unstable, autopilot.RaftNonVoter, autopilot.ServerHealth{Healthy: true, StableSince: time.Now()})
		return s
	}
	cfg := &autopilot.Config{ServerStabilizationTime: 10 * time.Second}
	for _, tc := range []struct {
		name                     string
		voters, stable, unstable int
		want                     []raft.ServerID
	}{
		{"room for two", 3, 2, 0, []raft.ServerID{"na", "nb"}},
		{"room for one, sorted", 4, 2, 0, []raft.ServerID{"na"}},
		{"full", 5, 1, 0, nil},
		{"unstable wait", 3, 0, 2, nil},
	} {
		got := (&promoter{max: 5}).CalculatePromotionsAndDemotions(cfg, state(tc.voters, tc.stable, tc.unstable)).Promotions
		if len(got) != len(tc.want) {
			t.Errorf("%s: got promotions %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: got promotions %v, want %v", tc.name, got, tc.want)
			}
		}
	}
}

func TestStateCommands(t *testing.T) {
	s := State{}
	must := func(c command) {
		t.Helper()
		if err := s.apply(c); err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
	}
	must(command{Op: opSetNode, Node: "b", State: Draining, Reason: "kernel update", At: t0})
	must(command{Op: opPlanStart, Plan: &Plan{Kind: PlanDrain, Node: "b", Rate: 200}, At: t0})
	if err := s.apply(command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailover, Node: "b"}, At: t0}); err == nil {
		t.Fatal("a second running plan for one node was accepted")
	}
	pl, _ := s.Running("b")
	must(command{Op: opPlanBatch, PlanID: pl.ID, Moved: 1000})
	must(command{Op: opPlanBatch, PlanID: pl.ID, Moved: 10})
	must(command{Op: opPlanEnd, PlanID: pl.ID, Status: PlanDone, At: t0.Add(time.Minute)})
	if got := s.Plans[pl.ID]; got.Batches != 2 || got.Moved != 1010 || got.Status != PlanDone || !got.Finished.Equal(t0.Add(time.Minute)) || got.Rate != 200 {
		t.Fatalf("plan %+v", got)
	}
	if err := s.apply(command{Op: opPlanBatch, PlanID: pl.ID, Moved: 1}); err == nil {
		t.Fatal("a batch was recorded on a finished plan")
	}
	if err := s.apply(command{Op: opSetNode, Node: "b", State: "sideways"}); err == nil {
		t.Fatal("an unknown node state applied")
	}
	if r := s.Node("b"); r.State != Draining || r.Reason != "kernel update" || !r.Since.Equal(t0) {
		t.Fatalf("node %+v", r)
	}
	if s.Node("never-seen").State != Active || Draining.LBSignal() != "drain" || Failed.LBSignal() != "down" || Maintenance.LBSignal() != "down" || Recovering.LBSignal() != "up" {
		t.Fatal("defaults or LB signals wrong")
	}

	must(command{Op: opSetNode, Node: "c", State: Failed, At: t0})
	must(command{Op: opFreeze, Reason: "first", At: t0})
	must(command{Op: opFreeze, Reason: "second", At: t0.Add(time.Second)})
	if s.Frozen == nil || s.Frozen.Reason != "first" {
		t.Fatalf("freeze %+v: the first reason should stay", s.Frozen)
	}
	must(command{Op: opAck, Node: "c"})
	if !s.Node("c").LastFailover.IsZero() || s.Frozen == nil {
		t.Fatal("ack of a node should clear its block period only")
	}
	must(command{Op: opAck})
	if s.Frozen != nil {
		t.Fatal("ack of the cluster should unfreeze it")
	}

	// Finished plans are pruned, oldest first; running ones never.
	for i := range keepFinishedPlans + 5 {
		n := fmt.Sprintf("n%d", i)
		must(command{Op: opPlanStart, Plan: &Plan{Kind: PlanMove, Node: n}, At: t0})
		p, _ := s.Running(n)
		must(command{Op: opPlanEnd, PlanID: p.ID, Status: PlanDone, At: t0})
	}
	must(command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailover, Node: "c"}, At: t0})
	if len(s.Plans) != keepFinishedPlans+1 || len(s.RunningPlans()) != 1 {
		t.Fatalf("%d plans kept (%d running)", len(s.Plans), len(s.RunningPlans()))
	}
	if _, ok := s.Plans[pl.ID]; ok {
		t.Fatal("the oldest finished plan was kept")
	}

	// The whole state survives a snapshot and a restore.
	f := &fsm{state: s}
	roundTrip(t, f)
	// read returns a copy: changing it does not change the FSM.
	r := f.read()
	r.Nodes["b"] = NodeRecord{State: Failed}
	if f.read().Nodes["b"].State != Draining {
		t.Fatal("read shares its maps with the FSM")
	}
}

// A decision that changes several things is one entry applied all or
// nothing: a node is never left failed without the plan that moves its
// users because the second half did not apply.
func TestBatchAppliesAllOrNothing(t *testing.T) {
	s := state(func(s *State) { plan(s, Plan{ID: "000001-drain", Kind: PlanDrain, Node: "b"}); s.PlanSeq = 1 })
	failB := []command{
		{Op: opSetNode, Node: "b", State: Failed, Reason: "dovecot down", At: t0},
		{Op: opPlanStart, Plan: &Plan{Kind: PlanFailover, Node: "b"}, At: t0},
	}
	if err := s.apply(batch(failB)); err == nil {
		t.Fatal("a batch whose plan cannot start applied")
	}
	if r := s.Node("b"); r.State != Active || s.PlanSeq != 1 {
		t.Fatalf("a refused batch changed the state: node b %+v, plan seq %d", r, s.PlanSeq)
	}
	s.Plans = nil
	if err := s.apply(batch(failB)); err != nil {
		t.Fatal(err)
	}
	if r, p := s.Node("b"), s.Plans["000002-failover"]; r.State != Failed || p.Status != PlanRunning {
		t.Fatalf("after the batch: node b %+v, plan %+v", r, p)
	}
	if err := s.apply(command{Op: opBatch, Batch: []command{{Op: opBatch}}}); err == nil {
		t.Fatal("a nested batch applied")
	}
	if c := batch(failB[:1]); c.Op != opSetNode {
		t.Fatalf("a batch of one is %q, want the command itself", c.Op)
	}
}
