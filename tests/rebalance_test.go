package tests

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/tests/mailcluster"
)

// A fourth node, just added, holds none of the cluster's 3,000 users.
// nodectl rebalance --dry-run says a quarter would go to it; rebalance
// moves them at the rate asked, only onto node4 and only off the three
// others, and a moved user logs in on node4 through HAProxy. A second
// rebalance moves nobody. Then node4's Dovecot crashes while Roost is
// paused for 15 s: nobody moves until the pause runs out by itself.
func TestE2ERebalanceOntoANewNode(t *testing.T) {
	c := mailcluster.Start(t, mailcluster.Options{Bin: buildBinaries(t), Users: 1000, Spare: true})
	d := c.Nodes[3]
	out, err := c.Ctl(c.Nodes[0], "rebalance", "--dry-run", "--json")
	if err != nil {
		t.Fatalf("nodectl rebalance --dry-run: %v\n%s", err, out)
	}
	var dry api.OpReply
	if err := json.Unmarshal([]byte(out), &dry); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if dry.Users != 750 || dry.Targets[d.Name] != 750 || len(dry.Targets) != 1 || c.UsersOn(d.Host) != 0 {
		t.Fatalf("dry run: %+v, %d users on node4; want 750 to node4, none moved", dry, c.UsersOn(d.Host))
	}
	const rate = 500
	out, err = c.Ctl(c.Nodes[1], "rebalance", "--reason", "node4 added", "--rate", "500", "--wait")
	if err != nil || !strings.Contains(out, "moving 750 users at 500/s to node4 750") {
		t.Fatalf("nodectl rebalance --wait: %v\n%s", err, out)
	}
	on := map[string]int{}
	for _, n := range c.Nodes {
		on[n.Name] = c.UsersOn(n.Host)
	}
	// The ideal is 750 each; this is exact, and 5 % off would do.
	for _, k := range on {
		if k < 712 || k > 788 {
			t.Fatalf("users per node after the rebalance: %v; want about 750 each", on)
		}
	}
	var wrong, total int
	var plan string
	if err := c.DB.QueryRow(`SELECT COUNT(*), COUNT(*) FILTER (WHERE to_host <> $1 OR from_host = $1), MIN(plan) FROM roost_journal`, d.Host).Scan(&total, &wrong, &plan); err != nil {
		t.Fatal(err)
	}
	if total != on[d.Name] || wrong != 0 {
		t.Fatalf("the journal has %d moves, %d of them not from the three onto node4; node4 holds %d", total, wrong, on[d.Name])
	}
	st, err := c.Status(c.Nodes[2])
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Plans {
		if p.ID != plan {
			continue
		}
		// At 500 users a second, 750 take at least 1.5 s (a plan
		// writes a batch, then waits out the batch's share of the rate).
		took := p.Finished.Sub(p.Created)
		if p.Kind != "rebalance" || p.Rate != rate || p.Status != "done" || p.Moved != 750 || took < time.Second {
			t.Fatalf("plan %+v took %v: want a rebalance at %d/s that moved 750 in over a second", p, took, rate)
		}
		t.Logf("rebalance %s moved %d users onto node4 in %v at %d/s asked", p.ID, p.Moved, took.Round(time.Millisecond), rate)
	}
	var moved string
	if err := c.DB.QueryRow(`SELECT username FROM roost_journal ORDER BY id LIMIT 1`).Scan(&moved); err != nil {
		t.Fatal(err)
	}
	s, err := c.Login(moved, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s.Node != d.Short {
		t.Fatalf("%s, moved to node4, logs in on %q", moved, s.Node)
	}
	out, err = c.Ctl(c.Nodes[0], "rebalance", "--yes")
	if err != nil || !strings.Contains(out, "nobody to move") {
		t.Fatalf("a second rebalance: %v\n%s", err, out)
	}
	if out, err := c.Ctl(c.Nodes[0], "status"); err != nil || !strings.Contains(out, "WEIGHT") {
		t.Fatalf("nodectl status shows no weights: %v\n%s", err, out)
	}

	// Paused for 15 s, node4's Dovecot crashes: status and the metric say
	// paused, nobody moves while the pause holds (the journal's first move
	// off node4 comes after its end), and the pause ends by itself and
	// node4 is failed over.
	if out, err := c.Ctl(c.Nodes[2], "pause", "--reason", "core switch firmware", "--for", "15s"); err != nil {
		t.Fatalf("nodectl pause: %v\n%s", err, out)
	}
	st, err = c.Status(c.Nodes[0])
	if err != nil || st.Paused == nil || st.Paused.Until.IsZero() {
		t.Fatalf("status after nodectl pause --for 15s: %+v %v", st.Paused, err)
	}
	until := st.Paused.Until
	out, err = c.Ctl(c.Nodes[0], "status")
	if err != nil || !strings.Contains(out, "PAUSED") || !strings.Contains(out, "core switch firmware") {
		t.Fatalf("nodectl status while paused:\n%s (%v)", out, err)
	}
	if m := agentMetrics(t, c); !strings.Contains(m, "roost_failover_paused 1") {
		t.Errorf("no agent's metrics say roost_failover_paused 1:\n%s", grepLines(m, "roost_failover_paused"))
	}
	d.Dovecot.Kill9()
	crashed := time.Now()
	c.WaitFor(45*time.Second, "the pause to end by itself and node4's users to move", func() bool { return c.UsersOn(d.Host) == 0 })
	var first time.Time
	if err := c.DB.QueryRow(`SELECT MIN(at) FROM roost_journal WHERE from_host = $1`, d.Host).Scan(&first); err != nil {
		t.Fatal(err)
	}
	if first.Before(until) {
		t.Fatalf("node4's first user moved at %s, before the pause ended at %s", first.Format(time.StampMilli), until.Format(time.StampMilli))
	}
	if m, _ := c.Member(c.Nodes[0], d.Name); m.State != "failed" {
		t.Fatalf("node4 after the pause ran out: %+v, want failed", m)
	}
	t.Logf("node4's Dovecot crashed %s before the pause ran out; its first user moved %s after that",
		until.Sub(crashed).Round(100*time.Millisecond), first.Sub(until).Round(10*time.Millisecond))
}
