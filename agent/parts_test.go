package agent

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/gossip"
)

// A peer is probed at the fast pace as soon as anyone has reason to think
// it down, gossip, another member or this node's own lease pings, and
// never on account of this node itself or of a member that left.
func TestSuspected(t *testing.T) {
	members := []gossip.Member{
		{Name: "node1"}, // self
		{Name: "node2", State: gossip.StateSuspect},
		{Name: "node3", State: gossip.StateDead},
		{Name: "node4"}, // silent to this node's lease pings
		{Name: "node5", Meta: gossip.Meta{Unreachable: []string{"node6", "node1"}}},
		{Name: "node6"},
		{Name: "node7", State: gossip.StateLeft, Meta: gossip.Meta{Unreachable: []string{"node8"}}},
		{Name: "node8"},
		{Name: "node9"}, // fine
	}
	silent := func(n string) bool { return n == "node4" || n == "node1" || n == "node7" }
	got := slices.Sorted(maps.Keys(suspected("node1", members, silent)))
	want := []string{"node2", "node3", "node4", "node6"}
	if !slices.Equal(got, want) {
		t.Fatalf("suspected = %v, want %v", got, want)
	}
}

// A part of the agent that stops before the agent does, even without an
// error, stops the agent with an error that names it (roostd then exits
// non-zero and systemd restarts it); parts that end with the agent are
// no error.
func TestAPartThatStopsStopsTheAgent(t *testing.T) {
	g, ctx := errgroup.WithContext(t.Context())
	part(g, ctx, "lease", func(context.Context) error { return nil })
	part(g, ctx, "gossip", func(ctx context.Context) error { <-ctx.Done(); return nil })
	if err := g.Wait(); err == nil || err.Error() != "lease: stopped" {
		t.Fatalf("agent ended with %v, want lease: stopped", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	g, ctx = errgroup.WithContext(ctx)
	part(g, ctx, "gossip", func(ctx context.Context) error { <-ctx.Done(); return nil })
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatalf("agent stopped with %v, want nil", err)
	}
}

// The leader sees itself in touch: peers that cannot reach its Dovecot
// while it passes its own checks are disputed for a while, as for any
// node in touch, not believed at once (a 10-minute lossy soak once saw a
// leader fail itself over on two peers' word).
func TestLeaderIsInTouchWithItself(t *testing.T) {
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	heard := now.Add(-time.Second)
	members := []gossip.Member{
		{Name: "node1", State: gossip.StateAlive, Meta: gossip.Meta{Role: RoleMail, Health: "passing", ProxyHost: "10.0.0.1"}},
		{Name: "node2", State: gossip.StateAlive, Meta: gossip.Meta{Role: RoleMail, Health: "passing", ProxyHost: "10.0.0.2", Unreachable: []string{"node1"}}},
		{Name: "node3", State: gossip.StateAlive, Meta: gossip.Meta{Role: RoleMail, Health: "passing", ProxyHost: "10.0.0.3", Unreachable: []string{"node1"}}},
	}
	last := func(n string) time.Time {
		if n == "node1" {
			t.Fatal("the lease was asked about the leader itself")
		}
		return heard
	}
	expiry := func(t time.Time) time.Time { return t.Add(2 * time.Second) }
	views := nodeViews("node1", members, last, expiry, now)
	if v := views[0]; !v.LastContact.Equal(now) || !v.LeaseExpiry.Equal(now.Add(2*time.Second)) || len(v.UnreachableBy) != 2 {
		t.Fatalf("the leader's own view: %+v", v)
	}
	if v := views[1]; !v.LastContact.Equal(heard) {
		t.Fatalf("node2: last contact %v, want %v", v.LastContact, heard)
	}
	// Accused by both peers for half a second, passing, in touch: the
	// decision waits; it acts once the dispute has lasted.
	views[0].FailingSince = now.Add(-500 * time.Millisecond)
	if cmds := failover.Decide(views, failover.State{}, now.Add(time.Second), failover.DefaultPolicy()); len(cmds) != 0 {
		t.Fatalf("the accused leader was failed over at once: %d commands", len(cmds))
	}
	if cmds := failover.Decide(views, failover.State{}, now.Add(10*time.Second), failover.DefaultPolicy()); len(cmds) == 0 {
		t.Fatal("the accused leader was never failed over: the test proves nothing")
	}
}
