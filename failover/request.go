package failover

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/roost-mail/roost/placement"
)

// req is an operator's (or an alert's) request in the context the leader
// plans it in: the replicated state, the cluster's view, and the request's
// node as both see it.
type req struct {
	Request
	ctx  context.Context
	st   State
	view []NodeView
	now  time.Time
	pol  Policy
	ex   *Executor
	// node and rec are the request's node (zero when it names none), and
	// running its running plan when hasPlan.
	node    NodeView
	rec     NodeRecord
	running Plan
	hasPlan bool
}

// An opHandler plans one kind of request: the reply, and the commands that
// carry it out (one raft entry). It only reads: the state, the view, and
// the routing table through the executor.
type opHandler func(q *req) (Reply, []command, error)

var opHandlers = map[string]opHandler{
	OpDrain:          drainOp,
	OpMaintenanceOn:  drainOp,
	OpUndrain:        undoOp,
	OpMaintenanceOff: undoOp,
	OpFailback:       undoOp,
	OpMove:           moveOp,
	OpRebalance:      rebalanceOp,
	OpPause:          pauseOp,
	OpResume:         resumeOp,
	OpCordon:         cordonOp,
	OpUncordon:       cordonOp,
	OpAck:            ackOp,
}

// request is what an operator's (or an alert's) request r does, the
// state being st and the cluster's view view: the reply, and the commands
// that carry it out, applied as one raft entry. It only reads (the
// routing table, through ex), so the model-based test drives it as the
// leader does.
func request(ctx context.Context, r Request, st State, view []NodeView, now time.Time, pol Policy, ex *Executor) (Reply, []command, error) {
	handle := opHandlers[r.Op]
	if handle == nil {
		return Reply{}, nil, opError(ErrInvalid, "unknown request %q", r.Op)
	}
	q := &req{Request: r, ctx: ctx, st: st, view: view, now: now, pol: pol, ex: ex}
	if r.Node != "" {
		i := indexOf(view, r.Node)
		if i < 0 {
			return Reply{}, nil, opError(ErrNotFound, "no node %q in the cluster", r.Node)
		}
		q.node = view[i]
		if !q.node.Mail {
			return Reply{}, nil, opError(ErrInvalid, "%s is a witness: it serves no users", r.Node)
		}
	}
	q.rec = st.Node(r.Node)
	q.running, q.hasPlan = st.Running(r.Node)
	if r.Alert != "" && pol.DryRun(ActionAlerts) && (r.Op == OpDrain || r.Op == OpMaintenanceOn) {
		// An alert's drain in a dry run (failover.mode) only says what it
		// would do; a resolved alert still undoes what it held before.
		q.DryRun = true
	}
	if r.At.After(now) {
		return scheduleOp(q)
	}
	// An undrain or maintenance off cancels what is scheduled for the node.
	var canceled []command
	if (r.Op == OpUndrain || r.Op == OpMaintenanceOff) && r.Alert == "" {
		var ids []string
		for _, sc := range st.ScheduledFor(r.Node) {
			canceled = append(canceled, command{Op: opUnschedule, ScheduleID: sc.ID})
			ids = append(ids, sc.ID)
		}
		if len(ids) > 0 && q.rec.State != Draining && q.rec.State != Maintenance {
			return Reply{Message: fmt.Sprintf("canceled what was scheduled for %s: %s", r.Node, strings.Join(ids, ", "))}, canceled, nil
		}
	}
	reply, cmds, err := handle(q)
	if err != nil {
		return reply, nil, err
	}
	return reply, append(canceled, cmds...), nil
}

// scheduleOp keeps a drain or maintenance for later: the leader carries it
// out at q.At.
func scheduleOp(q *req) (Reply, []command, error) {
	if q.At.After(q.now.Add(maxSchedule)) {
		return Reply{}, nil, opError(ErrInvalid, "%s at %s: want a time within %v", q.Op, q.At.UTC().Format(time.DateTime), maxSchedule)
	}
	later := q.Request
	later.At = time.Time{}
	undo := map[string]string{OpDrain: "undrain " + q.Node, OpMaintenanceOn: "maintenance " + q.Node + " off"}[q.Op]
	reply := Reply{Message: fmt.Sprintf("%s of %s scheduled for %s UTC (nodectl %s cancels it)", q.Op, q.Node, q.At.UTC().Format(time.DateTime), undo)}
	return reply, []command{{Op: opSchedule, Schedule: &Scheduled{Request: later, At: q.At}, At: q.now}}, nil
}

// drainOp drains a node or puts it in maintenance: its state changes and a
// plan moves its users away.
func drainOp(q *req) (Reply, []command, error) {
	var reply Reply
	state, kind := Draining, "drained"
	if q.Op == OpMaintenanceOn {
		state, kind = Maintenance, "in maintenance"
	}
	rec := q.rec
	held := rec.State == Draining || rec.State == Maintenance
	// until is when an operator's drain or maintenance ends by itself.
	var until time.Time
	if q.For > 0 {
		until = q.now.Add(q.For)
	}
	// holds is what the node's record keeps: the alerts that hold it,
	// this one added; an operator's request takes it over (none).
	var holds []string
	if q.Alert != "" {
		if held && len(rec.Holds) == 0 {
			reply.Message = fmt.Sprintf("%s is %s by an operator: alert %s changes nothing (only an operator undoes it)", q.Node, rec.State, q.Alert)
			return reply, nil, nil
		}
		holds = rec.Holds
		if !slices.Contains(holds, q.Alert) {
			holds = append(slices.Clone(holds), q.Alert)
		}
		if held {
			state = rec.State // the first alert's action stands
		}
	}
	takeover := ""
	if q.Alert == "" && len(rec.Holds) > 0 {
		takeover = fmt.Sprintf(" (it was held by alert %s: an operator owns it now)", strings.Join(rec.Holds, ", "))
	}
	set := command{Op: opSetNode, Node: q.Node, State: state, Reason: cmp.Or(q.Reason, kind+" by an operator"), Holds: holds, Until: until, At: q.now}
	if held && q.hasPlan {
		return drainHeld(q, set, takeover)
	}
	// Draining or in maintenance with no plan (the last was vetoed or
	// canceled): this starts it again, as below.
	if rec.State == Failed && !rec.DryRun {
		return reply, nil, opError(ErrConflict, "%s is failed over already: its users live elsewhere (nodectl failback brings them back)", q.Node)
	}
	targets := q.ex.targets(q.view, q.st, q.Node)
	if len(targets) == 0 {
		return reply, nil, opError(ErrConflict, "no other healthy active mail node could take %s's users", q.Node)
	}
	counts, total, err := q.ex.spread(q.ctx, q.node.ProxyHost, targets)
	if err != nil {
		return reply, nil, fmt.Errorf("listing %s's users: %w", q.Node, err)
	}
	reply.Users = total
	rate := cmp.Or(q.Rate, q.pol.DrainRate)
	switch {
	case rec.State == state && total == 0:
		reply.Message = fmt.Sprintf("%s is already %s: no user is left on it%s", q.Node, rec.State, takeover)
		if !q.DryRun && (!slices.Equal(rec.Holds, holds) || !rec.Until.Equal(until)) {
			return reply, []command{set}, nil
		}
		return reply, nil, nil
	case q.DryRun:
		reply.Targets = counts
		reply.Message = fmt.Sprintf("would move %d users off %s at %d/s to %s", total, q.Node, rate, describeCounts(counts))
		if q.Alert != "" {
			reply.Message = fmt.Sprintf("dry run: alert %s %s", q.Alert, reply.Message)
		}
		return reply, nil, nil
	}
	var cmds []command
	if q.hasPlan && q.running.Kind == PlanFailback {
		cmds = append(cmds, command{Op: opPlanEnd, PlanID: q.running.ID, Status: PlanCanceled, Reason: "node " + kind, At: q.now})
	}
	cmds = append(cmds, set,
		command{Op: opPlanStart, Plan: &Plan{Kind: PlanDrain, Node: q.Node, Host: q.node.ProxyHost, Reason: set.Reason, Rate: rate, Users: total}, At: q.now})
	reply.Message = fmt.Sprintf("%s is %s: moving its %d users at %d/s%s", q.Node, state, total, rate, takeover)
	if !until.IsZero() {
		reply.Message += fmt.Sprintf("; it ends by itself at %s UTC (its users come back)", until.UTC().Format(time.DateTime))
	}
	return reply, cmds, nil
}

// drainHeld is a drain or maintenance of a node that is drained or in
// maintenance already, its plan running: the plan goes on, and the node's
// record takes set's state, holds and end.
func drainHeld(q *req, set command, takeover string) (Reply, []command, error) {
	rec := q.rec
	reply := Reply{Message: fmt.Sprintf("%s is already %s%s", q.Node, rec.State, takeover), Plan: q.running.ID}
	if rec.State == set.State && slices.Equal(rec.Holds, set.Holds) && rec.Until.Equal(set.Until) {
		return reply, nil, nil
	}
	var cmds []command
	if !q.DryRun {
		cmds = []command{set}
	}
	if rec.State != set.State {
		reply.Message = fmt.Sprintf("%s was %s and is %s now; its plan %s goes on%s", q.Node, rec.State, set.State, q.running.ID, takeover)
	} else if q.Alert != "" {
		reply.Message = fmt.Sprintf("%s is already %s; held by %d alerts now", q.Node, rec.State, len(set.Holds))
	}
	return reply, cmds, nil
}

// undoOp undrains a node, ends its maintenance or fails it back: it
// recovers, and a plan brings its users back.
func undoOp(q *req) (Reply, []command, error) {
	var reply Reply
	rec := q.rec
	if q.Op == OpFailback {
		if rec.State != Failed && rec.State != Recovering {
			return reply, nil, opError(ErrConflict, "%s is %s, not failed over: nothing to fail back", q.Node, rec.State)
		}
		if q.hasPlan && q.running.Kind == PlanFailback {
			reply.Plan, reply.Message = q.running.ID, fmt.Sprintf("%s is failing back already", q.Node)
			return reply, nil, nil
		}
	} else if rec.State != Draining && rec.State != Maintenance {
		if q.Alert != "" {
			reply.Message = fmt.Sprintf("%s is %s: nothing alert %s holds", q.Node, rec.State, q.Alert)
			return reply, nil, nil
		}
		return reply, nil, opError(ErrConflict, "%s is %s, not drained or in maintenance", q.Node, rec.State)
	}
	if q.Alert != "" {
		if reply, cmds, kept := release(q); kept {
			return reply, cmds, nil
		}
	}
	if err := unhealthy(q.node, q.view); err != nil {
		return reply, nil, err
	}
	var cmds []command
	if q.hasPlan {
		cmds = append(cmds, command{Op: opPlanEnd, PlanID: q.running.ID, Status: PlanCanceled, Reason: "operator: " + q.Op, At: q.now})
	}
	reason := cmp.Or(q.Reason, "operator: "+q.Op)
	cmds = append(cmds,
		command{Op: opSetNode, Node: q.Node, State: Recovering, Reason: reason, At: q.now},
		command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailback, Node: q.Node, Host: q.node.ProxyHost, Reason: reason, Rate: q.pol.FailbackRate}, At: q.now})
	reply.Message = fmt.Sprintf("%s is recovering: its users come back at %d/s", q.Node, q.pol.FailbackRate)
	return reply, cmds, nil
}

// release is a resolved alert's undo of a node drained or in maintenance:
// kept when the node stays so (an operator owns it, another alert holds
// it, or others hold it too), with the reply and commands; not kept when
// the alert held it alone, and it comes back.
func release(q *req) (reply Reply, cmds []command, kept bool) {
	rec := q.rec
	switch {
	case len(rec.Holds) == 0:
		reply.Message = fmt.Sprintf("%s is %s by an operator: alert %s does not undo it", q.Node, rec.State, q.Alert)
		return reply, nil, true
	case !slices.Contains(rec.Holds, q.Alert):
		reply.Message = fmt.Sprintf("%s is %s, held by alert %s, not by alert %s: it stays", q.Node, rec.State, strings.Join(rec.Holds, ", "), q.Alert)
		return reply, nil, true
	case len(rec.Holds) > 1:
		rest := slices.DeleteFunc(slices.Clone(rec.Holds), func(h string) bool { return h == q.Alert })
		reply.Message = fmt.Sprintf("%s stays %s: still held by alert %s", q.Node, rec.State, strings.Join(rest, ", "))
		return reply, []command{{Op: opSetNode, Node: q.Node, State: rec.State, Reason: rec.Reason, Holds: rest, At: q.now}}, true
	}
	return reply, nil, false
}

// moveOp moves one user to the request's node.
func moveOp(q *req) (Reply, []command, error) {
	var reply Reply
	node, rec := q.node, q.rec
	if rec.State != Active || node.Gossip != "alive" || node.Health != "passing" || node.ProxyHost == "" {
		return reply, nil, opError(ErrConflict, "%s cannot take users now (state %s, gossip %s, health %s)", q.Node, rec.State, node.Gossip, dashIfEmpty(node.Health))
	}
	if rec.Cordoned {
		return reply, nil, opError(ErrConflict, "%s is cordoned (%s): no user is placed on it until nodectl uncordon", q.Node, rec.CordonReason)
	}
	name, _ := placement.ParseUser(q.User) // Validate checked it
	user := placement.ShowUser(name)
	from, err := q.ex.Router.Lookup(q.ctx, name)
	if err != nil {
		return reply, nil, lookupError(user, err)
	}
	if from == node.ProxyHost {
		reply.Message = fmt.Sprintf("%s is on %s already", user, q.Node)
		return reply, nil, nil
	}
	if node.MaxUsers > 0 {
		counts, err := q.ex.Router.Counts(q.ctx)
		if err != nil {
			return reply, nil, fmt.Errorf("counting users: %w", err)
		}
		if k := counts[node.ProxyHost]; k >= node.MaxUsers {
			return reply, nil, opError(ErrConflict, "%s holds %d users, its node.max_users is %d: no room for %s", q.Node, k, node.MaxUsers, user)
		}
	}
	reason := cmp.Or(q.Reason, "moved by an operator")
	reply.Message = fmt.Sprintf("moving %s from %s to %s", user, from, q.Node)
	return reply, []command{{Op: opPlanStart, Plan: &Plan{Kind: PlanMove, To: q.Node, User: user, Reason: reason, Users: 1}, At: q.now}}, nil
}

// rebalanceOp moves users from the nodes above their share to the nodes
// below it, one rebalance at a time.
func rebalanceOp(q *req) (Reply, []command, error) {
	var reply Reply
	if p, ok := q.st.runningRebalance(); ok {
		reply.Plan, reply.Users = p.ID, p.Users
		reply.Message = fmt.Sprintf("rebalance %s is running already: %d of %d users moved", p.ID, p.Moved, p.Users)
		return reply, nil, nil
	}
	targets := q.ex.targets(q.view, q.st, "")
	if len(targets) < 2 {
		return reply, nil, opError(ErrConflict, "%d active, healthy, uncordoned mail nodes: nothing to balance between", len(targets))
	}
	moves, err := q.ex.rebalanceBatch(q.ctx, targets, q.Max)
	if err != nil {
		return reply, nil, fmt.Errorf("counting users: %w", err)
	}
	names := map[string]string{}
	for _, t := range targets {
		names[t.Host] = t.Node
	}
	to := map[string]int{}
	for _, m := range moves {
		to[names[m.To]]++
	}
	reply.Users, reply.Targets = len(moves), to
	rate := cmp.Or(q.Rate, q.pol.DrainRate)
	switch {
	case len(moves) == 0:
		reply.Message = "every active node holds its share already: nobody to move"
		return reply, nil, nil
	case q.DryRun:
		reply.Message = fmt.Sprintf("would move %d users at %d/s to %s", len(moves), rate, describeCounts(to))
		return reply, nil, nil
	}
	reason := cmp.Or(q.Reason, "rebalanced by an operator")
	reply.Message = fmt.Sprintf("rebalancing: moving %d users at %d/s to %s", len(moves), rate, describeCounts(to))
	return reply, []command{{Op: opPlanStart, Plan: &Plan{Kind: PlanRebalance, Reason: reason, Rate: rate, Users: len(moves), Max: q.Max}, At: q.now}}, nil
}

// pauseOp stops automatic failover and failback from starting, for a while
// or until resumed.
func pauseOp(q *req) (Reply, []command, error) {
	var until time.Time
	how := "until nodectl resume"
	if q.For > 0 {
		until = q.now.Add(q.For)
		how = "until " + until.UTC().Format(time.DateTime) + " UTC (or nodectl resume)"
	}
	reply := Reply{Message: "paused: no automatic failover or failback starts " + how + "; operators' drains and moves still work"}
	if q.st.Paused != nil {
		reply.Message = "paused again (was: " + q.st.Paused.Reason + "): no automatic failover or failback starts " + how
	}
	var auto []string
	for _, p := range q.st.RunningPlans() {
		if p.Kind == PlanFailover || p.Kind == PlanFailback {
			auto = append(auto, fmt.Sprintf("%s (%s)", p.ID, p.Node))
		}
	}
	if len(auto) > 0 {
		reply.Message += "; running plans finish: " + strings.Join(auto, ", ")
	}
	return reply, []command{{Op: opPause, Reason: q.Reason, By: q.By, Until: until, At: q.now}}, nil
}

// resumeOp ends a pause.
func resumeOp(q *req) (Reply, []command, error) {
	if q.st.Paused == nil {
		return Reply{Message: "not paused: nothing to resume"}, nil, nil
	}
	reply := Reply{Message: fmt.Sprintf("resumed (paused since %s: %s): automatic failover and failback decide again", q.st.Paused.Since.UTC().Format(time.DateTime), q.st.Paused.Reason)}
	return reply, []command{{Op: opResume, Reason: q.Reason, At: q.now}}, nil
}

// cordonOp keeps plans from placing users on a node, or (uncordon) lets
// them again.
func cordonOp(q *req) (Reply, []command, error) {
	on := q.Op == OpCordon
	if q.rec.Cordoned == on {
		return Reply{Message: fmt.Sprintf("%s is %sed already", q.Node, q.Op)}, nil, nil
	}
	reply := Reply{Message: fmt.Sprintf("%s is cordoned: it keeps and serves its users, and no plan places users on it", q.Node)}
	if !on {
		reply.Message = fmt.Sprintf("%s is uncordoned: plans may place users on it again", q.Node)
	}
	return reply, []command{{Op: opCordon, Node: q.Node, On: on, Reason: cmp.Or(q.Reason, "cordoned by an operator"), At: q.now}}, nil
}

// ackOp unfreezes the cluster, or (with a node) resets the node's block
// period and sends away the users who came back to it too early.
func ackOp(q *req) (Reply, []command, error) {
	if q.Node == "" {
		if q.st.Frozen == nil {
			return Reply{Message: "the cluster is not frozen: nothing to acknowledge"}, nil, nil
		}
		reply := Reply{Message: "unfrozen (was: " + q.st.Frozen.Reason + "); automatic moves resume, and freeze again if the trouble persists"}
		return reply, []command{{Op: opAck, At: q.now}}, nil
	}
	reply := Reply{Message: fmt.Sprintf("%s's block period is reset: it may be failed over again", q.Node)}
	cmds := []command{{Op: opAck, Node: q.Node, At: q.now}}
	if bad, why := failing(q.node, q.view); bad && q.rec.State == Failed && !q.hasPlan {
		// Failed again within the block period: some users came home
		// before it did. The ack sends them away.
		reason := "acknowledged by an operator: " + why
		cmds = append(cmds, command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailover, Node: q.Node, Host: q.node.ProxyHost, Reason: reason}, At: q.now})
		reply.Message += "; moving the users still routed to it"
	}
	return reply, cmds, nil
}
