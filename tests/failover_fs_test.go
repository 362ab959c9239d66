package tests

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/faultfs/faultfstest"
	"github.com/roost-mail/roost/fsprobe"
	"github.com/roost-mail/roost/health"
)

// fsCluster starts three agents on a shared users table (100 users on
// each node's proxy_host), each probing its own mount of one shared
// faultfs (mounts[i]; shared is a further mount of the same backing).
func fsCluster(t *testing.T, tune func(i int, cfg *agent.Config)) (c *agenttest.Cluster, mounts []*faultfs.FS, db *sql.DB) {
	t.Helper()
	var users []string
	for i := range 300 {
		users = append(users, fmt.Sprintf("user%03d@example.test", i))
	}
	path, _ := usersDB(t, users, "")
	var err error
	if db, err = sql.Open("sqlite", path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`UPDATE users SET proxy_host = '127.0.1.' || (CAST(substr(username, 5, 3) AS INTEGER) % 3 + 1)`); err != nil {
		t.Fatal(err)
	}
	first, backing, mnt0 := faultfstest.Mount(t)
	mounts = []*faultfs.FS{first}
	paths := []string{mnt0}
	for range 2 {
		fs, mnt := faultfstest.MountOn(t, backing)
		mounts, paths = append(mounts, fs), append(paths, mnt)
	}
	dsn := writeDSN(t, path)
	c = agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) {
		cfg.Routing.DSNFile = dsn
		cfg.FSProbe = fsprobe.Config{Mounts: []fsprobe.MountConfig{{Path: paths[i], FSType: "fuse.faultfs"}}, Interval: 200 * time.Millisecond, Timeout: time.Second, SlowThreshold: 300 * time.Millisecond}
		cfg.Health.Checks = []health.CheckConfig{{Name: "site", Protocol: "command", Command: "true", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}}
		cfg.Failover.Interval = 100 * time.Millisecond
		cfg.Failover.SweepInterval = 0
		if tune != nil {
			tune(i, cfg)
		}
	}
	c.Add(3)
	c.WaitLeader(20 * time.Second)
	c.WaitFor(20*time.Second, "three passing nodes", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		n := 0
		for _, m := range l.Status().Members {
			if m.Health == "passing" && m.Users == 100 {
				n++
			}
		}
		return n == 3
	})
	return c, mounts, db
}

func hostCounts(t *testing.T, db *sql.DB) map[string]int {
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

func statusMember(st api.Status, name string) api.Member {
	for _, m := range st.Members {
		if m.Name == name {
			return m
		}
	}
	return api.Member{}
}

// node2's mount hangs: its 100 users go to node1 and node3, balanced and
// journaled, its LB signal says down, and nobody else moves.
func TestHungMountFailsOverThatNodeOnly(t *testing.T) {
	c, mounts, db := fsCluster(t, nil)
	if err := mounts[1].Set(faultfs.Fault{Hang: true}); err != nil {
		t.Fatal(err)
	}
	defer mounts[1].Clear()
	c.WaitFor(30*time.Second, "node2 failed over", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		m := statusMember(l.Status(), "node2")
		return m.State == "failed" && m.LB == "down" && hostCounts(t, db)["127.0.1.2"] == 0
	})
	on := hostCounts(t, db)
	if on["127.0.1.1"]+on["127.0.1.3"] != 300 || on["127.0.1.1"] < 135 || on["127.0.1.3"] < 135 {
		t.Fatalf("after the failover: %v, want node2's 100 spread over node1 and node3", on)
	}
	var moves, others, wrong int
	db.QueryRow(`SELECT COUNT(*) FROM roost_journal WHERE from_host = '127.0.1.2'`).Scan(&moves)
	db.QueryRow(`SELECT COUNT(*) FROM roost_journal WHERE from_host <> '127.0.1.2'`).Scan(&others)
	db.QueryRow(`SELECT COUNT(*) FROM roost_journal j JOIN users u ON u.username = j.username WHERE u.proxy_host <> j.to_host`).Scan(&wrong)
	if moves != 100 || others != 0 || wrong != 0 {
		t.Fatalf("journal: %d moves off node2 (want 100), %d of other users (want 0), %d disagree with the table", moves, others, wrong)
	}
	st := c.Leader().Status()
	for _, n := range []string{"node1", "node3"} {
		if m := statusMember(st, n); m.State != "active" || m.LB != "up" {
			t.Fatalf("%s: %+v", n, m)
		}
	}
	if m := statusMember(st, "node2"); !strings.Contains(m.StateReason, "hung") {
		t.Fatalf("node2's reason %q does not say the mount hung", m.StateReason)
	}
}

// The shared filesystem turns slow on every node at once: the cluster
// freezes and says why, nobody moves, and nodectl ack unfreezes it once
// the trouble is over.
func TestSlowSharedFilesystemFreezesUntilAck(t *testing.T) {
	c, mounts, db := fsCluster(t, nil)
	for _, m := range mounts {
		// Slow, not hung: one fsync of 400 ms per round.
		if err := m.Set(faultfs.Fault{Ops: []string{"Fsync"}, Delay: faultfs.Duration(400 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	var f *agenttest.Node
	var seen string // what the follower last said, for a failure
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the follower last reported: %s", seen)
		}
	})
	c.WaitFor(30*time.Second, "the cluster frozen, as a follower reports", func() bool {
		l := c.Leader()
		for _, n := range c.Running() {
			if n != l {
				f = n
			}
		}
		st := f.Status()
		seen = fmt.Sprintf("%s frozen=%+v", f.Name, st.Frozen)
		for _, m := range st.Members {
			seen += fmt.Sprintf("; %s %s/%s %q", m.Name, m.State, m.Health, m.StateReason)
		}
		// The nodes see it a moment apart: a majority freezes.
		return st.Frozen != nil && regexpMatch(`shared filesystem trouble on [23] of 3 mail nodes`, st.Frozen.Reason)
	})
	out, err := nodectl(t, f, "status")
	if err != nil || !strings.Contains(out, "FROZEN since") || !strings.Contains(out, "shared filesystem trouble on") {
		t.Fatalf("nodectl status does not show the freeze: %v\n%s", err, out)
	}
	time.Sleep(time.Second) // decision rounds that must move nobody
	for _, m := range mounts {
		m.Clear()
	}
	st := c.Leader().Agent.FailoverState()
	if len(st.Plans) != 0 {
		t.Fatalf("plans during the freeze: %+v", st.Plans)
	}
	if on := hostCounts(t, db); on["127.0.1.1"] != 100 || on["127.0.1.2"] != 100 || on["127.0.1.3"] != 100 {
		t.Fatalf("users moved during the freeze: %v", on)
	}
	c.WaitFor(20*time.Second, "the mounts ok again", func() bool {
		for _, m := range c.Leader().Status().Members {
			if m.Health != "passing" {
				return false
			}
		}
		return true
	})
	out, err = nodectl(t, f, "ack", "--json")
	var reply api.OpReply
	if err != nil || json.Unmarshal([]byte(out), &reply) != nil || !strings.Contains(reply.Message, "unfrozen") || reply.Leader == "" {
		t.Fatalf("nodectl ack --json: %v\n%s", err, out)
	}
	time.Sleep(time.Second)
	if st := f.Status(); st.Frozen != nil {
		t.Fatalf("still frozen after the ack: %+v", st.Frozen)
	}
}
