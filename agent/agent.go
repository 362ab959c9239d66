// Package agent is roostd's composition root: it wires gossip, the raft
// cluster and the API together and runs them until its context ends.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/roost-mail/roost/alerting"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/dovecot"
	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/fsprobe"
	"github.com/roost-mail/roost/gossip"
	"github.com/roost-mail/roost/health"
	"github.com/roost-mail/roost/hooks"
	"github.com/roost-mail/roost/lbsignal"
	"github.com/roost-mail/roost/lease"
	"github.com/roost-mail/roost/routing"
	"github.com/roost-mail/roost/sweep"
	"github.com/roost-mail/roost/version"
)

// Agent is one roostd. Several can run in one process (tests): it keeps no
// package-level state.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	gossip  *gossip.Gossip
	cluster *failover.Cluster
	api     *apiServer
	fsprobe *fsprobe.Prober
	health  *health.Runner
	peers   *health.Peers
	routing *routingDB
	kicker  *kicker
	lb      *lbsignal.Server
	hook    *alerting.Webhook
	leading *failover.Leading
	lease   *lease.Lease
	// fenced is set while this node has taken itself out of service,
	// cut off from the majority of the cluster (see fence.go).
	fenced atomic.Bool
	// progress is the watch loop's heartbeat, for systemd's watchdog.
	progress progress
}

// New binds every listener (gossip, cluster port, API) so that addresses
// are known when it returns, and joins nobody yet; Run does.
func New(cfg Config, log *slog.Logger, level slog.Level) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log.With("self", cfg.Node.Name), reg: prometheus.NewRegistry()}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roost_build_info", Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": version.String(), "role": cfg.Node.Role},
	}, func() float64 { return 1 }))

	var err error
	if a.fsprobe, err = fsprobe.New(cfg.FSProbe, cfg.Node.Name, a.log, a.reg); err != nil {
		return nil, err
	}
	specs, err := cfg.Health.Specs()
	if err != nil {
		return nil, fmt.Errorf("health.%w", err)
	}
	if a.health, err = health.NewRunner(specs, cfg.Health.Fall, cfg.Health.Rise, a.log, a.reg); err != nil {
		return nil, err
	}
	a.peers = health.NewPeers(cfg.Health.PeerInterval, cfg.Health.FastInterval, cfg.Health.PeerTimeout, cfg.Health.Fall, cfg.Health.Rise, "", a.peerTargets)
	if err := a.peers.Register(a.reg); err != nil {
		return nil, err
	}
	a.lease = lease.New(lease.Timing{FenceAfter: cfg.Failover.FenceAfter}, a.leasePeers, func(p string) error { return a.gossip.Ping(p) })
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roost_fenced", Help: "1 while this node has fenced itself: it cannot reach a majority of the cluster, or has not yet caught up after rejoining.",
	}, func() float64 {
		if a.fenced.Load() {
			return 1
		}
		return 0
	}))
	members := &membership{}
	a.cluster, err = failover.NewCluster(cfg.Raft, cfg.Node.Name, filepath.Join(cfg.Node.DataDir, "raft"), members, a.log, level, a.reg)
	if err != nil {
		return nil, err
	}
	a.routing = &routingDB{}
	a.kicker = &kicker{cfg: cfg.Dovecot, members: func() []gossip.Member { return a.gossip.Members() }, clients: map[string]*dovecot.HTTP{}, flushRemote: a.cluster.FlushAuthCache, log: a.log}
	if cfg.Node.Role == RoleMail {
		// Dovecot 2.4 cannot flush its auth cache over HTTP: the leader asks
		// this agent, which runs the local doveadm.
		a.cluster.SetFlusher(dovecot.NewLocal(cfg.Dovecot).FlushAuthCache)
	}
	if cfg.Routing.DSNFile != "" {
		a.leading = &failover.Leading{
			Executor: &failover.Executor{
				Router: a.routing, Choose: routing.Choose, BatchSize: cfg.Failover.BatchSize,
				Kicker:   a.kicker,
				RetryMin: time.Second, RetryMax: 30 * time.Second, Log: a.log,
				Hooks: hooks.New(cfg.Hooks, a.log),
			},
			View: a.view, Policy: cfg.Failover.Policy, Interval: cfg.Failover.Interval,
		}
		a.cluster.Lead(a.leading)
	}
	fail := func(err error) (*Agent, error) {
		a.cluster.Close()
		return nil, err
	}
	var hookToken string
	if cfg.Alertmanager.WebhookTokenFile != "" {
		if hookToken, err = readToken(cfg.Alertmanager.WebhookTokenFile); err != nil {
			return fail(fmt.Errorf("alertmanager.webhook_token_file: %w", err))
		}
	}
	a.hook = alerting.NewWebhook(cfg.Alertmanager, hookToken, a.cluster.Operate, a.log.Warn)
	a.api, err = newAPIServer(cfg.API, a, a.hook, a.log, a.reg)
	if err != nil {
		return fail(err)
	}
	if a.lb, err = lbsignal.New(cfg.LB, a.lbSignal, a.log); err != nil {
		a.api.close()
		return fail(err)
	}
	meta := gossip.Meta{
		Role:      cfg.Node.Role,
		ProxyHost: cfg.Node.ProxyHost,
		Weight:    cfg.Node.Weight,
		MaxUsers:  cfg.Node.MaxUsers,
		Raft:      a.cluster.Addr(),
		Leads:     a.leading != nil,
		API:       a.api.tcpAddr(),
		Version:   version.String(),
		PeerAddr:  cfg.Health.PeerAddr,
		Doveadm:   doveadmBase(cfg.Dovecot.URL),
	}
	a.gossip, err = gossip.New(cfg.Gossip, cfg.Node.Name, meta, a.log, a.reg)
	if err != nil {
		a.api.close()
		a.lb.Close()
		return fail(err)
	}
	members.g = a.gossip
	// Forwarded operator writes are signed with keys derived from the
	// gossip keys, which a cluster certificate does not carry.
	var opKeys [][]byte
	for _, k := range a.gossip.Keys() {
		opKeys = append(opKeys, failover.OpKey(k))
	}
	a.cluster.SetOpKeys(opKeys)
	if a.leading != nil {
		a.leading.Changes = a.gossip.Subscribe()
	}
	// Peers are probed from this node's gossip address, known only now.
	a.peers.Source = probeSource(a.gossip.Addr())
	return a, nil
}

// Run runs the agent until ctx ends, then stops every part and waits for
// it. It returns the first part's error, if any part failed.
func (a *Agent) Run(ctx context.Context) error {
	var sweeper dovecot.Admin // before any part starts: an error here leaves nothing running
	if a.cfg.Routing.DSNFile != "" && a.cfg.Node.Role == RoleMail && a.cfg.Failover.SweepInterval > 0 {
		admin, err := dovecot.New(a.cfg.Dovecot)
		if err != nil {
			return fmt.Errorf("dovecot: %w", err)
		}
		sweeper = admin
	}
	g, ctx := errgroup.WithContext(ctx)
	part(g, ctx, "gossip", func(ctx context.Context) error { return a.gossip.Run(ctx, a.cfg.Node.LeaveOnStop) })
	part(g, ctx, "raft", a.cluster.Run)
	part(g, ctx, "api", a.api.run)
	part(g, ctx, "lb", a.lb.Run)
	if len(a.cfg.Alertmanager.URLs) > 0 {
		al := alerting.NewAlerter(a.cfg.Alertmanager, a.cluster.State,
			func() bool { return a.cluster.Status().Leader == a.cfg.Node.Name }, a.log.Warn)
		part(g, ctx, "alertmanager", loop(al.Run))
	}
	part(g, ctx, "fsprobe", a.fsprobe.Run)
	part(g, ctx, "health", a.health.Run)
	part(g, ctx, "peers", a.peers.Run)
	part(g, ctx, "urge", loop(a.urgePeers))
	part(g, ctx, "lease", a.lease.Run)
	if a.cfg.Node.Role == RoleMail {
		part(g, ctx, "fence", loop(a.fence))
	}
	if a.cfg.Node.Role == RoleMail {
		part(g, ctx, "dovecot_master_watch", loop(func(ctx context.Context) {
			dovecot.WatchMaster(ctx, a.cfg.Dovecot.InstanceName, time.Second, func(pid int) {
				a.log.Warn("dovecot_master_exited", "pid", pid)
				a.health.Urge() // the checks confirm it now, at their fast interval
			})
		}))
	}
	part(g, ctx, "watch", loop(a.watch))
	g.Go(func() error { a.notifySystemd(ctx); return nil }) // ends at once when not under systemd
	if a.cfg.Routing.DSNFile != "" {
		part(g, ctx, "routing", loop(func(ctx context.Context) { a.routing.run(ctx, a.cfg.Routing, a.log) }))
		if sweeper != nil {
			sw := &sweep.Sweeper{Admin: sweeper, Instance: a.cfg.Dovecot.InstanceName, Self: a.cfg.Node.ProxyHost, Hosts: a.routing.hostsOf, Log: a.log}
			part(g, ctx, "sweep", loop(func(ctx context.Context) { sw.Run(ctx, a.cfg.Failover.SweepInterval) }))
		}
	} else {
		a.log.Warn("routing_off", "hint", "routing.dsn_file is empty: this node hands raft leadership to a voter that has it, and cannot fail anyone over")
	}
	if a.cfg.Node.Role == RoleMail {
		part(g, ctx, "reap", loop(a.reapOrphans))
		g.Go(func() error {
			if problem := dovecot.LoginModeProblem(ctx, a.cfg.Dovecot); problem != "" {
				a.log.Warn("dovecot_login_mode", "problem", problem)
			}
			return nil
		})
	}
	if a.cfg.Node.Role == RoleMail && len(a.cfg.FSProbe.Mounts) == 0 {
		a.log.Warn("fsprobe_no_mounts", "hint", "fsprobe.mounts is empty: the shared mail filesystem is not watched")
	}
	a.log.Info("agent_started", "version", version.String(), "role", a.cfg.Node.Role,
		"gossip", a.gossip.Addr(), "raft", a.cluster.Addr(), "socket", a.cfg.API.Socket)
	err := g.Wait()
	a.log.Info("agent_stopped", "err", err)
	return err
}

// part runs one part of the agent in g until ctx ends. A part that stops
// before, with or without an error, stops the agent: roostd then exits
// non-zero and systemd restarts it, rather than running on without the
// part.
func part(g *errgroup.Group, ctx context.Context, name string, run func(context.Context) error) {
	g.Go(func() error {
		err := run(ctx)
		if ctx.Err() != nil {
			return err
		}
		if err == nil {
			err = errors.New("stopped")
		}
		return fmt.Errorf("%s: %w", name, err)
	})
}

// loop adapts a part that has no error to return.
func loop(run func(context.Context)) func(context.Context) error {
	return func(ctx context.Context) error { run(ctx); return nil }
}

// GossipAddr is the address peers join.
func (a *Agent) GossipAddr() string { return a.gossip.Addr() }

// Name is the node's name.
func (a *Agent) Name() string { return a.cfg.Node.Name }

// Status is the cluster as this agent sees it.
func (a *Agent) Status() api.Status {
	rs := a.cluster.Status()
	inRaft := map[string]failover.ServerInRaft{}
	for _, s := range rs.Servers {
		inRaft[s.ID] = s
	}
	st := api.Status{
		Node: a.cfg.Node.Name, Version: version.String(), Leader: rs.Leader, Term: rs.Term,
		ClusterID: rs.ClusterID, FailureTolerance: rs.FailureTolerance,
	}
	rep := a.health.Report()
	st.Health = api.Health{Status: string(rep.Status), Reasons: rep.Reasons}
	for _, c := range rep.Checks {
		st.Health.Checks = append(st.Health.Checks, api.Check{Name: c.Name, Status: string(c.Status), Severity: string(c.Severity), Reason: c.Reason, Since: c.Since})
	}
	for _, r := range a.fsprobe.Latest() {
		st.Mounts = append(st.Mounts, api.Mount{Path: r.Mount, FSType: r.FSType, Class: string(r.Class), Op: r.Op, Reason: r.Err, Total: r.Total, FuseWaiting: r.FuseWaiting, Time: r.Time})
	}
	fs := a.cluster.State()
	if fs.Frozen != nil {
		st.Frozen = &api.Freeze{Reason: fs.Frozen.Reason, Since: fs.Frozen.Since}
	}
	for _, sc := range fs.SortedSchedule() {
		r := sc.Request
		s := api.Scheduled{ID: sc.ID, Op: r.Op, Node: r.Node, Reason: r.Reason, By: r.By, At: sc.At}
		if r.For > 0 {
			s.For = r.For.String()
		}
		st.Scheduled = append(st.Scheduled, s)
	}
	if p := fs.Paused; p != nil {
		st.Paused = &api.Pause{Reason: p.Reason, By: p.By, Since: p.Since, Until: p.Until}
	}
	if a.leading != nil {
		for _, act := range []string{failover.ActionFailover, failover.ActionFailback, failover.ActionAlerts} {
			if a.leading.InForce().DryRun(act) {
				st.DryRun = append(st.DryRun, act)
			}
		}
	}
	for _, p := range fs.RecentPlans(20) {
		st.Plans = append(st.Plans, api.Plan{ID: p.ID, Kind: string(p.Kind), Node: p.Node, User: p.User, To: p.To, Reason: p.Reason,
			Rate: p.Rate, Users: p.Users, Moved: p.Moved, Batches: p.Batches, Status: string(p.Status), Created: p.Created, Finished: p.Finished, Error: p.Error,
			DryRun: p.DryRun, Would: p.Would})
	}
	counts := a.userCounts()
	st.UsersKnown = counts != nil
	members := a.gossip.Members()
	for _, m := range members {
		role := "none"
		if s, ok := inRaft[m.Name]; ok {
			role = s.Suffrage
			if s.Leader {
				role = "leader"
			}
		}
		st.Members = append(st.Members, api.Member{
			Name: m.Name, Role: m.Meta.Role, ProxyHost: m.Meta.ProxyHost, Gossip: string(m.State),
			Addr: m.Addr, RaftAddr: m.Meta.Raft, Raft: role, Version: m.Meta.Version,
			Health: m.Meta.Health, HealthReason: m.Meta.HealthReason,
			Self: m.Name == a.cfg.Node.Name, Users: -1,
		})
		mb := &st.Members[len(st.Members)-1]
		if m.Meta.Role == RoleMail {
			r := fs.Node(m.Name)
			mb.State, mb.StateReason, mb.StateSince, mb.LB = string(r.State), r.Reason, r.Since, r.LBSignal()
			mb.HeldBy, mb.Cordoned, mb.CordonReason, mb.StateUntil, mb.DryRun = r.Holds, r.Cordoned, r.CordonReason, r.Until, r.DryRun
			if counts != nil {
				mb.Users = counts[m.Meta.ProxyHost]
			}
			mb.Weight, mb.MaxUsers = m.Meta.Weight, m.Meta.MaxUsers
			if mb.Weight == 0 {
				mb.Weight = 1 // an agent from before node.weight
			}
		}
		// What the alive peers see of m's Dovecot.
		for _, p := range members {
			if p.Name == m.Name || (p.State != gossip.StateAlive && p.State != gossip.StateSuspect) || m.Meta.PeerAddr == "" {
				continue
			}
			if slices.Contains(p.Meta.Unreachable, m.Name) {
				mb.PeersCannot = append(mb.PeersCannot, p.Name)
			} else {
				mb.PeersReach++
			}
		}
	}
	return st
}

// userCounts is users per proxy_host from the routing database, or nil
// when it cannot be read within a second.
func (a *Agent) userCounts() map[string]int {
	s, err := a.routing.store()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := s.Counts(ctx)
	if err != nil {
		a.log.Debug("status_counts_failed", "err", err)
		return nil
	}
	return c
}

// membership adapts gossip to what failover needs.
type membership struct{ g *gossip.Gossip }

func (m *membership) Servers() []failover.Server {
	members := m.g.Members()
	out := make([]failover.Server, 0, len(members))
	for _, mb := range members {
		status := failover.ServerAlive
		switch mb.State {
		case gossip.StateDead:
			status = failover.ServerFailed
		case gossip.StateLeft:
			status = failover.ServerLeft
		}
		out = append(out, failover.Server{ID: mb.Name, Addr: mb.Meta.Raft, Status: status, HasState: mb.Meta.RaftState, Version: mb.Meta.Version, CanLead: mb.Meta.Leads})
	}
	return out
}

func (m *membership) Subscribe() <-chan struct{} { return m.g.Subscribe() }

func (m *membership) SetHasState(b bool) error {
	if err := m.g.SetMeta(func(meta *gossip.Meta) { meta.RaftState = b }); err != nil {
		return fmt.Errorf("gossiping raft state: %w", err)
	}
	return nil
}

// Snapshot takes a raft snapshot now.
func (a *Agent) Snapshot() error { return a.cluster.Snapshot() }

// LBAddrs are the LB signal's agent-check and HTTP addresses ("" when off).
func (a *Agent) LBAddrs() (agentCheck, http string) { return a.lb.Addrs() }

// APIAddr is the TCP API's address, or "" when it is off.
func (a *Agent) APIAddr() string { return a.api.tcpAddr() }

// watch feeds the filesystem probe's verdicts into the health runner and
// gossips the node's health when it changes, until ctx ends.
func (a *Agent) watch(ctx context.Context) {
	publish := func(rep health.Report) {
		summary := strings.Join(rep.Reasons, "; ")
		if len(summary) > maxGossipReason {
			summary = strings.ToValidUTF8(summary[:maxGossipReason], "") + "…" // never half a rune
		}
		if err := a.gossip.SetMeta(func(m *gossip.Meta) { m.Health, m.HealthReason = string(rep.Status), summary }); err != nil {
			a.log.Warn("gossip_meta_update_failed", "err", err)
		}
	}
	publish(a.health.Report())
	fsBad := false
	beat := time.NewTicker(200 * time.Millisecond)
	defer beat.Stop()
	for {
		a.progress.mark()
		if testHookWatch != nil {
			testHookWatch()
		}
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
		case results := <-a.fsprobe.Updates():
			bad := false
			for _, r := range results {
				a.health.Observe("mount "+r.Mount, mountSeverity(r.Class), mountErr(r), mountImmediate(r.Class))
				bad = bad || !r.OK()
			}
			if bad != fsBad {
				if err := a.gossip.SetMeta(func(m *gossip.Meta) { m.FS = bad }); err != nil {
					a.log.Warn("gossip_meta_update_failed", "err", err)
				} else {
					fsBad = bad
				}
			}
		case rep := <-a.health.Updates():
			publish(rep)
		case down := <-a.peers.Updates():
			if len(down) > maxGossipUnreachable {
				// Metadata over 512 bytes would be dropped whole; a node that
				// reaches none of many peers is mostly telling about itself.
				a.log.Warn("peers_unreachable_truncated", "count", len(down), "gossiped", maxGossipUnreachable)
				down = down[:maxGossipUnreachable]
			}
			var names []string
			var refused uint16
			for i, d := range down {
				names = append(names, d.Name)
				if d.Refused {
					refused |= 1 << i
				}
			}
			if err := a.gossip.SetMeta(func(m *gossip.Meta) { m.Unreachable, m.Refused = names, refused }); err != nil {
				a.log.Warn("gossip_meta_update_failed", "err", err)
			}
			a.log.Info("peers_unreachable_changed", "peers", names, "refused", refused)
		}
	}
}

// maxGossipReason and maxGossipUnreachable keep the health summary and the
// unreachable peers inside memberlist's 512-byte node metadata (with node
// names of up to 12 bytes; longer names need the list moved to gossip
// messages, a known limit).
const (
	maxGossipReason      = 90
	maxGossipUnreachable = 10
)

func mountErr(r fsprobe.Result) error {
	if r.OK() {
		return nil
	}
	return fmt.Errorf("%s: %s", r.Class, r.Err)
}

// A slow mount warns; anything else that is not ok is critical.
func mountSeverity(c fsprobe.Class) health.Severity {
	if c == fsprobe.ClassSlow {
		return health.SeverityWarning
	}
	return health.SeverityCritical
}

// A missing, hung or disconnected mount is critical at once (DESIGN.md,
// invariant 7); other failures wait for the fall count.
func mountImmediate(c fsprobe.Class) bool {
	return c == fsprobe.ClassHung || c == fsprobe.ClassNotMounted || c == fsprobe.ClassDisconnected
}

// urgePeers makes this node probe a peer at once, and at the fast
// interval, when gossip starts to suspect it or declares it dead, when
// another peer starts to report that it cannot reach it, and when the
// peer stops answering this node's lease pings: every observer then
// confirms a silent node in about the time the first one did, and a
// quorum forms fast (DESIGN.md, invariant 3). memberlist's suspicion and
// the lease's silence are no events, so they are read every urgeTick.
func (a *Agent) urgePeers(ctx context.Context) {
	changed := a.gossip.Subscribe()
	t := time.NewTicker(urgeTick)
	defer t.Stop()
	urged := map[string]bool{}
	for {
		now := time.Now()
		suspects := suspected(a.cfg.Node.Name, a.gossip.Members(), func(peer string) bool {
			return now.Sub(a.lease.LastContact(peer)) > a.lease.TTL()
		})
		for n := range suspects {
			if !urged[n] {
				a.peers.Urge(n)
			}
		}
		urged = suspects
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
	}
}

// suspected are the members other than self that someone has reason to
// think down: gossip suspects them or declares them dead, a member
// reports it cannot reach them, or (silent) they stopped answering this
// node's lease pings. Members that left are nobody's concern.
func suspected(self string, members []gossip.Member, silent func(string) bool) map[string]bool {
	out := map[string]bool{}
	for _, m := range members {
		if m.Name == self || m.State == gossip.StateLeft {
			continue
		}
		if m.State == gossip.StateSuspect || m.State == gossip.StateDead || silent(m.Name) {
			out[m.Name] = true
		}
		for _, x := range m.Meta.Unreachable {
			if x != self {
				out[x] = true
			}
		}
	}
	return out
}

// urgeTick is how often urgePeers reads memberlist's view.
const urgeTick = 100 * time.Millisecond

// peerTargets are the peers that ask to be probed and have not left:
// dead ones too, so that a dead host's unreachable Dovecot is reported
// and the cluster can fail it over (DESIGN.md, invariant 3c).
func (a *Agent) peerTargets() []health.PeerTarget {
	var out []health.PeerTarget
	for _, m := range a.gossip.Members() {
		if m.Name != a.cfg.Node.Name && m.Meta.PeerAddr != "" && m.State != gossip.StateLeft {
			out = append(out, health.PeerTarget{Name: m.Name, Addr: m.Meta.PeerAddr})
		}
	}
	return out
}

// probeSource is the IP peers are probed from: this node's gossip address.
func probeSource(gossipAddr string) string {
	host, _, err := net.SplitHostPort(gossipAddr)
	if err != nil {
		return ""
	}
	return host
}
