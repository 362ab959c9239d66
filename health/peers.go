package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PeerTarget is a peer's Dovecot address to probe.
type PeerTarget struct {
	Name string
	Addr string
}

// Peers probes the other nodes' main Dovecot port (an IMAP greeting), with
// fall/rise per peer, and publishes the names of the peers this node
// cannot reach. What one node sees is one observer's view: the failover
// decision needs a quorum. Each peer is probed every Interval while its
// state is settled, and every FastInterval while a result disagrees with
// it or while someone urged it (gossip suspects the peer, or another peer
// cannot reach it), so that every observer confirms a dead peer in about
// the time one confirms it.
type Peers struct {
	Interval     time.Duration
	FastInterval time.Duration
	Timeout      time.Duration
	Source       string              // local IP to probe from
	Targets      func() []PeerTarget // called every tick; must not block

	mu       sync.Mutex
	tracker  *Tracker
	down     []Down
	updates  chan []Down
	due      map[string]time.Time // a peer's next probe
	urgent   map[string]time.Time // probed at FastInterval until then
	inflight map[string]bool
	refused  map[string]bool // the peer's last probe was refused (its host answered, nothing listened)
	wake     chan struct{}

	reachable *prometheus.GaugeVec
}

// Register adds the peer metrics to reg.
func (p *Peers) Register(reg prometheus.Registerer) error {
	return reg.Register(p.reachable)
}

// NewPeers makes a peer prober; fast is the interval while a peer's state
// is unsettled or urged (0: interval).
func NewPeers(interval, fast, timeout time.Duration, fall, rise int, source string, targets func() []PeerTarget) *Peers {
	if fast <= 0 {
		fast = interval
	}
	return &Peers{Interval: interval, FastInterval: fast, Timeout: timeout, Source: source, Targets: targets,
		tracker: NewTracker(fall, rise), updates: make(chan []Down, 1),
		due: map[string]time.Time{}, urgent: map[string]time.Time{}, inflight: map[string]bool{}, refused: map[string]bool{}, wake: make(chan struct{}, 1),
		reachable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "roost_health_peer_reachable", Help: "1 when this node reaches the peer's Dovecot (after fall/rise), 0 when not.",
		}, []string{"peer"})}
}

// peerTick is how often Run looks for peers due a probe.
const peerTick = 50 * time.Millisecond

// Run probes until ctx ends, then waits for the probes in flight (each
// bounded by Timeout).
func (p *Peers) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(peerTick)
	defer t.Stop()
	for {
		p.startDue(ctx, &wg)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-p.wake:
		}
	}
}

// Urge probes peer now, and at the fast interval for long enough to
// confirm a failure: gossip suspects it, or another peer cannot reach it.
// It never blocks.
func (p *Peers) Urge(peer string) {
	p.mu.Lock()
	now := time.Now()
	p.urgent[peer] = now.Add(time.Duration(p.tracker.fall+p.tracker.rise) * (p.FastInterval + p.Timeout))
	if !p.inflight[peer] && p.due[peer].After(now) {
		p.due[peer] = now
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// startDue starts a probe of every peer that is due one and has none in
// flight, and forgets peers that left.
func (p *Peers) startDue(ctx context.Context, wg *sync.WaitGroup) {
	targets := p.Targets()
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	current := map[string]bool{}
	for _, tg := range targets {
		current[tg.Name] = true
		if p.inflight[tg.Name] || now.Before(p.due[tg.Name]) {
			continue
		}
		p.inflight[tg.Name] = true
		wg.Go(func() {
			start := time.Now()
			err := WithTimeout(IMAPGreeting(Dialogue{Addr: tg.Addr, Source: p.Source}), p.Timeout)(ctx)
			p.finish(ctx, tg.Name, start, err)
		})
	}
	forgot := false
	for name := range p.tracker.checks {
		if !current[name] && !p.inflight[name] {
			// A peer that left is no longer judged.
			delete(p.tracker.checks, name)
			delete(p.due, name)
			delete(p.urgent, name)
			delete(p.refused, name)
			p.reachable.DeleteLabelValues(name)
			forgot = true
		}
	}
	if forgot {
		p.publishLocked()
	}
}

// finish records the result of one probe that began at start, and
// schedules the peer's next from that start, as HAProxy paces checks: a
// probe that took its whole timeout (a silent peer) is followed by the
// next at once when the fast interval has passed meanwhile.
func (p *Peers) finish(ctx context.Context, name string, start time.Time, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inflight, name)
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	p.tracker.Observe(name, SeverityCritical, err, false, now)
	p.refused[name] = errors.Is(err, syscall.ECONNREFUSED)
	fast := p.tracker.Settling(name) || now.Before(p.urgent[name])
	p.due[name] = start.Add(Next(p.Interval, p.FastInterval, 0, fast, false))
	if p.tracker.Failing(name) {
		p.reachable.WithLabelValues(name).Set(0)
	} else {
		p.reachable.WithLabelValues(name).Set(1)
	}
	p.publishLocked()
}

// Down is a peer this node cannot reach; Refused when its last probe was
// refused: its host answered and no Dovecot listened (a crashed host's
// kernel still up), rather than silence (powered off, cut off).
type Down struct {
	Name    string
	Refused bool
}

// publishLocked sends the unreachable peers when the list changed.
func (p *Peers) publishLocked() {
	var down []Down
	for _, c := range p.tracker.Checks() { // sorted by name
		if c.Status != Passing {
			down = append(down, Down{Name: c.Name, Refused: p.refused[c.Name]})
		}
	}
	if fmt.Sprint(down) == fmt.Sprint(p.down) {
		return
	}
	p.down = down
	select { // latest state only
	case <-p.updates:
	default:
	}
	p.updates <- down
}

// Updates delivers the list of unreachable peers when it changes; a
// buffer of one that keeps only the newest list.
func (p *Peers) Updates() <-chan []Down { return p.updates }
