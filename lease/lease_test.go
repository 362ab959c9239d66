package lease

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
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

// run runs l in a goroutine until the test ends.
func run(t *testing.T, l *Lease) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A node whose peers stop answering loses its lease fence_after after the
// last answer that kept its majority aged past the TTL, and gets it back
// when one of two answers again; the leader's expiry of a silent node is
// past the moment that node fences itself by more than one interval (the
// fence loop's tick). Fake time (synctest): the moments are exact.
func TestLeaseLostAndRegained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cut atomic.Bool
		ping := func(peer string) error {
			if cut.Load() || peer == "b" {
				return errors.New("no answer")
			}
			return nil
		}
		l := New(Timing{FenceAfter: time.Second}, func() []string { return []string{"a", "b"} }, ping)
		run(t, l)
		time.Sleep(l.Interval() / 2)
		synctest.Wait()
		if lost := l.LostFor(time.Now()); lost != 0 {
			t.Fatalf("lease lost for %v though a answers", lost)
		}
		cut.Store(true)
		lastA := l.LastContact("a")
		const step = 10 * time.Millisecond
		for l.LostFor(time.Now()) < l.FenceAfter {
			if time.Since(lastA) > time.Minute {
				t.Fatal("the lease was never lost")
			}
			time.Sleep(step)
			synctest.Wait()
		}
		fencedBy := time.Now()
		if want := lastA.Add(l.TTL() + l.FenceAfter); fencedBy.Before(want) || fencedBy.After(want.Add(step)) {
			t.Errorf("lost for fence_after %v after the last answer, want %v (TTL + fence_after)", fencedBy.Sub(lastA), want.Sub(lastA))
		}
		if exp := l.Expiry(lastA); !exp.After(fencedBy.Add(l.Interval())) {
			t.Errorf("expiry %v is not an interval after the node fenced itself (%v): a leader could move its users while it still serves", exp.Sub(lastA), fencedBy.Sub(lastA))
		}
		cut.Store(false)
		time.Sleep(2*l.Interval() + step) // the next ping, and the tick after it that counts it
		synctest.Wait()
		if lost := l.LostFor(time.Now()); lost != 0 {
			t.Fatalf("lease still lost %v after a answered again", lost)
		}
	})
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
// few fences a node whose peers answer every other ping. Fake time
// (synctest): the lease must never be lost, not even for a moment.
func TestLostPingsDoNotDelayTheNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
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
		run(t, l)
		time.Sleep(l.Interval() * 3)
		for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(time.Millisecond) {
			synctest.Wait()
			if lost := l.LostFor(time.Now()); lost != 0 {
				t.Fatalf("lease lost for %v while every peer answered every other ping", lost)
			}
		}
	})
}
