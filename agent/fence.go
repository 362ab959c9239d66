package agent

import (
	"context"
	"os/exec"
	"time"

	"github.com/roost-mail/roost/dovecot"
	"github.com/roost-mail/roost/gossip"
)

// leasePeers are the members that count towards this node's majority:
// every gossip member that has not left, witnesses too, and every server
// of the raft configuration, so that a node restarted into a partition,
// which has met no one yet, does not take itself for a cluster of one.
func (a *Agent) leasePeers() []string {
	seen := map[string]bool{a.cfg.Node.Name: true}
	var out []string
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	for _, m := range a.gossip.Members() {
		if m.State != gossip.StateLeft {
			add(m.Name)
		}
	}
	for _, s := range a.cluster.Status().Servers {
		add(s.ID)
	}
	return out
}

// fence takes this mail node out of service while it cannot reach a
// majority of the cluster for failover.fence_after (DESIGN.md, invariant
// 8): its LB signal says down, every local session is ended (again every
// tick, for logins proxied here meanwhile), and failover.fence_command
// runs once. The majority moves the node's users only after its lease has
// surely run out (lease.Timing.Expiry), so no user is served here and
// elsewhere at once. It serves again only once it is back in touch with a
// majority and has caught up with the raft log, so its view of the
// failover state (its users moved away, itself failed) is current.
func (a *Agent) fence(ctx context.Context) {
	admin, err := dovecot.New(a.cfg.Dovecot)
	if err != nil {
		a.log.Warn("fence_no_dovecot", "err", err, "hint", "a fenced node cannot end its sessions")
	}
	// A short tick: the leader's lease wait leaves a margin of two ping
	// intervals, and this loop must act well within it.
	t := time.NewTicker(min(a.lease.Interval(), 50*time.Millisecond))
	defer t.Stop()
	var kicked time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lost := a.lease.LostFor(time.Now())
		switch fenced := a.fenced.Load(); {
		case !fenced && lost >= a.cfg.Failover.FenceAfter:
			a.fenced.Store(true)
			a.log.Warn("fenced", "without_majority", lost.Round(time.Millisecond))
			if admin != nil {
				// Sessions first: fence_command may take its time (up to 30 s).
				a.endLocalSessions(ctx, admin)
				kicked = time.Now()
			}
			a.runFenceCommand(ctx)
		case fenced && lost == 0 && a.cluster.CaughtUp():
			a.fenced.Store(false)
			a.log.Info("unfenced")
		}
		if a.fenced.Load() && admin != nil && time.Since(kicked) >= a.lease.Interval() {
			a.endLocalSessions(ctx, admin)
			kicked = time.Now()
		}
	}
}

// endLocalSessions kicks every user with a session on this node's Dovecot
// (by exact name; LMTP deliveries are left to finish).
func (a *Agent) endLocalSessions(ctx context.Context, admin dovecot.Admin) {
	ctx, cancel := context.WithTimeout(ctx, a.lease.Interval()*4)
	defer cancel()
	users, err := dovecot.UsersWithSessions(ctx, admin)
	if err != nil {
		// Dovecot may be down already (nothing to end), or slow to answer.
		a.log.Warn("fence_who_failed", "err", err)
		return
	}
	if len(users) == 0 {
		return
	}
	n, err := dovecot.SignalKick(ctx, admin, a.cfg.Dovecot.InstanceName, users)
	a.log.Warn("fence_kicked", "users", n, "of", len(users), "err", err)
}

func (a *Agent) runFenceCommand(ctx context.Context) {
	if a.cfg.Failover.FenceCommand == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/bin/sh", "-c", a.cfg.Failover.FenceCommand).CombinedOutput()
	a.log.Warn("fence_command_ran", "command", a.cfg.Failover.FenceCommand, "err", err, "output", string(out))
}
