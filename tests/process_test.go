package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/api"
)

// buildBinaries builds roostd, nodectl and faultfs once per test binary
// run (TestMain removes them).
func buildBinaries(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "roost-bin-"); binErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/roostd", "./cmd/nodectl", "./cmd/faultfs")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// nodectl runs nodectl against an in-process agent's socket.
func nodectl(t *testing.T, n *agenttest.Node, args ...string) (string, error) {
	t.Helper()
	return run(t, filepath.Join(buildBinaries(t), "nodectl"), append([]string{"--socket", n.Config.API.Socket}, args...)...)
}

// writeDSN writes a dsn_file holding dsn.
func writeDSN(t testing.TB, dsn string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(p, []byte(dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

type proc struct {
	name   string
	socket string
	config string
	wrap   []string // runs roostd inside it (ip netns exec NS)
	cmd    *exec.Cmd
	log    *agenttest.SyncBuffer
	done   chan struct{} // closed once cmd exited (procCluster)
}

// TestProcessClusterSurvivesKill9 runs three roostd processes configured
// the way an operator would (keygen, tls ca, tls cert, check-config), reads
// the cluster through nodectl, and kills the leader with SIGKILL.
func TestProcessClusterSurvivesKill9(t *testing.T) {
	bin := buildBinaries(t)
	roostd, nodectl := filepath.Join(bin, "roostd"), filepath.Join(bin, "nodectl")
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "roostp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })

	key, err := run(t, roostd, "keygen")
	if err != nil {
		t.Fatalf("keygen: %v %s", err, key)
	}
	if err := os.WriteFile(filepath.Join(dir, "gossip.key"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, roostd, "tls", "ca", "--dir", dir); err != nil {
		t.Fatalf("tls ca: %v %s", err, out)
	}
	if out, err := run(t, roostd, "tls", "ca", "--dir", dir); err == nil || !strings.Contains(out, "refusing to overwrite") {
		t.Fatalf("a second tls ca overwrote the CA: %v %s", err, out)
	}

	ports := agenttest.FreePorts(t, 7)
	gossipPorts := ports[:3]
	apiAddr := fmt.Sprintf("127.0.0.1:%d", ports[6])
	tokenFile := filepath.Join(dir, "api.token")
	if err := os.WriteFile(tokenFile, []byte("process-test-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, roostd, "tls", "cert", "--dir", dir, "--name", "x", "--for", "both"); err == nil || !strings.Contains(out, "--for: certificate use \"both\": want node, server or client") {
		t.Fatalf("tls cert --for both: %v %s", err, out)
	}
	var procs []*proc
	for i := range 3 {
		name := fmt.Sprintf("node%d", i+1)
		if out, err := run(t, roostd, "tls", "cert", "--dir", dir, "--name", name, "--host", "127.0.0.1"); err != nil {
			t.Fatalf("tls cert: %v %s", err, out)
		}
		tcpAPI := ""
		if i == 0 { // node1 also serves the TCP API, for nodectl --addr
			tcpAPI = fmt.Sprintf("  listen: %s\n  tls: {cert_file: %s/%s.pem, key_file: %s/%s-key.pem}\n  token_file: %s\n", apiAddr, dir, name, dir, name, tokenFile)
		}
		cfg := fmt.Sprintf(`node:
  name: %[1]s
  proxy_host: 127.0.1.%[2]d
  data_dir: %[3]s/%[1]s
gossip:
  bind: 127.0.0.1:%[4]d
  join: [127.0.0.1:%[5]d, 127.0.0.1:%[6]d]
  join_retry_interval: 200ms
  key_file: %[3]s/gossip.key
raft:
  bind: 127.0.0.1:%[7]d
  tls:
    ca_file: %[3]s/ca.pem
    cert_file: %[3]s/%[1]s.pem
    key_file: %[3]s/%[1]s-key.pem
api:
  socket: %[8]s/%[1]s.sock
%[9]s`, name, i+1, dir, gossipPorts[i], gossipPorts[(i+1)%3], gossipPorts[(i+2)%3], ports[3+i], sockDir, tcpAPI)
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, roostd, "check-config", "--config", path); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("check-config %s: %v %s", name, err, out)
		}
		p := &proc{name: name, socket: filepath.Join(sockDir, name+".sock"), log: &agenttest.SyncBuffer{}}
		p.cmd = exec.Command(roostd, "--config", path) // run is the default verb
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
				done := make(chan struct{})
				go func() { _ = p.cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					_ = p.cmd.Process.Kill()
					t.Errorf("%s ignored SIGTERM for 10s", p.name)
				}
			}
			if t.Failed() {
				t.Logf("%s log:\n%s", p.name, p.log.String())
			}
		}
	})

	status := func(p *proc) (api.Status, error) {
		out, err := exec.Command(nodectl, "--socket", p.socket, "status", "--json").Output()
		if err != nil {
			return api.Status{}, err
		}
		var st api.Status
		return st, json.Unmarshal(out, &st)
	}
	agreedLeader := func(ps []*proc) string {
		leader := ""
		for _, p := range ps {
			st, err := status(p)
			if err != nil || st.Leader == "" || (leader != "" && st.Leader != leader) {
				return ""
			}
			leader = st.Leader
		}
		return leader
	}
	var leader string
	if !agenttest.Eventually(30*time.Second, func() bool { leader = agreedLeader(procs); return leader != "" }) {
		t.Fatal("no agreed leader within 30s")
	}
	out, err := run(t, nodectl, "--socket", procs[0].socket, "status")
	if err != nil || !strings.Contains(out, "leader: "+leader) || strings.Count(out, "alive") != 3 {
		t.Fatalf("nodectl status: %v\n%s", err, out)
	}

	// The same through the TCP API: TLS checked against the CA, a token.
	remote := []string{"--addr", apiAddr, "--ca-file", filepath.Join(dir, "ca.pem")}
	out, err = run(t, nodectl, append(remote, "--token-file", tokenFile, "status")...)
	if err != nil || !strings.Contains(out, "leader: "+leader) {
		t.Fatalf("nodectl --addr status: %v\n%s", err, out)
	}
	badToken := filepath.Join(dir, "bad.token")
	if err := os.WriteFile(badToken, []byte("not-the-token-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, nodectl, append(remote, "--token-file", badToken, "status")...); err == nil || !strings.Contains(out, "missing or wrong API token") {
		t.Fatalf("nodectl --addr with a wrong token: %v\n%s", err, out)
	}

	var rest []*proc
	for _, p := range procs {
		if p.name == leader {
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = p.cmd.Wait()
		} else {
			rest = append(rest, p)
		}
	}
	var newLeader string
	if !agenttest.Eventually(30*time.Second, func() bool { newLeader = agreedLeader(rest); return newLeader != "" && newLeader != leader }) {
		t.Fatalf("no new leader within 30s after kill -9 of %s", leader)
	}

	// nodectl against a dead socket says so and exits 3.
	cmd := exec.Command(nodectl, "--socket", filepath.Join(sockDir, "nobody.sock"), "status")
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(string(b), "reaching roostd") {
		t.Fatalf("nodectl on a dead socket: %v %s, want exit 3 and 'reaching roostd'", err, b)
	}
}

func TestVersionAndCheckConfigExitCodes(t *testing.T) {
	bin := buildBinaries(t)
	out, err := run(t, filepath.Join(bin, "roostd"), "version")
	if err != nil || !strings.HasPrefix(out, "roostd ") {
		t.Fatalf("roostd version: %v %q", err, out)
	}
	out, err = run(t, filepath.Join(bin, "nodectl"), "--version")
	if err != nil || !strings.HasPrefix(out, "nodectl ") {
		t.Fatalf("nodectl --version: %v %q", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("node:\n  nmae: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, filepath.Join(bin, "roostd"), "check-config", "--config", bad)
	if err == nil || !strings.Contains(out, `unknown key "node.nmae"`) {
		t.Fatalf("check-config of a misspelt key: %v %q", err, out)
	}
}

// SIGHUP re-reads the configuration: the failover policy and the log
// level change at once, other changes are named for a restart, and a
// broken file changes nothing and keeps the agent running.
func TestSIGHUPReloadsWhatCanChangeLive(t *testing.T) {
	c := startProcs(t, 3, func(i int) string { return "failover:\n  block_period: 1h\n" })
	c.waitFor(60*time.Second, "a leader", func() bool { return c.leader() != nil })
	p := c.procs[0]
	b, err := os.ReadFile(p.config)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(strings.Replace(string(b), "block_period: 1h", "block_period: 2h", 1), "level: debug", "level: info", 1)
	changed = strings.Replace(changed, "join_retry_interval: 200ms", "join_retry_interval: 300ms", 1)
	if err := os.WriteFile(p.config, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c.waitFor(10*time.Second, "the reload logged", func() bool {
		return strings.Contains(p.log.String(), `msg=reloaded`) &&
			strings.Contains(p.log.String(), `applied="[failover policy log.level]" need_restart=[gossip]`)
	})
	if err := os.WriteFile(p.config, []byte(changed+"\nnot: [valid"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c.waitFor(10*time.Second, "the failed reload logged", func() bool { return strings.Contains(p.log.String(), "msg=reload_failed") })
	time.Sleep(500 * time.Millisecond)
	if !p.running() {
		t.Fatal("a broken configuration stopped the agent")
	}
	if _, err := c.status(p); err != nil {
		t.Fatalf("the agent stopped answering after a failed reload: %v", err)
	}
}
