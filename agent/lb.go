package agent

import (
	"strings"

	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/health"
	"github.com/roost-mail/roost/lbsignal"
)

// lbSignal is what the load balancer should do with this node now, and
// why: its failover state, and down at once while its own health is
// critical (DESIGN.md, invariant 7: a hung mount takes it out before the
// leader acts).
func (a *Agent) lbSignal() (string, string) {
	r := a.cluster.State().Node(a.cfg.Node.Name)
	rep := a.health.Report()
	switch {
	case a.fenced.Load():
		return lbsignal.Down, "fenced: cut off from the majority of the cluster"
	case r.State == failover.Maintenance:
		return lbsignal.Maint, "maintenance: " + r.Reason
	case rep.Status == health.Critical:
		return lbsignal.Down, "critical: " + strings.Join(rep.Reasons, "; ")
	}
	switch r.LBSignal() {
	case "drain":
		return lbsignal.Drain, "draining: " + r.Reason
	case "down":
		return lbsignal.Down, string(r.State) + ": " + r.Reason
	}
	if r.DryRun {
		return lbsignal.Up, string(r.State) + " in a dry run: " + r.Reason
	}
	return lbsignal.Up, string(r.State)
}
