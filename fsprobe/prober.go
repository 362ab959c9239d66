package fsprobe

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Prober probes every configured mount on its own loop, so one hung mount
// never delays another.
type Prober struct {
	cfg    Config
	log    *slog.Logger
	mounts []*Mount

	mu      sync.Mutex
	latest  map[string]Result
	updates chan []Result

	opSeconds *prometheus.HistogramVec
	class     *prometheus.GaugeVec
	rounds    *prometheus.CounterVec
	waiting   *prometheus.GaugeVec
	stuck     *prometheus.GaugeVec
}

// New makes a prober for cfg's mounts; node names the canary files.
func New(cfg Config, node string, log *slog.Logger, reg prometheus.Registerer) (*Prober, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Prober{cfg: cfg, log: log, latest: map[string]Result{}, updates: make(chan []Result, 1)}
	p.opSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "roost_fsprobe_op_duration_seconds",
		Help:    "Latency of each filesystem operation of a probe round (op=round for the whole round).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"mount", "op"})
	p.class = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "roost_fsprobe_state", Help: "1 for the mount's current probe class, 0 for the others.",
	}, []string{"mount", "class"})
	p.rounds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roost_fsprobe_rounds_total", Help: "Probe rounds by their class.",
	}, []string{"mount", "class"})
	p.waiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "roost_fsprobe_fuse_waiting_requests", Help: "FUSE requests the daemon has not answered (from fusectl).",
	}, []string{"mount"})
	p.stuck = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "roost_fsprobe_stuck_calls", Help: "1 while the mount's probe helper has been blocked in a syscall past the timeout (at most one per mount).",
	}, []string{"mount"})
	if reg != nil {
		for _, c := range []prometheus.Collector{p.opSeconds, p.class, p.rounds, p.waiting, p.stuck} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering fsprobe metrics: %w", err)
			}
		}
	}
	lockDir := cfg.LockDir
	if lockDir == "" {
		lockDir = defaultLockDir
	}
	for _, mc := range cfg.Mounts {
		m := NewMount(mc, node, cfg.Timeout, cfg.SlowThreshold)
		m.lock = lockPath(lockDir, node, m.Path())
		p.mounts = append(p.mounts, m)
	}
	return p, nil
}

// Run probes until ctx ends, then ends the mounts' helper processes. A
// helper stuck in a syscall is left behind (it cannot be interrupted, and
// roostd need not wait for it) and exits when the syscall returns.
func (p *Prober) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, m := range p.mounts {
		wg.Go(func() {
			p.loop(ctx, m)
			m.Close(closeWait)
		})
	}
	wg.Wait()
	<-ctx.Done() // with nothing to run it still runs until ctx ends, as any part of the agent
	return nil
}

// closeWait bounds how long stopping waits for a helper that is not stuck
// to exit: well within the 2 s in which roostd stops.
const closeWait = 500 * time.Millisecond

func (p *Prober) loop(ctx context.Context, m *Mount) {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.record(m.Round())
		if _, _, stuck := m.Stuck(); stuck {
			p.stuck.WithLabelValues(m.Path()).Set(1)
		} else {
			p.stuck.WithLabelValues(m.Path()).Set(0)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Prober) record(r Result) {
	for op, d := range r.Ops {
		p.opSeconds.WithLabelValues(r.Mount, op).Observe(d.Seconds())
	}
	p.opSeconds.WithLabelValues(r.Mount, "round").Observe(r.Total.Seconds())
	for _, c := range Classes {
		v := 0.0
		if c == r.Class {
			v = 1
		}
		p.class.WithLabelValues(r.Mount, string(c)).Set(v)
	}
	p.rounds.WithLabelValues(r.Mount, string(r.Class)).Inc()
	p.waiting.WithLabelValues(r.Mount).Set(float64(r.FuseWaiting))

	p.mu.Lock()
	prev, seen := p.latest[r.Mount]
	p.latest[r.Mount] = r
	// The channel holds the latest state only: drop a stale value. Under
	// the lock, so two mounts' loops never both find it full.
	select {
	case <-p.updates:
	default:
	}
	p.updates <- p.snapshot()
	p.mu.Unlock()
	if !seen || prev.Class != r.Class {
		// Transitions only: probe results are data, not log lines.
		p.log.Info("fsprobe_state_changed", "mount", r.Mount, "from", string(prev.Class), "to", string(r.Class), "op", r.Op, "reason", r.Err)
	}
}

func (p *Prober) snapshot() []Result {
	out := make([]Result, 0, len(p.mounts))
	for _, m := range p.mounts {
		if r, ok := p.latest[m.Path()]; ok {
			out = append(out, r)
		}
	}
	return out
}

// Latest returns each mount's last result, in configuration order.
func (p *Prober) Latest() []Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snapshot()
}

// Updates delivers every mount's latest results after each round. It has a
// buffer of one and keeps only the newest value: a slow reader skips
// stale states, never blocks the prober.
func (p *Prober) Updates() <-chan []Result { return p.updates }
