package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
)

// Each agent probes its peers' Dovecot from its own address. When one
// peer alone cannot reach node1, every agent's view says so and nothing
// more; when no peer can, the view says that.
func TestPeersViewOfANodesDovecot(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Value // the source IP refused, "" for none
	refuse.Store("")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			if host != refuse.Load().(string) {
				c.Write([]byte("* OK Dovecot ready.\r\n"))
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })

	c := agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) {
		ip := fmt.Sprintf("127.0.0.%d", i+1)
		cfg.Gossip.Bind, cfg.Raft.Bind = ip+":0", ip+":0"
		cfg.Health.Fall, cfg.Health.Rise = 2, 2
		cfg.Health.PeerInterval, cfg.Health.PeerTimeout = 200*time.Millisecond, 200*time.Millisecond
		if i == 0 {
			cfg.Health.PeerAddr = ln.Addr().String()
		}
	}
	c.Add(3)
	c.WaitLeader(20 * time.Second)
	view := func(reach int, cannot ...string) func() bool {
		return func() bool {
			for _, n := range c.Running() {
				for _, m := range n.Status().Members {
					if m.Name == "node1" && (m.PeersReach != reach || !slices.Equal(m.PeersCannot, cannot)) {
						return false
					}
				}
			}
			return true
		}
	}
	c.WaitFor(10*time.Second, "node1 reached by both peers", view(2))

	refuse.Store("127.0.0.2")
	c.WaitFor(10*time.Second, "every agent to see node2 alone unable to reach node1", view(1, "node2"))
	// Nothing more: node1 still reports itself passing, and the others
	// stay reachable (they offer no peer address, so nobody probes them).
	for _, n := range c.Running() {
		for _, m := range n.Status().Members {
			if m.Name == "node1" && m.Health != "passing" {
				t.Fatalf("%s sees node1 %s after one peer lost it", n.Name, m.Health)
			}
			if m.Name != "node1" && len(m.PeersCannot) != 0 {
				t.Fatalf("%s sees %s unreachable from %v", n.Name, m.Name, m.PeersCannot)
			}
		}
	}

	ln.Close()
	c.WaitFor(10*time.Second, "every agent to see node1 unreachable from both peers", view(0, "node2", "node3"))
	req, _ := http.NewRequest(http.MethodGet, "http://roostd/metrics", nil)
	resp, err := unixClient(c.Nodes()[2].Config.API.Socket).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `roost_health_peer_reachable{peer="node1"} 0`) {
		t.Fatalf("node3's metrics lack node1 unreachable:\n%s", body)
	}
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}
