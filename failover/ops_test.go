package failover

import (
	"errors"
	"strings"
	"testing"
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
		{Request{Op: OpMove, Node: "a", User: "nul\x00"}, "not valid UTF-8"},
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
