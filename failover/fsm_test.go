package failover

import (
	"bytes"
	"encoding/json"
	"io"
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
	if g.read() != f.read() {
		t.Fatalf("restored %+v, want %+v", g.read(), f.read())
	}
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
