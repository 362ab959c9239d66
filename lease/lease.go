// Package lease tells whether this node is in touch with a majority of its
// cluster, and since when it is not. A node cut off from the majority must
// take itself out of service (fence itself) before the majority moves its
// users, so that a user's old session there and their new login elsewhere
// never overlap; the majority, in turn, waits until a silent node's lease
// has surely run out (Expiry) before it moves that node's users on its
// peers' word alone. Contact is counted with every peer, not with the raft
// leader only: losing the leader, or an election, fences nobody.
package lease

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Timing derives a lease's pace from fence_after: each peer is pinged
// every fence_after/5, an answer counts for three pings, and a node fences
// itself once it has lacked a majority for fence_after.
type Timing struct {
	FenceAfter time.Duration
}

// Interval is the pause between two pings of a peer.
func (t Timing) Interval() time.Duration { return t.FenceAfter / 5 }

// TTL is how long a peer's answer counts as contact.
func (t Timing) TTL() time.Duration { return 3 * t.Interval() }

// Expiry is when a node whose last contact with this one was at last has
// surely fenced itself, if it was cut off then: its contacts run out
// within TTL, it fences fence_after later, and it notices within one more
// interval. A leader moves a silent node's users only after it.
func (t Timing) Expiry(last time.Time) time.Time {
	return last.Add(t.TTL() + t.FenceAfter + 2*t.Interval())
}

// maxInflight bounds the pings of one peer awaiting an answer: each ends
// at its own timeout, so it is reached only if that timeout is many
// intervals long.
const maxInflight = 8

// Lease pings every peer and counts those that answered lately. Its
// methods are safe for concurrent use.
type Lease struct {
	Timing
	// Peers lists the other members that count towards the majority
	// (every member that has not left, witnesses too). It must not block.
	Peers func() []string
	// Ping asks a peer for an answer; it may block up to its own timeout.
	Ping func(peer string) error

	mu        sync.Mutex
	started   time.Time
	last      map[string]time.Time
	inflight  map[string]int
	lostSince time.Time // zero while a majority is in touch
}

// New makes a lease; it counts as lost from now until a majority answers.
func New(t Timing, peers func() []string, ping func(string) error) *Lease {
	now := time.Now()
	return &Lease{Timing: t, Peers: peers, Ping: ping, started: now, last: map[string]time.Time{}, inflight: map[string]int{}, lostSince: now}
}

// Run pings until ctx ends, then waits for the pings in flight.
func (l *Lease) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(l.Interval())
	defer t.Stop()
	for {
		peers := l.Peers()
		now := time.Now()
		l.mu.Lock()
		for _, p := range peers {
			if _, seen := l.last[p]; !seen {
				// For all this node knows, a peer it just learned of was in
				// touch until now: a node joining its cluster does not
				// count its new peers as lost before it could ping them.
				l.last[p] = now
			}
			// A ping that got no answer blocks until its timeout (memberlist's
			// probe timeout, longer than an interval), so the next one starts
			// on the next tick regardless: one lost packet then costs one
			// interval, not a timeout, and a lossy link keeps its lease.
			if l.inflight[p] >= maxInflight {
				continue
			}
			l.inflight[p]++
			wg.Go(func() {
				err := l.Ping(p)
				l.mu.Lock()
				defer l.mu.Unlock()
				if l.inflight[p]--; l.inflight[p] == 0 {
					delete(l.inflight, p)
				}
				if err == nil {
					l.last[p] = time.Now()
				}
			})
		}
		l.mu.Unlock()
		l.check(time.Now(), peers)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// check records when the majority was lost, or that it is back. The
// moment of loss is when the last answer that kept the majority aged past
// TTL, not when a tick noticed it, so the node fences no later than the
// leader's Expiry assumes.
func (l *Lease) check(now time.Time, peers []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case Majority(now, l.last, peers, l.TTL()):
		l.lostSince = time.Time{}
	case l.lostSince.IsZero():
		l.lostSince = lostAt(l.last, peers, l.TTL(), l.started)
	}
}

// lostAt is when the majority was lost: the answer of the peer whose
// contact kept it (the k-th most recent, k the peers a majority needs)
// plus ttl; or start, if a majority never answered.
func lostAt(last map[string]time.Time, peers []string, ttl time.Duration, start time.Time) time.Time {
	need := (len(peers) + 1) / 2 // peers besides this node that make a majority
	var times []time.Time
	for _, p := range peers {
		if t, ok := last[p]; ok {
			times = append(times, t)
		}
	}
	if need == 0 || len(times) < need {
		return start
	}
	slices.SortFunc(times, func(a, b time.Time) int { return b.Compare(a) })
	if at := times[need-1].Add(ttl); at.After(start) {
		return at
	}
	return start
}

// Majority says whether this node and the peers heard from within ttl are
// more than half of this node and peers.
func Majority(now time.Time, last map[string]time.Time, peers []string, ttl time.Duration) bool {
	reached := 1 // this node
	for _, p := range peers {
		if t, ok := last[p]; ok && now.Sub(t) < ttl {
			reached++
		}
	}
	return 2*reached > len(peers)+1
}

// LostFor is how long this node has been without a majority (0 while it
// has one).
func (l *Lease) LostFor(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lostSince.IsZero() {
		return 0
	}
	return now.Sub(l.lostSince)
}

// LastContact is when peer last answered, or when this lease started if
// it has not answered since: for all this node knows, the peer was in
// touch with others until then.
func (l *Lease) LastContact(peer string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := l.last[peer]; t.After(l.started) {
		return t
	}
	return l.started
}
