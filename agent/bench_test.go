package agent_test

import (
	"sort"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent/agenttest"
)

// reportMedian reports the median and the maximum of ds as metrics.
func reportMedian(b *testing.B, name string, ds []time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(ds[len(ds)/2].Seconds(), name+"-median-s")
	b.ReportMetric(ds[len(ds)-1].Seconds(), name+"-max-s")
	b.Logf("%s over %d runs: %v", name, len(ds), ds)
}

// BenchmarkFormAndElect: three agents with default raft and gossip timing
// start together; the time until all agree on one leader.
// Run: go test -run '^$' -bench FormAndElect -benchtime 10x ./agent/
func BenchmarkFormAndElect(b *testing.B) {
	var ds []time.Duration
	for range b.N {
		c := agenttest.New(b)
		start := time.Now()
		c.Add(3)
		c.WaitLeader(60 * time.Second)
		ds = append(ds, time.Since(start))
		c.StopAll()
	}
	reportMedian(b, "form", ds)
}

// BenchmarkReelect: the leader of a formed three-agent cluster stops
// without a word (as after kill -9); the time until the other two agree on
// a new leader.
// Run: go test -run '^$' -bench Reelect -benchtime 10x ./agent/
func BenchmarkReelect(b *testing.B) {
	var ds []time.Duration
	for range b.N {
		c := agenttest.New(b)
		c.Add(3)
		leader := c.WaitLeader(60 * time.Second)
		time.Sleep(2 * time.Second) // settled: followers have heard heartbeats
		start := time.Now()
		if err := leader.Stop(); err != nil {
			b.Fatal(err)
		}
		c.WaitFor(60*time.Second, "a new leader", func() bool {
			l := c.Leader()
			return l != nil && l != leader
		})
		ds = append(ds, time.Since(start))
		c.StopAll()
	}
	reportMedian(b, "reelect", ds)
}
