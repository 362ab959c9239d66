package agent_test

import (
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/health"
)

// notifications reads what the agent says on NOTIFY_SOCKET.
type notifications struct{ c *net.UnixConn }

func (n notifications) next(t *testing.T, within time.Duration) (string, bool) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = n.c.SetReadDeadline(time.Now().Add(within))
	k, err := n.c.Read(buf)
	if err != nil {
		return "", false
	}
	return string(buf[:k]), true
}

// waitFor reads until a message contains want.
func (n notifications) waitFor(t *testing.T, want string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m, ok := n.next(t, time.Until(deadline)); ok && strings.Contains(m, want) {
			return m
		}
	}
	t.Fatalf("no %q from the agent within %s", want, within)
	return ""
}

// The agent speaks systemd's notify protocol: READY once it knows its
// leader and its first checks ran, a STATUS with role, leader and state,
// WATCHDOG pings while its health loop goes round, none while it is stuck.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "600000")
	var stall atomic.Bool
	t.Cleanup(agent.StallWatch(&stall)) // undone after the agents stop
	defer stall.Store(false)            // before they stop

	c := agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) {
		cfg.Raft.BootstrapExpect = 1
		cfg.Health.Checks = []health.CheckConfig{{Name: "site", Protocol: "command", Command: "sleep 0.3", Interval: 500 * time.Millisecond, Timeout: 500 * time.Millisecond}}
	}
	n := notifications{conn}
	node := c.Add(1)[0]
	n.waitFor(t, "READY=1", 20*time.Second)
	if st := node.Status(); st.Leader != "node1" || len(st.Health.Checks) != 1 {
		t.Fatalf("READY before the agent was ready: %+v", st)
	}
	if m := n.waitFor(t, "STATUS=mail, leader node1", 5*time.Second); !strings.Contains(m, "state active") {
		t.Fatalf("status: %q", m)
	}
	n.waitFor(t, "WATCHDOG=1", 2*time.Second)

	stall.Store(true)
	time.Sleep(500 * time.Millisecond) // pings sent before the stall showed
	for {                              // drop what queued meanwhile
		if _, ok := n.next(t, 20*time.Millisecond); !ok {
			break
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if m, ok := n.next(t, time.Until(deadline)); ok && strings.Contains(m, "WATCHDOG=1") {
			t.Fatal("a WATCHDOG ping while the health loop was stuck")
		}
	}
	stall.Store(false)
	n.waitFor(t, "WATCHDOG=1", 2*time.Second)
}
