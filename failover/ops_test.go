package failover

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRequestValidateNamesTheProblem(t *testing.T) {
	for _, tc := range []struct {
		r    Request
		want string
	}{
		{Request{Op: "explode", Node: "a"}, `unknown operation "explode"`},
		{Request{Op: OpDrain}, "drain: no node given"},
		{Request{Op: OpMove, Node: "a"}, "the user name is empty"},
		{Request{Op: OpMove, User: "u"}, "move: want a user and a node"},
		{Request{Op: OpDrain, Node: "a", Rate: -1}, "rate -1"},
		{Request{Op: OpUndrain, Node: "a", DryRun: true}, "undrain has no dry run"},
		{Request{Op: OpMove, Node: "a", User: "bad\xffutf8"}, "not valid UTF-8"},
		{Request{Op: OpMove, Node: "a", User: "nul\x00"}, "NUL byte"},
		{Request{Op: OpMove, Node: "a", User: `"nul\x00"`}, "NUL byte"},
		{Request{Op: OpMove, Node: "a", User: `"lat\xe9n`}, "not a quoted name"},
		{Request{Op: OpMove, Node: "a", User: `""`}, "the user name is empty"},
		{Request{Op: OpDrain, Node: strings.Repeat("n", 256)}, "too long"},
	} {
		err := tc.r.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want an invalid-request error containing %q", tc.r, err, tc.want)
		}
	}
	for _, r := range []Request{
		{Op: OpAck},
		{Op: OpDrain, Node: "a", Rate: 10, DryRun: true},
		{Op: OpMove, Node: "a", User: `o'brien "ü"`},
		{Op: OpMove, Node: "a", User: `"lat\xe9n"`},
	} {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
}

// Moves of single users do not own their target node: several run beside
// a node's own plan.
func TestMovePlansDoNotBlockANodesPlan(t *testing.T) {
	var s State
	for _, p := range []*Plan{{Kind: PlanMove, To: "a", User: "u1"}, {Kind: PlanMove, To: "a", User: "u2"}, {Kind: PlanDrain, Node: "a"}} {
		if err := s.apply(command{Op: opPlanStart, Plan: p}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.apply(command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailover, Node: "a"}}); err == nil {
		t.Fatal("a second plan for node a started")
	}
	if len(s.RunningPlans()) != 3 {
		t.Fatalf("running: %+v", s.RunningPlans())
	}
}

// Users go back only to a node that is healthy in its own report and in
// its peers' view.
func TestUsersGoBackOnlyToAHealthyNode(t *testing.T) {
	unreachable := func(v []NodeView, by ...string) []NodeView {
		v[1].UnreachableBy = by
		return v
	}
	for _, c := range []struct {
		view []NodeView
		want string
	}{
		{cluster3(), ""},
		{with(cluster3(), "b", critical("imap down", false)), "not healthy"},
		{unreachable(cluster3(), "a"), ""}, // one observer is no quorum
		{unreachable(cluster3(), "a", "c"), "still failing in its peers' view (unreachable by 2 of 2 peers (a, c))"},
	} {
		err := unhealthy(c.view[1], c.view)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("b unreachable by %v, health %s: got %v, want %q", c.view[1].UnreachableBy, c.view[1].Health, err, c.want)
		}
	}
}

// A forwarded operator request is taken only when signed with a key of
// the cluster's (any of them, for a key rotation), unaltered and sent
// within opSkew of the leader's clock; a cluster without keys (insecure
// plaintext) takes them unsigned.
func TestForwardedRequestsAreSignedWithTheClusterKey(t *testing.T) {
	keyA, keyB := OpKey([]byte("0123456789abcdef")), OpKey([]byte("fedcba9876543210"))
	log := slog.New(slog.DiscardHandler)
	node := func(keys ...[]byte) *Cluster { return &Cluster{opKeys: keys, log: log} }
	r := Request{Op: OpDrain, Node: "node2", Reason: "kernel update"}
	now := time.Unix(1_800_000_000, 0)
	signed, err := node(keyA).sign(r, now)
	if err != nil {
		t.Fatal(err)
	}
	for name, leader := range map[string]*Cluster{"same key": node(keyA), "during a rotation": node(keyB, keyA)} {
		if got, err := leader.open(signed, "peer", now.Add(time.Second)); err != nil || got.Node != "node2" || got.Op != OpDrain {
			t.Fatalf("%s: %+v %v", name, got, err)
		}
	}
	unsigned, _ := node().sign(r, now)
	tampered := signed
	tampered.Request = []byte(strings.Replace(string(signed.Request), "node2", "node3", 1))
	for name, c := range map[string]struct {
		op     signedOp
		leader *Cluster
		at     time.Time
		want   string
	}{
		"unsigned":         {unsigned, node(keyA), now, "not signed with this cluster's gossip key"},
		"another key":      {signed, node(keyB), now, "not signed"},
		"altered":          {tampered, node(keyA), now, "not signed"},
		"an old request":   {signed, node(keyA), now.Add(opSkew + time.Second), "check the nodes' clocks"},
		"a future request": {signed, node(keyA), now.Add(-opSkew - time.Second), "check the nodes' clocks"},
	} {
		if got, err := c.leader.open(c.op, "peer", c.at); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %+v %v, want an invalid-request error saying %q", name, got, err, c.want)
		}
	}
	if got, err := node().open(unsigned, "peer", now); err != nil || got.Node != "node2" {
		t.Fatalf("a cluster without keys: %+v %v", got, err)
	}
}

// Pause and resume, cordon and uncordon: what each request commits, and
// what a cordoned node refuses.
func TestPauseAndCordonRequests(t *testing.T) {
	ctx := context.Background()
	view := cluster3()
	for i := range view {
		view[i].Mail = true
	}
	r := newMemRouter(30, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	ex := newExecutor(r, &memKicker{})
	var s State
	plan(&s, Plan{ID: "000001-failover", Kind: PlanFailover, Node: "b"})
	do := func(req Request) Reply {
		t.Helper()
		if err := req.Validate(); err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		reply, cmds, err := request(ctx, req, s.clone(), view, t0, DefaultPolicy(), ex)
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		if err := s.apply(batch(cmds)); len(cmds) > 0 && err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		return reply
	}
	if m := do(Request{Op: OpPause, Reason: "network work", By: "ops@host", For: time.Hour}).Message; !strings.Contains(m, "running plans finish: 000001-failover (b)") {
		t.Fatalf("pause said %q, want it to name the running failover", m)
	}
	if p := s.Paused; p == nil || p.Reason != "network work" || p.By != "ops@host" || !p.Until.Equal(t0.Add(time.Hour)) {
		t.Fatalf("paused: %+v", p)
	}
	if err := (Request{Op: OpPause}).Validate(); err == nil || !strings.Contains(err.Error(), "say why") {
		t.Fatalf("a pause without a reason: %v", err)
	}
	if err := (Request{Op: OpUndrain, Node: "a", For: time.Hour}).Validate(); err == nil {
		t.Fatal("an undrain took a duration")
	}
	if err := (Request{Op: OpDrain, Node: "a", For: time.Hour, Alert: "DiskFull/1"}).Validate(); err == nil {
		t.Fatal("an alert's drain took a duration")
	}
	do(Request{Op: OpResume})
	if s.Paused != nil {
		t.Fatal("still paused after resume")
	}
	if m := do(Request{Op: OpResume}).Message; !strings.Contains(m, "not paused") {
		t.Fatalf("a second resume said %q", m)
	}

	do(Request{Op: OpCordon, Node: "c", Reason: "new disks next week"})
	if rec := s.Node("c"); !rec.Cordoned || rec.CordonReason != "new disks next week" || rec.State != Active || rec.State.LBSignal() != "up" {
		t.Fatalf("c after cordon: %+v", rec)
	}
	if ts := ex.targets(view, s, "a"); len(ts) != 1 || ts[0].Node != "b" {
		t.Fatalf("targets off a with c cordoned: %+v, want b alone", ts)
	}
	if _, _, err := request(ctx, Request{Op: OpMove, Node: "c", User: "u00000"}, s.clone(), view, t0, DefaultPolicy(), ex); err == nil || !strings.Contains(err.Error(), "cordoned") {
		t.Fatalf("a move to cordoned c: %v", err)
	}
	reply, _, err := request(ctx, Request{Op: OpDrain, Node: "a", DryRun: true}, s.clone(), view, t0, DefaultPolicy(), ex)
	if err != nil || reply.Targets["c"] != 0 || reply.Targets["b"] != 10 {
		t.Fatalf("a drain's dry run with c cordoned: %+v %v", reply, err)
	}
	do(Request{Op: OpUncordon, Node: "c"})
	if s.Node("c").Cordoned {
		t.Fatal("c still cordoned")
	}
}

// What a request refuses, or leaves alone, given its node's record and
// health: each a rule an operator relies on.
func TestRequestsRespectTheNodesState(t *testing.T) {
	ctx := context.Background()
	ex := newExecutor(newMemRouter(30, "10.0.0.1", "10.0.0.2", "10.0.0.3"), &memKicker{})
	for name, c := range map[string]struct {
		rec     NodeRecord
		health  string
		req     Request
		wantErr string // else the reply's message, and no command
		wantMsg string
	}{
		"a failed-over node is not drained": {rec: NodeRecord{State: Failed}, req: Request{Op: OpDrain, Node: "b"},
			wantErr: "b is failed over already"},
		"an undrain needs a healthy node": {rec: NodeRecord{State: Draining}, health: "critical", req: Request{Op: OpUndrain, Node: "b"},
			wantErr: "b is not healthy (gossip alive, health critical"},
		"a failback needs a healthy node": {rec: NodeRecord{State: Failed}, health: "critical", req: Request{Op: OpFailback, Node: "b"},
			wantErr: "b is not healthy"},
		"a resolved alert undoes only what it holds": {rec: NodeRecord{State: Draining, Holds: []string{"DiskFull/1"}}, req: Request{Op: OpUndrain, Node: "b", Alert: "Other/2"},
			wantMsg: "b is draining, held by alert DiskFull/1, not by alert Other/2: it stays"},
		"a resolved alert leaves an operator's drain": {rec: NodeRecord{State: Draining}, req: Request{Op: OpUndrain, Node: "b", Alert: "DiskFull/1"},
			wantMsg: "b is draining by an operator: alert DiskFull/1 does not undo it"},
		"an alert leaves an operator's maintenance": {rec: NodeRecord{State: Maintenance}, req: Request{Op: OpDrain, Node: "b", Alert: "DiskFull/1"},
			wantMsg: "b is maintenance by an operator: alert DiskFull/1 changes nothing"},
	} {
		view := cluster3()
		for i := range view {
			view[i].Mail = true
		}
		if c.health != "" {
			view[1].Health = c.health
		}
		s := State{Nodes: map[string]NodeRecord{"b": c.rec}}
		reply, cmds, err := request(ctx, c.req, s, view, t0, DefaultPolicy(), ex)
		switch {
		case c.wantErr != "" && (err == nil || !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: %v (commands %+v), want a conflict saying %q", name, err, cmds, c.wantErr)
		case c.wantErr == "" && (err != nil || len(cmds) > 0 || !strings.Contains(reply.Message, c.wantMsg)):
			t.Errorf("%s: %q, commands %+v, err %v; want no command and %q", name, reply.Message, cmds, err, c.wantMsg)
		}
	}
}
