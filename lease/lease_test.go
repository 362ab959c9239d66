package lease

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestMajority(t *testing.T) {
	now := time.Unix(1000, 0)
	fresh, stale := now.Add(-100*time.Millisecond), now.Add(-time.Second)
	ttl := 600 * time.Millisecond
	for _, tc := range []struct {
		name  string
		peers []string
		last  map[string]time.Time
		want  bool
	}{
		{"alone: a cluster of one", nil, nil, true},
		{"3 nodes, both peers answer", []string{"a", "b"}, map[string]time.Time{"a": fresh, "b": fresh}, true},
		{"3 nodes, one peer answers", []string{"a", "b"}, map[string]time.Time{"a": fresh}, true},
		{"3 nodes, none answers", []string{"a", "b"}, nil, false},
		{"3 nodes, answers too old", []string{"a", "b"}, map[string]time.Time{"a": stale, "b": stale}, false},
		{"4 nodes, half is no majority", []string{"a", "b", "c"}, map[string]time.Time{"a": fresh}, false},
		{"4 nodes, three of four", []string{"a", "b", "c"}, map[string]time.Time{"a": fresh, "c": fresh}, true},
		{"5 nodes, cut off with one", []string{"a", "b", "c", "d"}, map[string]time.Time{"a": fresh}, false},
	} {
		if got := Majority(now, tc.last, tc.peers, ttl); got != tc.want {
			t.Errorf("%s: majority %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A node whose peers stop answering loses its lease, and gets it back
// when one of two answers again; the leader's expiry of a silent node is
// past the moment that node fences itself.
func TestLeaseLostAndRegained(t *testing.T) {
	var cut atomic.Bool
	ping := func(peer string) error {
		if cut.Load() || peer == "b" {
			return errors.New("no answer")
		}
		return nil
	}
	l := New(Timing{FenceAfter: 100 * time.Millisecond}, func() []string { return []string{"a", "b"} }, ping)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	wait("the majority (a answers)", func() bool { return l.LostFor(time.Now()) == 0 })
	cut.Store(true)
	lastA := l.LastContact("a")
	wait("the lease lost for fence_after", func() bool { return l.LostFor(time.Now()) >= l.FenceAfter })
	fencedBy := time.Now()
	if exp := l.Expiry(lastA); !exp.After(fencedBy) {
		t.Errorf("expiry %v is not after the node fenced itself (%v): a leader could move its users while it still serves", exp.Sub(lastA), fencedBy.Sub(lastA))
	}
	cut.Store(false)
	wait("the majority again", func() bool { return l.LostFor(time.Now()) == 0 })
}

// The majority is lost when the answer that kept it aged past the TTL,
// whenever a tick notices it.
func TestLostAt(t *testing.T) {
	start := time.Unix(1000, 0)
	ttl := time.Second
	a, b := start.Add(5*time.Second), start.Add(7*time.Second)
	for _, tc := range []struct {
		name  string
		peers []string
		last  map[string]time.Time
		want  time.Time
	}{
		{"3 nodes: the freshest answer kept it", []string{"a", "b"}, map[string]time.Time{"a": a, "b": b}, b.Add(ttl)},
		{"5 nodes: the second freshest kept it", []string{"a", "b", "c", "d"}, map[string]time.Time{"a": a, "b": b, "c": start.Add(6 * time.Second)}, start.Add(6 * time.Second).Add(ttl)},
		{"never a majority: since the start", []string{"a", "b", "c", "d"}, map[string]time.Time{"a": a}, start},
	} {
		if got := lostAt(tc.last, tc.peers, ttl, start); !got.Equal(tc.want) {
			t.Errorf("%s: lost at %v, want %v", tc.name, got.Sub(start), tc.want.Sub(start))
		}
	}
}

// A ping that gets no answer blocks until its timeout; the next ping of
// that peer must not wait for it, or a link that loses one packet in a
// few fences a node whose peers answer every other ping.
func TestLostPingsDoNotDelayTheNext(t *testing.T) {
	var calls [2]atomic.Int64
	ping := func(peer string) error {
		i := 0
		if peer == "b" {
			i = 1
		}
		if calls[i].Add(1)%2 == 1 {
			time.Sleep(200 * time.Millisecond) // lost: blocks to its timeout
			return errors.New("timeout")
		}
		return nil
	}
	l := New(Timing{FenceAfter: 100 * time.Millisecond}, func() []string { return []string{"a", "b"} }, ping)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(5 * time.Second); l.LostFor(time.Now()) != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the majority")
		}
	}
	var worst time.Duration
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		worst = max(worst, l.LostFor(time.Now()))
	}
	if worst >= l.FenceAfter/2 {
		t.Fatalf("lease lost for %v while every peer answered every other ping", worst)
	}
}
