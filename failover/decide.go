package failover

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// NodeView is what the leader knows of one node now, from gossip: the
// node's own health report and what its peers observe of it.
type NodeView struct {
	Name string
	// ProxyHost is the value its users have in the passdb.
	ProxyHost string
	// Mail: the node serves users (a witness only votes).
	Mail bool
	// Weight is the node's share of users beside the others' (node.weight
	// in its config; 0 counts as 1): plans place users in proportion.
	// MaxUsers is the most users a plan may place there (node.max_users;
	// 0: no bound).
	Weight   float64
	MaxUsers int
	// Gossip is memberlist's view: alive, suspect, dead or left.
	Gossip string
	// Health is the node's own report: passing, warning or critical (after
	// its fall/rise hysteresis); Reason says why.
	Health string
	Reason string
	// FSTrouble: the node's own report blames the shared mail filesystem.
	FSTrouble bool
	// UnreachableBy lists the alive peers that cannot reach its Dovecot;
	// RefusedBy those of them whose connection was refused: the node's
	// host answers, but no Dovecot listens there.
	UnreachableBy []string
	RefusedBy     []string
	// HealthySince is when the node last became healthy (alive, passing,
	// reachable by every peer) in the leader's continuous view; zero when
	// it is not healthy now. FailingSince is the same for failing.
	HealthySince time.Time
	FailingSince time.Time
	// LastContact is when the leader last heard from the node (its lease
	// pings), and LeaseExpiry when the node has surely fenced itself if it
	// has been cut off since. A node that failed on its peers' word alone
	// and has not answered since it began failing may still serve, cut
	// off: its users are moved only after LeaseExpiry, so that an old
	// session there and a new login elsewhere never overlap. One that
	// answered since is in touch (it reads the routing table and ends its
	// moved users' sessions) and is failed over at once. Zero for both:
	// nothing known, no wait.
	LastContact time.Time
	LeaseExpiry time.Time
}

// Policy is the failover configuration the decision follows.
type Policy struct {
	// BlockPeriod: a node is failed over at most once per period, unless
	// an operator runs nodectl ack.
	BlockPeriod time.Duration `yaml:"block_period"`
	// Failback is auto (after FailbackHoldDown of continuous health) or
	// manual (nodectl failback).
	Failback         string        `yaml:"failback"`
	FailbackHoldDown time.Duration `yaml:"failback_hold_down"`
	// FailbackRate is users per second for failback plans, DrainRate
	// the default for drains (nodectl drain --rate overrides it).
	FailbackRate int `yaml:"failback_rate"`
	DrainRate    int `yaml:"drain_rate"`
	// MaxFailedFraction: more mail nodes failed at once than this
	// fraction, or the shared filesystem in trouble on a majority of
	// them, freezes every automatic move until nodectl ack.
	MaxFailedFraction float64 `yaml:"max_failed_fraction"`
	// Settle is how long a node must be failing before it is failed over,
	// so that failures arriving together (a shared filesystem stalling on
	// every node, seen a moment apart) freeze the cluster rather than move
	// the first node's users. It counts towards the freeze at once.
	Settle time.Duration `yaml:"settle"`
	// FenceAfter: a mail node that cannot reach a majority of the
	// cluster for this long fences itself (LB signal down, every local
	// session ended, nothing served until it has rejoined and read the
	// current state). A silent node's users are moved only once its lease
	// has surely run out, about 1.8 × fence_after after the leader last
	// heard from it: shorter recovers a dead host sooner, longer rides out
	// longer network blips without fencing.
	FenceAfter time.Duration `yaml:"fence_after"`
	// FenceCommand, if set, runs (by /bin/sh) when this node fences
	// itself, e.g. "systemctl stop dovecot".
	FenceCommand string `yaml:"fence_command"`
	// Mode is enforce or dryrun: in a dry run the automatic actions are
	// decided and planned as they would be, but a plan writes nothing to
	// the users table, kicks nobody and keeps its node's LB signal up; it
	// says what it would have moved. Actions overrides Mode per action
	// (failover, failback, alerts).
	Mode    string            `yaml:"mode"`
	Actions map[string]string `yaml:"actions"`
}

// The automatic actions that Policy.Actions names.
const (
	ActionFailover = "failover" // a failing node's users moved away
	ActionFailback = "failback" // a failed node's users brought home
	ActionAlerts   = "alerts"   // Alertmanager's drains and maintenance
)

// Modes of Policy.Mode and Policy.Actions.
const (
	ModeEnforce = "enforce"
	ModeDryRun  = "dryrun"
)

// DryRun says whether an automatic action only reports what it would do.
func (p Policy) DryRun(action string) bool {
	mode := p.Mode
	if m, ok := p.Actions[action]; ok {
		mode = m
	}
	return mode == ModeDryRun
}

// disputed is how long a quorum of peers must fail to reach a node's
// Dovecot before the node is failed over on their word alone while it is
// in touch with the leader and passes its own checks. A dead host (refused
// connections), a silent one (the lease wait) and a node that reports
// itself critical do not wait for it.
const disputed = 3 * time.Second

// DefaultPolicy is DESIGN.md's defaults.
func DefaultPolicy() Policy {
	return Policy{BlockPeriod: time.Hour, FailbackHoldDown: 10 * time.Minute, Failback: "auto", FailbackRate: 200, DrainRate: 200, MaxFailedFraction: 0.5,
		FenceAfter: time.Second, Mode: ModeEnforce}
}

// failing says whether the cluster may call a node failed, and why:
// (a) its own critical report, or (b) a quorum of its alive peers cannot
// reach its Dovecot (which also covers memberlist's "dead"). One observer
// never suffices.
func failing(n NodeView, view []NodeView) (bool, string) {
	bad, why, _ := failingBy(n, view)
	return bad, why
}

// failingNowOf is failing's verdict alone.
func failingNowOf(n NodeView, view []NodeView) bool {
	bad, _ := failing(n, view)
	return bad
}

// failingBy is failing, and whether the evidence needs no lease wait: the
// node said so itself, or a quorum of peers had their connections refused
// by its host (a host that answers is not cut off: its roostd, if it
// lived, would be in touch; and no Dovecot listens there). Only silence
// may hide a cut-off node that still serves.
func failingBy(n NodeView, view []NodeView) (bad bool, why string, sure bool) {
	if n.Health == "critical" && n.Gossip != "left" {
		return true, "reports itself critical: " + n.Reason, true
	}
	observers := 0
	for _, o := range view {
		if o.Name != n.Name && o.Gossip == "alive" {
			observers++
		}
	}
	quorum := observers/2 + 1
	if observers >= 2 && len(n.UnreachableBy) >= quorum {
		why := fmt.Sprintf("unreachable by %d of %d peers (%s)", len(n.UnreachableBy), observers, strings.Join(n.UnreachableBy, ", "))
		if len(n.RefusedBy) >= quorum {
			return true, why + "; its host refuses connections", true
		}
		return true, why, false
	}
	return false, "", false
}

// Decide returns the commands that the state and the view call for now.
// It is pure: no clock, no I/O, so every rule is a table test.
func Decide(view []NodeView, s State, now time.Time, p Policy) []command {
	view = append([]NodeView(nil), view...)
	sort.Slice(view, func(i, j int) bool { return view[i].Name < view[j].Name })
	var out []command
	mail, fsTrouble, failed := 0, 0, 0
	type candidate struct {
		n      NodeView
		reason string
		sure   bool // no lease wait: its own report, or refusals by a quorum
	}
	var failingNow []candidate
	for _, n := range view {
		if !n.Mail {
			continue
		}
		mail++
		if n.FSTrouble && n.Gossip == "alive" {
			fsTrouble++
		}
		r := s.Node(n.Name)
		bad, why, sure := failingBy(n, view)
		switch {
		case r.State == Failed && n.HealthySince.IsZero():
			// A failed node counts until it is healthy again: one waiting
			// for its failback is no failure, and counting it would
			// freeze the cluster again at once after nodectl ack,
			// holding that very failback.
			failed++
		case bad && (r.State == Active || r.State == Recovering):
			failed++
			failingNow = append(failingNow, candidate{n, why, sure})
		}
	}
	if mail == 0 {
		return nil
	}

	// A pause holds every automatic decision until it is resumed or runs
	// out; the node states stay as they are meanwhile.
	if s.Paused != nil {
		if !s.Paused.Until.IsZero() && !now.Before(s.Paused.Until) {
			return []command{{Op: opResume, Reason: "the pause ran out", At: now}}
		}
		return nil
	}

	// Mass failure freezes every automatic move until an operator acks.
	if s.Frozen == nil {
		switch {
		case fsTrouble*2 > mail:
			return []command{{Op: opFreeze, Reason: fmt.Sprintf("shared filesystem trouble on %d of %d mail nodes", fsTrouble, mail), At: now}}
		case float64(failed) > p.MaxFailedFraction*float64(mail):
			return []command{{Op: opFreeze, Reason: fmt.Sprintf("%d of %d mail nodes failed at once (max_failed_fraction %.2f)", failed, mail, p.MaxFailedFraction), At: now}}
		}
	}
	if s.Frozen != nil {
		return nil
	}

	// An operator's drain or maintenance that was given an end ends by
	// itself, its users coming home by a failback (which a pause or a
	// freeze holds, like any other).
	for _, n := range view {
		r := s.Node(n.Name)
		if !n.Mail || (r.State != Draining && r.State != Maintenance) || r.Until.IsZero() || now.Before(r.Until) {
			continue
		}
		why := fmt.Sprintf("its %s time ran out (%s)", r.State, r.Reason)
		if bad, fail := failing(n, view); bad {
			// Still broken: its users stay away until it is healthy.
			out = append(out, command{Op: opSetNode, Node: n.Name, State: Failed, At: now,
				Reason: why + ", but it is failing: " + fail + "; its users come back once it is healthy (or nodectl failback " + n.Name + ")"})
			continue
		}
		if pl, ok := s.Running(n.Name); ok {
			out = append(out, command{Op: opPlanEnd, PlanID: pl.ID, Status: PlanCanceled, Reason: why, At: now})
		}
		out = append(out,
			command{Op: opSetNode, Node: n.Name, State: Recovering, Reason: why, At: now},
			command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailback, Node: n.Name, Host: n.ProxyHost, Reason: why, Rate: p.FailbackRate}, At: now})
	}

	// A node failed in a dry run that still fails once failover is
	// enforced: nobody was moved for it, so it is decided again, for real
	// (one healthy again comes back by the usual failback).
	for _, n := range view {
		if r := s.Node(n.Name); r.DryRun && r.State == Failed && !p.DryRun(ActionFailover) && n.Mail && failingNowOf(n, view) {
			out = append(out, command{Op: opSetNode, Node: n.Name, State: Active, At: now,
				Reason: "failover is enforced now and its failover was a dry run: decided again"})
		}
	}

	for _, c := range failingNow {
		r := s.Node(c.n.Name)
		if now.Sub(c.n.FailingSince) < p.Settle {
			continue
		}
		if !c.sure && !c.n.LastContact.After(c.n.FailingSince) && now.Before(c.n.LeaseExpiry) {
			continue // it may still serve, cut off: wait until it has fenced itself
		}
		if !c.sure && c.n.Health == "passing" && c.n.LastContact.After(c.n.FailingSince) && now.Sub(c.n.FailingSince) < disputed {
			// In touch and passing its own checks, yet its peers cannot
			// reach its Dovecot: on a lossy network a few probes in a row
			// fail now and then. The peers' word must hold a while.
			continue
		}
		if pl, ok := s.Running(c.n.Name); ok {
			if r.State != Recovering {
				continue // an operator's plan owns the node
			}
			// Failing while its users come home: stop that.
			out = append(out, command{Op: opPlanEnd, PlanID: pl.ID, Status: PlanCanceled, Reason: "node failing again: " + c.reason, At: now})
		}
		// In a dry run the node is failed in name only, unless its users
		// really are away: one whose real failback this failure ends.
		dry := p.DryRun(ActionFailover)
		nodeDry, reason := dry && (r.State != Recovering || r.DryRun), c.reason
		if dry && !nodeDry {
			reason += "; its failback ended and, in a dry run, the users back on it stay (nodectl ack " + c.n.Name + " moves them)"
		}
		if !r.LastFailover.IsZero() && now.Sub(r.LastFailover) < p.BlockPeriod {
			// Failed over within the block period: its LB signal goes down,
			// but the users on it stay until an operator acks (nodectl ack
			// NODE moves them).
			out = append(out, command{Op: opSetNode, Node: c.n.Name, State: Failed, At: now, DryRun: nodeDry,
				Reason: fmt.Sprintf("failing again within the block period (failed over at %s), users not moved until nodectl ack: %s", r.LastFailover.Format(time.DateTime), c.reason)})
			continue
		}
		out = append(out,
			command{Op: opSetNode, Node: c.n.Name, State: Failed, Reason: reason, At: now, DryRun: nodeDry},
			command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailover, Node: c.n.Name, Host: c.n.ProxyHost, Reason: reason, DryRun: dry}, At: now})
	}

	if p.Failback != "auto" {
		return out
	}
	for _, n := range view {
		r := s.Node(n.Name)
		if !n.Mail || r.State != Failed || n.HealthySince.IsZero() || now.Sub(n.HealthySince) < p.FailbackHoldDown {
			continue
		}
		if _, ok := s.Running(n.Name); ok {
			continue // its failover is still moving users off
		}
		why := fmt.Sprintf("healthy for %s", now.Sub(n.HealthySince).Round(time.Second))
		dry := p.DryRun(ActionFailback)
		if dry && !r.DryRun {
			// Its users really are away: it stays failed, and the dry run
			// says once what the failback would move (nodectl failback
			// moves them).
			if lp, ok := s.lastPlan(n.Name); ok && lp.Kind == PlanFailback && lp.DryRun && !lp.Finished.Before(r.Since) {
				continue
			}
			out = append(out, command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailback, Node: n.Name, Host: n.ProxyHost, Reason: why, Rate: p.FailbackRate, DryRun: true}, At: now})
			continue
		}
		out = append(out,
			command{Op: opSetNode, Node: n.Name, State: Recovering, Reason: why, At: now, DryRun: dry},
			command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailback, Node: n.Name, Host: n.ProxyHost, Reason: why, Rate: p.FailbackRate, DryRun: dry}, At: now})
	}
	return out
}
