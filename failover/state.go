package failover

import (
	"fmt"
	"sort"
	"time"
)

// NodeState is a node's place in the failover state machine.
type NodeState string

// Node states. A node nobody has acted on is Active.
const (
	Active      NodeState = "active"      // serves its users
	Draining    NodeState = "draining"    // an operator is moving its users away
	Maintenance NodeState = "maintenance" // drained and expected down: no alerts
	Failed      NodeState = "failed"      // failed over: its users live elsewhere
	Recovering  NodeState = "recovering"  // healthy again: its users are coming home
)

// LBSignal is what the load balancer should do with a node in this state:
// up, drain (no new connections) or down.
func (s NodeState) LBSignal() string {
	switch s {
	case Draining:
		return "drain"
	case Failed, Maintenance:
		return "down"
	}
	return "up"
}

// NodeRecord is the replicated record of one node.
type NodeRecord struct {
	State  NodeState `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	// LastFailover (when its last failover plan began) anchors the block
	// period: a node is failed over at most once per block period unless
	// an operator acknowledges.
	LastFailover time.Time `json:"last_failover,omitzero"`
	// Holds are the Alertmanager alerts ("alertname/fingerprint") that
	// drained the node or put it in maintenance: while any holds it, it
	// stays so; the last one to resolve undoes it. Empty while draining or
	// in maintenance: an operator owns it, and only an operator undoes it.
	Holds []string `json:"holds,omitempty"`
	// Until is when an operator's drain or maintenance ends by itself
	// (zero: when undone).
	Until time.Time `json:"until,omitzero"`
	// Cordoned: the node keeps its users and serves them, but no plan
	// places users on it (CordonReason says why).
	Cordoned     bool   `json:"cordoned,omitempty"`
	CordonReason string `json:"cordon_reason,omitempty"`
	// DryRun: the state was reached in a dry run (failover.mode): nobody
	// was moved, and the load balancer still sends the node connections.
	DryRun bool `json:"dry_run,omitempty"`
}

// LBSignal is what the load balancer should do with the node: as its
// state says, but up when that state is only a dry run's.
func (r NodeRecord) LBSignal() string {
	if r.DryRun {
		return "up"
	}
	return r.State.LBSignal()
}

// PlanKind says why a plan moves users.
type PlanKind string

// Plan kinds.
const (
	PlanFailover PlanKind = "failover" // every user off a failed node
	PlanDrain    PlanKind = "drain"    // every user off a node, at a rate
	PlanFailback PlanKind = "failback" // a node's own users back home, at a rate
	PlanMove     PlanKind = "move"     // one user to one node
	// PlanRebalance moves the fewest users that bring every active node
	// to its weighted share, at a rate.
	PlanRebalance PlanKind = "rebalance"
)

// ownsNode: the plan concerns one node (its source or home), whose state
// it changes; a move or a rebalance concerns users, not a node.
func (k PlanKind) ownsNode() bool { return k != PlanMove && k != PlanRebalance }

// PlanStatus is where a plan is.
type PlanStatus string

// Plan statuses.
const (
	PlanRunning  PlanStatus = "running"
	PlanDone     PlanStatus = "done"
	PlanCanceled PlanStatus = "canceled"
)

// Plan is a move of users, committed before any of it runs and advanced
// batch by batch, so a new leader resumes where the old one stopped.
type Plan struct {
	ID     string   `json:"id"`
	Kind   PlanKind `json:"kind"`
	Node   string   `json:"node"`           // the source (failover, drain) or home (failback)
	Host   string   `json:"host,omitempty"` // that node's proxy_host when the plan began
	User   string   `json:"user,omitempty"` // a move's user, as placement.ShowUser writes it
	To     string   `json:"to,omitempty"`   // a move's target node
	Reason string   `json:"reason"`
	// Rate is users per second (0: as fast as the database goes).
	Rate int `json:"rate,omitempty"`
	// Users is how many users the plan was to move when it began, where
	// known (a drain's): for progress only.
	Users int `json:"users,omitempty"`
	// Max bounds the users a rebalance moves (0: as many as it takes).
	Max      int        `json:"max,omitempty"`
	Term     uint64     `json:"term"`
	Created  time.Time  `json:"created"`
	Status   PlanStatus `json:"status"`
	Batches  int        `json:"batches"`
	Moved    int        `json:"moved"`
	Finished time.Time  `json:"finished,omitzero"`
	Error    string     `json:"error,omitempty"`
	// DryRun: the plan only counts what it would move (failover.mode),
	// Would users, and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	Would  int  `json:"would,omitempty"`
	// Stranded: the plan stopped, canceled, because no target had room
	// (node.max_users) for these many users, who stay where they were.
	Stranded int `json:"stranded,omitempty"`
}

// Freeze stops every automatic move until an operator acknowledges.
type Freeze struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// Pause holds every automatic failover and failback, at an operator's
// word, until nodectl resume or Until (if set). Operators' own moves go on.
type Pause struct {
	Reason string    `json:"reason"`
	By     string    `json:"by,omitempty"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until,omitzero"`
}

// Scheduled is an operator's drain or maintenance that starts at At.
type Scheduled struct {
	ID      string    `json:"id"`
	Request Request   `json:"request"`
	At      time.Time `json:"at"`
	Created time.Time `json:"created"`
}

// State is the replicated cluster state. It changes only by applying
// committed commands, deterministically: the time in it is the leader's,
// carried in the command, never the applying node's clock.
type State struct {
	// ClusterID names the raft cluster; set once by its first leader.
	ClusterID string                `json:"cluster_id"`
	Nodes     map[string]NodeRecord `json:"nodes,omitempty"`
	Plans     map[string]Plan       `json:"plans,omitempty"`
	Frozen    *Freeze               `json:"frozen,omitempty"`
	Paused    *Pause                `json:"paused,omitempty"`
	Scheduled map[string]Scheduled  `json:"scheduled,omitempty"`
	// PlanSeq numbers plans, ScheduleSeq scheduled requests.
	PlanSeq     uint64 `json:"plan_seq,omitempty"`
	ScheduleSeq uint64 `json:"schedule_seq,omitempty"`
}

// Node returns a node's record; a node never acted on is Active.
func (s State) Node(name string) NodeRecord {
	if r, ok := s.Nodes[name]; ok {
		return r
	}
	return NodeRecord{State: Active}
}

// ScheduledFor returns node's scheduled requests, soonest first.
func (s State) ScheduledFor(node string) []Scheduled {
	var out []Scheduled
	for _, sc := range s.SortedSchedule() {
		if sc.Request.Node == node {
			out = append(out, sc)
		}
	}
	return out
}

// SortedSchedule returns the scheduled requests, soonest first.
func (s State) SortedSchedule() []Scheduled {
	out := make([]Scheduled, 0, len(s.Scheduled))
	for _, sc := range s.Scheduled {
		out = append(out, sc)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.Before(out[j].At)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Running returns the running plan that concerns node, if any.
func (s State) Running(node string) (Plan, bool) {
	for _, p := range s.sortedPlans() {
		if p.Status == PlanRunning && p.Node == node {
			return p, true
		}
	}
	return Plan{}, false
}

// runningRebalance returns the running rebalance, if any.
func (s State) runningRebalance() (Plan, bool) {
	for _, p := range s.RunningPlans() {
		if p.Kind == PlanRebalance {
			return p, true
		}
	}
	return Plan{}, false
}

// LastPlan returns the newest plan that concerns node, if any.
func (s State) LastPlan(node string) (Plan, bool) { return s.lastPlan(node) }

// lastPlan returns the newest plan that concerns node, if any.
func (s State) lastPlan(node string) (Plan, bool) {
	plans := s.sortedPlans()
	for i := len(plans) - 1; i >= 0; i-- {
		if plans[i].Node == node {
			return plans[i], true
		}
	}
	return Plan{}, false
}

// RunningPlans returns the running plans, oldest first.
func (s State) RunningPlans() []Plan {
	var out []Plan
	for _, p := range s.sortedPlans() {
		if p.Status == PlanRunning {
			out = append(out, p)
		}
	}
	return out
}

// RecentPlans returns every running plan and the latest finished ones,
// up to n plans in all, oldest first.
func (s State) RecentPlans(n int) []Plan {
	all := s.sortedPlans()
	keep := map[string]bool{}
	for _, p := range all {
		if p.Status == PlanRunning {
			keep[p.ID] = true
		}
	}
	for i := len(all) - 1; i >= 0 && len(keep) < n; i-- {
		keep[all[i].ID] = true
	}
	var out []Plan
	for _, p := range all {
		if keep[p.ID] {
			out = append(out, p)
		}
	}
	return out
}

func (s State) sortedPlans() []Plan {
	out := make([]Plan, 0, len(s.Plans))
	for _, p := range s.Plans {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// command is one raft log entry.
type command struct {
	Op        string     `json:"op"`
	ClusterID string     `json:"cluster_id,omitempty"`
	Node      string     `json:"node,omitempty"`
	State     NodeState  `json:"state,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	At        time.Time  `json:"at,omitzero"`
	Plan      *Plan      `json:"plan,omitempty"`
	PlanID    string     `json:"plan_id,omitempty"`
	Moved     int        `json:"moved,omitempty"`
	Status    PlanStatus `json:"status,omitempty"`
	// Holds replaces the node's alert holds (opSetNode).
	Holds []string `json:"holds,omitempty"`
	// Batch holds the commands of an all-or-nothing entry (opBatch).
	Batch []command `json:"batch,omitempty"`
	// Schedule is a request to carry out later (opSchedule); ScheduleID
	// names one to drop (opUnschedule).
	Schedule   *Scheduled `json:"schedule,omitempty"`
	ScheduleID string     `json:"schedule_id,omitempty"`
	// By and Until: who paused, and until when (opPause); Until is also
	// when a drain or maintenance ends (opSetNode). On: cordon or uncordon
	// (opCordon).
	By    string    `json:"by,omitempty"`
	Until time.Time `json:"until,omitzero"`
	On    bool      `json:"on,omitempty"`
	// DryRun marks a node state reached only in a dry run (opSetNode);
	// Would is what a dry-run plan would have moved (opPlanEnd).
	DryRun bool `json:"dry_run,omitempty"`
	Would  int  `json:"would,omitempty"`
	// Stranded is how many users a plan that found no room left where
	// they were (opPlanEnd).
	Stranded int `json:"stranded,omitempty"`
}

// Commands.
const (
	opInit       = "init"       // ClusterID
	opSetNode    = "set-node"   // Node, State, Reason, Holds, Until, DryRun, At
	opPlanStart  = "plan-start" // Plan (ID assigned here), At
	opPlanBatch  = "plan-batch" // PlanID, Moved
	opPlanEnd    = "plan-end"   // PlanID, Status, Reason (error), Would, Stranded, At
	opFreeze     = "freeze"     // Reason, At
	opAck        = "ack"        // Node ("" for the cluster's freeze), At
	opBatch      = "batch"      // Batch: every command applies, or none does
	opPause      = "pause"      // Reason, By, Until, At
	opResume     = "resume"     // Reason, At
	opCordon     = "cordon"     // Node, On, Reason, At
	opSchedule   = "schedule"   // Schedule (ID assigned here), At
	opUnschedule = "unschedule" // ScheduleID
)

// batch makes one raft entry of cmds: a decision that changes several
// things (a node failed and its plan started) is applied all or nothing,
// so no half-applied decision can strand users. One command stays itself.
func batch(cmds []command) command {
	if len(cmds) == 1 {
		return cmds[0]
	}
	return command{Op: opBatch, Batch: cmds}
}

// keepFinishedPlans bounds the finished plans kept in the state (the
// journal in the database keeps every move).
const keepFinishedPlans = 100

// apply changes the state by one command; it returns an error (and
// changes nothing) for a command that does not apply.
func (s *State) apply(c command) error {
	switch c.Op {
	case opInit:
		if s.ClusterID == "" {
			s.ClusterID = c.ClusterID
		}
	case opSetNode:
		switch c.State {
		case Active, Draining, Maintenance, Failed, Recovering:
		default:
			return fmt.Errorf("set-node %s: unknown state %q", c.Node, c.State)
		}
		r := s.Node(c.Node)
		if r.State != c.State {
			r.Since = c.At
		}
		r.State, r.Reason, r.Holds, r.Until, r.DryRun = c.State, c.Reason, c.Holds, c.Until, c.DryRun
		if s.Nodes == nil {
			s.Nodes = map[string]NodeRecord{}
		}
		s.Nodes[c.Node] = r
	case opPlanStart:
		if c.Plan == nil {
			return fmt.Errorf("plan-start without a plan")
		}
		if p, ok := s.Running(c.Plan.Node); ok && c.Plan.Kind.ownsNode() {
			return fmt.Errorf("node %s already has plan %s (%s) running", c.Plan.Node, p.ID, p.Kind)
		}
		if p, ok := s.runningRebalance(); ok && c.Plan.Kind == PlanRebalance {
			return fmt.Errorf("rebalance %s is running already", p.ID)
		}
		s.PlanSeq++
		p := *c.Plan
		p.ID = fmt.Sprintf("%06d-%s", s.PlanSeq, p.Kind) // sorts by age
		p.Status, p.Created, p.Batches, p.Moved = PlanRunning, c.At, 0, 0
		if s.Plans == nil {
			s.Plans = map[string]Plan{}
		}
		s.Plans[p.ID] = p
		if p.Kind.ownsNode() && !p.DryRun {
			// A plan that acts makes its node's state real (an operator's
			// ack of a node failed in a dry run moves its users); a dry run
			// starts no block period.
			r := s.Node(p.Node)
			r.DryRun = false
			if p.Kind == PlanFailover {
				r.LastFailover = c.At
			}
			if s.Nodes == nil {
				s.Nodes = map[string]NodeRecord{}
			}
			s.Nodes[p.Node] = r
		}
	case opPlanBatch:
		p, ok := s.Plans[c.PlanID]
		if !ok || p.Status != PlanRunning {
			return fmt.Errorf("plan-batch: plan %q is not running", c.PlanID)
		}
		p.Batches++
		p.Moved += c.Moved
		s.Plans[c.PlanID] = p
	case opPlanEnd:
		p, ok := s.Plans[c.PlanID]
		if !ok || p.Status != PlanRunning {
			return fmt.Errorf("plan-end: plan %q is not running", c.PlanID)
		}
		p.Status, p.Finished, p.Error, p.Would, p.Stranded = c.Status, c.At, c.Reason, c.Would, c.Stranded
		s.Plans[c.PlanID] = p
		s.prunePlans()
	case opFreeze:
		if s.Frozen == nil {
			s.Frozen = &Freeze{Reason: c.Reason, Since: c.At}
		}
	case opBatch:
		next := s.clone()
		for i, sub := range c.Batch {
			if sub.Op == opBatch {
				return fmt.Errorf("batch: command %d is a batch itself", i)
			}
			if err := next.apply(sub); err != nil {
				return fmt.Errorf("batch (nothing applied): command %d (%s): %w", i, sub.Op, err)
			}
		}
		*s = next
	case opSchedule:
		if c.Schedule == nil {
			return fmt.Errorf("schedule without a request")
		}
		s.ScheduleSeq++
		sc := *c.Schedule
		sc.ID, sc.Created = fmt.Sprintf("%06d-%s-%s", s.ScheduleSeq, sc.Request.Op, sc.Request.Node), c.At
		if s.Scheduled == nil {
			s.Scheduled = map[string]Scheduled{}
		}
		s.Scheduled[sc.ID] = sc
	case opUnschedule:
		if _, ok := s.Scheduled[c.ScheduleID]; !ok {
			return fmt.Errorf("unschedule: no scheduled request %q", c.ScheduleID)
		}
		delete(s.Scheduled, c.ScheduleID)
	case opPause:
		s.Paused = &Pause{Reason: c.Reason, By: c.By, Since: c.At, Until: c.Until}
	case opResume:
		s.Paused = nil
	case opCordon:
		r := s.Node(c.Node)
		r.Cordoned, r.CordonReason = c.On, ""
		if c.On {
			r.CordonReason = c.Reason
		}
		if s.Nodes == nil {
			s.Nodes = map[string]NodeRecord{}
		}
		s.Nodes[c.Node] = r
	case opAck:
		if c.Node == "" {
			s.Frozen = nil
			break
		}
		r := s.Node(c.Node)
		r.LastFailover = time.Time{}
		if s.Nodes == nil {
			s.Nodes = map[string]NodeRecord{}
		}
		s.Nodes[c.Node] = r
	default:
		// A newer agent's command: refuse rather than diverge.
		return fmt.Errorf("unknown raft command %q", c.Op)
	}
	return nil
}

// prunePlans drops the oldest finished plans beyond keepFinishedPlans.
func (s *State) prunePlans() {
	var finished []Plan
	for _, p := range s.sortedPlans() {
		if p.Status != PlanRunning {
			finished = append(finished, p)
		}
	}
	for i := 0; i < len(finished)-keepFinishedPlans; i++ {
		delete(s.Plans, finished[i].ID)
	}
}

// clone returns a deep copy, for readers outside the FSM's lock.
func (s *State) clone() State {
	c := *s
	if s.Nodes != nil {
		c.Nodes = make(map[string]NodeRecord, len(s.Nodes))
		for k, v := range s.Nodes {
			c.Nodes[k] = v
		}
	}
	if s.Plans != nil {
		c.Plans = make(map[string]Plan, len(s.Plans))
		for k, v := range s.Plans {
			c.Plans[k] = v
		}
	}
	if s.Frozen != nil {
		f := *s.Frozen
		c.Frozen = &f
	}
	if s.Paused != nil {
		p := *s.Paused
		c.Paused = &p
	}
	if s.Scheduled != nil {
		c.Scheduled = make(map[string]Scheduled, len(s.Scheduled))
		for k, v := range s.Scheduled {
			c.Scheduled[k] = v
		}
	}
	return c
}
