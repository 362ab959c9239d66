// Package failover holds the replicated cluster state in hashicorp/raft:
// it forms the raft cluster from the gossip membership, keeps its voters
// (bootstrap_expect, promotion, dead-server cleanup), and is the only
// package that imports raft.
package failover

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	wal "github.com/hashicorp/raft-wal"
	"github.com/prometheus/client_golang/prometheus"
)

// ServerStatus is a server's gossip status as the membership reports it.
type ServerStatus string

// Server statuses.
const (
	ServerAlive  ServerStatus = "alive"
	ServerFailed ServerStatus = "failed"
	ServerLeft   ServerStatus = "left"
)

// Server is a raft server as the cluster membership (gossip) sees it.
type Server struct {
	ID       string // node name, also the raft server ID
	Addr     string // cluster port, host:port
	Status   ServerStatus
	HasState bool // already belongs to a raft cluster
	Version  string
	CanLead  bool // has the routing database: can do the leader's work
}

// Membership is who is in the cluster. The agent provides it from gossip.
// Servers and Subscribe must not block and may be called concurrently;
// SetHasState may block briefly while it gossips the change.
type Membership interface {
	Servers() []Server
	// Subscribe returns a channel that receives a value after membership
	// changes; its buffer of one may merge many changes into one notice.
	Subscribe() <-chan struct{}
	// SetHasState announces that this node belongs to a raft cluster.
	SetHasState(bool) error
}

// Cluster is this node's raft server.
type Cluster struct {
	cfg RaftConfig
	id  string
	log *slog.Logger
	// opKeys sign and check forwarded operator requests (SetOpKeys).
	opKeys  [][]byte
	members Membership

	raft   *raft.Raft
	fsm    *fsm
	stream *streamLayer
	trans  *raft.NetworkTransport
	wal    *wal.WAL
	ap     *autopilot.Autopilot
	obs    chan raft.Observation
	obsReg *raft.Observer

	closeOnce   sync.Once
	raftOnce    sync.Once
	raftDown    raft.Future
	mu          sync.Mutex
	hasState    bool
	announced   bool
	settleKey   string
	settleSince time.Time
	apState     *autopilot.State
	statsConns  map[string]*statsConn

	leading *Leading
	leadWG  sync.WaitGroup
	// handedOff is when this node, leading without the routing database,
	// last asked raft to hand leadership over.
	handedOff time.Time
	metrics   *metrics
	// decideMu serialises the leader's decisions and operator requests.
	decideMu sync.Mutex
	// wakeLead makes the leader's loop look at the state now.
	wakeLead chan struct{}

	roleGauge   prometheus.Gauge
	termGauge   prometheus.GaugeFunc
	leaderCount prometheus.Counter
}

// bootstrapSettle is how long the set of expected servers must stay the
// same before they bootstrap, so nodes that started together agree on it.
const bootstrapSettle = 500 * time.Millisecond

// NewCluster opens the raft stores under dir and starts listening on the
// cluster port. Run forms or rejoins the cluster.
func NewCluster(cfg RaftConfig, id, dir string, members Membership, log *slog.Logger, level slog.Level, reg prometheus.Registerer) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "wal"), 0o700); err != nil {
		return nil, fmt.Errorf("creating raft directory: %w", err)
	}
	c := &Cluster{cfg: cfg, id: id, log: log, members: members, fsm: &fsm{}, statsConns: map[string]*statsConn{}, wakeLead: make(chan struct{}, 1)}

	var err error
	var serverTLS, clientTLS *tls.Config
	if !cfg.InsecurePlaintext {
		if serverTLS, clientTLS, err = cfg.TLS.MutualConfigs(); err != nil {
			return nil, fmt.Errorf("raft tls: %w", err)
		}
	}
	if c.stream, err = newStreamLayer(cfg.Bind, cfg.Advertise, serverTLS, clientTLS, log); err != nil {
		return nil, err
	}
	c.stream.handle(chanStats, c.serveStats)
	c.stream.handle(chanOp, c.serveOp)
	hl := newHclog(log, "raft", level)
	c.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: c.stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: hl,
	})
	fail := func(err error) (*Cluster, error) {
		c.trans.Close()
		c.stream.Close()
		if c.wal != nil {
			c.wal.Close()
		}
		return nil, err
	}
	if c.wal, err = wal.Open(filepath.Join(dir, "wal"), wal.WithLogger(hl.Named("wal"))); err != nil {
		return fail(fmt.Errorf("opening raft log in %s: %w", dir, err))
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, cfg.SnapshotRetain, hl)
	if err != nil {
		return fail(fmt.Errorf("opening raft snapshots in %s: %w", dir, err))
	}
	if c.hasState, err = raft.HasExistingState(c.wal, c.wal, snaps); err != nil {
		return fail(fmt.Errorf("reading raft state in %s: %w", dir, err))
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hl
	if c.raft, err = raft.NewRaft(rc, c.fsm, c.wal, c.wal, snaps, c.trans); err != nil {
		return fail(fmt.Errorf("starting raft: %w", err))
	}
	// A non-blocking observer: raft drops observations when the channel is
	// full rather than wait for us.
	c.obs = make(chan raft.Observation, 16)
	c.obsReg = raft.NewObserver(c.obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	c.raft.RegisterObserver(c.obsReg)
	c.ap = autopilot.New(c.raft, (*apDelegate)(c),
		autopilot.WithLogger(hl.Named("autopilot")),
		autopilot.WithPromoter(&promoter{max: cfg.MaxVoters}),
		autopilot.WithUpdateInterval(2*time.Second),
		autopilot.WithReconcileInterval(2*time.Second))

	c.roleGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "roost_raft_leader", Help: "1 when this node is the raft leader."})
	c.termGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_raft_term", Help: "The current raft term."},
		func() float64 { return float64(c.raft.CurrentTerm()) })
	c.leaderCount = prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_raft_leadership_gained_total", Help: "Times this node became raft leader."})
	c.metrics = newMetrics(c.fsm.read)
	if reg != nil {
		if err := c.metrics.register(reg); err != nil {
			c.raft.Shutdown().Error()
			return fail(fmt.Errorf("registering failover metrics: %w", err))
		}
		for _, m := range []prometheus.Collector{c.roleGauge, c.termGauge, c.leaderCount} {
			if err := reg.Register(m); err != nil {
				c.raft.Shutdown().Error()
				return fail(fmt.Errorf("registering raft metrics: %w", err))
			}
		}
	}
	return c, nil
}

// Lead makes this node, while it leads, decide and carry out failover
// plans. Call it before Run.
func (c *Cluster) Lead(w *Leading) {
	c.leading = w
	w.Executor.metrics = c.metrics
}

// State returns a copy of the replicated state.
func (c *Cluster) State() State { return c.fsm.read() }

// Addr is the cluster port's advertised address.
func (c *Cluster) Addr() string { return c.stream.Addr().String() }

// Run forms the cluster (bootstrapping when this is one of the first
// bootstrap_expect servers), keeps the membership in raft while leader,
// and shuts raft down when ctx ends.
func (c *Cluster) Run(ctx context.Context) error {
	c.stream.serve()
	defer c.Close()
	// Shutting raft down as soon as ctx ends makes any future step() waits
	// on fail at once, so stopping is prompt even without a quorum.
	defer context.AfterFunc(ctx, func() { c.shutdownRaft() })()
	sub := c.members.Subscribe()
	tick := time.NewTicker(bootstrapSettle / 2)
	defer tick.Stop()
	var apCancel context.CancelFunc
	defer func() {
		if apCancel != nil {
			apCancel()
			c.leadWG.Wait()
			<-c.ap.Stop()
		}
	}()
	for {
		c.step(ctx, &apCancel)
		select {
		case <-ctx.Done():
			return nil
		case <-sub:
		case <-c.obs:
		case <-tick.C:
		}
	}
}

func (c *Cluster) step(ctx context.Context, apCancel *context.CancelFunc) {
	c.mu.Lock()
	has := c.hasState
	c.mu.Unlock()
	if !has {
		if _, leader := c.raft.LeaderWithID(); leader != "" || c.raft.LastIndex() > 0 {
			has = true
		} else if c.maybeBootstrap() {
			has = true
		}
		c.mu.Lock()
		c.hasState = has
		c.mu.Unlock()
	}
	if has && !c.announced {
		if err := c.members.SetHasState(true); err != nil {
			c.log.Warn("gossip_meta_update_failed", "err", err)
		} else {
			c.announced = true
		}
	}

	leader := c.raft.State() == raft.Leader
	switch {
	case leader && *apCancel == nil:
		// A new leader first applies everything its predecessor committed.
		if err := c.raft.Barrier(5 * time.Second).Error(); err != nil {
			c.log.Warn("raft_barrier_failed", "err", err)
			return
		}
		c.log.Info("raft_leadership_gained", "term", c.raft.CurrentTerm())
		c.roleGauge.Set(1)
		c.leaderCount.Inc()
		apCtx, cancel := context.WithCancel(ctx)
		*apCancel = cancel
		c.ap.Start(apCtx)
		if c.fsm.read().ClusterID == "" {
			if err := c.apply(command{Op: opInit, ClusterID: newID()}); err != nil {
				c.log.Warn("raft_init_failed", "err", err)
			}
		}
		if c.leading != nil {
			c.leadWG.Add(1)
			go func() { defer c.leadWG.Done(); c.lead(apCtx, c.leading) }()
		}
	case !leader && *apCancel != nil:
		c.log.Info("raft_leadership_lost", "term", c.raft.CurrentTerm())
		c.roleGauge.Set(0)
		(*apCancel)()
		c.leadWG.Wait()
		<-c.ap.Stop()
		*apCancel = nil
		c.mu.Lock()
		c.apState = nil
		c.mu.Unlock()
	}
	if leader && *apCancel != nil {
		c.reconcileMembers()
		if c.leading == nil {
			c.handOff()
		}
	}
}

// handOffEvery paces a leader without the routing database in handing
// leadership over (an election takes about a second).
const handOffEvery = 5 * time.Second

// handOff hands raft leadership to an alive voter that has the routing
// database: while a node without it leads, nobody is failed over. With
// no such voter alive it says so, loudly, every handOffEvery.
func (c *Cluster) handOff() {
	if time.Since(c.handedOff) < handOffEvery {
		return
	}
	c.handedOff = time.Now()
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		c.log.Warn("raft_configuration_failed", "err", err)
		return
	}
	voters := map[string]raft.ServerAddress{}
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters[string(s.ID)] = s.Address
		}
	}
	servers := c.members.Servers()
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	for _, s := range servers {
		addr, voter := voters[s.ID]
		if s.ID == c.id || !voter || !s.CanLead || s.Status != ServerAlive {
			continue
		}
		c.log.Warn("raft_leadership_handed_off", "to", s.ID, "why", "this node has no routing database (routing.dsn_file): it cannot fail anyone over")
		if err := c.raft.LeadershipTransferToServer(raft.ServerID(s.ID), addr).Error(); err != nil {
			c.log.Warn("raft_leadership_transfer_failed", "to", s.ID, "err", err)
		}
		return
	}
	c.log.Error("failover_off", "why", "this node leads but has no routing database (routing.dsn_file), and no alive voter has one: nobody is failed over")
}

// maybeBootstrap bootstraps the raft cluster when this node has no raft
// state, nobody alive claims one, and at least bootstrap_expect servers
// have been seen, unchanged, for bootstrapSettle. Every node that decides
// so computes the same configuration from the same membership.
func (c *Cluster) maybeBootstrap() bool {
	var alive []Server
	self := false
	for _, s := range c.members.Servers() {
		if s.Status != ServerAlive || s.Addr == "" {
			continue
		}
		if s.HasState && s.ID != c.id {
			return false // an existing cluster will add us
		}
		self = self || s.ID == c.id
		alive = append(alive, s)
	}
	if !self || len(alive) < c.cfg.BootstrapExpect {
		c.settleKey = ""
		return false
	}
	sort.Slice(alive, func(i, j int) bool { return alive[i].ID < alive[j].ID })
	ids := make([]string, len(alive))
	for i, s := range alive {
		ids[i] = s.ID + "@" + s.Addr
	}
	key := strings.Join(ids, ",")
	if key != c.settleKey {
		c.settleKey, c.settleSince = key, time.Now()
		return false
	}
	if time.Since(c.settleSince) < bootstrapSettle {
		return false
	}
	var conf raft.Configuration
	for i, s := range alive {
		suffrage := raft.Voter
		if i >= c.cfg.MaxVoters {
			suffrage = raft.Nonvoter
		}
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: suffrage, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Addr)})
	}
	if err := c.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		c.log.Error("raft_bootstrap_failed", "err", err)
		return false
	}
	c.log.Info("raft_bootstrapped", "servers", key)
	return true
}

// reconcileMembers adds alive servers that raft does not know yet as
// non-voters (autopilot promotes them once stable) and updates the address
// of servers that came back on a new one.
func (c *Cluster) reconcileMembers() {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return
	}
	known := map[raft.ServerID]raft.Server{}
	for _, s := range f.Configuration().Servers {
		known[s.ID] = s
	}
	for _, s := range c.members.Servers() {
		if s.Status != ServerAlive || s.Addr == "" {
			continue
		}
		id, addr := raft.ServerID(s.ID), raft.ServerAddress(s.Addr)
		cur, ok := known[id]
		var err error
		switch {
		case !ok:
			err = c.raft.AddNonvoter(id, addr, 0, 5*time.Second).Error()
			c.log.Info("raft_server_added", "node", s.ID, "addr", s.Addr, "err", err)
		case cur.Address != addr && cur.Suffrage == raft.Voter:
			err = c.raft.AddVoter(id, addr, 0, 5*time.Second).Error()
			c.log.Info("raft_server_readdressed", "node", s.ID, "addr", s.Addr, "err", err)
		case cur.Address != addr:
			err = c.raft.AddNonvoter(id, addr, 0, 5*time.Second).Error()
			c.log.Info("raft_server_readdressed", "node", s.ID, "addr", s.Addr, "err", err)
		}
	}
}

// maxReplans bounds how often applyPlanned plans again because entries
// were applied while it planned (a running plan applies one per batch).
const maxReplans = 10

// applyPlanned plans commands on a copy of the replicated state without
// holding decideMu (planning may read the routing database), then applies
// them as one raft entry under decideMu if no entry was applied since the
// copy; else it plans again. It returns what it applied (none when plan
// returned none) and the state right after, read under decideMu.
func (c *Cluster) applyPlanned(plan func(State) []command) ([]command, State, error) {
	for range maxReplans {
		st, seen := c.fsm.readAt()
		cmds := plan(st)
		if len(cmds) == 0 {
			return nil, st, nil
		}
		c.decideMu.Lock()
		if c.fsm.appliedCount() != seen {
			c.decideMu.Unlock()
			continue
		}
		err := c.apply(batch(cmds))
		after := c.fsm.read()
		c.decideMu.Unlock()
		if err != nil {
			return nil, after, err
		}
		return cmds, after, nil
	}
	return nil, State{}, opError(ErrConflict, "the cluster's state changed %d times while the request was planned: try again", maxReplans)
}

func (c *Cluster) apply(cmd command) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	f := c.raft.Apply(b, 5*time.Second)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrEnqueueTimeout):
			// A leader change: the caller may try again with the next leader.
			return opError(ErrNoLeader, "%s: %v", c.id, err)
		}
		return err
	}
	if err, ok := f.Response().(error); ok {
		return err
	}
	return nil
}

// Close shuts raft down and releases the cluster port and the stores. Run
// calls it on return; call it directly only when Run was never called.
func (c *Cluster) Close() {
	c.closeOnce.Do(c.shutdown)
}

// shutdownRaft shuts raft down once and returns that shutdown's future: a
// second raft.Shutdown would return one that does not wait, and closing
// the log store under a raft still running panics.
func (c *Cluster) shutdownRaft() raft.Future {
	c.raftOnce.Do(func() {
		c.stream.stopDials() // replication to a silent peer is dialing: do not wait for it
		c.raftDown = c.raft.Shutdown()
	})
	return c.raftDown
}

func (c *Cluster) shutdown() {
	c.raft.DeregisterObserver(c.obsReg)
	if err := c.shutdownRaft().Error(); err != nil {
		c.log.Warn("raft_shutdown_failed", "err", err)
	}
	c.trans.Close()
	c.stream.Close()
	c.wal.Close()
}

// Status is the raft cluster as this node sees it.
type Status struct {
	ID         string         `json:"id"`
	State      string         `json:"state"` // Leader, Follower, Candidate, Shutdown
	Leader     string         `json:"leader"`
	LeaderAddr string         `json:"leader_addr"`
	Term       uint64         `json:"term"`
	LastIndex  uint64         `json:"last_index"`
	ClusterID  string         `json:"cluster_id"`
	Servers    []ServerInRaft `json:"servers"`
	// FailureTolerance is how many voters may fail with quorum kept; known
	// on the leader only (-1 elsewhere).
	FailureTolerance int `json:"failure_tolerance"`
}

// ServerInRaft is one entry of the raft configuration.
type ServerInRaft struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"` // voter, nonvoter
	Leader   bool   `json:"leader"`
}

// Status reports the raft state. It does not block on the network.
func (c *Cluster) Status() Status {
	addr, leader := c.raft.LeaderWithID()
	st := Status{
		ID: c.id, State: c.raft.State().String(), Leader: string(leader), LeaderAddr: string(addr),
		Term: c.raft.CurrentTerm(), LastIndex: c.raft.LastIndex(), ClusterID: c.fsm.read().ClusterID,
		FailureTolerance: -1,
	}
	if f := c.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			suffrage := "voter"
			if s.Suffrage != raft.Voter {
				suffrage = "nonvoter"
			}
			st.Servers = append(st.Servers, ServerInRaft{ID: string(s.ID), Addr: string(s.Address), Suffrage: suffrage, Leader: s.ID == leader})
		}
	}
	c.mu.Lock()
	if c.apState != nil {
		st.FailureTolerance = c.apState.FailureTolerance
	}
	c.mu.Unlock()
	return st
}

// CaughtUp reports whether this node knows a leader and has applied every
// entry it knows to be committed: its view of the failover state is the
// cluster's current one (a node rejoining after a partition waits for it
// before it serves again).
func (c *Cluster) CaughtUp() bool {
	if _, leader := c.raft.LeaderWithID(); leader == "" {
		return false
	}
	commit, err := strconv.ParseUint(c.raft.Stats()["commit_index"], 10, 64)
	return err == nil && commit > 0 && c.raft.AppliedIndex() >= commit
}

// Snapshot takes a raft snapshot now and compacts the log.
func (c *Cluster) Snapshot() error {
	return c.raft.Snapshot().Error()
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
