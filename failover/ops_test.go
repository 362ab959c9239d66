package failover

import (
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
