package health

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Spec schedules one check, as HAProxy schedules a server's: every
// Interval while its status is settled, every FastInterval (fastinter)
// while a result disagrees with its status (on the way to fail or to pass
// again), and every DownInterval (downinter) while it fails. Zero
// FastInterval or DownInterval means Interval.
type Spec struct {
	Name         string
	Check        Check
	Severity     Severity
	Interval     time.Duration
	Timeout      time.Duration
	FastInterval time.Duration
	DownInterval time.Duration
}

// Report is the node's health: its status, why, and every check.
type Report struct {
	Status  Status       `json:"status"`
	Reasons []string     `json:"reasons,omitempty"`
	Checks  []CheckState `json:"checks"`
	Time    time.Time    `json:"time"`
}

// Runner runs each check on its own interval (with jitter, so nodes do
// not probe in lockstep), applies fall/rise hysteresis, and publishes the
// node's report only when a check changes state.
type Runner struct {
	specs []Spec
	log   *slog.Logger

	mu       sync.Mutex
	tracker  *Tracker
	updates  chan Report
	observed time.Time       // the last result of any check
	urges    []chan struct{} // one per spec, a buffer of one: Urge's "run now"

	seconds     *prometheus.HistogramVec
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
}

// NewRunner makes a runner; fall and rise are HAProxy's counts.
func NewRunner(specs []Spec, fall, rise int, log *slog.Logger, reg prometheus.Registerer) (*Runner, error) {
	if fall < 1 || rise < 1 {
		return nil, fmt.Errorf("fall %d and rise %d: both must be at least 1", fall, rise)
	}
	for _, s := range specs {
		if s.Interval <= 0 || s.Timeout <= 0 || s.Timeout > s.Interval {
			return nil, fmt.Errorf("check %s: interval %v and timeout %v: want 0 < timeout <= interval", s.Name, s.Interval, s.Timeout)
		}
		if s.FastInterval < 0 || s.FastInterval > s.Interval || s.DownInterval < 0 {
			return nil, fmt.Errorf("check %s: fast interval %v and down interval %v: want 0 <= fast <= interval (%v), down >= 0", s.Name, s.FastInterval, s.DownInterval, s.Interval)
		}
	}
	r := &Runner{
		specs: specs, log: log, tracker: NewTracker(fall, rise), updates: make(chan Report, 1),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "roost_health_check_duration_seconds", Help: "How long each health check took.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"check"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "roost_health_check_status", Help: "1 for each check's current status (after fall/rise), 0 for the others.",
		}, []string{"check", "status"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_health_check_transitions_total", Help: "Status changes of each check.",
		}, []string{"check", "to"}),
	}
	for range specs {
		r.urges = append(r.urges, make(chan struct{}, 1))
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.seconds, r.state, r.transitions} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering health metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Run runs every check until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i, s := range r.specs {
		wg.Go(func() { r.loop(ctx, s, r.urges[i]) })
	}
	wg.Wait()
	<-ctx.Done() // with nothing to run it still runs until ctx ends, as any part of the agent
	return nil
}

func (r *Runner) loop(ctx context.Context, s Spec, urged <-chan struct{}) {
	// Start somewhere in the first interval, then tick with ±10% jitter.
	t := time.NewTimer(time.Duration(rand.Int64N(int64(s.Interval))))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-urged:
		}
		start := time.Now()
		err := WithTimeout(s.Check, s.Timeout)(ctx)
		if ctx.Err() != nil {
			return
		}
		r.seconds.WithLabelValues(s.Name).Observe(time.Since(start).Seconds())
		r.Observe(s.Name, s.Severity, err, false)
		// Paced from the start of the run, as HAProxy paces checks: one that
		// took its whole timeout is followed at once by the next when the
		// (fast) interval has passed meanwhile.
		t.Reset(max(r.next(s)-time.Since(start), 0))
	}
}

// next is how long a check waits for its next run: the fast interval
// while its latest result disagrees with its status, the down interval
// while it fails, else the interval, with ±10% jitter so that nodes do not
// probe in lockstep.
func (r *Runner) next(s Spec) time.Duration {
	r.mu.Lock()
	settling, failing := r.tracker.Settling(s.Name), r.tracker.Failing(s.Name)
	r.mu.Unlock()
	return Next(s.Interval, s.FastInterval, s.DownInterval, settling, failing)
}

// Next is the pause before a check's next run (see Spec), with ±10%
// jitter.
func Next(interval, fast, down time.Duration, settling, failing bool) time.Duration {
	d := interval
	switch {
	case settling && fast > 0:
		d = fast
	case failing && down > 0:
		d = down
	}
	return d + time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
}

// Urge runs every check now rather than at its next turn: something
// outside the checks (the Dovecot master exited) says the node's state may
// have changed. It never blocks.
func (r *Runner) Urge() {
	for _, u := range r.urges {
		select {
		case u <- struct{}{}:
		default: // one is pending already
		}
	}
}

// Observe feeds one result of a check run elsewhere (the filesystem
// probe); immediate skips the fall count, for a mount that is gone.
func (r *Runner) Observe(name string, sev Severity, err error, immediate bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observed = time.Now()
	changed := r.tracker.Observe(name, sev, err, immediate, r.observed)
	var st CheckState
	for _, c := range r.tracker.Checks() {
		if c.Name == name {
			st = c
		}
	}
	for _, s := range []Status{Passing, Warning, Critical} {
		v := 0.0
		if s == st.Status {
			v = 1
		}
		r.state.WithLabelValues(name, string(s)).Set(v)
	}
	if !changed {
		return
	}
	report := r.reportLocked()
	r.transitions.WithLabelValues(name, string(st.Status)).Inc()
	r.log.Info("health_check_changed", "check", name, "status", string(st.Status), "reason", st.Reason, "node_status", string(report.Status))
	select { // latest state only: drop a stale report
	case <-r.updates:
	default:
	}
	r.updates <- report
}

func (r *Runner) reportLocked() Report {
	st, reasons := r.tracker.Node()
	return Report{Status: st, Reasons: reasons, Checks: r.tracker.Checks(), Time: time.Now()}
}

// LastObserved is when any check last gave a result (zero: none yet).
func (r *Runner) LastObserved() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.observed
}

// MaxInterval is the longest interval of the runner's own checks (0: it
// has none).
func (r *Runner) MaxInterval() time.Duration {
	var m time.Duration
	for _, s := range r.specs {
		m = max(m, s.Interval)
	}
	return m
}

// Report returns the node's current health.
func (r *Runner) Report() Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reportLocked()
}

// Updates delivers the node's report after each change of a check. It has
// a buffer of one and keeps only the newest report: a slow reader skips
// stale ones and never blocks the checks.
func (r *Runner) Updates() <-chan Report { return r.updates }
