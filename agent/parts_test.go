package agent

import (
	"context"
	"maps"
	"slices"
	"testing"

	"golang.org/x/sync/errgroup"

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
