package tests

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/health"
	"github.com/roost-mail/roost/tests/dovecotlab"
)

// BenchmarkDovecotKillToCritical: three agents, node1 checking its real
// Dovecot with a test-account login at the default health settings
// (interval 1 s, timeout 1 s, fall 3); the time from kill -9 of Dovecot's
// master to every agent's view showing node1 critical.
// Run: go test -run '^$' -bench DovecotKillToCritical -benchtime 10x ./tests/
func BenchmarkDovecotKillToCritical(b *testing.B) {
	d := dovecotlab.Start(b, "bench")
	pw := filepath.Join(b.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(d.Pass), 0o600); err != nil {
		b.Fatal(err)
	}
	c := agenttest.New(b)
	c.Tune = func(i int, cfg *agent.Config) {
		if i == 0 {
			cfg.Health.Checks = []health.CheckConfig{{Protocol: "imap", Addr: d.IMAP, Login: d.User, PasswordFile: pw}}
		}
	}
	c.Add(3)
	c.WaitLeader(30 * time.Second)
	everyone := func(want string) func() bool {
		return func() bool {
			for _, n := range c.Running() {
				for _, m := range n.Status().Members {
					if m.Name == "node1" && m.Health != want {
						return false
					}
				}
			}
			return true
		}
	}
	var ds []time.Duration
	for range b.N {
		c.WaitFor(30*time.Second, "node1 passing", everyone("passing"))
		time.Sleep(time.Duration(len(ds)%10) * 100 * time.Millisecond) // spread over the interval
		start := time.Now()
		d.Kill9()
		c.WaitFor(30*time.Second, "node1 critical everywhere", everyone("critical"))
		ds = append(ds, time.Since(start))
		d.Start()
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(ds[len(ds)/2].Seconds(), "critical-median-s")
	b.ReportMetric(ds[len(ds)-1].Seconds(), "critical-max-s")
	b.Logf("kill -9 to critical everywhere: %v", ds)
}

// BenchmarkIMAPLoginCheckCPU: the agent's CPU for one IMAP login check
// (greeting, LOGIN, LIST, LOGOUT) against real Dovecot, and what that
// makes per minute at the default one-second interval.
// Run: go test -run '^$' -bench IMAPLoginCheckCPU -benchtime 200x ./tests/
func BenchmarkIMAPLoginCheckCPU(b *testing.B) {
	d := dovecotlab.Start(b, "cpu")
	check := health.IMAP(health.Dialogue{Addr: d.IMAP}, &health.Login{User: d.User, Password: d.Pass})
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	before := cpu()
	for range b.N {
		if err := health.WithTimeout(check, 2*time.Second)(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	per := (cpu() - before) / time.Duration(b.N)
	b.ReportMetric(float64(per.Microseconds()), "cpu-µs/check")
	b.ReportMetric(float64((per * 60).Milliseconds()), "cpu-ms/min@1s")
}
