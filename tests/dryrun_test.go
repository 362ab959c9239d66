package tests

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/tests/mailcluster"
)

// Roost in a dry run beside a cluster it does not yet move (failover.mode
// dryrun): node2's mount hangs, the leader decides and plans its failover,
// and the plan only says what it would move. The users table, the journal
// and the sessions that a failover would end (node2's users', proxied by
// the other nodes) stay as they are; status, the metrics and the plan name
// what would have run. Switched to enforce by a reload while an operator
// has paused Roost, node2 still fails and nobody moves; resumed, the same
// failure is decided again and failed over for real.
func TestE2EDryRunThenEnforce(t *testing.T) {
	c, held := startMailClusterWith(t, mailcluster.Options{Agent: func(int) string { return "failover:\n  mode: dryrun\n" }})
	b := c.Nodes[1]
	affected := c.UsersOf(b)
	if err := b.FS.Set(faultfs.Fault{Hang: true}); err != nil {
		t.Fatal(err)
	}
	var plan api.Plan
	c.WaitFor(30*time.Second, "node2's dry-run failover done in the leader's status", func() bool {
		st, err := c.Status(c.Nodes[0])
		if err != nil {
			return false
		}
		for _, p := range st.Plans {
			if p.Kind == "failover" && p.Node == b.Name && p.Status == "done" {
				plan = p
				return true
			}
		}
		return false
	})
	if !plan.DryRun || plan.Moved != 0 || plan.Would != len(affected) {
		t.Fatalf("node2's plan %+v: want a dry run that would move %d users and moved none", plan, len(affected))
	}
	time.Sleep(3 * time.Second) // three decision rounds: none may act
	if on, journal := c.UsersOn(b.Host), c.JournalFrom(b.Host); on != len(affected) || journal != 0 {
		t.Fatalf("after the dry run the users table has %d users on node2 and the journal %d moves off it; want %d and 0", on, journal, len(affected))
	}
	m, _ := c.Member(c.Nodes[2], b.Name)
	if m.State != "failed" || !m.DryRun {
		t.Fatalf("node2 in status: %+v; want failed in a dry run", m)
	}
	// node2's own check is critical (its mount hangs), so HAProxy ended
	// the sessions it held through node2; those proxied there by the other
	// nodes are the ones a failover would end, and a dry run keeps them.
	open := 0
	for i, s := range held {
		if c.Nodes[i%3] == b && !s.Ended(0) {
			open++
		}
	}
	if open == 0 {
		t.Fatalf("none of node2's users' sessions is open after the dry run: something ended them")
	}
	t.Logf("dry run: plan %s would have moved %d users; %d of node2's %d sessions still open", plan.ID, plan.Would, open, len(affected))
	out, err := c.Ctl(c.Nodes[0], "status")
	if err != nil || !strings.Contains(out, "DRY RUN (failover.mode): failover, failback, alerts") || !strings.Contains(out, "failed,dry-run") || !strings.Contains(out, "0 (would 100)") {
		t.Fatalf("nodectl status in a dry run:\n%s (%v)", out, err)
	}
	metrics := agentMetrics(t, c)
	for _, want := range []string{`roost_failover_dry_run_plans_total{kind="failover"} 1`, `roost_failover_users_would_move_total{kind="failover"} 100`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("no agent's metrics have %s", want)
		}
	}
	if strings.Contains(metrics, "roost_kicks_total{") || strings.Contains(metrics, "roost_failover_users_moved_total{") {
		t.Errorf("a dry run kicked or moved:\n%s", grepLines(metrics, "roost_kicks_total", "roost_failover_users_moved_total"))
	}

	if out, err := c.Ctl(c.Nodes[2], "pause", "--reason", "switching over from poolmon"); err != nil {
		t.Fatalf("nodectl pause: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		cfg, err := os.ReadFile(n.Config)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(n.Config, []byte(strings.Replace(string(cfg), "mode: dryrun", "mode: enforce", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		n.Agent.Signal(syscall.SIGHUP)
	}
	c.WaitFor(10*time.Second, "every agent to enforce failover", func() bool {
		for _, n := range c.Nodes {
			if st, err := c.Status(n); err != nil || len(st.DryRun) > 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * time.Second) // paused: three decision rounds, none may act
	if on := c.UsersOn(b.Host); on != len(affected) {
		t.Fatalf("paused, yet %d of node2's %d users moved", len(affected)-on, len(affected))
	}
	out, err = c.Ctl(c.Nodes[0], "status")
	if err != nil || !strings.Contains(out, "PAUSED") || !strings.Contains(out, "switching over from poolmon") || strings.Contains(out, "DRY RUN") {
		t.Fatalf("nodectl status while paused:\n%s (%v)", out, err)
	}
	if out, err := c.Ctl(c.Nodes[0], "resume"); err != nil {
		t.Fatalf("nodectl resume: %v\n%s", err, out)
	}
	c.WaitFor(30*time.Second, "node2's users moved once failover is enforced", func() bool { return c.UsersOn(b.Host) == 0 })
	for i, s := range held {
		if c.Nodes[i%3] == b && !s.Ended(30*time.Second) {
			t.Fatalf("%s's session on node2 was left open by the enforced failover", s.User)
		}
	}
	if got := c.JournalFrom(b.Host); got != len(affected) {
		t.Fatalf("the journal has %d moves off node2, want %d", got, len(affected))
	}
	if m, _ := c.Member(c.Nodes[0], b.Name); m.State != "failed" || m.DryRun || m.LB != "down" {
		t.Fatalf("node2 after the enforced failover: %+v; want failed for real, LB down", m)
	}
}

// agentMetrics is every agent's /metrics, one after another.
func agentMetrics(t *testing.T, c *mailcluster.Cluster) string {
	t.Helper()
	var all strings.Builder
	for _, n := range c.Nodes {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", n.Socket)
			},
		}}
		resp, err := hc.Get("http://roostd/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	return all.String()
}

// grepLines keeps the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
