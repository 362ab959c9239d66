package tests

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/tests/dovecotlab"
)

// haproxy is a real HAProxy (Debian's package) run in the foreground.
type haproxy struct {
	t        *testing.T
	frontend string
	sock     string
}

// startHAProxy balances IMAP over servers (name → address), each with a
// TCP check and an agent-check on agents[name].
func startHAProxy(t *testing.T, servers, agents map[string]string, order []string) *haproxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed: run scripts/test-deps.sh as root")
	}
	dir := t.TempDir()
	port := agenttest.FreePorts(t, 1)[0]
	h := &haproxy{t: t, frontend: fmt.Sprintf("127.0.0.1:%d", port), sock: filepath.Join(dir, "admin.sock")}
	var b strings.Builder
	fmt.Fprintf(&b, `global
  stats socket %s mode 600 level admin
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend imap
  bind %s
  default_backend mail
backend mail
  balance roundrobin
`, h.sock, h.frontend)
	for _, name := range order {
		ah, ap, _ := net.SplitHostPort(agents[name])
		fmt.Fprintf(&b, "  server %s %s check inter 500ms agent-check agent-addr %s agent-port %s agent-inter 200ms\n", name, servers[name], ah, ap)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	log := &agenttest.SyncBuffer{}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy log:\n%s", log.String())
		}
	})
	return h
}

// stat returns each server's status and total sessions from HAProxy's
// stats socket.
func (h *haproxy) stat() (map[string]string, map[string]string) {
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		return nil, nil
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "show stat\n")
	b, _ := io.ReadAll(c)
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(b), "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, nil
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	status, stot := map[string]string{}, map[string]string{}
	for _, row := range rows[1:] {
		if len(row) > col["status"] && row[col["pxname"]] == "mail" && row[col["svname"]] != "BACKEND" {
			status[row[col["svname"]]] = row[col["status"]]
			stot[row[col["svname"]]] = row[col["stot"]]
		}
	}
	return status, stot
}

func (h *haproxy) waitStatus(want map[string]string) {
	h.t.Helper()
	var got map[string]string
	if !agenttest.Eventually(30*time.Second, func() bool {
		got, _ = h.stat()
		for k, v := range want {
			if !strings.HasPrefix(got[k], v) {
				return false
			}
		}
		return true
	}) {
		h.t.Fatalf("HAProxy shows %v, want %v", got, want)
	}
}

// Real HAProxy in front of three Dovecot nodes, each with an agent-check
// on its roostd: a drained node turns DRAIN and new connections stop
// landing on it, a failed node goes DOWN, an undrained node comes back UP;
// the HTTP signal answers 200 or 503 alike.
func TestHAProxyFollowsTheLBSignal(t *testing.T) {
	path, _ := usersDB(t, mailUsers, "127.0.1.1")
	nodes := dovecotlab.StartCluster(t, 3, path, false)
	flag := filepath.Join(t.TempDir(), "c-broken")
	c := agentsBeside(t, nodes, path, func(i int, cfg *agent.Config) {
		cfg.LB.AgentCheck, cfg.LB.HTTP = "127.0.0.1:0", "127.0.0.1:0"
		if i == 2 {
			cfg.Health.Checks[0].Command = "test ! -e " + flag
		}
	})
	servers, agents := map[string]string{}, map[string]string{}
	httpLB := map[string]string{}
	for i, n := range c.Nodes() {
		name := nodes[i].Short()
		servers[name] = nodes[i].IMAP
		agents[name], httpLB[name] = n.Agent.LBAddrs()
	}
	h := startHAProxy(t, servers, agents, []string{"a", "b", "c"})
	h.waitStatus(map[string]string{"a": "UP", "b": "UP", "c": "UP"})
	lbHTTP := func(name string) (int, string) {
		resp, err := http.Get("http://" + httpLB[name] + "/lb")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := lbHTTP("b"); code != 200 || !strings.HasPrefix(body, "up") {
		t.Fatalf("GET /lb on node2: %d %q", code, body)
	}

	if _, err := c.Leader().Client().Post(t.Context(), "/v1/nodes/node2/drain", api.OpRequest{Reason: "disk swap"}); err != nil {
		t.Fatal(err)
	}
	h.waitStatus(map[string]string{"a": "UP", "b": "DRAIN", "c": "UP"})
	if code, body := lbHTTP("b"); code != 503 || !strings.Contains(body, "drain: draining: disk swap") {
		t.Fatalf("GET /lb on draining node2: %d %q", code, body)
	}
	_, before := h.stat()
	for range 12 {
		conn, err := net.DialTimeout("tcp", h.frontend, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
			t.Fatalf("through HAProxy: %q %v", line, err)
		}
		conn.Close()
	}
	_, after := h.stat()
	if after["b"] != before["b"] || after["a"] == before["a"] || after["c"] == before["c"] {
		t.Fatalf("sessions per server before %v, after %v: want none new on the draining b", before, after)
	}

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitStatus(map[string]string{"c": "DOWN"})
	if code, body := lbHTTP("c"); code != 503 || !strings.HasPrefix(body, "down") {
		t.Fatalf("GET /lb on failed node3: %d %q", code, body)
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leader().Client().Post(t.Context(), "/v1/nodes/node2/undrain", api.OpRequest{}); err != nil {
		t.Fatal(err)
	}
	h.waitStatus(map[string]string{"a": "UP", "b": "UP"})
}
