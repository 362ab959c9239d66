// Package agenttest runs clusters of real agents inside one test process:
// real gossip, raft and API listeners on 127.0.0.1, real mutual TLS and
// gossip encryption, in the style of raft's test cluster.
package agenttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/certs"
)

// Cluster is a set of in-process agents sharing a CA and a gossip key.
type Cluster struct {
	t       testing.TB
	Dir     string // CA, keys, data directories
	sockDir string // short path: unix socket paths are limited to 108 bytes
	KeyFile string
	CA      *certs.CA
	// Tune, when set, adjusts each node's configuration before it starts.
	Tune func(i int, c *agent.Config)

	mu    sync.Mutex
	nodes []*Node
}

// Node is one agent of a Cluster.
type Node struct {
	Name   string
	Config agent.Config
	Agent  *agent.Agent
	Logs   *SyncBuffer
	cancel context.CancelFunc
	done   chan error
}

// SyncBuffer is a log sink safe for concurrent writes.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// New makes an empty cluster: a CA and a gossip key in a temporary
// directory. Start nodes with Add.
func New(t testing.TB) *Cluster {
	t.Helper()
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "roost")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	ca, err := certs.CreateCA(dir, "test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, Dir: dir, sockDir: sockDir, CA: ca, KeyFile: filepath.Join(dir, "gossip.key")}
	if err := os.WriteFile(c.KeyFile, []byte(NewKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.StopAll)
	return c
}

// NewKey returns a random gossip key, base64.
func NewKey() string {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

// Config returns the configuration node i (0-based) gets: loopback, port 0,
// mutual TLS, encrypted gossip joining the running nodes, expect 3.
func (c *Cluster) Config(i int) agent.Config {
	c.t.Helper()
	name := fmt.Sprintf("node%d", i+1)
	cert, key, err := c.CA.Issue(c.Dir, name, certs.Node, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	cfg.Node.Name = name
	cfg.Node.ProxyHost = fmt.Sprintf("127.0.1.%d", i+1)
	cfg.Node.DataDir = filepath.Join(c.Dir, name)
	cfg.Log.Level = "debug"
	cfg.Gossip.Bind = "127.0.0.1:0"
	cfg.Gossip.KeyFile = c.KeyFile
	cfg.Gossip.JoinRetryInterval = 200 * time.Millisecond
	cfg.Raft.Bind = "127.0.0.1:0"
	cfg.Raft.TLS = certs.Files{CAFile: filepath.Join(c.Dir, "ca.pem"), CertFile: cert, KeyFile: key}
	cfg.Raft.ServerStabilizationTime = time.Second
	cfg.API.Socket = filepath.Join(c.sockDir, name+".sock")
	// Join every running node, as an operator lists all peers: each learns
	// of the newcomer from its own push/pull, not only through gossip,
	// which can miss a node for up to a push/pull interval (30 s) when a
	// loaded machine drops UDP packets.
	for _, n := range c.Running() {
		cfg.Gossip.Join = append(cfg.Gossip.Join, n.Agent.GossipAddr())
	}
	return cfg
}

// Add starts n more agents with Config (and Tune) and returns them.
func (c *Cluster) Add(n int) []*Node {
	c.t.Helper()
	var out []*Node
	for range n {
		c.mu.Lock()
		i := len(c.nodes)
		c.mu.Unlock()
		cfg := c.Config(i)
		if c.Tune != nil {
			c.Tune(i, &cfg)
		}
		out = append(out, c.Start(cfg))
	}
	return out
}

// Start runs an agent with the given configuration.
func (c *Cluster) Start(cfg agent.Config) *Node {
	c.t.Helper()
	logs := &SyncBuffer{}
	log, level, err := agent.NewLogger(cfg.Log, logs)
	if err != nil {
		c.t.Fatal(err)
	}
	a, err := agent.New(cfg, log, level.Level())
	if err != nil {
		c.t.Fatalf("starting %s: %v", cfg.Node.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Name: cfg.Node.Name, Config: cfg, Agent: a, Logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- a.Run(ctx) }()
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

// Stop stops a node as a crash looks to its peers: no graceful leave
// (unless its configuration asks for one), its listeners gone at once.
func (n *Node) Stop() error {
	if n.cancel == nil {
		return nil
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		return err
	case <-time.After(30 * time.Second):
		var b bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		return fmt.Errorf("%s did not stop within 30s; goroutines:\n%s", n.Name, b.String())
	}
}

// Running reports whether the node has not been stopped.
func (n *Node) Running() bool { return n.cancel != nil }

// Status is the cluster as this node sees it.
func (n *Node) Status() api.Status { return n.Agent.Status() }

// Client is an API client on the node's unix socket.
func (n *Node) Client() *api.Client { return api.NewUnixClient(n.Config.API.Socket) }

// Nodes returns all nodes, stopped ones included.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Running returns the nodes not stopped.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes() {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// StopAll stops every running node.
func (c *Cluster) StopAll() {
	for _, n := range c.Running() {
		start := time.Now()
		if err := n.Stop(); err != nil {
			c.t.Errorf("stopping %s: %v", n.Name, err)
		}
		c.t.Logf("stopped %s in %v", n.Name, time.Since(start).Round(time.Millisecond))
	}
}

// Leader returns the single running node all running nodes agree leads,
// or nil while they do not agree.
func (c *Cluster) Leader() *Node {
	running := c.Running()
	var leader string
	for _, n := range running {
		st := n.Status()
		if st.Leader == "" || (leader != "" && st.Leader != leader) {
			return nil
		}
		leader = st.Leader
	}
	for _, n := range running {
		if n.Name == leader {
			return n
		}
	}
	return nil
}

// WaitFor polls cond every 50 ms until it holds or timeout passes, then
// fails the test with what.
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	if !Eventually(timeout, cond) {
		c.t.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, c.Describe())
	}
}

// Eventually polls cond every 50 ms until it holds (true) or timeout
// passes (false).
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitLeader waits until the running nodes agree on a leader and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) *Node {
	c.t.Helper()
	var l *Node
	c.WaitFor(timeout, "one agreed leader", func() bool { l = c.Leader(); return l != nil })
	return l
}

// Describe summarises every running node's view, for failure messages.
func (c *Cluster) Describe() string {
	var b strings.Builder
	for _, n := range c.Running() {
		st := n.Status()
		fmt.Fprintf(&b, "%s: leader=%q term=%d members:", n.Name, st.Leader, st.Term)
		for _, m := range st.Members {
			fmt.Fprintf(&b, " %s(%s,%s)", m.Name, m.Gossip, m.Raft)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// RaftRoles returns, as the given node sees it, each member's raft role
// (leader, voter, nonvoter, none).
func RaftRoles(st api.Status) map[string]string {
	out := map[string]string{}
	for _, m := range st.Members {
		out[m.Name] = m.Raft
	}
	return out
}

// FreePorts returns n distinct free TCP ports: it holds every listener open
// until all are chosen, so no port is handed out twice. It binds the
// wildcard address, so a port is free on every loopback address (a test
// cluster also listens on 127.0.1.x), not only on 127.0.0.1.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}
