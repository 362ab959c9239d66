package failover

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mail/roost/placement"
)

// memRouter is an in-memory users table with a fence, for the executor's
// logic; routing's own tests run the real databases.
type memRouter struct {
	mu      sync.Mutex
	hosts   map[string]string // user → host
	home    map[string]string // user → first host Roost moved them from
	moves   map[string]int    // user → times moved
	term    uint64
	failFor int // MoveBatch fails this many more times
	calls   int
}

func newMemRouter(users int, hosts ...string) *memRouter {
	r := &memRouter{hosts: map[string]string{}, home: map[string]string{}, moves: map[string]int{}}
	for i := range users {
		r.hosts[fmt.Sprintf("u%05d", i)] = hosts[i%len(hosts)]
	}
	return r
}

func (r *memRouter) sorted(keep func(u, h string) bool) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for u, h := range r.hosts {
		if keep(u, h) {
			out = append(out, u)
		}
	}
	sort.Strings(out)
	return out
}

func (r *memRouter) UsersOn(ctx context.Context, host string, fn func(string) error) error {
	for _, u := range r.sorted(func(_, h string) bool { return h == host }) {
		if err := fn(u); err != nil {
			return err
		}
	}
	return nil
}

func (r *memRouter) HomedOn(ctx context.Context, host string, fn func(u, now string) error) error {
	for _, u := range r.sorted(func(u, h string) bool { return r.home[u] == host && h != host }) {
		r.mu.Lock()
		now := r.hosts[u]
		r.mu.Unlock()
		if err := fn(u, now); err != nil {
			return err
		}
	}
	return nil
}

func (r *memRouter) Lookup(ctx context.Context, u string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hosts[u], nil
}

func (r *memRouter) MoveBatch(ctx context.Context, f placement.Fence, plan, reason string, ms []placement.Move) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.failFor > 0 {
		r.failFor--
		return 0, errors.New("connection refused")
	}
	if f.Term < r.term {
		return 0, fmt.Errorf("%w: stored term %d", placement.ErrFenced, r.term)
	}
	r.term = f.Term
	n := 0
	for _, m := range ms {
		if r.hosts[m.User] != m.From {
			continue
		}
		if _, ok := r.home[m.User]; !ok {
			r.home[m.User] = m.From
		}
		if m.Rehome {
			r.home[m.User] = m.To // an operator's move: the user lives there now
		}
		r.hosts[m.User] = m.To
		r.moves[m.User]++
		n++
	}
	return n, nil
}

type memKicker struct {
	mu     sync.Mutex
	kicked map[string][]string // node → users
	down   []string            // node@host, per HostDown
	// byName counts the kicks that also proxy-kicked by user name.
	byName, calls int
}

func (k *memKicker) HostDown(ctx context.Context, node, host string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.down = append(k.down, node+"@"+host)
	return nil
}

func (k *memKicker) Moved(ctx context.Context, from string, users []string, proxies bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.kicked == nil {
		k.kicked = map[string][]string{}
	}
	k.kicked[from] = append(k.kicked[from], users...)
	k.calls++
	if proxies {
		k.byName++
	}
	return nil
}

// memLeader is a raft leader's state without raft.
type memLeader struct {
	mu    sync.Mutex
	s     State
	view  []NodeView
	fence placement.Fence
}

func (m *memLeader) ops() leaderOps {
	return leaderOps{
		fence: m.fence,
		state: func() State { m.mu.Lock(); defer m.mu.Unlock(); return m.s.clone() },
		view:  func() []NodeView { m.mu.Lock(); defer m.mu.Unlock(); return append([]NodeView(nil), m.view...) },
		apply: func(c command) error { m.mu.Lock(); defer m.mu.Unlock(); return m.s.apply(c) },
		now:   time.Now,
	}
}

func (m *memLeader) start(t *testing.T, p Plan) string {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.s.apply(command{Op: opPlanStart, Plan: &p, At: t0}); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%06d-%s", m.s.PlanSeq, p.Kind)
}

func cluster3() []NodeView {
	v := healthy("a", "b", "c")
	for i := range v {
		v[i].ProxyHost = "10.0.0." + string(rune('1'+i))
	}
	return v
}

// hrw is a stand-in for routing.Choose: highest hash wins.
func hrw(user string, ts []placement.Target) (placement.Target, bool) {
	var best placement.Target
	var bestScore uint64
	for _, t := range ts {
		h := fnv.New64a()
		h.Write([]byte(t.Node + "\x00" + user))
		if s := h.Sum64(); s >= bestScore {
			best, bestScore = t, s
		}
	}
	return best, len(ts) > 0
}

func newExecutor(r Router, k Kicker) *Executor {
	return &Executor{Router: r, Kicker: k, Choose: hrw, BatchSize: 100, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestExecutorFailsOverEveryUserOnceAndRecordsBatches(t *testing.T) {
	r := newMemRouter(1000, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	k := &memKicker{}
	m := &memLeader{view: with(cluster3(), "b", critical("dovecot down", false)), fence: placement.Fence{Term: 3, Leader: "a"}}
	id := m.start(t, Plan{Kind: PlanFailover, Node: "b", Reason: "dovecot down"})
	if err := newExecutor(r, k).run(context.Background(), id, m.ops()); err != nil {
		t.Fatal(err)
	}
	if left := r.sorted(func(_, h string) bool { return h == "10.0.0.2" }); len(left) != 0 {
		t.Fatalf("%d users left on the failed node", len(left))
	}
	onA := len(r.sorted(func(u, h string) bool { return h == "10.0.0.1" && r.home[u] == "10.0.0.2" }))
	onC := len(r.sorted(func(u, h string) bool { return h == "10.0.0.3" && r.home[u] == "10.0.0.2" }))
	if onA+onC != 333 || onA == 0 || onC == 0 {
		t.Fatalf("moved to a %d, to c %d; want 333 spread over both", onA, onC)
	}
	for u, n := range r.moves {
		if n != 1 {
			t.Fatalf("%s moved %d times", u, n)
		}
	}
	p := m.s.Plans[id]
	if p.Status != PlanDone || p.Moved != 333 || p.Batches != 4 {
		t.Fatalf("plan %+v: want done, 333 moved in 4 batches", p)
	}
	if len(k.kicked["b"]) != 333 {
		t.Fatalf("kicked %d users on b", len(k.kicked["b"]))
	}
	// The proxies drop every session towards b: when the plan starts and
	// when it ends.
	if len(k.down) != 2 || k.down[0] != "b@10.0.0.2" || k.down[1] != "b@10.0.0.2" {
		t.Fatalf("host kicks %v, want b@10.0.0.2 twice", k.down)
	}
}

// A failed node that has dropped out of gossip: the plan knows its host.
func TestExecutorFailsOverANodeGossipForgot(t *testing.T) {
	r := newMemRouter(300, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	m := &memLeader{view: cluster3()[:1], fence: placement.Fence{Term: 1, Leader: "a"}}
	m.view = append(m.view, cluster3()[2])
	id := m.start(t, Plan{Kind: PlanFailover, Node: "b", Host: "10.0.0.2"})
	k := &memKicker{}
	e := newExecutor(r, k)
	if err := e.run(context.Background(), id, m.ops()); err != nil {
		t.Fatal(err)
	}
	if left := r.sorted(func(_, h string) bool { return h == "10.0.0.2" }); len(left) != 0 || m.s.Plans[id].Moved != 100 {
		t.Fatalf("%d left on b, plan %+v", len(left), m.s.Plans[id])
	}
	// The proxies' sessions to b's host were dropped by host, so no proxy
	// kick by name ends a new login already proxied to the new node.
	e.kicksOf(id).Wait()
	if len(k.down) == 0 || k.calls == 0 || k.byName != 0 {
		t.Fatalf("host kicks %v, %d user kicks of which %d by name on the proxies; want host kicks and none by name", k.down, k.calls, k.byName)
	}
}

// slowKicker takes a while over every kick and counts those in flight.
type slowKicker struct {
	memKicker
	inFlight atomic.Int32
}

func (k *slowKicker) Moved(ctx context.Context, from string, users []string, proxies bool) error {
	k.inFlight.Add(1)
	defer k.inFlight.Add(-1)
	time.Sleep(100 * time.Millisecond)
	return k.memKicker.Moved(ctx, from, users, proxies)
}

// A failback ends once its kicks have: a proxy kick by name still in flight
// would end a login made on the node that already counts as home again.
func TestExecutorFailbackEndsAfterItsKicks(t *testing.T) {
	r := newMemRouter(300, "10.0.0.1", "10.0.0.3")
	for u := range r.hosts {
		r.home[u] = "10.0.0.2"
	}
	m := &memLeader{view: cluster3(), fence: placement.Fence{Term: 2, Leader: "a"}}
	m.s.Nodes = map[string]NodeRecord{"b": {State: Recovering}}
	id := m.start(t, Plan{Kind: PlanFailback, Node: "b", Reason: "back"})
	k := &slowKicker{}
	ops := m.ops()
	var early []string
	apply := ops.apply
	ops.apply = func(c command) error {
		if n := k.inFlight.Load(); n > 0 && (c.Op == opPlanEnd || c.Op == opSetNode) {
			early = append(early, fmt.Sprintf("%s with %d kicks in flight", c.Op, n))
		}
		return apply(c)
	}
	if err := newExecutor(r, k).run(context.Background(), id, ops); err != nil {
		t.Fatal(err)
	}
	if p := m.s.Plans[id]; p.Status != PlanDone || p.Moved != 300 || k.calls == 0 {
		t.Fatalf("plan %+v after %d kicks: want done with 300 moved", p, k.calls)
	}
	if len(early) > 0 {
		t.Fatalf("recorded before the kicks ended: %v", early)
	}
}

// blockingKicker holds the kicks off one node until released.
type blockingKicker struct {
	memKicker
	node    string
	blocked chan struct{} // gets a value when such a kick starts
	release chan struct{}
}

func (k *blockingKicker) Moved(ctx context.Context, from string, users []string, proxies bool) error {
	if from == k.node {
		k.blocked <- struct{}{}
		<-k.release
	}
	return k.memKicker.Moved(ctx, from, users, proxies)
}

// Each plan has its own lifetime: a plan ends without waiting for the
// kicks of another plan running beside it.
func TestExecutorPlansWaitOnlyForTheirOwnKicks(t *testing.T) {
	r := newMemRouter(60, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	m := &memLeader{view: cluster3(), fence: placement.Fence{Term: 1, Leader: "c"}}
	ida := m.start(t, Plan{Kind: PlanDrain, Node: "a", Reason: "disk swap"})
	idb := m.start(t, Plan{Kind: PlanDrain, Node: "b", Reason: "kernel update"})
	k := &blockingKicker{node: "a", blocked: make(chan struct{}, 100), release: make(chan struct{})}
	e := newExecutor(r, k)
	doneA := make(chan error, 1)
	go func() { doneA <- e.run(context.Background(), ida, m.ops()) }()
	<-k.blocked // a's first kick hangs
	doneB := make(chan error, 1)
	go func() { doneB <- e.run(context.Background(), idb, m.ops()) }()
	select {
	case err := <-doneB:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		close(k.release)
		t.Fatal("b's drain waited for a's kicks")
	}
	m.mu.Lock()
	a, b := m.s.Plans[ida], m.s.Plans[idb]
	m.mu.Unlock()
	if b.Status != PlanDone || a.Status != PlanRunning {
		t.Fatalf("with a's kicks hanging: a %s, b %s; want a running, b done", a.Status, b.Status)
	}
	close(k.release)
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	if p := m.s.Plans[ida]; p.Status != PlanDone {
		t.Fatalf("a's drain %s once its kicks ended", p.Status)
	}
}

// A new leader resumes a half-done plan from the state it inherits.
func TestExecutorResumesAHalfDonePlan(t *testing.T) {
	r := newMemRouter(1000, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	old := &memLeader{view: cluster3(), fence: placement.Fence{Term: 3, Leader: "a"}}
	id := old.start(t, Plan{Kind: PlanDrain, Node: "b", Reason: "maintenance"})
	k := &memKicker{}
	e := newExecutor(r, k)
	for range 2 { // two batches, then the old leader dies
		if _, err := e.step(context.Background(), old.s.Plans[id], old.ops()); err != nil {
			t.Fatal(err)
		}
	}
	heir := &memLeader{s: old.s.clone(), view: cluster3(), fence: placement.Fence{Term: 4, Leader: "c"}}
	if err := e.run(context.Background(), id, heir.ops()); err != nil {
		t.Fatal(err)
	}
	p := heir.s.Plans[id]
	if p.Status != PlanDone || p.Moved != 333 || p.Batches != 4 {
		t.Fatalf("plan %+v: want done with 333 moved over 4 batches in all", p)
	}
	e.kicksOf(id).Wait()
	if len(k.down) != 0 || k.byName == 0 || k.byName != k.calls {
		t.Fatalf("a drain dropped the proxies' sessions towards b (%v), or kicked %d of %d batches by name on the proxies", k.down, k.byName, k.calls)
	}
	for u, n := range r.moves {
		if n != 1 {
			t.Fatalf("%s moved %d times", u, n)
		}
	}
	// The deposed leader wakes up and tries again: the database fences it.
	old.s = heir.s.clone()
	old.s.Plans[id] = Plan{ID: id, Kind: PlanDrain, Node: "a", Status: PlanRunning}
	if err := e.run(context.Background(), id, old.ops()); !errors.Is(err, placement.ErrFenced) {
		t.Fatalf("a deposed leader's plan: %v, want placement.ErrFenced", err)
	}
}

func TestExecutorRetriesWhileTheDatabaseIsDown(t *testing.T) {
	r := newMemRouter(300, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	r.failFor = 3
	m := &memLeader{view: cluster3(), fence: placement.Fence{Term: 1, Leader: "a"}}
	id := m.start(t, Plan{Kind: PlanFailover, Node: "c"})
	if err := newExecutor(r, &memKicker{}).run(context.Background(), id, m.ops()); err != nil {
		t.Fatal(err)
	}
	if p := m.s.Plans[id]; p.Status != PlanDone || p.Moved != 100 || r.calls != 4 {
		t.Fatalf("plan %+v after %d calls; want done, 100 moved, 3 failures then one batch", p, r.calls)
	}
}

// A failover waits while no node can take users, and a node that only
// warns can.
func TestExecutorWaitsForATarget(t *testing.T) {
	r := newMemRouter(30, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	view := with(with(cluster3(), "a", critical("x", false)), "c", critical("y", false))
	m := &memLeader{view: view, fence: placement.Fence{Term: 1, Leader: "a"}}
	id := m.start(t, Plan{Kind: PlanFailover, Node: "b"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newExecutor(r, &memKicker{}).run(ctx, id, m.ops()) }()
	time.Sleep(100 * time.Millisecond)
	r.mu.Lock()
	calls := r.calls
	r.mu.Unlock()
	if calls != 0 {
		t.Fatalf("moved users with no healthy target")
	}
	m.mu.Lock()
	// A warning (say, a doveadm API slow under the incident's load) is
	// no reason to keep users on a failed node.
	m.view = with(m.view, "c", func(n *NodeView) { n.Health = "warning" })
	m.mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("the plan did not finish once c only warned")
	}
	cancel()
	if onC := len(r.sorted(func(_, h string) bool { return h == "10.0.0.3" })); onC != 20 {
		t.Fatalf("%d users on c, want its 10 and b's 10", onC)
	}
}

func TestExecutorFailbackBringsUsersHomeAtItsRate(t *testing.T) {
	r := newMemRouter(900, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	m := &memLeader{view: with(cluster3(), "b", critical("x", false)), fence: placement.Fence{Term: 1, Leader: "a"}}
	e := newExecutor(r, &memKicker{})
	id := m.start(t, Plan{Kind: PlanFailover, Node: "b"})
	if err := e.run(context.Background(), id, m.ops()); err != nil {
		t.Fatal(err)
	}
	m.view = cluster3()
	m.s.apply(command{Op: opSetNode, Node: "b", State: Recovering, At: t0})
	id = m.start(t, Plan{Kind: PlanFailback, Node: "b", Rate: 1000})
	start := time.Now()
	if err := e.run(context.Background(), id, m.ops()); err != nil {
		t.Fatal(err)
	}
	// 300 users at 1,000 a second, in batches of 100: at least 0.3 s.
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("failback of 300 users at 1000/s took %s", took)
	}
	if on := len(r.sorted(func(_, h string) bool { return h == "10.0.0.2" })); on != 300 {
		t.Fatalf("%d users back on b, want 300", on)
	}
	if st := m.s.Node("b").State; st != Active || m.s.Plans[id].Status != PlanDone {
		t.Fatalf("b is %s, plan %+v", st, m.s.Plans[id])
	}
}

// racingRouter holds one plan's MoveBatch until released and tells when a
// host is listed.
type racingRouter struct {
	*memRouter
	plan    string
	held    chan struct{}
	release chan struct{}
	host    string
	listed  chan struct{}
}

func (r *racingRouter) MoveBatch(ctx context.Context, f placement.Fence, plan, reason string, ms []placement.Move) (int, error) {
	if plan == r.plan {
		r.held <- struct{}{}
		<-r.release
	}
	return r.memRouter.MoveBatch(ctx, f, plan, reason, ms)
}

func (r *racingRouter) UsersOn(ctx context.Context, host string, fn func(string) error) error {
	err := r.memRouter.UsersOn(ctx, host, fn)
	if host == r.host {
		select {
		case r.listed <- struct{}{}:
		default:
		}
	}
	return err
}

// A user an operator moves to c while c starts draining is not left on c:
// the drain looks at c last only once no move is in flight, and a move
// that has not started yet is canceled, since c is no longer active.
func TestExecutorMoveRacingADrainLeavesNobody(t *testing.T) {
	r := &racingRouter{memRouter: newMemRouter(1, "10.0.0.1"), held: make(chan struct{}), release: make(chan struct{}),
		host: "10.0.0.3", listed: make(chan struct{}, 1)}
	m := &memLeader{view: cluster3(), fence: placement.Fence{Term: 1, Leader: "a"}}
	move := m.start(t, Plan{Kind: PlanMove, To: "c", User: "u00000", Reason: "operator"})
	late := m.start(t, Plan{Kind: PlanMove, To: "c", User: "u00000", Reason: "operator, again"})
	r.plan = move
	e := newExecutor(r, &memKicker{})
	moved := make(chan error, 1)
	go func() { moved <- e.run(context.Background(), move, m.ops()) }()
	<-r.held // the move checked c (active) and is writing

	if err := m.ops().apply(command{Op: opSetNode, Node: "c", State: Maintenance, Reason: "disk swap", At: t0}); err != nil {
		t.Fatal(err)
	}
	drain := m.start(t, Plan{Kind: PlanDrain, Node: "c", Reason: "disk swap"})
	drained := make(chan error, 1)
	go func() { drained <- e.run(context.Background(), drain, m.ops()) }()
	<-r.listed // the drain found c empty, the move not yet written
	close(r.release)
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if err := e.run(context.Background(), late, m.ops()); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, _ := r.Lookup(context.Background(), "u00000"); h == "10.0.0.3" {
		t.Fatalf("u00000 is on c, which is in maintenance with its drain %s", m.s.Plans[drain].Status)
	}
	if p := m.s.Plans[drain]; p.Status != PlanDone || p.Moved != 1 {
		t.Fatalf("the drain is %s having moved %d, want done having moved the user the move put there", p.Status, p.Moved)
	}
	if p := m.s.Plans[late]; p.Status != PlanCanceled || p.Moved != 0 || p.Error == "" {
		t.Fatalf("the move asked after c left active: %s, moved %d (%q); want canceled, saying why", p.Status, p.Moved, p.Error)
	}
}

// A dry-run plan counts and ends: nobody moved, nobody kicked, no block
// period; a dry failback after a dry failover leaves its node active.
func TestExecutorDryRunMovesNobody(t *testing.T) {
	r := newMemRouter(300, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	k := &memKicker{}
	m := &memLeader{view: with(cluster3(), "b", critical("dovecot down", false)), fence: placement.Fence{Term: 3, Leader: "a"}}
	m.s.apply(command{Op: opSetNode, Node: "b", State: Failed, DryRun: true, At: t0})
	id := m.start(t, Plan{Kind: PlanFailover, Node: "b", Reason: "dovecot down", DryRun: true})
	if err := newExecutor(r, k).run(context.Background(), id, m.ops()); err != nil {
		t.Fatal(err)
	}
	if on := len(r.sorted(func(_, h string) bool { return h == "10.0.0.2" })); on != 100 || len(r.moves) != 0 || r.calls != 0 {
		t.Fatalf("%d users on b, %d moved, %d batches written: a dry run changes nothing", on, len(r.moves), r.calls)
	}
	if k.calls != 0 || len(k.down) != 0 {
		t.Fatalf("a dry run kicked: %d kicks, host kicks %v", k.calls, k.down)
	}
	p, rec := m.s.Plans[id], m.s.Node("b")
	if p.Status != PlanDone || p.Moved != 0 || p.Would != 100 {
		t.Fatalf("plan %+v: want done, 0 moved, would 100", p)
	}
	if !rec.LastFailover.IsZero() || rec.State != Failed || !rec.DryRun || rec.LBSignal() != "up" {
		t.Fatalf("b %+v (LB %s): want failed in a dry run, LB up, no block period", rec, rec.LBSignal())
	}
	m.view = cluster3()
	m.s.apply(command{Op: opSetNode, Node: "b", State: Recovering, DryRun: true, At: t0})
	id = m.start(t, Plan{Kind: PlanFailback, Node: "b", Reason: "healthy", DryRun: true})
	if err := newExecutor(r, k).run(context.Background(), id, m.ops()); err != nil {
		t.Fatal(err)
	}
	if p, rec := m.s.Plans[id], m.s.Node("b"); p.Status != PlanDone || p.Would != 0 || rec.State != Active || rec.DryRun || len(r.moves) != 0 {
		t.Fatalf("failback %+v, b %+v: want done, would 0, b active", p, rec)
	}
	// Users of b really away (a drain before it failed in the dry run): the
	// dry failback says so and leaves b failed, naming what brings them home.
	r.hosts["u00001"], r.home["u00001"] = "10.0.0.1", "10.0.0.2"
	m.s.apply(command{Op: opSetNode, Node: "b", State: Recovering, DryRun: true, At: t0})
	id = m.start(t, Plan{Kind: PlanFailback, Node: "b", Reason: "healthy", DryRun: true})
	if err := newExecutor(r, k).run(context.Background(), id, m.ops()); err != nil {
		t.Fatal(err)
	}
	if p, rec := m.s.Plans[id], m.s.Node("b"); p.Would != 1 || rec.State != Failed || rec.DryRun || !strings.Contains(rec.Reason, "nodectl failback b") || r.hosts["u00001"] != "10.0.0.1" {
		t.Fatalf("failback %+v, b %+v: want would 1, b failed for real, saying nodectl failback b, the user left where it is", p, rec)
	}
}

// An operator's ack of a node failed in a dry run moves its users for
// real: the plan acts, and the node's state is no longer a dry run's (its
// LB signal goes down).
func TestAckOfADryRunFailureActs(t *testing.T) {
	var s State
	if err := s.apply(command{Op: opSetNode, Node: "b", State: Failed, DryRun: true, Reason: "dovecot down", At: t0}); err != nil {
		t.Fatal(err)
	}
	view := with(cluster3(), "b", critical("dovecot down", false))
	_, cmds, err := request(context.Background(), Request{Op: OpAck, Node: "b"}, s, view, t0, DefaultPolicy(), newExecutor(newMemRouter(3, "10.0.0.2"), &memKicker{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.apply(batch(cmds)); err != nil {
		t.Fatal(err)
	}
	p, ok := s.Running("b")
	if r := s.Node("b"); !ok || p.DryRun || r.DryRun || r.LBSignal() != "down" || r.LastFailover.IsZero() {
		t.Fatalf("after the ack: plan %+v (running %v), b %+v: want a real failover, b failed for real", p, ok, r)
	}
}
