package failover

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mail/roost/placement"
)

// Leading is what the raft leader does besides raft: decide from the
// cluster's view and carry out plans.
type Leading struct {
	Executor *Executor
	// View returns the cluster as gossip shows it now (HealthySince is
	// filled in by the leader from its own continuous view).
	View     func() []NodeView
	Policy   Policy
	Interval time.Duration
	// Changes, if set, wakes the leader between intervals when the view
	// may have changed (gossip.Subscribe), so it decides at once.
	Changes <-chan struct{}

	// reloaded replaces Policy once SetPolicy is called.
	reloaded atomic.Pointer[Policy]
}

// policy is the policy in force.
func (w *Leading) policy() Policy {
	if p := w.reloaded.Load(); p != nil {
		return *p
	}
	return w.Policy
}

// InForce is the policy in force.
func (w *Leading) InForce() Policy { return w.policy() }

// SetPolicy changes the policy in force (a configuration reload); the
// leader's next round follows it.
func (w *Leading) SetPolicy(p Policy) { w.reloaded.Store(&p) }

// lead runs while this node leads: every Interval it decides and applies
// the commands, and it runs each running plan in its own goroutine. A
// fenced write ends it: another leader has taken over.
func (c *Cluster) lead(ctx context.Context, w *Leading) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ops := leaderOps{fence: placement.Fence{Term: c.raft.CurrentTerm(), Leader: c.id}, state: c.fsm.read, view: w.View, apply: c.apply, now: time.Now}
	healthySince, failingSince := map[string]time.Time{}, map[string]time.Time{}
	running := map[string]bool{}
	// seen is the node states of the last round, for the node_state hook
	// (changes while another node led are not replayed).
	var seen map[string]NodeRecord
	ended := make(chan string)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(w.Interval)
	defer tick.Stop()
	for {
		now := time.Now()
		view := w.View()
		for i := range view {
			n := &view[i]
			if n.Gossip == "alive" && n.Health == "passing" && len(n.UnreachableBy) == 0 {
				if healthySince[n.Name].IsZero() {
					healthySince[n.Name] = now
				}
				n.HealthySince = healthySince[n.Name]
			} else {
				delete(healthySince, n.Name)
			}
			if bad, _ := failing(*n, view); bad {
				if failingSince[n.Name].IsZero() {
					failingSince[n.Name] = now
				}
				n.FailingSince = failingSince[n.Name]
			} else {
				delete(failingSince, n.Name)
			}
		}
		c.decideMu.Lock()
		if cmds := Decide(view, c.fsm.read(), now, w.policy()); len(cmds) > 0 {
			// One entry: every command of the decision applies, or none.
			if err := c.apply(batch(cmds)); err != nil {
				c.log.Warn("failover_apply_failed", "commands", len(cmds), "err", err)
			} else {
				for _, cmd := range cmds {
					c.log.Warn("failover_decided", cmd.attrs()...)
					c.metrics.decided.WithLabelValues(cmd.Op).Inc()
				}
			}
		}
		c.decideMu.Unlock()
		c.runDue(ctx, w, now)
		st := c.fsm.read()
		if w.Executor.Hooks != nil && seen != nil {
			for name, r := range st.Nodes {
				prev, ok := seen[name]
				if !ok {
					prev = NodeRecord{State: Active} // never acted on
				}
				if prev.State != r.State && !prev.DryRun && !r.DryRun { // a dry run runs no hook
					wg.Go(func() { w.Executor.Hooks.NodeState(ctx, name, prev, r) })
				}
			}
		}
		seen = st.Nodes
		if seen == nil {
			seen = map[string]NodeRecord{}
		}
		for _, p := range st.RunningPlans() {
			if running[p.ID] {
				continue
			}
			running[p.ID] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := w.Executor.run(ctx, p.ID, ops)
				if errors.Is(err, placement.ErrFenced) {
					cancel()
				}
				select {
				case ended <- p.ID:
				case <-ctx.Done():
				}
			}()
		}
		var expired <-chan time.Time
		if at := nextExpiry(view, now); !at.IsZero() {
			expired = time.After(time.Until(at))
		}
		select {
		case <-ctx.Done():
			return
		case id := <-ended:
			delete(running, id)
		case <-expired:
		case <-tick.C:
		case <-c.wakeLead:
		case <-w.Changes:
		}
	}
}

// runDue carries out the scheduled drains and maintenance whose time has
// come, each dropped from the schedule in the same raft entry. One that no
// longer applies (the node is gone, or cannot be drained) is dropped with
// a warning; one that fails for now (the database) is tried again.
func (c *Cluster) runDue(ctx context.Context, w *Leading, now time.Time) {
	for _, sc := range c.fsm.read().SortedSchedule() {
		if sc.At.After(now) {
			return
		}
		var reply Reply
		var err error
		cmds, _, aerr := c.applyPlanned(func(st State) []command {
			var cmds []command
			reply, cmds, err = due(ctx, sc, st, w.View(), now, w.policy(), w.Executor)
			return cmds
		})
		switch {
		case aerr != nil:
			c.log.Warn("scheduled_request_failed", "schedule", sc.ID, "err", aerr)
			return
		case cmds == nil:
			c.log.Warn("scheduled_request_failed", "schedule", sc.ID, "err", err, "retry", "next round")
			return
		case err != nil:
			c.log.Warn("scheduled_request_dropped", "schedule", sc.ID, "err", err)
		default:
			c.log.Info("scheduled_request", "schedule", sc.ID, "op", sc.Request.Op, "node", sc.Request.Node, "message", reply.Message)
		}
	}
}

// due is what a scheduled request whose time has come does: the request's
// commands and its dropping from the schedule, or (err set) its dropping
// alone when the request no longer applies; no commands when it fails for
// now and is to be tried again.
func due(ctx context.Context, sc Scheduled, st State, view []NodeView, now time.Time, pol Policy, ex *Executor) (Reply, []command, error) {
	reply, cmds, err := request(ctx, sc.Request, st, view, now, pol, ex)
	if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) {
		return reply, nil, err
	}
	if err != nil {
		cmds = nil
	}
	return reply, append(cmds, command{Op: opUnschedule, ScheduleID: sc.ID}), err
}

// nextExpiry is the earliest lease expiry still ahead of a failing node:
// the leader decides again right then, not up to an interval later.
func nextExpiry(view []NodeView, now time.Time) time.Time {
	var at time.Time
	for _, n := range view {
		if !n.FailingSince.IsZero() && n.LeaseExpiry.After(now) && (at.IsZero() || n.LeaseExpiry.Before(at)) {
			at = n.LeaseExpiry
		}
	}
	return at
}

// wake makes the leader's loop run now (it starts new plans at once).
func (c *Cluster) wake() {
	select {
	case c.wakeLead <- struct{}{}:
	default:
	}
}
