package agent

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// testHookWatch, if set, runs in every round of the watch loop (tests
// stall it).
var testHookWatch func()

// progress records that the watch loop (the agent's health loop) went
// round; the watchdog pings only while it does.
type progress struct{ at atomic.Int64 }

func (p *progress) mark()                { p.at.Store(time.Now().UnixNano()) }
func (p *progress) since() time.Duration { return time.Since(time.Unix(0, p.at.Load())) }

// notifySystemd speaks systemd's notify protocol when NOTIFY_SOCKET is
// set (Type=notify): READY once the agent knows its cluster's leader and
// its first probes ran, STATUS with its role, leader and state, WATCHDOG
// (WatchdogSec=) only while the health loop makes progress, STOPPING at
// the end. Without NOTIFY_SOCKET it returns at once.
func (a *Agent) notifySystemd(ctx context.Context) {
	if ok, _ := daemon.SdNotify(false, "STATUS=starting: joining the cluster"); !ok {
		return // not under systemd
	}
	wd, _ := daemon.SdWatchdogEnabled(false)
	tick := time.Second
	if wd > 0 {
		tick = min(tick, wd/3)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	ready, status := false, ""
	for {
		select {
		case <-ctx.Done():
			_, _ = daemon.SdNotify(false, "STOPPING=1\nSTATUS=stopping")
			return
		case <-t.C:
		}
		if !ready && a.started() {
			ready = true
			_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
			a.log.Info("systemd_ready")
		}
		if s := a.statusLine(); ready && s != status {
			status = s
			_, _ = daemon.SdNotify(false, "STATUS="+s)
		}
		if wd > 0 && a.alive(wd) {
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}

// started: the agent knows its cluster's leader and its first probes
// (its checks and mount probes) have run.
func (a *Agent) started() bool {
	if a.cluster.Status().Leader == "" {
		return false
	}
	if a.health.MaxInterval() > 0 && a.health.LastObserved().IsZero() {
		return false
	}
	return len(a.fsprobe.Latest()) >= len(a.cfg.FSProbe.Mounts)
}

// alive: the health loop went round within half the watchdog period, and
// the checks gave results within three of their intervals.
func (a *Agent) alive(wd time.Duration) bool {
	if a.progress.since() > wd/2 {
		return false
	}
	if iv := a.health.MaxInterval(); iv > 0 {
		if last := a.health.LastObserved(); !last.IsZero() && time.Since(last) > 3*iv+wd/2 {
			return false
		}
	}
	return true
}

// statusLine is systemd's STATUS: role, leader, state and health.
func (a *Agent) statusLine() string {
	st := a.cluster.Status()
	leader := st.Leader
	if leader == "" {
		leader = "none"
	}
	s := fmt.Sprintf("%s, leader %s, health %s", a.cfg.Node.Role, leader, a.health.Report().Status)
	if a.cfg.Node.Role == RoleMail {
		s += ", state " + string(a.cluster.State().Node(a.cfg.Node.Name).State)
	}
	return s
}
