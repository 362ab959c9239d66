package health

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// HAProxy's schedule: the fast interval while a result disagrees with the
// status, the down interval while failing, else the interval; each with
// at most ±10% jitter.
func TestNextInterval(t *testing.T) {
	const inter, fast, down = time.Second, 200 * time.Millisecond, 3 * time.Second
	for _, tc := range []struct {
		name              string
		fastI, downI      time.Duration
		settling, failing bool
		want              time.Duration
	}{
		{"settled and passing", fast, down, false, false, inter},
		{"a first failure", fast, down, true, false, fast},
		{"failing, a first success", fast, down, true, true, fast},
		{"settled and failing", fast, down, false, true, down},
		{"no fast interval", 0, down, true, false, inter},
		{"no down interval", fast, 0, false, true, inter},
	} {
		for range 50 {
			got := Next(inter, tc.fastI, tc.downI, tc.settling, tc.failing)
			if got < tc.want*9/10 || got > tc.want*11/10 {
				t.Fatalf("%s: next %v, want %v ±10%%", tc.name, got, tc.want)
			}
		}
	}
	tr := NewTracker(3, 2)
	boom := errors.New("refused")
	now := time.Now()
	tr.Observe("imap", SeverityCritical, nil, false, now)
	if tr.Settling("imap") {
		t.Fatal("a passing check that passed is settling")
	}
	tr.Observe("imap", SeverityCritical, boom, false, now)
	if !tr.Settling("imap") || tr.Failing("imap") {
		t.Fatal("a first failure: want settling, not failing")
	}
	tr.Observe("imap", SeverityCritical, boom, false, now)
	tr.Observe("imap", SeverityCritical, boom, false, now)
	if tr.Settling("imap") || !tr.Failing("imap") {
		t.Fatal("after fall failures: want failing and settled")
	}
	tr.Observe("imap", SeverityCritical, nil, false, now)
	if !tr.Settling("imap") {
		t.Fatal("a failing check that passed once: want settling")
	}
}

// refused returns an address on 127.0.0.1 where nothing listens.
func refused(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A check that starts failing is confirmed at the fast interval: with an
// interval of an hour, fall 3 is reached two fast intervals (±10%) after
// the urged first failure, and rise 2 one fast interval after the urged
// first success. Fake time (synctest): the moments are exact.
func TestRunnerConfirmsAtTheFastIntervalAndRunsWhenUrged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const fast = 200 * time.Millisecond
		var fail atomic.Bool
		var runs atomic.Int32
		check := func(context.Context) error {
			runs.Add(1)
			if fail.Load() {
				return errors.New("refused")
			}
			return nil
		}
		spec := Spec{Name: "imap", Check: check, Severity: SeverityCritical, Interval: time.Hour, Timeout: time.Second, FastInterval: fast}
		r, err := NewRunner([]Spec{spec}, 3, 2, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { r.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		r.Urge()
		synctest.Wait()
		if runs.Load() != 1 {
			t.Fatalf("%d runs after an urge, want 1", runs.Load())
		}
		// becomes waits until the node's status is want and returns how
		// long that took.
		becomes := func(want Status) time.Duration {
			start := time.Now()
			for r.Report().Status != want {
				if time.Since(start) > 2*time.Hour {
					t.Fatalf("never %s", want)
				}
				time.Sleep(time.Millisecond)
				synctest.Wait()
			}
			return time.Since(start)
		}
		fail.Store(true)
		r.Urge()
		if d := becomes(Critical); d < 2*fast*9/10 || d > 2*fast*11/10 {
			t.Fatalf("critical %v after the first failure, want two fast intervals (%v)", d, 2*fast)
		}
		fail.Store(false)
		r.Urge()
		if d := becomes(Passing); d < fast*9/10 || d > fast*11/10 {
			t.Fatalf("passing %v after the first success, want one fast interval (%v)", d, fast)
		}
	})
}

// A peer that gossip suspects is probed at once and confirmed at the fast
// interval; without the urge it would not be probed again for an hour.
func TestPeersUrgedPeerIsConfirmedFast(t *testing.T) {
	addr := listen(t, func(c net.Conn) { io.WriteString(c, "* OK ready\r\n"); time.Sleep(50 * time.Millisecond) })
	var target atomic.Value
	target.Store(addr)
	p := NewPeers(time.Hour, 20*time.Millisecond, 500*time.Millisecond, 3, 2, "", func() []PeerTarget {
		return []PeerTarget{{Name: "node2", Addr: target.Load().(string)}}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitUntil(t, "the first probe", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.tracker.checks) == 1 && !p.inflight["node2"]
	})
	target.Store(refused(t))
	time.Sleep(100 * time.Millisecond)
	select {
	case down := <-p.Updates():
		t.Fatalf("reported %v before any urge (the interval is an hour)", down)
	default:
	}
	p.Urge("node2")
	select {
	case down := <-p.Updates():
		if len(down) != 1 || down[0] != (Down{Name: "node2", Refused: true}) {
			t.Fatalf("unreachable peers %v, want node2, refused", down)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an urged, refusing peer was not reported unreachable")
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
