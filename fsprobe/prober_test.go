package fsprobe

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roost-mail/roost/faultfs"
)

// The running prober publishes the latest state, sets its metrics, and
// logs transitions only.
func TestProberPublishesMetricsAndTransitions(t *testing.T) {
	f, m, _ := mountFault(t)
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	cfg := Config{Mounts: []MountConfig{{Path: m.Path(), FSType: "fuse.faultfs"}}, Interval: 50 * time.Millisecond, Timeout: testTimeout, SlowThreshold: testTimeout - 50*time.Millisecond} // no "slow" on a loaded machine
	p, err := New(cfg, "node1", slog.New(slog.NewTextHandler(&logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor := func(want Class) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case rs := <-p.Updates():
				if len(rs) == 1 && rs[0].Class == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %s update within 5s; latest %v", want, p.Latest())
			}
		}
	}
	waitFor(ClassOK)
	time.Sleep(300 * time.Millisecond) // several more ok rounds
	if err := f.Set(faultfs.Fault{Ops: []string{"Write"}, Errno: "EIO"}); err != nil {
		t.Fatal(err)
	}
	waitFor(ClassIOError)

	if got := testutil.ToFloat64(p.class.WithLabelValues(m.Path(), "io-error")); got != 1 {
		t.Fatalf("roost_fsprobe_state{class=io-error} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(p.class.WithLabelValues(m.Path(), "ok")); got != 0 {
		t.Fatalf("roost_fsprobe_state{class=ok} = %v, want 0", got)
	}
	if got := testutil.ToFloat64(p.rounds.WithLabelValues(m.Path(), "ok")); got < 3 {
		t.Fatalf("roost_fsprobe_rounds_total{class=ok} = %v, want several", got)
	}
	names, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, mf := range names {
		have = append(have, mf.GetName())
	}
	for _, want := range []string{"roost_fsprobe_op_duration_seconds", "roost_fsprobe_state", "roost_fsprobe_rounds_total", "roost_fsprobe_fuse_waiting_requests", "roost_fsprobe_stuck_calls"} {
		if !strings.Contains(strings.Join(have, " "), want) {
			t.Errorf("metric %s not registered (have %v)", want, have)
		}
	}
	// Stop the prober before reading its log: the update can reach us
	// before the round's log line is written.
	cancel()
	<-done
	if n := strings.Count(logs.String(), "fsprobe_state_changed"); n != 2 {
		t.Fatalf("got %d state-change log lines for ok then io-error, want 2 (transitions only):\n%s", n, logs.String())
	}
}
