package failover

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// oneNodeRaft is a Cluster reduced to what applyPlanned uses: a raft of
// one server on an in-memory transport, leading, over the real FSM.
func oneNodeRaft(t *testing.T) *Cluster {
	t.Helper()
	conf := raft.DefaultConfig()
	conf.LocalID = "a"
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.LogOutput = io.Discard
	_, trans := raft.NewInmemTransport("a")
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	servers := raft.Configuration{Servers: []raft.Server{{ID: "a", Address: trans.LocalAddr()}}}
	if err := raft.BootstrapCluster(conf, store, store, snaps, trans, servers); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{id: "a", fsm: &fsm{}}
	r, err := raft.NewRaft(conf, c.fsm, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	c.raft = r
	t.Cleanup(func() { _ = r.Shutdown().Error() })
	for deadline := time.Now().Add(10 * time.Second); r.State() != raft.Leader; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the one-server raft did not elect itself in 10 s")
		}
	}
	return c
}

// A request is planned without the decision lock (planning reads the
// routing database; the leader's decisions must not wait on it), and what
// was planned on a state that changed meanwhile is planned again, never
// applied.
func TestApplyPlannedPlansOutsideTheLockOnACurrentState(t *testing.T) {
	c := oneNodeRaft(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var seen []State
	cmds, after, err := c.applyPlanned(func(st State) []command {
		if !c.decideMu.TryLock() {
			t.Error("planning ran under decideMu")
		} else {
			c.decideMu.Unlock()
		}
		seen = append(seen, st)
		if len(seen) == 1 {
			// A running plan's batch lands while the request is planned.
			if err := c.apply(command{Op: opPause, Reason: "meanwhile", At: t0}); err != nil {
				t.Fatal(err)
			}
		}
		return []command{{Op: opCordon, Node: "b", On: true, Reason: "planned", At: t0}}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 {
		t.Fatalf("planned %d times, want 2: once on the state before the pause, once on the state with it", len(seen))
	}
	if seen[0].Paused != nil || seen[1].Paused == nil {
		t.Errorf("the second planning did not see the entry applied during the first: paused %v then %v", seen[0].Paused, seen[1].Paused)
	}
	if len(cmds) != 1 || !after.Node("b").Cordoned || after.Paused == nil {
		t.Errorf("applied %v; state after: b cordoned %v, paused %v; want the cordon applied once, on top of the pause", cmds, after.Node("b").Cordoned, after.Paused)
	}
}

// A state that keeps changing while a request is planned ends in a
// conflict the operator can retry, after a bounded number of tries.
func TestApplyPlannedGivesUpOnAStateThatKeepsChanging(t *testing.T) {
	c := oneNodeRaft(t)
	calls := 0
	cmds, _, err := c.applyPlanned(func(State) []command {
		calls++
		if err := c.apply(command{Op: opPause, Reason: "again", At: time.Now()}); err != nil {
			t.Fatal(err)
		}
		return []command{{Op: opResume}}
	})
	if !errors.Is(err, ErrConflict) || cmds != nil || calls != maxReplans {
		t.Fatalf("after %d plannings: applied %v, err %v; want nothing applied and ErrConflict after %d", calls, cmds, err, maxReplans)
	}
	if c.fsm.read().Paused == nil {
		t.Error("a resume planned on a stale state was applied")
	}
}

// A plan with nothing to do applies nothing.
func TestApplyPlannedAppliesNothingForNoCommands(t *testing.T) {
	c := oneNodeRaft(t)
	before := c.fsm.appliedCount()
	cmds, _, err := c.applyPlanned(func(State) []command { return nil })
	if err != nil || cmds != nil || c.fsm.appliedCount() != before {
		t.Fatalf("applied %v (err %v), entries %d → %d; want none", cmds, err, before, c.fsm.appliedCount())
	}
}
