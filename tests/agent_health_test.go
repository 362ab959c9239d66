package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/faultfs/faultfstest"
	"github.com/roost-mail/roost/fsprobe"
	"github.com/roost-mail/roost/health"
	"github.com/roost-mail/roost/tests/dovecotlab"
)

// A node's own health (its Dovecot and its mail mount) reaches every agent
// through gossip: a hung mount makes it critical at once, a dead Dovecot
// after fall rounds, and it recovers after rise rounds.
func TestNodeHealthIsGossiped(t *testing.T) {
	d := dovecotlab.Start(t, "agenthealth")
	fs, _, mnt := faultfstest.Mount(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "probe.pw")
	if err := os.WriteFile(pwFile, []byte(d.Pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	c := agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) {
		if i != 0 {
			return
		}
		cfg.FSProbe = fsprobe.Config{Mounts: []fsprobe.MountConfig{{Path: mnt, FSType: "fuse.faultfs"}}, Interval: 200 * time.Millisecond, Timeout: 500 * time.Millisecond, SlowThreshold: 300 * time.Millisecond}
		cfg.Health = health.DefaultConfig()
		cfg.Health.Fall, cfg.Health.Rise = 3, 3
		cfg.Health.Interval, cfg.Health.Timeout = 200*time.Millisecond, 200*time.Millisecond
		cfg.Health.Checks = []health.CheckConfig{{Protocol: "imap", Addr: d.IMAP, Login: d.User, PasswordFile: pwFile}}
	}
	c.Add(3)
	c.WaitLeader(20 * time.Second)
	seen := func(want, reason string) func() bool {
		return func() bool {
			for _, n := range c.Running() {
				ok := false
				for _, m := range n.Status().Members {
					ok = ok || (m.Name == "node1" && m.Health == want && strings.Contains(m.HealthReason, reason))
				}
				if !ok {
					return false
				}
			}
			return true
		}
	}
	c.WaitFor(10*time.Second, "every agent to see node1 passing", seen("passing", ""))
	st := c.Nodes()[0].Status()
	if len(st.Health.Checks) != 2 || len(st.Mounts) != 1 || st.Mounts[0].Class != "ok" {
		t.Fatalf("node1's own view: %+v %+v", st.Health, st.Mounts)
	}

	if err := fs.Set(faultfs.Fault{Hang: true}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(5*time.Second, "every agent to see node1 critical with a hung mount", seen("critical", "hung"))
	fs.Clear()
	c.WaitFor(10*time.Second, "node1 passing again", seen("passing", ""))

	d.Kill9()
	if !agenttest.Eventually(5*time.Second, seen("critical", "imap: ")) {
		for _, n := range c.Running() {
			for _, m := range n.Status().Members {
				if m.Name == "node1" {
					t.Logf("%s sees node1 %s: %s", n.Name, m.Health, m.HealthReason)
				}
			}
		}
		t.Fatalf("not every agent sees node1's Dovecot down; node1's checks: %+v", c.Nodes()[0].Status().Health)
	}
	d.Start()
	c.WaitFor(10*time.Second, "node1 passing after Dovecot restarts", seen("passing", ""))
}
