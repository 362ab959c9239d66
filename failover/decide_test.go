package failover

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// healthy returns alive, passing mail nodes named a, b, c…, healthy for an hour.
func healthy(names ...string) []NodeView {
	var v []NodeView
	for _, n := range names {
		v = append(v, NodeView{Name: n, Mail: true, Gossip: "alive", Health: "passing", HealthySince: t0.Add(-time.Hour)})
	}
	return v
}

func with(v []NodeView, name string, f func(*NodeView)) []NodeView {
	out := append([]NodeView(nil), v...)
	for i := range out {
		if out[i].Name == name {
			f(&out[i])
		}
	}
	return out
}

func critical(reason string, fs bool) func(*NodeView) {
	return func(n *NodeView) {
		n.Health, n.Reason, n.FSTrouble, n.HealthySince = "critical", reason, fs, time.Time{}
	}
}

func unreachableBy(peers ...string) func(*NodeView) {
	return func(n *NodeView) { n.UnreachableBy, n.HealthySince = peers, time.Time{} }
}

func state(f func(*State)) State {
	s := State{ClusterID: "x"}
	if f != nil {
		f(&s)
	}
	return s
}

func node(s *State, name string, r NodeRecord) {
	if s.Nodes == nil {
		s.Nodes = map[string]NodeRecord{}
	}
	s.Nodes[name] = r
}

func plan(s *State, p Plan) {
	if s.Plans == nil {
		s.Plans = map[string]Plan{}
	}
	p.Status = PlanRunning
	s.Plans[p.ID] = p
}

// summary renders commands as "op node state/kind" lines for comparison.
func summary(cs []command) string {
	var out []string
	for _, c := range cs {
		switch c.Op {
		case opSetNode:
			out = append(out, fmt.Sprintf("set-node %s %s%s", c.Node, c.State, dry(c.DryRun)))
		case opPlanStart:
			out = append(out, fmt.Sprintf("plan-start %s %s%s", c.Plan.Node, c.Plan.Kind, dry(c.Plan.DryRun)))
		case opPlanEnd:
			out = append(out, fmt.Sprintf("plan-end %s %s", c.PlanID, c.Status))
		default:
			out = append(out, c.Op)
		}
	}
	return strings.Join(out, "; ")
}

func dry(on bool) string {
	if on {
		return " (dry)"
	}
	return ""
}

func TestDecide(t *testing.T) {
	p := DefaultPolicy()
	dryRun := DefaultPolicy()
	dryRun.Mode = ModeDryRun
	dryFailback := DefaultPolicy()
	dryFailback.Actions = map[string]string{ActionFailback: ModeDryRun}
	enforceFailover := dryRun
	enforceFailover.Actions = map[string]string{ActionFailover: ModeEnforce}
	manual := DefaultPolicy()
	manual.Failback = "manual"
	settle := DefaultPolicy()
	settle.Settle = time.Second
	three := healthy("a", "b", "c")
	for _, tc := range []struct {
		name   string
		view   []NodeView
		state  State
		policy Policy
		want   string
	}{
		{"all healthy: nothing", three, state(nil), p, ""},
		{"a dry run fails a node over in name only", with(three, "b", critical("dovecot down", false)), state(nil), dryRun,
			"set-node b failed (dry); plan-start b failover (dry)"},
		{"a node failing again during its real failback is failed for real in a dry run", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Recovering})
				plan(s, Plan{ID: "000003-failback", Kind: PlanFailback, Node: "b"})
			}), dryRun, "plan-end 000003-failback canceled; set-node b failed; plan-start b failover (dry)"},
		{"failover enforced over a dry-run mode", with(three, "b", critical("dovecot down", false)), state(nil), enforceFailover,
			"set-node b failed; plan-start b failover"},
		{"a dry-run failover is followed by a dry-run failback", with(three, "b", func(n *NodeView) { n.HealthySince = t0.Add(-11 * time.Minute) }),
			state(func(s *State) { node(s, "b", NodeRecord{State: Failed, DryRun: true}) }), dryRun,
			"set-node b recovering (dry); plan-start b failback (dry)"},
		{"a dry-run failback after a real failover leaves the node failed", with(three, "b", func(n *NodeView) { n.HealthySince = t0.Add(-11 * time.Minute) }),
			state(func(s *State) { node(s, "b", NodeRecord{State: Failed, Since: t0.Add(-time.Hour)}) }), dryFailback,
			"plan-start b failback (dry)"},
		{"a dry-run failback says so once per failure", with(three, "b", func(n *NodeView) { n.HealthySince = t0.Add(-11 * time.Minute) }),
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Failed, Since: t0.Add(-time.Hour)})
				s.Plans = map[string]Plan{"000002-failback": {ID: "000002-failback", Kind: PlanFailback, Node: "b", DryRun: true, Status: PlanDone, Created: t0.Add(-time.Minute), Finished: t0.Add(-time.Minute)}}
			}), dryFailback, ""},
		{"failover enforced now: a node failed in a dry run is decided again", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) { node(s, "b", NodeRecord{State: Failed, DryRun: true}) }), p, "set-node b active"},
		{"failover enforced now: a healthy node failed in a dry run comes back by the failback", with(three, "b", func(n *NodeView) { n.HealthySince = t0.Add(-11 * time.Minute) }),
			state(func(s *State) { node(s, "b", NodeRecord{State: Failed, DryRun: true}) }), p, "set-node b recovering; plan-start b failback"},
		{"a node failed in a dry run counts towards the freeze", with(with(three, "a", critical("dovecot down", false)), "b", critical("dovecot down", false)),
			state(func(s *State) { node(s, "a", NodeRecord{State: Failed, DryRun: true}) }), dryRun, "freeze"},
		{"a pause holds a failover", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) { s.Paused = &Pause{Reason: "network work", Since: t0} }), p, ""},
		{"a pause holds the freeze too", with(with(three, "a", critical("dovecot down", false)), "b", critical("dovecot down", false)),
			state(func(s *State) { s.Paused = &Pause{Reason: "network work", Since: t0} }), p, ""},
		{"a pause holds a failback", three,
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Failed})
				s.Paused = &Pause{Reason: "network work", Since: t0}
			}), p, ""},
		{"a drain whose time ran out ends: its users come home", three,
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Draining, Reason: "kernel update", Until: t0})
			}), p, "set-node b recovering; plan-start b failback"},
		{"a pause holds the end of a drain", three,
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Draining, Reason: "kernel update", Until: t0})
				s.Paused = &Pause{Reason: "network work", Since: t0}
			}), p, ""},
		{"a maintenance whose time ran out, its drain still running, ends", three,
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Maintenance, Reason: "disk swap", Until: t0.Add(-time.Second)})
				plan(s, Plan{ID: "000001-drain", Kind: PlanDrain, Node: "b"})
			}), p, "plan-end 000001-drain canceled; set-node b recovering; plan-start b failback"},
		{"a maintenance whose time ran out while the node fails leaves it failed", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) { node(s, "b", NodeRecord{State: Maintenance, Reason: "disk swap", Until: t0}) }), p, "set-node b failed"},
		{"a drain with time left goes on", three,
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Draining, Reason: "kernel update", Until: t0.Add(time.Second)})
			}), p, ""},
		{"a pause that ran out ends", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) { s.Paused = &Pause{Reason: "network work", Since: t0.Add(-time.Hour), Until: t0} }), p, "resume"},
		{"one observer never fails a node", with(three, "b", unreachableBy("a")), state(nil), p, ""},
		{"two mail nodes alone: one peer is one observer, never enough", with(healthy("a", "b"), "b", unreachableBy("a")), state(nil), p, ""},
		{"dead witnesses are no observers: two alive peers of two decide", append(with(three, "b", unreachableBy("a", "c")),
			NodeView{Name: "w1", Gossip: "dead", Health: "passing"}, NodeView{Name: "w2", Gossip: "dead", Health: "passing"}), state(nil), p,
			"set-node b failed; plan-start b failover"},
		{"a node that left is not failed by its last report", with(three, "b", func(n *NodeView) {
			critical("stopping", false)(n)
			n.Gossip = "left"
		}), state(nil), p, ""},
		{"filesystem trouble on half the mail nodes is no majority", with(with(healthy("a", "b", "c", "d"), "a", func(n *NodeView) { n.FSTrouble = true }), "b", func(n *NodeView) { n.FSTrouble = true }),
			state(nil), p, ""},
		{"a dead node's last filesystem report does not count towards the freeze", with(with(three, "a", func(n *NodeView) { n.FSTrouble, n.Gossip = true, "dead" }), "b", critical("mount slow", true)),
			state(nil), p, "set-node b failed; plan-start b failover"},
		{"a running plan owns an active node", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Active})
				plan(s, Plan{ID: "000001-drain", Kind: PlanDrain, Node: "b"})
			}), p, ""},
		{"a quorum of peers cannot reach it", with(three, "b", unreachableBy("a", "c")), state(nil), p,
			"set-node b failed; plan-start b failover"},
		{"dead in gossip and unreachable by a quorum", with(with(three, "b", unreachableBy("a", "c")), "b", func(n *NodeView) { n.Gossip = "dead" }), state(nil), p,
			"set-node b failed; plan-start b failover"},
		{"dead in gossip alone is not enough", with(three, "b", func(n *NodeView) { n.Gossip, n.HealthySince = "dead", time.Time{} }), state(nil), p, ""},
		{"its own critical report", with(three, "c", critical("mount hung", true)), state(nil), p,
			"set-node c failed; plan-start c failover"},
		{"a witness is never failed over", append(three, NodeView{Name: "w", Gossip: "alive", Health: "critical"}), state(nil), p, ""},
		{"two mail nodes and a witness: both peers must agree", append(with(healthy("a", "b"), "b", unreachableBy("a")), NodeView{Name: "w", Gossip: "alive", Health: "passing"}), state(nil), p, ""},
		{"two mail nodes and a witness that agrees", append(with(healthy("a", "b"), "b", unreachableBy("a", "w")), NodeView{Name: "w", Gossip: "alive", Health: "passing"}), state(nil), p,
			"set-node b failed; plan-start b failover"},
		{"shared filesystem trouble on a majority freezes", with(with(three, "a", critical("mount slow", true)), "b", critical("mount slow", true)), state(nil), p, "freeze"},
		{"more than max_failed_fraction failed freezes", with(with(three, "a", critical("dovecot down", false)), "b", critical("dovecot down", false)), state(nil), p, "freeze"},
		{"one failing while another is failed already freezes", with(with(three, "a", critical("dovecot down", false)), "b", critical("dovecot down", false)),
			state(func(s *State) { node(s, "a", NodeRecord{State: Failed}) }), p, "freeze"},
		{"a failed node healthy again is no failure: it comes home, and one failing fails over", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) { node(s, "a", NodeRecord{State: Failed}) }), p,
			"set-node b failed; plan-start b failover; set-node a recovering; plan-start a failback"},
		{"frozen: nobody moves", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) { s.Frozen = &Freeze{Reason: "x"} }), p, ""},
		{"failed over within the block period: marked failed, nobody moves until an ack", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) { node(s, "b", NodeRecord{State: Active, LastFailover: t0.Add(-30 * time.Minute)}) }), p, "set-node b failed"},
		{"the block period is over", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) { node(s, "b", NodeRecord{State: Active, LastFailover: t0.Add(-61 * time.Minute)}) }), p,
			"set-node b failed; plan-start b failover"},
		{"failed already: no second plan", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) { node(s, "b", NodeRecord{State: Failed, LastFailover: t0}) }), p, ""},
		{"an operator's drain owns the node", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Draining})
				plan(s, Plan{ID: "000001-drain", Kind: PlanDrain, Node: "b"})
			}), p, ""},
		{"failback after the hold-down", with(three, "b", func(n *NodeView) { n.HealthySince = t0.Add(-11 * time.Minute) }),
			state(func(s *State) { node(s, "b", NodeRecord{State: Failed, LastFailover: t0.Add(-2 * time.Hour)}) }), p,
			"set-node b recovering; plan-start b failback"},
		{"no failback before the hold-down", with(three, "b", func(n *NodeView) { n.HealthySince = t0.Add(-9 * time.Minute) }),
			state(func(s *State) { node(s, "b", NodeRecord{State: Failed}) }), p, ""},
		{"no failback while the failover still runs", three,
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Failed})
				plan(s, Plan{ID: "000001-failover", Kind: PlanFailover, Node: "b"})
			}), p, ""},
		{"failback manual: never by itself", three, state(func(s *State) { node(s, "b", NodeRecord{State: Failed}) }), manual, ""},
		{"failing for less than settle: wait", with(three, "b", func(n *NodeView) {
			critical("dovecot down", false)(n)
			n.FailingSince = t0.Add(-500 * time.Millisecond)
		}), state(nil), settle, ""},
		{"failing for settle: fail over", with(three, "b", func(n *NodeView) {
			critical("dovecot down", false)(n)
			n.FailingSince = t0.Add(-time.Second)
		}), state(nil), settle, "set-node b failed; plan-start b failover"},
		{"a second node failing within settle freezes", with(with(three, "b", func(n *NodeView) {
			critical("dovecot down", false)(n)
			n.FailingSince = t0.Add(-time.Second)
		}), "c", func(n *NodeView) { critical("dovecot down", false)(n); n.FailingSince = t0 }), state(nil), settle, "freeze"},
		{"silent since it began failing, its lease not yet run out: wait", with(three, "b", func(n *NodeView) {
			unreachableBy("a", "c")(n)
			n.FailingSince, n.LastContact, n.LeaseExpiry = t0.Add(-time.Second), t0.Add(-2*time.Second), t0.Add(100*time.Millisecond)
		}), state(nil), p, ""},
		{"silent, its lease run out: fail over", with(three, "b", func(n *NodeView) {
			unreachableBy("a", "c")(n)
			n.FailingSince, n.LastContact, n.LeaseExpiry = t0.Add(-time.Second), t0.Add(-2*time.Second), t0
		}), state(nil), p, "set-node b failed; plan-start b failover"},
		{"answered since it began failing, passing its own checks: the peers' word must hold a while", with(three, "b", func(n *NodeView) {
			unreachableBy("a", "c")(n)
			n.FailingSince, n.LastContact, n.LeaseExpiry = t0.Add(-time.Second), t0.Add(-100*time.Millisecond), t0.Add(2*time.Second)
		}), state(nil), p, ""},
		{"answered since it began failing, passing, unreachable for long enough: no lease wait", with(three, "b", func(n *NodeView) {
			unreachableBy("a", "c")(n)
			n.FailingSince, n.LastContact, n.LeaseExpiry = t0.Add(-disputed), t0.Add(-100*time.Millisecond), t0.Add(2*time.Second)
		}), state(nil), p, "set-node b failed; plan-start b failover"},
		{"in touch and passing, but refused by a quorum: no Dovecot listens, no wait", with(three, "b", func(n *NodeView) {
			unreachableBy("a", "c")(n)
			n.RefusedBy = []string{"a", "c"}
			n.FailingSince, n.LastContact, n.LeaseExpiry = t0.Add(-time.Second), t0.Add(-100*time.Millisecond), t0.Add(2*time.Second)
		}), state(nil), p, "set-node b failed; plan-start b failover"},
		{"answered since it began failing, warning: no wait", with(three, "b", func(n *NodeView) {
			unreachableBy("a", "c")(n)
			n.Health = "warning"
			n.FailingSince, n.LastContact, n.LeaseExpiry = t0.Add(-time.Second), t0.Add(-100*time.Millisecond), t0.Add(2*time.Second)
		}), state(nil), p, "set-node b failed; plan-start b failover"},
		{"refused by a quorum: its host answers, no lease wait", with(three, "b", func(n *NodeView) {
			unreachableBy("a", "c")(n)
			n.RefusedBy = []string{"a", "c"}
			n.FailingSince, n.LastContact, n.LeaseExpiry = t0.Add(-time.Second), t0.Add(-2*time.Second), t0.Add(time.Second)
		}), state(nil), p, "set-node b failed; plan-start b failover"},
		{"refused by one of two: silence may hide it, wait", with(three, "b", func(n *NodeView) {
			unreachableBy("a", "c")(n)
			n.RefusedBy = []string{"a"}
			n.FailingSince, n.LastContact, n.LeaseExpiry = t0.Add(-time.Second), t0.Add(-2*time.Second), t0.Add(time.Second)
		}), state(nil), p, ""},
		{"its own critical report needs no lease wait", with(three, "b", func(n *NodeView) {
			critical("dovecot down", false)(n)
			n.LeaseExpiry = t0.Add(time.Second)
		}), state(nil), p, "set-node b failed; plan-start b failover"},
		{"failing again while coming home, past the block period: cancel and fail over", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Recovering, LastFailover: t0.Add(-70 * time.Minute)})
				plan(s, Plan{ID: "000002-failback", Kind: PlanFailback, Node: "b"})
			}), p,
			"plan-end 000002-failback canceled; set-node b failed; plan-start b failover"},
		{"failing again while coming home, within the block period: cancel, mark failed, move nobody", with(three, "b", critical("dovecot down", false)),
			state(func(s *State) {
				node(s, "b", NodeRecord{State: Recovering, LastFailover: t0.Add(-20 * time.Minute)})
				plan(s, Plan{ID: "000002-failback", Kind: PlanFailback, Node: "b"})
			}), p,
			"plan-end 000002-failback canceled; set-node b failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := summary(Decide(tc.view, tc.state, t0, tc.policy))
			if got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// Decide's commands apply to the state they were decided on.
func TestDecisionsApply(t *testing.T) {
	s := state(nil)
	view := with(healthy("a", "b", "c"), "b", critical("mount hung", true))
	cs := Decide(view, s, t0, DefaultPolicy())
	for _, c := range cs {
		if err := s.apply(c); err != nil {
			t.Fatal(err)
		}
	}
	r := s.Node("b")
	pl, ok := s.Running("b")
	if r.State != Failed || !r.LastFailover.Equal(t0) || !ok || pl.Kind != PlanFailover || pl.ID != "000001-failover" || !strings.Contains(pl.Reason, "mount hung") {
		t.Fatalf("node %+v plan %+v", r, pl)
	}
	if more := Decide(view, s, t0.Add(time.Second), DefaultPolicy()); len(more) != 0 {
		t.Fatalf("a second round decided %s", summary(more))
	}
}
