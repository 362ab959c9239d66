package agent_test

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/health"
)

// usersOn counts the users table's users per proxy_host.
func usersOn(t *testing.T, db *sql.DB) map[string]int {
	t.Helper()
	rows, err := db.Query(`SELECT proxy_host, COUNT(*) FROM users GROUP BY proxy_host`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var h string
		var n int
		if err := rows.Scan(&h, &n); err != nil {
			t.Fatal(err)
		}
		out[h] = n
	}
	return out
}

// usersHost is user's proxy_host in the users table.
func usersHost(t *testing.T, db *sql.DB, user string) string {
	t.Helper()
	var h string
	if err := db.QueryRow(`SELECT proxy_host FROM users WHERE username = ?`, user).Scan(&h); err != nil {
		t.Fatalf("%q: %v", user, err)
	}
	return h
}

// sqliteCluster starts three agents sharing an SQLite users table with
// 100 users on each node's proxy_host (127.0.1.1-3) plus extra users on
// node1, and node i's check "site" failing while flag(i) exists.
func sqliteCluster(t *testing.T, extra []string, tune func(i int, cfg *agent.Config)) (c *agenttest.Cluster, db *sql.DB, flag func(int) string) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mail.db")
	db, err := sql.Open("sqlite", dbPath+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE users (username TEXT PRIMARY KEY, password TEXT, proxy_host TEXT)`); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if _, err := db.Exec(`INSERT INTO users VALUES (?, 'x', ?)`, fmt.Sprintf("user%03d@example.test", i), fmt.Sprintf("127.0.1.%d", i%3+1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range extra {
		if _, err := db.Exec(`INSERT INTO users VALUES (?, 'x', '127.0.1.1')`, u); err != nil {
			t.Fatal(err)
		}
	}
	dsn := filepath.Join(dir, "dsn")
	os.WriteFile(dsn, []byte(dbPath), 0o600)
	flag = func(i int) string { return filepath.Join(dir, fmt.Sprintf("broken-node%d", i+1)) }

	c = agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) {
		cfg.Routing.DSNFile = dsn
		// The flag fails the check at once; the timeout only has to
		// outlast a shell started on a loaded machine (make test runs
		// these raced, beside mail clusters).
		cfg.Health.Checks = []health.CheckConfig{{Name: "site", Protocol: "command", Command: "test ! -e " + flag(i), Interval: 500 * time.Millisecond, Timeout: 500 * time.Millisecond}}
		cfg.Failover.Interval = 100 * time.Millisecond
		if tune != nil {
			tune(i, cfg)
		}
	}
	c.Add(3)
	c.WaitLeader(20 * time.Second)
	return c, db, flag
}

// Three agents share an SQLite users table. node2's own check fails: the
// leader fails it over (its users spread over node1 and node3, journaled)
// and, once node2 is healthy for the hold-down, brings its users home.
func TestFailoverAndFailbackThroughRaft(t *testing.T) {
	c, db, flag := sqliteCluster(t, nil, func(i int, cfg *agent.Config) {
		cfg.Failover.FailbackHoldDown = 2 * time.Second
		cfg.Failover.BatchSize = 40
	})

	if err := os.WriteFile(flag(1), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(60*time.Second, "node2 failed over", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		st := l.Agent.FailoverState()
		_, running := st.Running("node2")
		return st.Node("node2").State == failover.Failed && !running && usersOn(t, db)["127.0.1.2"] == 0
	})
	on := usersOn(t, db)
	if on["127.0.1.1"]+on["127.0.1.3"] != 300 || on["127.0.1.1"] < 110 || on["127.0.1.3"] < 110 {
		t.Fatalf("after the failover: %v", on)
	}
	var journaled, wrong int
	db.QueryRow(`SELECT COUNT(*) FROM roost_journal WHERE from_host = '127.0.1.2' AND home = '127.0.1.2'`).Scan(&journaled)
	db.QueryRow(`SELECT COUNT(*) FROM roost_journal j JOIN users u ON u.username = j.username WHERE u.proxy_host <> j.to_host`).Scan(&wrong)
	if journaled != 100 || wrong != 0 {
		t.Fatalf("journal: %d moves off node2 (want 100), %d disagree with the table", journaled, wrong)
	}
	// The leader's metrics say the same.
	m := scrape(t, c.Leader())
	for _, want := range []string{
		`roost_failover_node_state{node="node2",state="failed"} 1`,
		`roost_failover_users_moved_total{kind="failover"} 100`,
		`roost_routing_batch_seconds_count{result="ok"} 3`,
		`roost_failover_decisions_total{op="plan-start"} 1`,
		`roost_failover_frozen 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("the leader's metrics lack %s", want)
		}
	}
	var plan failover.Plan
	for _, p := range c.Leader().Agent.FailoverState().Plans {
		plan = p
	}
	if plan.Kind != failover.PlanFailover || plan.Status != failover.PlanDone || plan.Moved != 100 || plan.Batches != 3 {
		t.Fatalf("plan %+v: want a done failover of 100 users in 3 batches", plan)
	}

	// Healthy again: after the hold-down its users come home.
	if err := os.Remove(flag(1)); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(60*time.Second, "node2's users back home", func() bool {
		l := c.Leader()
		return l != nil && l.Agent.FailoverState().Node("node2").State == failover.Active && usersOn(t, db)["127.0.1.2"] == 100
	})
	if on := usersOn(t, db); on["127.0.1.1"] != 100 || on["127.0.1.3"] != 100 {
		t.Fatalf("after the failback: %v, want 100 each", on)
	}
}

// node2 flaps: broken for two seconds, healthy for three, four times. It
// is failed over once; its users come home after the hold-down; and the
// later failures within the block period move nobody (its LB signal goes
// down) until an operator acks, which moves the users on it away again.
func TestFlappingNodeIsFailedOverOncePerBlockPeriod(t *testing.T) {
	c, db, flag := sqliteCluster(t, nil, func(i int, cfg *agent.Config) {
		cfg.Failover.FailbackHoldDown = 500 * time.Millisecond
	})
	for range 4 {
		if err := os.WriteFile(flag(1), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if err := os.Remove(flag(1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
	}
	if err := os.WriteFile(flag(1), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(30*time.Second, "node2 failed and idle", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		st := l.Agent.FailoverState()
		_, running := st.Running("node2")
		return st.Node("node2").State == failover.Failed && !running
	})
	kinds := map[failover.PlanKind]int{}
	for _, p := range c.Leader().Agent.FailoverState().Plans {
		kinds[p.Kind]++
	}
	if kinds[failover.PlanFailover] != 1 || kinds[failover.PlanFailback] < 1 {
		t.Fatalf("plans by kind: %v; want one failover and at least one failback", kinds)
	}
	if n := usersOn(t, db)["127.0.1.2"]; n != 100 {
		t.Fatalf("%d users on node2, want its 100 back home and not moved again", n)
	}
	r, err := c.Leader().Client().Post(t.Context(), "/v1/nodes/node2/ack", api.OpRequest{})
	if err != nil || r.Plan == "" || !strings.Contains(r.Message, "moving the users still routed to it") {
		t.Fatalf("ack: %+v %v", r, err)
	}
	c.WaitFor(30*time.Second, "node2's users moved after the ack", func() bool { return usersOn(t, db)["127.0.1.2"] == 0 })
}
