package health

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PeerTarget is a peer's Dovecot address to probe.
type PeerTarget struct {
	Name string
	Addr string
}

// Peers probes the other nodes' main Dovecot port (an IMAP greeting) at a
// lower rate than the node's own checks, with fall/rise per peer, and
// publishes the names of the peers this node cannot reach. What one node
// sees is one observer's view: the failover decision needs a quorum.
type Peers struct {
	Interval time.Duration
	Timeout  time.Duration
	Source   string              // local IP to probe from
	Targets  func() []PeerTarget // called each round; must not block

	mu      sync.Mutex
	tracker *Tracker
	down    []string
	updates chan []string

	reachable *prometheus.GaugeVec
}

// Register adds the peer metrics to reg.
func (p *Peers) Register(reg prometheus.Registerer) error {
	return reg.Register(p.reachable)
}

// NewPeers makes a peer prober.
func NewPeers(interval, timeout time.Duration, fall, rise int, source string, targets func() []PeerTarget) *Peers {
	return &Peers{Interval: interval, Timeout: timeout, Source: source, Targets: targets,
		tracker: NewTracker(fall, rise), updates: make(chan []string, 1),
		reachable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "roost_health_peer_reachable", Help: "1 when this node reaches the peer's Dovecot (after fall/rise), 0 when not.",
		}, []string{"peer"})}
}

// Run probes every interval until ctx ends.
func (p *Peers) Run(ctx context.Context) error {
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		p.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Peers) round(ctx context.Context) {
	targets := p.Targets()
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = WithTimeout(IMAPGreeting(Dialogue{Addr: tg.Addr, Source: p.Source}), p.Timeout)(ctx)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	current := map[string]bool{}
	for i, tg := range targets {
		current[tg.Name] = true
		p.tracker.Observe(tg.Name, SeverityCritical, errs[i], false, now)
	}
	var down []string
	for _, c := range p.tracker.Checks() {
		if !current[c.Name] {
			delete(p.tracker.checks, c.Name) // a peer that left is no longer judged
			p.reachable.DeleteLabelValues(c.Name)
			continue
		}
		if c.Status != Passing {
			down = append(down, c.Name)
			p.reachable.WithLabelValues(c.Name).Set(0)
		} else {
			p.reachable.WithLabelValues(c.Name).Set(1)
		}
	}
	sort.Strings(down)
	if fmt.Sprint(down) != fmt.Sprint(p.down) {
		p.down = down
		select { // latest state only
		case <-p.updates:
		default:
		}
		p.updates <- down
	}
}

// Updates delivers the list of unreachable peers when it changes; a
// buffer of one that keeps only the newest list.
func (p *Peers) Updates() <-chan []string { return p.updates }
