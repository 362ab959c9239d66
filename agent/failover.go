package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/roost-mail/roost/dovecot"
	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/gossip"
	"github.com/roost-mail/roost/placement"
	"github.com/roost-mail/roost/routing"
)

// doveadmPath is the doveadm HTTP API's fixed path; gossip carries only
// scheme://host:port.
const doveadmPath = "/doveadm/v1"

// routingDB is the users table as failover uses it. It connects in the
// background and keeps trying, so a database that is down when roostd
// starts delays failover, not the agent.
type routingDB struct {
	mu sync.Mutex
	s  *routing.Store
}

var errRoutingNotOpen = errors.New("the routing database is not connected yet")

func (r *routingDB) store() (*routing.Store, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s == nil {
		return nil, errRoutingNotOpen
	}
	return r.s, nil
}

// hostsOf is the users' proxy_hosts, for the sweep; none while the
// database is not open.
func (r *routingDB) hostsOf(ctx context.Context, users []string) (map[string]string, error) {
	s, err := r.store()
	if err != nil {
		return nil, nil
	}
	return s.HostsOf(ctx, users)
}

// run connects (retrying with backoff), then holds the store until ctx
// ends.
func (r *routingDB) run(ctx context.Context, cfg routing.Config, log *slog.Logger) {
	wait := time.Second
	for {
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s, err := routing.Open(octx, cfg)
		cancel()
		if err == nil {
			r.mu.Lock()
			r.s = s
			r.mu.Unlock()
			log.Info("routing_connected", "driver", cfg.Driver, "table", cfg.Table)
			break
		}
		log.Warn("routing_connect_failed", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
	<-ctx.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.Close()
	r.s = nil
}

func (r *routingDB) UsersOn(ctx context.Context, host string, fn func(string) error) error {
	s, err := r.store()
	if err != nil {
		return err
	}
	return s.UsersOn(ctx, host, fn)
}

func (r *routingDB) HomedOn(ctx context.Context, host string, fn func(user, now string) error) error {
	s, err := r.store()
	if err != nil {
		return err
	}
	return s.HomedOn(ctx, host, fn)
}

func (r *routingDB) Counts(ctx context.Context) (map[string]int, error) {
	s, err := r.store()
	if err != nil {
		return nil, err
	}
	return s.Counts(ctx)
}

func (r *routingDB) Lookup(ctx context.Context, user string) (string, error) {
	s, err := r.store()
	if err != nil {
		return "", err
	}
	h, err := s.Lookup(ctx, user)
	if errors.Is(err, routing.ErrNoUser) {
		err = fmt.Errorf("%w: %w", failover.ErrNoSuchUser, err)
	}
	return h, err
}

func (r *routingDB) MoveBatch(ctx context.Context, f placement.Fence, plan, reason string, ms []placement.Move) (int, error) {
	s, err := r.store()
	if err != nil {
		return 0, err
	}
	return s.MoveBatch(ctx, f, plan, reason, ms)
}

// kicker ends moved users' sessions through the doveadm HTTP APIs the
// nodes gossip: kick on the node they left, an auth cache flush and
// (unless the plan drops every proxy's sessions to that host) a proxy
// kick on every alive node. A Dovecot 2.4 node's auth cache is flushed
// by its own agent, asked over the cluster port (flushRemote).
type kicker struct {
	cfg         dovecot.Config
	members     func() []gossip.Member
	flushRemote func(ctx context.Context, raftAddr string, users []string) (int, error)
	log         *slog.Logger
	mu          sync.Mutex
	clients     map[string]*dovecot.HTTP
}

func (k *kicker) client(base string) (*dovecot.HTTP, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c, ok := k.clients[base]; ok {
		return c, nil
	}
	cfg := k.cfg
	cfg.URL = base + doveadmPath
	c, err := dovecot.NewHTTP(cfg)
	if err != nil {
		return nil, err
	}
	k.clients[base] = c
	return c, nil
}

// Moved runs on every node at once, so one slow node delays no other.
// Each node's auth cache is flushed before the kicks (a kicked client
// logs in again at once, and must not find its old node cached) and again
// reflushAfter later, in the background.
func (k *kicker) Moved(ctx context.Context, from string, users []string, proxies bool) error {
	fromHost := ""
	for _, m := range k.members() {
		if m.Name == from {
			fromHost = m.Meta.ProxyHost
		}
	}
	if odd := countFunc(users, func(u string) bool { return !dovecot.ByHTTPKick(u) }); odd > 0 {
		k.log.Info("kick_left_to_sweep", "node", from, "users", odd,
			"why", "doveadm's kick would read the name as a mask, or JSON cannot carry it: the node's sweep ends those sessions by signal")
	}
	err := k.onEach(func(m gossip.Member, c *dovecot.HTTP) error {
		var errs []error
		if err := k.flush(ctx, m, c, users); err != nil {
			errs = append(errs, err)
		}
		if m.Name == from {
			if _, err := c.Kick(ctx, users); err != nil {
				errs = append(errs, fmt.Errorf("kick on %s: %w", m.Name, err))
			}
		}
		if proxies {
			if _, err := c.ProxyKick(ctx, users, fromHost); err != nil {
				errs = append(errs, fmt.Errorf("proxy kick on %s: %w", m.Name, err))
			}
		}
		return errors.Join(errs...)
	})
	time.AfterFunc(reflushAfter, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := k.onEach(func(m gossip.Member, c *dovecot.HTTP) error { return k.flush(ctx, m, c, users) }); err != nil {
			k.log.Warn("auth_cache_reflush_failed", "users", len(users), "err", err)
		}
	})
	return err
}

func countFunc(xs []string, f func(string) bool) int {
	n := 0
	for _, x := range xs {
		if f(x) {
			n++
		}
	}
	return n
}

// reflushAfter: a passdb lookup that began before a move can store the
// old node in a node's auth cache just after the flush, where it would
// stay for auth_cache_ttl; a second flush this much later drops it (the
// lookup takes milliseconds).
const reflushAfter = time.Second

// flush drops users from m's auth cache: over the doveadm HTTP API, or on
// Dovecot 2.4, which cannot do that, by m's own agent over the cluster
// port.
func (k *kicker) flush(ctx context.Context, m gossip.Member, c *dovecot.HTTP, users []string) error {
	_, err := c.FlushAuthCache(ctx, users)
	if errors.Is(err, dovecot.ErrNoHTTPAuthCacheFlush) {
		_, err = k.flushRemote(ctx, m.Meta.Raft, users)
	}
	if err != nil {
		return fmt.Errorf("auth cache flush on %s: %w", m.Name, err)
	}
	return nil
}

// onEach runs fn for every alive node that gossips a doveadm API, all at
// once.
func (k *kicker) onEach(fn func(gossip.Member, *dovecot.HTTP) error) error {
	var mu sync.Mutex
	var errs []error
	fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	var wg sync.WaitGroup
	for _, m := range k.members() {
		if m.State != gossip.StateAlive || m.Meta.Doveadm == "" {
			continue
		}
		c, err := k.client(m.Meta.Doveadm)
		if err != nil {
			fail(err)
			continue
		}
		wg.Go(func() {
			if err := fn(m, c); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// HostDown drops, on every other alive node, the sessions it proxies to
// host.
func (k *kicker) HostDown(ctx context.Context, node, host string) error {
	return k.onEach(func(m gossip.Member, c *dovecot.HTTP) error {
		if m.Name == node {
			return nil
		}
		if _, err := c.ProxyKickHost(ctx, host); err != nil {
			return fmt.Errorf("proxy kick of host %s on %s: %w", host, m.Name, err)
		}
		return nil
	})
}

// view is the cluster as this agent's gossip shows it, for the leader.
func (a *Agent) view() []failover.NodeView {
	return nodeViews(a.cfg.Node.Name, a.gossip.Members(), a.lease.LastContact, a.lease.Expiry, time.Now())
}

// nodeViews is the cluster as self sees members at now, lastContact
// being when self last heard from a member over the lease, and expiry
// when a member silent since then has surely fenced itself.
func nodeViews(self string, members []gossip.Member, lastContact func(string) time.Time, expiry func(time.Time) time.Time, now time.Time) []failover.NodeView {
	out := make([]failover.NodeView, 0, len(members))
	for _, m := range members {
		v := failover.NodeView{
			Name: m.Name, ProxyHost: m.Meta.ProxyHost, Mail: m.Meta.Role == RoleMail, Weight: m.Meta.Weight, MaxUsers: m.Meta.MaxUsers, Gossip: string(m.State),
			Health: m.Meta.Health, Reason: m.Meta.HealthReason, FSTrouble: m.Meta.FS,
		}
		for _, p := range members {
			if i := slices.Index(p.Meta.Unreachable, m.Name); p.Name != m.Name && p.State == gossip.StateAlive && i >= 0 {
				v.UnreachableBy = append(v.UnreachableBy, p.Name)
				if i < 16 && p.Meta.Refused&(1<<i) != 0 {
					v.RefusedBy = append(v.RefusedBy, p.Name)
				}
			}
		}
		// The leader is in touch with itself: peers that cannot reach its
		// Dovecot while it passes its own checks are disputed, as for any
		// node in touch.
		v.LastContact = now
		if m.Name != self {
			v.LastContact = lastContact(m.Name)
		}
		v.LeaseExpiry = expiry(v.LastContact)
		out = append(out, v)
	}
	return out
}

// FailoverState is the replicated failover state as this node has it.
func (a *Agent) FailoverState() failover.State { return a.cluster.State() }

// doveadmBase is dovecot.url without its fixed path, as gossip carries it.
func doveadmBase(url string) string { return strings.TrimSuffix(url, doveadmPath) }

// reapOrphans ends, every second while this node's users are moved away
// (failed, draining or in maintenance), the mail processes its Dovecot
// master left behind when it died: they would serve on, for about ten
// seconds, mailboxes that another node now serves (DESIGN.md, invariant
// 8). While the node is active it ends nothing, so a restart with
// shutdown_clients = no keeps its sessions.
func (a *Agent) reapOrphans(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		switch a.cluster.State().Node(a.cfg.Node.Name).State {
		case failover.Failed, failover.Draining, failover.Maintenance:
		default:
			continue
		}
		pids, err := dovecot.EndOrphans(a.cfg.Dovecot.InstanceName)
		if len(pids) > 0 || err != nil {
			a.log.Warn("orphans_ended", "instance", a.cfg.Dovecot.InstanceName, "pids", pids, "err", err)
		}
	}
}
