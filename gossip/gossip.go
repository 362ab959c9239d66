// Package gossip keeps the cluster's membership with hashicorp/memberlist:
// who is alive, suspect, dead or gone, and what each node says about itself.
package gossip

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Meta is what a node tells the cluster about itself. It is gossiped with
// the node and must stay under memberlist's 512-byte limit.
type Meta struct {
	// Role is "mail" for a node running Dovecot, "witness" for a voter only.
	Role string `json:"role"`
	// ProxyHost is the value Dovecot's passdb uses as proxy_host for users
	// served by this node. Empty for a witness.
	ProxyHost string `json:"ph,omitempty"`
	// Weight is the node's share of users beside the others' (0: 1), and
	// MaxUsers the most users plans place on it (0: no bound).
	Weight   float64 `json:"w,omitempty"`
	MaxUsers int     `json:"mx,omitempty"`
	// Raft is the host:port of the node's cluster (raft) port.
	Raft string `json:"raft"`
	// Leads is true when the node has the routing database, so it can do
	// the leader's work; a leader without it hands leadership over.
	Leads bool `json:"ld,omitempty"`
	// API is the host:port of the node's TCP API, if it serves one.
	API string `json:"api,omitempty"`
	// Version is the agent's version.
	Version string `json:"v"`
	// RaftState is true once the node belongs to a raft cluster (it
	// bootstrapped or was added): a node that sees such a peer never
	// bootstraps a cluster of its own.
	RaftState bool `json:"rs,omitempty"`
	// Health is the node's own status (passing, warning, critical) and
	// HealthReason why, in short.
	Health       string `json:"h,omitempty"`
	HealthReason string `json:"hr,omitempty"`
	// PeerAddr is where peers probe this node's Dovecot; Unreachable the
	// peers this node cannot reach there.
	PeerAddr    string   `json:"pa,omitempty"`
	Unreachable []string `json:"pu,omitempty"`
	// Refused has bit i set when Unreachable[i] refused the connection
	// (its host answered; no Dovecot listened) rather than kept silent.
	Refused uint16 `json:"pr,omitempty"`
	// FS is true while a mount probe of the shared mail filesystem fails.
	FS bool `json:"fs,omitempty"`
	// Doveadm is the node's doveadm HTTP API without its fixed path
	// (scheme://host:port), for the leader's kicks.
	Doveadm string `json:"da,omitempty"`
}

// State is a member's gossip state.
type State string

// Member states, as memberlist sees them.
const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Member is one node of the cluster as this node sees it.
type Member struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"`
	State State  `json:"state"`
	Meta  Meta   `json:"meta"`
}

// Gossip is this node's membership in the cluster. Its methods are safe
// for concurrent use and never block on the network.
type Gossip struct {
	cfg  Config
	name string
	log  *slog.Logger
	ml   *memberlist.Memberlist
	addr string
	keys [][]byte // the keyring's keys, the primary first

	mu sync.Mutex
	// updateMu serialises SetMeta: see there.
	updateMu sync.Mutex
	meta     Meta
	// stale is set while memberlist may not have gossiped the current
	// metadata: Run re-sends it (see SetMeta).
	stale bool
	// updateNode is memberlist's UpdateNode; tests replace it.
	updateNode func(time.Duration) error
	members    map[string]Member // every node ever seen, with its last state
	subs       []chan struct{}

	membersGauge *prometheus.GaugeVec
}

// New starts memberlist's listeners (so the address is bound when New
// returns) without joining anyone; Run joins and later leaves.
func New(cfg Config, name string, meta Meta, log *slog.Logger, reg prometheus.Registerer) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gossip{
		cfg:     cfg,
		name:    name,
		log:     log,
		meta:    meta,
		members: map[string]Member{},
		membersGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "roost_gossip_members",
			Help: "Members of the gossip cluster by state, as this node sees them.",
		}, []string{"state"}),
	}
	if reg != nil {
		if err := reg.Register(g.membersGauge); err != nil {
			return nil, fmt.Errorf("registering gossip metrics: %w", err)
		}
	}
	if _, err := json.Marshal(meta); err != nil {
		return nil, err
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	host, port, _ := splitHostPort(cfg.Bind)
	mc.BindAddr, mc.BindPort = host, port
	if cfg.Advertise != "" {
		ah, ap, _ := splitHostPort(cfg.Advertise)
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	mc.Label = cfg.ClusterLabel
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	if cfg.KeyFile != "" {
		kr, err := LoadKeyring(cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		mc.Keyring = kr
		g.keys = kr.GetKeys()
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	mc.Logger = newStdLogger(log)
	mc.Delegate = (*delegate)(g)
	mc.Events = (*events)(g)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("starting gossip on %s: %w", cfg.Bind, err)
	}
	g.ml = ml
	g.updateNode = ml.UpdateNode
	// Read once: memberlist's LocalNode is rewritten in place by UpdateNode.
	n := ml.LocalNode()
	g.addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	return g, nil
}

// Addr is the address peers use to reach this node's gossip port.
func (g *Gossip) Addr() string { return g.addr }

// Keys are the gossip keys, the primary first (none without key_file).
func (g *Gossip) Keys() [][]byte { return g.keys }

// Run joins the configured peers, retrying until one answers or ctx ends,
// then keeps the membership until ctx ends. With leave set it announces a
// graceful leave before shutting down; without, peers see it as dead.
func (g *Gossip) Run(ctx context.Context, leave bool) error {
	defer func() {
		if leave {
			if err := g.ml.Leave(2 * g.cfg.ProbeInterval); err != nil {
				g.log.Warn("gossip_leave_failed", "err", err)
			}
		}
		if err := g.ml.Shutdown(); err != nil {
			g.log.Warn("gossip_shutdown_failed", "err", err)
		}
	}()
	if len(g.cfg.Join) > 0 {
		if err := g.join(ctx); err != nil {
			return nil // ctx ended while joining
		}
	}
	t := time.NewTicker(g.cfg.GossipInterval * 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.resend()
		}
	}
}

// resend gossips the metadata again while an earlier update may have been
// dropped.
func (g *Gossip) resend() {
	g.updateMu.Lock()
	defer g.updateMu.Unlock()
	g.mu.Lock()
	stale := g.stale
	g.mu.Unlock()
	if stale {
		g.publish()
	}
}

func (g *Gossip) join(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for attempt := 1; ; attempt++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		n, err := g.ml.Join(g.cfg.Join)
		if n > 0 {
			g.log.Info("gossip_joined", "peers", n, "attempt", attempt)
			return nil
		}
		// memberlist's error names the cause for a wrong key ("no installed
		// keys could decrypt the message"); a label mismatch shows here only
		// as the peer hanging up, so say what that usually means.
		attrs := []any{"peers", g.cfg.Join, "attempt", attempt, "err", err}
		if err != nil && strings.Contains(err.Error(), "EOF") {
			attrs = append(attrs, "hint", fmt.Sprintf("the peer hung up: its gossip.cluster_label (ours is %q) or gossip key may differ; its log says which", g.cfg.ClusterLabel))
		}
		g.log.Warn("gossip_join_failed", attrs...)
		t.Reset(g.cfg.JoinRetryInterval)
	}
}

// Ping asks a member for an answer over the gossip port (encrypted and
// authenticated like all gossip), waiting up to memberlist's probe
// interval. It is how a node counts the peers it is in touch with.
func (g *Gossip) Ping(name string) error {
	g.mu.Lock()
	m, ok := g.members[name]
	g.mu.Unlock()
	if !ok {
		return fmt.Errorf("no member %q", name)
	}
	addr, err := net.ResolveUDPAddr("udp", m.Addr)
	if err != nil {
		return err
	}
	_, err = g.ml.Ping(name, addr)
	return err
}

// Join asks the given peers to join; used by tests and operators to merge
// clusters deliberately.
func (g *Gossip) Join(peers []string) (int, error) { return g.ml.Join(peers) }

// Members returns every node this one has seen, sorted by name, with its
// current state; dead and left nodes stay listed.
func (g *Gossip) Members() []Member {
	live := map[string]State{}
	for _, n := range g.ml.Members() {
		if n.State == memberlist.StateSuspect {
			live[n.Name] = StateSuspect
		}
	}
	g.mu.Lock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		if s, ok := live[m.Name]; ok && m.State == StateAlive {
			m.State = s
		}
		out = append(out, m)
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Subscribe returns a channel that receives a value whenever membership or
// a member's metadata changes. It has a buffer of one: a slow reader sees
// one pending notice for many changes and must re-read Members.
func (g *Gossip) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	g.mu.Lock()
	g.subs = append(g.subs, ch)
	g.mu.Unlock()
	return ch
}

// SetMeta replaces this node's metadata and queues it for gossip. It waits
// at most half a second for the first broadcast and never fails for want
// of peers: an update that is not confirmed is sent again by Run until it
// is.
//
// memberlist drops an update silently when its incarnation number loses a
// race: UpdateNode takes the next incarnation, and when a refutation of a
// suspicion takes a higher one before the update is applied, memberlist
// discards the update as older and gossips the refutation with the old
// metadata. Peers would keep that until the next change; the unconfirmed
// broadcast's timeout is the only sign of it, so a timed-out update is
// re-sent with a fresh incarnation.
func (g *Gossip) SetMeta(update func(*Meta)) error {
	// Two UpdateNode calls at once can race the same way: one at a time.
	g.updateMu.Lock()
	defer g.updateMu.Unlock()
	g.mu.Lock()
	update(&g.meta)
	g.mu.Unlock()
	return g.publish()
}

// publish hands the metadata to memberlist; updateMu is held.
func (g *Gossip) publish() error {
	err := g.updateNode(500 * time.Millisecond)
	timedOut := err != nil && strings.Contains(err.Error(), "timeout")
	g.mu.Lock()
	g.stale = err != nil
	g.mu.Unlock()
	if err != nil && !timedOut {
		return err
	}
	return nil
}

// LocalMeta returns this node's metadata.
func (g *Gossip) LocalMeta() Meta {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.meta
}

// record stores a member's state and notifies subscribers. It runs on
// memberlist's packet loop and must not block.
func (g *Gossip) record(n *memberlist.Node, s State) {
	var meta Meta
	if len(n.Meta) > 0 {
		if err := json.Unmarshal(n.Meta, &meta); err != nil {
			g.log.Warn("gossip_bad_meta", "node", n.Name, "err", err)
		}
	}
	g.mu.Lock()
	g.members[n.Name] = Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), State: s, Meta: meta}
	counts := map[State]float64{StateAlive: 0, StateDead: 0, StateLeft: 0}
	for _, m := range g.members {
		counts[m.State]++
	}
	for _, ch := range g.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	g.mu.Unlock()
	for s, c := range counts {
		g.membersGauge.WithLabelValues(string(s)).Set(c)
	}
}

type events Gossip

func (e *events) NotifyJoin(n *memberlist.Node)   { (*Gossip)(e).record(n, StateAlive) }
func (e *events) NotifyUpdate(n *memberlist.Node) { (*Gossip)(e).record(n, StateAlive) }
func (e *events) NotifyLeave(n *memberlist.Node) {
	s := StateDead
	if n.State == memberlist.StateLeft {
		s = StateLeft
	}
	(*Gossip)(e).record(n, s)
}

type delegate Gossip

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	b, _ := json.Marshal(d.meta) // checked in New; Meta has no unmarshalable fields
	d.mu.Unlock()
	if len(b) > limit {
		d.log.Error("gossip_meta_too_large", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}
