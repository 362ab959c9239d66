package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/tests/dovecotlab"
	"github.com/roost-mail/roost/tests/mailcluster"
)

// waitStatus waits until HAProxy's imap backend shows want (prefixes).
func waitStatus(t *testing.T, h *mailcluster.HAProxy, want map[string]string) {
	t.Helper()
	var got map[string]mailcluster.ServerStat
	if !agenttest.Eventually(30*time.Second, func() bool {
		got = h.Stat("imap")
		for k, v := range want {
			if !strings.HasPrefix(got[k].Status, v) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("HAProxy shows %v, want %v", got, want)
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
	var servers []mailcluster.Server
	httpLB := map[string]string{}
	for i, n := range c.Nodes() {
		name := nodes[i].Short()
		agentAddr, httpAddr := n.Agent.LBAddrs()
		servers = append(servers, mailcluster.Server{Name: name, Addr: nodes[i].IMAP, Agent: agentAddr})
		httpLB[name] = httpAddr
	}
	frontend := fmt.Sprintf("127.0.0.1:%d", agenttest.FreePorts(t, 1)[0])
	h := mailcluster.StartHAProxy(t, t.TempDir(), mailcluster.HAProxyConfig{IMAP: frontend, IMAPServers: servers})
	waitStatus(t, h, map[string]string{"a": "UP", "b": "UP", "c": "UP"})
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
	waitStatus(t, h, map[string]string{"a": "UP", "b": "DRAIN", "c": "UP"})
	if code, body := lbHTTP("b"); code != 503 || !strings.Contains(body, "drain: draining: disk swap") {
		t.Fatalf("GET /lb on draining node2: %d %q", code, body)
	}
	before := h.Stat("imap")
	for range 12 {
		conn, err := net.DialTimeout("tcp", frontend, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
			t.Fatalf("through HAProxy: %q %v", line, err)
		}
		conn.Close()
	}
	after := h.Stat("imap")
	if after["b"].Total != before["b"].Total || after["a"].Total == before["a"].Total || after["c"].Total == before["c"].Total {
		t.Fatalf("sessions per server before %v, after %v: want none new on the draining b", before, after)
	}

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, map[string]string{"c": "DOWN"})
	if code, body := lbHTTP("c"); code != 503 || !strings.HasPrefix(body, "down") {
		t.Fatalf("GET /lb on failed node3: %d %q", code, body)
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leader().Client().Post(t.Context(), "/v1/nodes/node2/undrain", api.OpRequest{}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, map[string]string{"a": "UP", "b": "UP"})
}
