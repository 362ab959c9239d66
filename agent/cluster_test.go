package agent_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/certs"
	"github.com/roost-mail/roost/failover"
)

func countRoles(roles map[string]string) (leaders, voters, nonvoters int) {
	for _, r := range roles {
		switch r {
		case "leader":
			leaders++
		case "voter":
			voters++
		case "nonvoter":
			nonvoters++
		}
	}
	return
}

// allSee waits until every running node sees want as each member's raft role.
func allSee(t *testing.T, c *agenttest.Cluster, timeout time.Duration, want func(roles map[string]string) bool) {
	t.Helper()
	c.WaitFor(timeout, "every node to agree on the raft roles", func() bool {
		for _, n := range c.Running() {
			if !want(agenttest.RaftRoles(n.Status())) {
				return false
			}
		}
		return true
	})
}

func TestThreeAgentsFormOneClusterAndReelect(t *testing.T) {
	c := agenttest.New(t)
	c.Add(3)
	leader := c.WaitLeader(20 * time.Second)
	allSee(t, c, 10*time.Second, func(r map[string]string) bool {
		l, v, nv := countRoles(r)
		return len(r) == 3 && l == 1 && v == 2 && nv == 0
	})
	var clusterID string
	c.WaitFor(5*time.Second, "a replicated cluster ID", func() bool {
		ids := map[string]bool{}
		for _, n := range c.Running() {
			ids[n.Status().ClusterID] = true
		}
		for id := range ids {
			clusterID = id
		}
		return len(ids) == 1 && clusterID != ""
	})
	for _, n := range c.Running() {
		for _, m := range n.Status().Members {
			if m.Gossip != "alive" {
				t.Fatalf("%s sees %s as %s, want alive", n.Name, m.Name, m.Gossip)
			}
		}
	}
	term := leader.Status().Term

	if err := leader.Stop(); err != nil {
		t.Fatal(err)
	}
	newLeader := c.WaitLeader(20 * time.Second)
	if newLeader.Name == leader.Name {
		t.Fatalf("got leader %s again after stopping it", newLeader.Name)
	}
	if got := newLeader.Status().Term; got <= term {
		t.Fatalf("got term %d after re-election, want > %d", got, term)
	}
	if got := newLeader.Status().ClusterID; got != clusterID {
		t.Fatalf("got cluster ID %q after re-election, want %q", got, clusterID)
	}
}

func TestFiveAgentsFormOneCluster(t *testing.T) {
	c := agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) { cfg.Raft.BootstrapExpect = 5 }
	c.Add(5)
	c.WaitLeader(30 * time.Second)
	allSee(t, c, 15*time.Second, func(r map[string]string) bool {
		l, v, nv := countRoles(r)
		return len(r) == 5 && l == 1 && v == 4 && nv == 0
	})
}

// A node that starts with fewer than bootstrap_expect peers waits; a node
// that joins a formed cluster never bootstraps its own; voters stop at
// max_voters; a dead voter is removed once a replacement has joined.
func TestJoinersVotersCapAndDeadServerReplaced(t *testing.T) {
	c := agenttest.New(t)
	first := c.Add(2)
	time.Sleep(2 * time.Second)
	for _, n := range first {
		if st := n.Status(); st.Leader != "" || st.ClusterID != "" {
			t.Fatalf("%s formed a cluster with 2 of 3 expected servers: %+v", n.Name, st)
		}
	}
	c.Add(1)
	leader := c.WaitLeader(20 * time.Second)
	c.WaitFor(5*time.Second, "cluster ID", func() bool { return leader.Status().ClusterID != "" })
	clusterID := leader.Status().ClusterID

	// The 4th and 5th join as non-voters and are promoted once stable.
	c.Add(2)
	allSee(t, c, 30*time.Second, func(r map[string]string) bool {
		l, v, nv := countRoles(r)
		return len(r) == 5 && l == 1 && v == 4 && nv == 0
	})
	// The 6th stays a non-voter: at most five voters.
	sixth := c.Add(1)[0]
	allSee(t, c, 30*time.Second, func(r map[string]string) bool {
		return r["node6"] == "nonvoter"
	})
	time.Sleep(3 * time.Second) // several autopilot rounds: still not promoted
	if l, v, nv := countRoles(agenttest.RaftRoles(sixth.Status())); l+v != 5 || nv != 1 {
		t.Fatalf("got %d leader + %d voters and %d non-voters, want 5 voting and 1 non-voter", l, v, nv)
	}
	for _, n := range c.Running() {
		if got := n.Status().ClusterID; got != clusterID {
			t.Fatalf("%s has cluster ID %q, want %q: a joiner bootstrapped its own cluster", n.Name, got, clusterID)
		}
	}

	// A voter dies; the non-voter replaces it and the dead one is removed.
	var victim *agenttest.Node
	for _, n := range c.Running() {
		if n != c.Leader() && n != sixth {
			victim = n
			break
		}
	}
	if err := victim.Stop(); err != nil {
		t.Fatal(err)
	}
	allSee(t, c, 40*time.Second, func(r map[string]string) bool {
		l, v, nv := countRoles(r)
		_, stillThere := r[victim.Name]
		return l == 1 && v == 4 && nv == 0 && (!stillThere || r[victim.Name] == "none")
	})
}

// A node with another gossip key, or another cluster's label, never joins,
// and its log says why.
func TestForeignGossipNodesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *agenttest.Cluster, cfg *agent.Config)
		why    string
	}{
		{"wrong key", func(c *agenttest.Cluster, cfg *agent.Config) {
			badKey := filepath.Join(c.Dir, "other.key")
			if err := os.WriteFile(badKey, []byte(agenttest.NewKey()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.Gossip.KeyFile = badKey
		}, "no installed keys could decrypt"},
		{"other cluster label", func(c *agenttest.Cluster, cfg *agent.Config) {
			cfg.Gossip.ClusterLabel = "another-cluster"
		}, "its gossip.cluster_label (ours is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := agenttest.New(t)
			c.Add(3)
			c.WaitLeader(20 * time.Second)
			cfg := c.Config(3)
			tc.change(c, &cfg)
			intruder := c.Start(cfg)
			if !agenttest.Eventually(10*time.Second, func() bool {
				return strings.Contains(intruder.Logs.String(), "gossip_join_failed")
			}) {
				t.Fatalf("no gossip_join_failed in the intruder's log:\n%s", intruder.Logs.String())
			}
			if logs := strings.ToLower(intruder.Logs.String()); !strings.Contains(logs, tc.why) {
				t.Fatalf("the log does not say why the join failed (want %q):\n%s", tc.why, logs)
			}
			if tc.name == "other cluster label" && !agenttest.Eventually(5*time.Second, func() bool {
				return strings.Contains(c.Nodes()[0].Logs.String(), "unacceptable label")
			}) {
				t.Fatal("the joined-to node does not log the unacceptable label")
			}
			time.Sleep(time.Second)
			for _, n := range c.Running() {
				if n == intruder {
					if got := len(n.Status().Members); got != 1 {
						t.Fatalf("intruder sees %d members, want only itself", got)
					}
					continue
				}
				for _, m := range n.Status().Members {
					if m.Name == intruder.Name {
						t.Fatalf("%s lists the intruder %s as %s", n.Name, m.Name, m.Gossip)
					}
				}
			}
		})
	}
}

// threeAgents starts three agents and returns the leader and its cluster
// port.
func threeAgents(t *testing.T) (c *agenttest.Cluster, leader *agenttest.Node, raftAddr string) {
	t.Helper()
	c = agenttest.New(t)
	c.Add(3)
	leader = c.WaitLeader(20 * time.Second)
	for _, m := range leader.Status().Members {
		if m.Self {
			raftAddr = m.RaftAddr
		}
	}
	return c, leader, raftAddr
}

func TestRaftPeerWithoutValidClientCertIsRefused(t *testing.T) {
	c, leader, raftAddr := threeAgents(t)

	// A certificate from another CA, and no certificate at all.
	otherDir := t.TempDir()
	other, err := certs.CreateCA(otherDir, "other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	oc, ok, err := other.Issue(otherDir, "mallory", certs.Node, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := tls.LoadX509KeyPair(oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	for name, certsToSend := range map[string][]tls.Certificate{"no certificate": nil, "foreign CA": {foreign}} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", raftAddr,
			&tls.Config{InsecureSkipVerify: true, Certificates: certsToSend})
		if err == nil {
			// TLS 1.3 reports the server's refusal on the first read.
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = conn.Write([]byte{'S'})
			var st map[string]any
			err = json.NewDecoder(conn).Decode(&st)
			conn.Close()
		}
		if err == nil {
			t.Fatalf("%s: the cluster port answered a peer without a valid client certificate", name)
		}
	}
	if !agenttest.Eventually(5*time.Second, func() bool { return strings.Contains(leader.Logs.String(), "raft_peer_refused") }) {
		t.Fatalf("leader did not log raft_peer_refused")
	}

	// A whole agent with the right gossip key but a foreign certificate is
	// seen by gossip yet never becomes a raft server.
	cfg := c.Config(3)
	cfg.Raft.TLS = certs.Files{CAFile: filepath.Join(otherDir, "ca.pem"), CertFile: oc, KeyFile: ok}
	c.Start(cfg)
	time.Sleep(5 * time.Second)
	for _, n := range c.Running() {
		if n.Name == cfg.Node.Name {
			continue
		}
		if r := agenttest.RaftRoles(n.Status())[cfg.Node.Name]; r == "voter" || r == "leader" {
			t.Fatalf("%s sees the foreign-certificate node as %s", n.Name, r)
		}
	}
	if st := c.Nodes()[3].Status(); st.ClusterID != "" {
		t.Fatalf("the foreign-certificate node received the cluster state: %+v", st)
	}
}

// A certificate of the cluster's own CA, as every node has, is not enough
// to have the leader carry out an operator request: a forwarded request
// must be signed with the key derived from the gossip keyring. A
// follower's forwarded request is signed, and reaches the leader's own
// answer.
func TestForwardedOperatorRequestNeedsTheGossipKey(t *testing.T) {
	c, leader, raftAddr := threeAgents(t)
	dir := t.TempDir()
	cp, kp, err := c.CA.Issue(dir, "copied-cert", certs.Node, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", raftAddr,
		&tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := map[string]any{"request": map[string]string{"op": "maintenance-on", "node": "node2", "reason": "mallory"}, "sent": time.Now().Unix()}
	if _, err := conn.Write([]byte{'O'}); err != nil {
		t.Fatal(err)
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		t.Fatal(err)
	}
	var reply struct{ Error string }
	if err := json.NewDecoder(conn).Decode(&reply); err != nil {
		t.Fatalf("the leader did not answer: %v", err)
	}
	if !strings.Contains(reply.Error, "not signed with this cluster's gossip key") {
		t.Fatalf("an unsigned request with a cluster certificate: %q, want a refusal", reply.Error)
	}
	if !agenttest.Eventually(5*time.Second, func() bool { return strings.Contains(leader.Logs.String(), "operator_request_refused") }) {
		t.Fatal("the leader did not log operator_request_refused")
	}
	for _, n := range c.Running() {
		if n == leader {
			continue
		}
		_, err := n.Agent.Operate(context.Background(), failover.Request{Op: failover.OpMaintenanceOn, Node: "node2", Reason: "kernel"})
		// These agents have no routing database: the leader's own answer.
		if err == nil || !strings.Contains(err.Error(), "has no routing database") {
			t.Fatalf("a follower's forwarded request: %v, want the leader's answer that it has no routing database", err)
		}
		break
	}
}

func TestWitnessKeepsQuorumForTwoMailNodes(t *testing.T) {
	c := agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) {
		if i == 2 {
			cfg.Node.Role = agent.RoleWitness
			cfg.Node.ProxyHost = ""
		}
	}
	c.Add(3)
	c.WaitLeader(20 * time.Second)
	allSee(t, c, 10*time.Second, func(r map[string]string) bool {
		l, v, _ := countRoles(r)
		return l == 1 && v == 2
	})
	roles := map[string]string{}
	for _, m := range c.Nodes()[0].Status().Members {
		roles[m.Name] = m.Role
	}
	if roles["node3"] != "witness" || roles["node1"] != "mail" {
		t.Fatalf("got roles %v, want node3 witness and node1 mail", roles)
	}
	// Lose either mail node: the other and the witness keep a quorum.
	for _, lose := range []int{0, 1} {
		cc := c
		if lose == 1 {
			cc = agenttest.New(t)
			cc.Tune = c.Tune
			cc.Add(3)
			cc.WaitLeader(20 * time.Second)
		}
		if err := cc.Nodes()[lose].Stop(); err != nil {
			t.Fatal(err)
		}
		l := cc.WaitLeader(20 * time.Second)
		if l.Name == cc.Nodes()[lose].Name {
			t.Fatalf("stopped node %s still leads", l.Name)
		}
	}
}

// A node that joins after the log was compacted receives the state by
// snapshot.
func TestLateJoinerGetsSnapshot(t *testing.T) {
	c := agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) { cfg.Raft.TrailingLogs = 0 }
	c.Add(3)
	leader := c.WaitLeader(20 * time.Second)
	c.WaitFor(5*time.Second, "cluster ID", func() bool { return leader.Status().ClusterID != "" })
	if err := leader.Agent.Snapshot(); err != nil {
		t.Fatal(err)
	}
	late := c.Add(1)[0]
	c.WaitFor(20*time.Second, "the late joiner to have the cluster ID", func() bool {
		return late.Status().ClusterID == leader.Status().ClusterID
	})
	if !strings.Contains(late.Logs.String(), "snapshot") {
		t.Fatalf("the late joiner's log mentions no snapshot")
	}
}
