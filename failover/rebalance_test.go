package failover

import (
	"context"
	"errors"
	"hash/fnv"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/placement"
)

// whrw is weighted rendezvous hashing, as routing.Choose does it.
func whrw(user string, ts []placement.Target) (placement.Target, bool) {
	best, bestScore := placement.Target{}, math.Inf(-1)
	for _, t := range ts {
		h := fnv.New64a()
		h.Write([]byte(t.Node + "\x00" + user))
		u := (float64(h.Sum64()>>11) + 0.5) / (1 << 53)
		if s := -t.Weight / math.Log(u); s > bestScore {
			best, bestScore = t, s
		}
	}
	return best, !math.IsInf(bestScore, -1)
}

func cluster4() []NodeView {
	v := healthy("a", "b", "c", "d")
	for i := range v {
		v[i].ProxyHost = "10.0.0." + string(rune('1'+i))
	}
	return v
}

func (r *memRouter) Counts(ctx context.Context) (map[string]int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, h := range r.hosts {
		out[h]++
	}
	return out, nil
}

// rebalance asks for a rebalance as an operator would and runs its plan
// to the end; it returns the leader's reply.
func rebalance(t *testing.T, m *memLeader, ex *Executor, r Request) Reply {
	t.Helper()
	r.Op = OpRebalance
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	pol := DefaultPolicyConfig().Policy
	reply, cmds, err := request(context.Background(), r, m.s, m.view, t0, pol, ex)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if err := m.s.apply(c); err != nil {
			t.Fatal(err)
		}
	}
	if len(cmds) == 0 {
		return reply
	}
	id := m.s.RunningPlans()[0].ID
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ex.run(ctx, id, m.ops()); err != nil {
		t.Fatal(err)
	}
	if p := m.s.Plans[id]; p.Status != PlanDone {
		t.Fatalf("plan %+v, want done", p)
	}
	return reply
}

// A fourth node joins three of 1,000 users each: a rebalance moves a
// quarter of the users, the fewest it takes, only onto the new node, and
// a second rebalance moves nobody.
func TestRebalanceMovesTheFewestUsersOntoTheNewNode(t *testing.T) {
	r := newMemRouter(3000, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	ex := newExecutor(r, &memKicker{})
	ex.Choose, ex.BatchSize = whrw, 200
	m := &memLeader{view: cluster4(), fence: placement.Fence{Term: 1, Leader: "a"}}
	before := map[string]string{}
	for _, u := range r.sorted(func(string, string) bool { return true }) {
		before[u] = r.hosts[u]
	}
	reply := rebalance(t, m, ex, Request{Rate: 100000})
	if reply.Users != 750 || reply.Targets["d"] != 750 || len(reply.Targets) != 1 {
		t.Fatalf("reply %+v: want 750 users, all to d", reply)
	}
	counts, _ := r.Counts(context.Background())
	for _, h := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		if counts[h] != 750 {
			t.Fatalf("counts %v: want 750 on every host", counts)
		}
	}
	moved, hashed := 0, 0
	for u, h := range before {
		if now := r.hosts[u]; now != h {
			moved++
			if now != "10.0.0.4" {
				t.Fatalf("%s moved from %s to %s: only onto the new node", u, h, now)
			}
			// Mostly the users a failover would give d: hashing over all
			// four places them there.
			if tt, _ := whrw(u, ex.targets(m.view, m.s, "")); tt.Node == "d" {
				hashed++
			}
		}
	}
	if moved != 750 || hashed < 700 {
		t.Fatalf("%d users moved, %d of them where hashing places them; want 750, at least 700", moved, hashed)
	}
	again := rebalance(t, m, ex, Request{})
	if again.Users != 0 || !strings.Contains(again.Message, "nobody to move") {
		t.Fatalf("second rebalance: %+v, want nobody moved", again)
	}
}

// Weights set the shares; --max bounds a run; a cordoned or draining
// node neither gives nor takes users.
func TestRebalanceFollowsWeightsMaxAndCordons(t *testing.T) {
	r := newMemRouter(3000, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	ex := newExecutor(r, &memKicker{})
	ex.Choose = whrw
	view := with(cluster4(), "d", func(n *NodeView) { n.Weight = 2 })
	m := &memLeader{view: view, fence: placement.Fence{Term: 1, Leader: "a"}}
	if got := rebalance(t, m, ex, Request{Max: 100, Rate: 100000}); got.Users != 100 {
		t.Fatalf("--max 100 moved %d", got.Users)
	}
	if counts, _ := r.Counts(context.Background()); counts["10.0.0.4"] != 100 {
		t.Fatalf("after --max 100: %v", counts)
	}
	m.s.Nodes = map[string]NodeRecord{"c": {State: Active, Cordoned: true}, "b": {State: Draining}}
	rebalance(t, m, ex, Request{Rate: 100000})
	counts, _ := r.Counts(context.Background())
	// --max took its 100 from a, the first over its share; a and d now
	// share a's 900 and d's 100 one to two.
	if counts["10.0.0.1"] != 333 || counts["10.0.0.4"] != 667 || counts["10.0.0.2"] != 1000 || counts["10.0.0.3"] != 1000 {
		t.Fatalf("counts %v: want a 333, d 667, and b and c untouched", counts)
	}
	m.s.Nodes = nil
	rebalance(t, m, ex, Request{Rate: 100000})
	counts, _ = r.Counts(context.Background())
	if counts["10.0.0.1"] != 600 || counts["10.0.0.2"] != 600 || counts["10.0.0.3"] != 600 || counts["10.0.0.4"] != 1200 {
		t.Fatalf("counts %v: want 600 each and 1,200 on d (weight 2)", counts)
	}
}

// A dry run counts and changes nothing; a rebalance with fewer than two
// nodes to balance is refused; one runs at a time.
func TestRebalanceDryRunAndRefusals(t *testing.T) {
	r := newMemRouter(300, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	ex := newExecutor(r, &memKicker{})
	ex.Choose = whrw
	m := &memLeader{view: cluster4(), fence: placement.Fence{Term: 1, Leader: "a"}}
	pol := DefaultPolicyConfig().Policy
	reply, cmds, err := request(context.Background(), Request{Op: OpRebalance, DryRun: true}, m.s, m.view, t0, pol, ex)
	if err != nil || len(cmds) != 0 || reply.Users != 75 || !strings.Contains(reply.Message, "would move 75 users") {
		t.Fatalf("dry run: %+v %v %v", reply, cmds, err)
	}
	if counts, _ := r.Counts(context.Background()); counts["10.0.0.4"] != 0 {
		t.Fatalf("a dry run moved users: %v", counts)
	}
	_, cmds, err = request(context.Background(), Request{Op: OpRebalance}, m.s, m.view, t0, pol, ex)
	if err != nil || len(cmds) != 1 {
		t.Fatalf("%v %v", cmds, err)
	}
	if err := m.s.apply(cmds[0]); err != nil {
		t.Fatal(err)
	}
	reply, cmds, err = request(context.Background(), Request{Op: OpRebalance}, m.s, m.view, t0, pol, ex)
	if err != nil || len(cmds) != 0 || !strings.Contains(reply.Message, "running already") {
		t.Fatalf("a second rebalance beside the first: %+v %v %v", reply, cmds, err)
	}
	if err := m.s.apply(command{Op: opPlanStart, Plan: &Plan{Kind: PlanRebalance}}); err == nil {
		t.Fatal("the state took a second running rebalance")
	}
	lone := with(with(cluster4(), "b", critical("x", false)), "c", critical("y", false))
	lone = with(lone, "d", func(n *NodeView) { n.Gossip = "dead" })
	_, _, err = request(context.Background(), Request{Op: OpRebalance}, State{}, lone, t0, pol, ex)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("rebalance with one node: %v, want a conflict", err)
	}
	for _, bad := range []Request{{Op: OpRebalance, Node: "a"}, {Op: OpRebalance, Max: -1}, {Op: OpDrain, Node: "a", Max: 5}} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want invalid", bad, err)
		}
	}
}

func TestSharesSumToTheTotal(t *testing.T) {
	for _, tc := range []struct {
		total   int
		weights []float64
		want    []int
	}{
		{10, []float64{1, 1, 1}, []int{4, 3, 3}},
		{3000, []float64{1, 1, 1, 2}, []int{600, 600, 600, 1200}},
		{1, []float64{1, 3}, []int{0, 1}},
		{0, []float64{1, 1}, []int{0, 0}},
	} {
		var ts []placement.Target
		for i, w := range tc.weights {
			ts = append(ts, placement.Target{Node: string(rune('a' + i)), Weight: w})
		}
		got := shares(tc.total, ts)
		for i, w := range tc.want {
			if got[string(rune('a'+i))] != w {
				t.Errorf("shares(%d, %v) = %v, want %v", tc.total, tc.weights, got, tc.want)
				break
			}
		}
	}
}

// No plan places users past a node's max_users: a failover that runs out
// of room stops, canceled, saying how many users stay and what moves
// them; a rebalance fills a bounded node only to its bound; a move to a
// full node is refused.
func TestMaxUsersIsNeverExceeded(t *testing.T) {
	r := newMemRouter(30, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	ex := newExecutor(r, &memKicker{})
	ex.BatchSize = 4
	view := with(with(cluster3(), "a", func(n *NodeView) { n.MaxUsers = 12 }), "c", func(n *NodeView) { n.MaxUsers = 15 })
	m := &memLeader{view: view, fence: placement.Fence{Term: 1, Leader: "a"}}
	id := m.start(t, Plan{Kind: PlanFailover, Node: "b", Host: "10.0.0.2"})
	if err := m.s.apply(command{Op: opSetNode, Node: "b", State: Failed, At: t0}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ex.run(ctx, id, m.ops()); err != nil {
		t.Fatal(err)
	}
	counts, _ := r.Counts(ctx)
	if counts["10.0.0.1"] != 12 || counts["10.0.0.3"] != 15 || counts["10.0.0.2"] != 3 {
		t.Fatalf("counts %v: want a at its 12, c at its 15, 3 left on b", counts)
	}
	p := m.s.Plans[id]
	if p.Status != PlanCanceled || p.Stranded != 3 || p.Moved != 7 || !strings.Contains(p.Error, "no room") ||
		!strings.Contains(p.Error, "a holds 12 of 12") || !strings.Contains(p.Error, "3 users stay on b") || !strings.Contains(p.Error, "nodectl ack b") {
		t.Fatalf("plan %+v: want canceled, 7 moved, 3 stranded, saying why and what retries", p)
	}

	pol := DefaultPolicyConfig().Policy
	left := r.sorted(func(_, h string) bool { return h == "10.0.0.2" })[0]
	_, _, err := request(ctx, Request{Op: OpMove, User: left, Node: "a"}, m.s, m.view, t0, pol, ex)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "no room for") {
		t.Fatalf("a move to full a: %v, want refused", err)
	}

	want := capped(3000, []placement.Target{{Node: "a", Weight: 1}, {Node: "b", Weight: 1}, {Node: "c", Weight: 1}, {Node: "d", Weight: 1, Max: 500}})
	if want["d"] != 500 || want["a"]+want["b"]+want["c"] != 2500 || want["a"] < 833 || want["c"] > 834 {
		t.Fatalf("capped shares %v: want d at its 500, the rest shared", want)
	}
	r = newMemRouter(3000, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	ex = newExecutor(r, &memKicker{})
	ex.Choose = whrw
	m = &memLeader{view: with(cluster4(), "d", func(n *NodeView) { n.MaxUsers = 500 }), fence: placement.Fence{Term: 1, Leader: "a"}}
	rebalance(t, m, ex, Request{Rate: 100000})
	if counts, _ := r.Counts(ctx); counts["10.0.0.4"] != 500 {
		t.Fatalf("rebalance onto d of max_users 500: %v", counts)
	}
}
