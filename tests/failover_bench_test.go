package tests

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/faultfs/faultfstest"
	"github.com/roost-mail/roost/fsprobe"
	"github.com/roost-mail/roost/routing/routingtest"
)

// BenchmarkHungMountToLastUserRerouted: three agents at the default
// settings (mount probe 1 s / 2 s, failover interval 1 s, batches of
// 1,000), each probing its own FUSE mount of one shared filesystem, over
// a PostgreSQL users table with 10,000 users per node. Each round starts a
// fresh cluster, hangs node2's mount and measures until the last of its
// 10,000 users has another proxy_host.
// Run: go test -run '^$' -bench HungMountToLastUserRerouted -benchtime 10x -timeout 30m ./tests/
func BenchmarkHungMountToLastUserRerouted(b *testing.B) {
	const perNode = 10000
	db := routingtest.Open(b, "postgres")
	db.Exec(b, `CREATE TABLE users (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255), proxy_host VARCHAR(255))`)
	db.Exec(b, fmt.Sprintf(`INSERT INTO users (username, proxy_host) SELECT 'user' || lpad(g::text, 6, '0') || '@example.test', '127.0.1.' || (g %% 3 + 1) FROM generate_series(0, %d) g`, 3*perNode-1))
	db.Exec(b, `ANALYZE users`)
	dsn := writeDSN(b, db.DSN)
	first, backing, mnt0 := faultfstest.Mount(b)
	mounts, paths := []*faultfs.FS{first}, []string{mnt0}
	for range 2 {
		fs, mnt := faultfstest.MountOn(b, backing)
		mounts, paths = append(mounts, fs), append(paths, mnt)
	}
	left := func() int {
		var n int
		if err := db.Admin.QueryRow(`SELECT COUNT(*) FROM users WHERE proxy_host = '127.0.1.2'`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	var ds []time.Duration
	b.StopTimer()
	for i := range b.N {
		// Every round from scratch: users home, no journal, no fence.
		db.Exec(b, `UPDATE users SET proxy_host = '127.0.1.' || (CAST(substr(username, 5, 6) AS INTEGER) % 3 + 1)`)
		for _, tbl := range []string{"roost_journal", "roost_fence"} {
			if i > 0 {
				db.Exec(b, `DELETE FROM `+tbl)
			}
		}
		c := agenttest.New(b)
		c.Tune = func(i int, cfg *agent.Config) {
			cfg.Log.Level = "info"
			cfg.Routing.DSNFile, cfg.Routing.Driver = dsn, "postgres"
			cfg.FSProbe.Mounts = []fsprobe.MountConfig{{Path: paths[i], FSType: "fuse.faultfs"}}
		}
		c.Add(3)
		c.WaitLeader(30 * time.Second)
		c.WaitFor(60*time.Second, "three passing nodes with their users", func() bool {
			l := c.Leader()
			if l == nil {
				return false
			}
			n := 0
			for _, m := range l.Status().Members {
				if m.Health == "passing" && m.Users == perNode {
					n++
				}
			}
			return n == 3
		})
		time.Sleep(time.Duration(i%10) * 100 * time.Millisecond) // spread over the probe interval
		b.StartTimer()
		start := time.Now()
		if err := mounts[1].Set(faultfs.Fault{Hang: true}); err != nil {
			b.Fatal(err)
		}
		for left() > 0 {
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("%d users still on node2 after 2 minutes", left())
			}
			time.Sleep(10 * time.Millisecond)
		}
		d := time.Since(start)
		b.StopTimer()
		ds = append(ds, d)
		mounts[1].Clear()
		c.StopAll()
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(ds[len(ds)/2].Seconds(), "reroute-median-s")
	b.ReportMetric(ds[len(ds)-1].Seconds(), "reroute-max-s")
}
