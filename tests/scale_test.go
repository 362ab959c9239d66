package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/certs"
)

// BenchmarkScale50 runs 50 roostd processes on loopback in one gossip
// cluster (mutual TLS, encrypted gossip, default LAN timing), then kills
// b.N of them one at a time with SIGKILL and measures the time until every
// survivor sees the killed agent as dead (goal ≤ 8 s). Before that it
// reports each agent's resident memory and CPU use over 20 s at rest.
//
// Run: go test -run '^$' -bench Scale50 -benchtime 10x -timeout 30m ./tests/
func BenchmarkScale50(b *testing.B) {
	const n = 50
	bin := buildBinaries(b)
	dir := b.TempDir()
	sockDir, err := os.MkdirTemp("", "roosts")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(sockDir) })
	ca, err := certs.CreateCA(dir, "scale", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gossip.key"), []byte(agenttest.NewKey()), 0o600); err != nil {
		b.Fatal(err)
	}
	free := agenttest.FreePorts(b, 2*n)
	ports := make([][2]int, n)
	for i := range ports {
		ports[i] = [2]int{free[2*i], free[2*i+1]}
	}
	type agentProc struct {
		name, sock string
		cmd        *exec.Cmd
		client     *api.Client
	}
	procs := make([]*agentProc, n)
	for i := range n {
		name := fmt.Sprintf("a%02d", i)
		cert, key, err := ca.Issue(dir, name, certs.Node, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		cfg := fmt.Sprintf(`node: {name: %s, proxy_host: 127.0.2.%d, data_dir: %s/%s}
log: {level: warn}
gossip:
  bind: 127.0.0.1:%d
  join: [127.0.0.1:%d, 127.0.0.1:%d, 127.0.0.1:%d]
  join_retry_interval: 500ms
  key_file: %s/gossip.key
raft:
  bind: 127.0.0.1:%d
  tls: {ca_file: %s/ca.pem, cert_file: %s, key_file: %s}
api: {socket: %s/%s.sock}
`, name, i+1, dir, name, ports[i][0], ports[0][0], ports[1][0], ports[2][0], dir, ports[i][1], dir, cert, key, sockDir, name)
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(bin, "roostd"), "--config", path)
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sock := filepath.Join(sockDir, name+".sock")
		procs[i] = &agentProc{name: name, sock: sock, cmd: cmd, client: api.NewUnixClient(sock)}
	}
	b.Cleanup(func() {
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
				_ = p.cmd.Wait()
			}
		}
	})
	status := func(p *agentProc) (api.Status, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return p.client.Status(ctx)
	}
	// everyone reports, for each of the given names, the wanted state.
	everyone := func(alive []*agentProc, names map[string]string) bool {
		var wg sync.WaitGroup
		ok := make([]bool, len(alive))
		for i, p := range alive {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := status(p)
				if err != nil {
					return
				}
				seen := 0
				for _, m := range st.Members {
					if want, has := names[m.Name]; has && m.Gossip == want {
						seen++
					}
				}
				ok[i] = seen == len(names)
			}()
		}
		wg.Wait()
		for _, o := range ok {
			if !o {
				return false
			}
		}
		return true
	}
	all := map[string]string{}
	for _, p := range procs {
		all[p.name] = "alive"
	}
	start := time.Now()
	if !agenttest.Eventually(120*time.Second, func() bool { return everyone(procs, all) }) {
		var diag strings.Builder
		for _, p := range procs {
			st, err := status(p)
			alive := 0
			for _, m := range st.Members {
				if m.Gossip == "alive" {
					alive++
				}
			}
			fmt.Fprintf(&diag, "%s: err=%v sees %d members, %d alive\n", p.name, err, len(st.Members), alive)
			if err != nil {
				log, _ := os.ReadFile(filepath.Join(dir, p.name+".log"))
				fmt.Fprintf(&diag, "%s\n", log)
			}
		}
		b.Fatalf("50 agents did not all see each other alive within 120 s:\n%s", diag.String())
	}
	b.Logf("50 agents see each other alive after %v", time.Since(start).Round(100*time.Millisecond))

	// At rest: RSS and CPU per agent over 20 s.
	time.Sleep(5 * time.Second)
	cpu0 := map[int]float64{}
	for _, p := range procs {
		cpu0[p.cmd.Process.Pid] = cpuSeconds(p.cmd.Process.Pid)
	}
	const rest = 20 * time.Second
	time.Sleep(rest)
	var rss, cpu []float64
	for _, p := range procs {
		pid := p.cmd.Process.Pid
		cpu = append(cpu, (cpuSeconds(pid)-cpu0[pid])/rest.Seconds()*100)
		rss = append(rss, rssMiB(pid))
	}
	sort.Float64s(rss)
	sort.Float64s(cpu)
	b.Logf("at rest over %v: RSS median %.1f MiB, max %.1f MiB; CPU median %.2f%%, max %.2f%% of one core", rest, rss[len(rss)/2], rss[len(rss)-1], cpu[len(cpu)/2], cpu[len(cpu)-1])

	// Kill b.N agents one by one (never a raft voter's majority: the first
	// ten are spread over the cluster) and time full dead detection.
	var ds []time.Duration
	alive := append([]*agentProc(nil), procs...)
	b.ResetTimer()
	for k := range b.N {
		victim := alive[len(alive)-1-k*3%len(alive)]
		var rest []*agentProc
		for _, p := range alive {
			if p != victim {
				rest = append(rest, p)
			}
		}
		t0 := time.Now()
		if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		_ = victim.cmd.Wait()
		if !agenttest.Eventually(60*time.Second, func() bool {
			return everyone(rest, map[string]string{victim.name: "dead"})
		}) {
			b.Fatalf("not every agent saw %s dead within 60 s", victim.name)
		}
		ds = append(ds, time.Since(t0))
		alive = rest
	}
	b.StopTimer()
	// Reported after the timed loop: ResetTimer drops earlier metrics.
	b.ReportMetric(rss[len(rss)/2], "rss-median-MiB")
	b.ReportMetric(rss[len(rss)-1], "rss-max-MiB")
	b.ReportMetric(cpu[len(cpu)/2], "cpu-median-%")
	b.ReportMetric(cpu[len(cpu)-1], "cpu-max-%")
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(ds[len(ds)/2].Seconds(), "dead-everywhere-median-s")
	b.ReportMetric(ds[len(ds)-1].Seconds(), "dead-everywhere-max-s")
	b.Logf("dead everywhere after: %v", ds)
}

// cpuSeconds is a process's user+system CPU time from /proc.
func cpuSeconds(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// rssMiB is a process's resident set size from /proc.
func rssMiB(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}
