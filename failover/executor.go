package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/roost-mail/roost/placement"
)

// Router is the routing database as plans use it; the agent adapts
// routing.Store. MoveBatch must fail with an error that wraps placement.ErrFenced
// when a newer term has written.
type Router interface {
	UsersOn(ctx context.Context, host string, fn func(user string) error) error
	HomedOn(ctx context.Context, host string, fn func(user, now string) error) error
	Lookup(ctx context.Context, user string) (string, error)
	// Counts is how many users each host has.
	Counts(ctx context.Context) (map[string]int, error)
	MoveBatch(ctx context.Context, f placement.Fence, plan, reason string, moves []placement.Move) (int, error)
}

// Kicker ends the sessions of users who moved off a node: a kick on that
// node's Dovecot, an auth cache flush and, with proxies, a proxy kick by
// user name on every proxy.
type Kicker interface {
	// Moved kicks users off from. proxies is false when the plan drops
	// every session proxied to from's host anyway (HostDown): a proxy kick
	// by name would also end a new login already proxied to the user's new
	// node.
	Moved(ctx context.Context, from string, users []string, proxies bool) error
	// HostDown ends every session any proxy holds towards a failed node's
	// host: sessions proxied to a hung backend would otherwise stay open
	// for ever.
	HostDown(ctx context.Context, node, host string) error
}

// Executor carries out plans on the leader: batch by batch, routing then
// kicks, each batch recorded in the raft log, so a new leader resumes a
// half-done plan where the last recorded batch ended. Every step is
// harmless to repeat: a user already moved is not on the source any more.
type Executor struct {
	Router Router
	Kicker Kicker
	// Choose picks a user's target (weighted rendezvous hashing).
	Choose func(user string, targets []placement.Target) (placement.Target, bool)
	// BatchSize is the users per routing transaction.
	BatchSize int
	// RetryMin and RetryMax bound the backoff while the database fails.
	RetryMin, RetryMax time.Duration
	Log                *slog.Logger
	// Hooks, if set, are the operator's scripts around plans.
	Hooks Hooks

	kickOnce sync.Once
	kicks    chan struct{}
	kickMu   sync.Mutex
	kicking  map[string]*sync.WaitGroup // plan → its kicks in flight
	// moving is held (shared) by a move plan from its check of the
	// target's state until its user has moved, and (alone) by a drain or
	// failover for its last listing: a user moved to a node as it starts
	// draining is on the node when the drain looks last.
	moving  sync.RWMutex
	metrics *metrics // set by Cluster.Lead; nil in tests
}

// maxKicks bounds the batches whose kicks run at once: kicks run beside
// the next batches (the routing is committed already), so a hung node's
// doveadm API slows a plan only once this many wait on it.
const maxKicks = 4

// kick ends the moved users' sessions in the background. Best effort: a
// kick that fails is logged, and the node's own sweep ends what it left.
func (e *Executor) kick(ctx context.Context, plan, from string, users []string, proxies bool) {
	e.background(ctx, plan, func(ctx context.Context) error {
		err := e.Kicker.Moved(ctx, from, users, proxies)
		e.metrics.kick("users", err)
		if err != nil {
			e.Log.Warn("plan_kick_failed", "plan", plan, "from", from, "users", len(users), "err", err)
		}
		return nil
	})
}

// hostDown drops the proxies' sessions towards a failed node, in the
// background.
func (e *Executor) hostDown(ctx context.Context, p Plan, host string) {
	e.background(ctx, p.ID, func(ctx context.Context) error {
		err := e.Kicker.HostDown(ctx, p.Node, host)
		e.metrics.kick("host", err)
		if err != nil {
			e.Log.Warn("plan_host_kick_failed", "plan", p.ID, "node", p.Node, "host", host, "err", err)
		}
		return nil
	})
}

// background runs fn beside the plan, at most maxKicks at once.
func (e *Executor) background(ctx context.Context, plan string, fn func(context.Context) error) {
	e.kickOnce.Do(func() { e.kicks = make(chan struct{}, maxKicks) })
	select {
	case e.kicks <- struct{}{}:
	case <-ctx.Done():
		return
	}
	wg := e.kicksOf(plan)
	wg.Add(1)
	go func() {
		defer func() { <-e.kicks; wg.Done() }()
		_ = fn(ctx)
	}()
}

// kicksOf is plan's kicks in flight: each plan waits for its own only,
// and only its own run adds to them.
func (e *Executor) kicksOf(plan string) *sync.WaitGroup {
	e.kickMu.Lock()
	defer e.kickMu.Unlock()
	if e.kicking == nil {
		e.kicking = map[string]*sync.WaitGroup{}
	}
	wg := e.kicking[plan]
	if wg == nil {
		wg = &sync.WaitGroup{}
		e.kicking[plan] = wg
	}
	return wg
}

// endKicks waits for plan's kicks and forgets them.
func (e *Executor) endKicks(plan string) {
	e.kicksOf(plan).Wait()
	e.kickMu.Lock()
	delete(e.kicking, plan)
	e.kickMu.Unlock()
}

// leaderOps is what a plan's run needs from the raft leader.
type leaderOps struct {
	fence placement.Fence
	state func() State
	view  func() []NodeView
	apply func(command) error
	now   func() time.Time
}

// errNoTarget: no healthy node can take the users yet; retried.
var errNoTarget = errors.New("no healthy node to move users to")

// errFull ends a listing when no target has room left.
var errFull = errors.New("no room")

// roomError: every target holds node.max_users; the plan stops, and
// its users stay where they are.
type roomError struct{ msg string }

func (e *roomError) Error() string { return e.msg }

// noRoom says how full the targets are.
func noRoom(targets []placement.Target, room map[string]int) error {
	var full []string
	for _, t := range targets {
		full = append(full, fmt.Sprintf("%s holds %d of %d", t.Node, t.Max-room[t.Node], t.Max))
	}
	return &roomError{"no room: every node that could take users is at its node.max_users (" + strings.Join(full, ", ") + ")"}
}

// roomOf is how many more users each target may take: node.max_users
// less the users it has, or room for everyone where there is no bound.
func (e *Executor) roomOf(ctx context.Context, targets []placement.Target) (map[string]int, error) {
	room := map[string]int{}
	var counts map[string]int
	for _, t := range targets {
		room[t.Node] = math.MaxInt
		if t.Max == 0 {
			continue
		}
		if counts == nil {
			var err error
			if counts, err = e.Router.Counts(ctx); err != nil {
				return nil, err
			}
		}
		room[t.Node] = max(t.Max-counts[t.Host], 0)
	}
	return room, nil
}

// run carries out one plan until it ends, this node stops leading (ctx),
// or the database fences it.
func (e *Executor) run(ctx context.Context, id string, l leaderOps) error {
	defer e.endKicks(id)
	if p, ok := l.state().Plans[id]; ok && p.Status == PlanRunning && p.DryRun {
		return e.dryRun(ctx, p, l)
	}
	if vetoed, err := e.preMove(ctx, id, l); vetoed || err != nil {
		return err
	}
	backoff := e.RetryMin
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, ok := l.state().Plans[id]
		if !ok || p.Status != PlanRunning {
			return nil
		}
		start := l.now()
		n, err := e.step(ctx, p, l)
		var full *roomError
		switch {
		case errors.Is(err, placement.ErrFenced):
			e.Log.Warn("plan_fenced", "plan", id, "err", err)
			return err
		case errors.As(err, &full):
			return e.stopFull(ctx, p, l, full)
		case err != nil:
			e.Log.Warn("plan_batch_failed", "plan", id, "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			backoff = min(2*backoff, e.RetryMax)
			continue
		case n < 0:
			return nil // done
		}
		backoff = e.RetryMin
		if p.Rate > 0 {
			// Keep to the plan's users per second.
			if wait := time.Duration(float64(n)/float64(p.Rate)*float64(time.Second)) - l.now().Sub(start); wait > 0 && !sleep(ctx, wait) {
				return ctx.Err()
			}
		}
	}
}

// stopFull ends a plan that found no room for the users it has left
// (node.max_users): they stay where they are, and the plan says how
// many, and what moves them once there is room.
func (e *Executor) stopFull(ctx context.Context, p Plan, l leaderOps, full *roomError) error {
	left := 0
	if counts, err := e.Router.Counts(ctx); err == nil {
		left = counts[planHosts(l.view(), p)[p.Node]]
	}
	retry := "nodectl ack " + p.Node
	switch r := l.state().Node(p.Node); {
	case r.State == Maintenance:
		retry = "nodectl maintenance " + p.Node + " on"
	case r.State == Draining:
		retry = "nodectl drain " + p.Node
	}
	why := fmt.Sprintf("%s; %d users stay on %s (raise node.max_users or add a node, then %s)", full.msg, left, p.Node, retry)
	e.Log.Error("plan_no_room", "plan", p.ID, "kind", p.Kind, "node", p.Node, "stranded", left, "err", full.msg)
	if err := l.apply(command{Op: opPlanEnd, PlanID: p.ID, Status: PlanCanceled, Reason: why, Stranded: left, At: l.now()}); err != nil {
		return err
	}
	if e.Hooks != nil {
		e.Hooks.PostMove(ctx, l.state().Plans[p.ID])
	}
	return nil
}

// preMove asks the pre_move hook before a plan's first batch; a veto ends
// the plan and leaves its node where the next step is clear.
func (e *Executor) preMove(ctx context.Context, id string, l leaderOps) (vetoed bool, err error) {
	p, ok := l.state().Plans[id]
	if !ok || p.Status != PlanRunning || p.Batches != 0 || e.Hooks == nil {
		return false, nil
	}
	veto := e.Hooks.PreMove(ctx, p)
	if veto == nil {
		return false, nil
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	e.Log.Warn("plan_vetoed", "plan", id, "err", veto)
	why := "vetoed by the pre_move hook: " + veto.Error()
	cmds := []command{{Op: opPlanEnd, PlanID: id, Status: PlanCanceled, Reason: why, At: l.now()}}
	// The node is left where the next step is clear, saying why nobody
	// moved and what retries.
	switch r := l.state().Node(p.Node); {
	case !p.Kind.ownsNode(): // a move or rebalance owns no node
	case r.State == Draining || r.State == Maintenance:
		// As the operator (or alert) asked.
		cmds = append(cmds, command{Op: opSetNode, Node: p.Node, State: r.State, Reason: why + "; nodectl drain retries", Holds: r.Holds, At: l.now()})
	case r.State == Failed:
		// Its users stay on it, and its LB signal stays down.
		cmds = append(cmds, command{Op: opSetNode, Node: p.Node, State: Failed, Reason: why + "; nodectl ack " + p.Node + " retries", At: l.now()})
	case r.State == Recovering:
		// Its users stay away; the next failback retries.
		cmds = append(cmds, command{Op: opSetNode, Node: p.Node, State: Failed, Reason: "failback " + why + "; nodectl failback " + p.Node + " retries", At: l.now()})
	}
	if err := l.apply(batch(cmds)); err != nil {
		return false, err
	}
	e.Hooks.PostMove(ctx, l.state().Plans[id])
	return true, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// step moves one batch of plan p and records it; it returns how many
// users it moved, or -1 when the plan is done (and recorded so).
func (e *Executor) step(ctx context.Context, p Plan, l leaderOps) (int, error) {
	view := l.view()
	hosts := planHosts(view, p)
	if p.Kind == PlanFailover && p.Batches == 0 && hosts[p.Node] != "" {
		e.hostDown(ctx, p, hosts[p.Node]) // at once: a hung backend's sessions wait on nothing
	}
	if p.Kind == PlanRebalance {
		// As a move: its targets are active when its batch is written.
		e.moving.RLock()
		defer e.moving.RUnlock()
	}
	if p.Kind == PlanMove && p.Moved == 0 {
		e.moving.RLock()
		defer e.moving.RUnlock()
		if r := l.state().Node(p.To); r.State != Active {
			return -1, e.cancel(ctx, p, l, fmt.Sprintf("%s is %s now: %s stays where it is", p.To, r.State, p.User))
		} else if r.Cordoned {
			return -1, e.cancel(ctx, p, l, fmt.Sprintf("%s is cordoned now: %s stays where it is", p.To, p.User))
		}
	}
	moves, err := e.nextBatch(ctx, p, view, l.state(), hosts)
	if err == nil && len(moves) == 0 && (p.Kind == PlanDrain || p.Kind == PlanFailover) {
		e.moving.Lock()
		moves, err = e.nextBatch(ctx, p, view, l.state(), hosts)
		e.moving.Unlock()
	}
	if err != nil {
		return 0, err
	}
	if len(moves) == 0 {
		if p.Kind == PlanFailover && hosts[p.Node] != "" {
			e.hostDown(ctx, p, hosts[p.Node]) // and the sessions opened meanwhile
		}
		if p.Kind != PlanFailover {
			// Done means the moved users' old sessions have ended too: a
			// proxy kick by name also ends a login made meanwhile, so a
			// failback's node turns active only once no kick is left. A
			// failover does not wait: its kicks may wait on the failed
			// node's doveadm API for the full timeout.
			e.kicksOf(p.ID).Wait()
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		cmds := []command{{Op: opPlanEnd, PlanID: p.ID, Status: PlanDone, At: l.now()}}
		if p.Kind == PlanFailback {
			cmds = append(cmds, command{Op: opSetNode, Node: p.Node, State: Active, Reason: "users back home", At: l.now()})
		}
		// One entry: a failback never ends with its node left recovering.
		if err := l.apply(batch(cmds)); err != nil {
			return 0, err
		}
		e.Log.Info("plan_done", "plan", p.ID, "kind", p.Kind, "node", p.Node, "moved", p.Moved)
		if e.Hooks != nil {
			e.Hooks.PostMove(ctx, l.state().Plans[p.ID])
		}
		return -1, nil
	}
	start := time.Now()
	moved, err := e.Router.MoveBatch(ctx, l.fence, p.ID, p.Reason, moves)
	e.metrics.observeBatch(start, err)
	if err != nil {
		return 0, err
	}
	if e.metrics != nil {
		e.metrics.moved.WithLabelValues(string(p.Kind)).Add(float64(moved))
	}
	if moved == 0 {
		// Listed on the source yet not movable: retry with backoff rather
		// than spin.
		return 0, fmt.Errorf("a batch of %d users moved nobody (first %q from %s)", len(moves), moves[0].User, moves[0].From)
	}
	bySource := map[string][]string{}
	for _, m := range moves {
		bySource[m.From] = append(bySource[m.From], m.User)
	}
	// A failover drops the proxies' sessions towards the host by host.
	proxies := p.Kind != PlanFailover || hosts[p.Node] == ""
	for from, users := range bySource {
		e.kick(ctx, p.ID, nodeOf(hosts, from), users, proxies)
	}
	if err := l.apply(command{Op: opPlanBatch, PlanID: p.ID, Moved: moved}); err != nil {
		return 0, err
	}
	return moved, nil
}

// planHosts maps each node in view to its proxy_host, and p's node to the
// host p remembers: a dead node drops out of gossip after a while.
func planHosts(view []NodeView, p Plan) map[string]string {
	hosts := map[string]string{}
	for _, n := range view {
		hosts[n.Name] = n.ProxyHost
	}
	if p.Host != "" {
		hosts[p.Node] = p.Host
	}
	return hosts
}

// dryRun carries out a dry-run plan: it counts the users the plan would
// move, and where to, and ends it saying so; it writes nothing to the
// users table, kicks nobody and runs no hook. A dry-run failback after a
// dry-run failover leaves its node active when none of its users is away
// (the usual case), and failed, saying so, when some are.
func (e *Executor) dryRun(ctx context.Context, p Plan, l leaderOps) error {
	view, st := l.view(), l.state()
	host := planHosts(view, p)[p.Node]
	would, to := 0, map[string]int{}
	var err error
	switch p.Kind {
	case PlanFailover, PlanDrain:
		to, would, err = e.spread(ctx, host, e.targets(view, st, p.Node))
		delete(to, "") // no target now
	case PlanFailback:
		err = e.Router.HomedOn(ctx, host, func(u, now string) error {
			would++
			to[p.Node]++
			return nil
		})
	}
	if err != nil {
		return err // the leader's next round runs it again
	}
	now := l.now()
	cmds := []command{{Op: opPlanEnd, PlanID: p.ID, Status: PlanDone, Would: would, At: now}}
	if r := st.Node(p.Node); p.Kind == PlanFailback && r.State == Recovering && r.DryRun {
		if would == 0 {
			cmds = append(cmds, command{Op: opSetNode, Node: p.Node, State: Active, Reason: "healthy again (its failover and failback were dry runs)", At: now})
		} else {
			// Some of its users really are away (moved before it failed in
			// the dry run): it stays failed until they come home.
			cmds = append(cmds, command{Op: opSetNode, Node: p.Node, State: Failed, At: now,
				Reason: fmt.Sprintf("failback dry run: %d of its users are on other nodes and would come home (nodectl failback %s moves them)", would, p.Node)})
		}
	}
	if err := l.apply(batch(cmds)); err != nil {
		return err
	}
	e.Log.Warn("plan_dry_run", "plan", p.ID, "kind", p.Kind, "node", p.Node, "would_move", would, "to", describeCounts(to), "reason", p.Reason)
	if e.metrics != nil {
		e.metrics.dryRun.WithLabelValues(string(p.Kind)).Inc()
		e.metrics.wouldMove.WithLabelValues(string(p.Kind)).Add(float64(would))
	}
	return nil
}

// cancel ends a plan that can no longer do what it was asked, saying why.
func (e *Executor) cancel(ctx context.Context, p Plan, l leaderOps, why string) error {
	if err := l.apply(command{Op: opPlanEnd, PlanID: p.ID, Status: PlanCanceled, Reason: why, At: l.now()}); err != nil {
		return err
	}
	e.Log.Warn("plan_canceled", "plan", p.ID, "kind", p.Kind, "user", p.User, "reason", why)
	if e.Hooks != nil {
		e.Hooks.PostMove(ctx, l.state().Plans[p.ID])
	}
	return nil
}

func nodeOf(hosts map[string]string, host string) string {
	for n, h := range hosts {
		if h == host {
			return n
		}
	}
	return host
}

// errStop ends a listing early once a batch is full.
var errStop = errors.New("batch full")

// nextBatch lists the plan's next users and where each goes.
func (e *Executor) nextBatch(ctx context.Context, p Plan, view []NodeView, s State, hosts map[string]string) ([]placement.Move, error) {
	var moves []placement.Move
	size := e.BatchSize
	if p.Rate > 0 && p.Rate < size {
		size = p.Rate // a second's worth: a rate-limited plan moves smoothly
	}
	// add takes a move until the batch is full, then stops the listing.
	add := func(m placement.Move) error {
		moves = append(moves, m)
		if len(moves) == size {
			return errStop
		}
		return nil
	}
	node := hosts[p.Node]
	if node == "" && p.Kind.ownsNode() {
		return nil, fmt.Errorf("node %s has no proxy_host in the cluster's view", p.Node)
	}
	var err error
	switch p.Kind {
	case PlanFailover, PlanDrain:
		targets := e.targets(view, s, p.Node)
		if len(targets) == 0 {
			return nil, errNoTarget
		}
		var room map[string]int
		if room, err = e.roomOf(ctx, targets); err != nil {
			return nil, err
		}
		open := withRoom(targets, room)
		err = e.Router.UsersOn(ctx, node, func(u string) error {
			if len(open) == 0 {
				return errFull // a user is left, and no room
			}
			t, _ := e.Choose(u, open)
			if room[t.Node]--; room[t.Node] == 0 {
				open = withRoom(open, room)
			}
			return add(placement.Move{User: u, From: node, To: t.Host})
		})
		if errors.Is(err, errFull) && len(moves) == 0 {
			return nil, noRoom(targets, room)
		}
	case PlanFailback:
		err = e.Router.HomedOn(ctx, node, func(u, now string) error { return add(placement.Move{User: u, From: now, To: node}) })
	case PlanRebalance:
		if p.Max > 0 {
			size = min(size, p.Max-p.Moved)
		}
		if size > 0 {
			moves, err = e.rebalanceBatch(ctx, e.targets(view, s, ""), size)
		}
	case PlanMove:
		if p.Moved > 0 {
			return nil, nil
		}
		var name, from string
		if name, err = placement.ParseUser(p.User); err != nil {
			return nil, err
		}
		if from, err = e.Router.Lookup(ctx, name); err == nil {
			if to := hosts[p.To]; to != "" && from != to {
				moves = append(moves, placement.Move{User: name, From: from, To: to, Rehome: true})
			}
		}
	}
	if err != nil && !errors.Is(err, errStop) && !errors.Is(err, errFull) {
		return nil, err
	}
	return moves, nil
}

// targets are the mail nodes that may take users: alive, passing or only
// warning, active, not cordoned and not the source.
func (e *Executor) targets(view []NodeView, s State, source string) []placement.Target {
	var out []placement.Target
	for _, n := range view {
		r := s.Node(n.Name)
		// A node that only warns (a slow doveadm API or mount) serves
		// mail and takes users: under an incident's load every node may
		// warn, and a failover with no target moves nobody.
		serving := n.Health == "passing" || n.Health == "warning"
		if n.Name == source || !n.Mail || n.Gossip != "alive" || !serving || n.ProxyHost == "" || r.State != Active || r.Cordoned {
			continue
		}
		w := n.Weight
		if w <= 0 {
			w = 1
		}
		out = append(out, placement.Target{Node: n.Name, Host: n.ProxyHost, Weight: w, Max: n.MaxUsers})
	}
	return out
}

func isFenced(err error) bool { return errors.Is(err, placement.ErrFenced) }
