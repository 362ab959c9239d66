package tests

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/health"
	"github.com/roost-mail/roost/tests/dovecotlab"
)

// Three agents beside three real Dovecot proxy_maybe nodes. Node b's own
// check fails: the leader moves b's users and their sessions (proxied
// through a, and straight on b) end through the doveadm HTTP APIs the
// nodes gossip (sweeps off); their next login through a lands on a
// healthy node.
func TestFailoverKicksSessionsOnRealDovecot(t *testing.T) {
	path, store := usersDB(t, mailUsers, "127.0.1.2")
	nodes := dovecotlab.StartCluster(t, 3, path, false)
	flag := filepath.Join(t.TempDir(), "b-broken")

	var proxied, direct []*imapSession
	for _, u := range mailUsers {
		s, err := imapLogin(nodes[0].IMAP, u, mailPass)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		d, err := imapLogin(nodes[1].IMAP, u, mailPass)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if s.Node != "b" || d.Node != "b" {
			t.Fatalf("%q is served by %q and %q, want b", u, s.Node, d.Node)
		}
		proxied, direct = append(proxied, s), append(direct, d)
	}

	c := agentsBeside(t, nodes, path, func(i int, cfg *agent.Config) {
		cfg.Failover.SweepInterval = 0 // only the leader's kicks
		if i == 1 {
			cfg.Health.Checks[0].Command = "test ! -e " + flag
		}
	})
	start := time.Now()
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The proxy kick on a or the kick on b, whichever comes first, ends
	// each session.
	for i, s := range proxied {
		if _, err := s.closed(60 * time.Second); err != nil {
			t.Fatalf("%q's session proxied through a was not ended: %v", mailUsers[i], err)
		}
	}
	for i, s := range direct {
		if bye, err := s.closed(10 * time.Second); err != nil || !bye {
			t.Fatalf("%q's session on b: bye %v, %v; want BYE from the kick", mailUsers[i], bye, err)
		}
	}
	t.Logf("sessions ended %s after the fault", time.Since(start).Round(time.Millisecond))
	// The kicks run beside the plan; a kick by user name still in flight
	// would end a new login too. Wait for the batch's kick and both host
	// kicks to have finished.
	c.WaitFor(30*time.Second, "the kicks done", func() bool {
		l := c.Leader()
		return l != nil && metricSum(t, l, "roost_kicks_total") >= 3
	})
	for _, u := range mailUsers {
		s, err := imapLogin(nodes[0].IMAP, u, mailPass)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if s.Node != "a" && s.Node != "c" {
			t.Fatalf("after the failover %q logs in on %q", u, s.Node)
		}
		if j, err := store.Journal(t.Context(), u); err != nil || len(j) != 1 || j[0].From != "127.0.1.2" {
			t.Fatalf("journal of %q: %+v %v", u, j, err)
		}
	}
	st := c.Leader().Agent.FailoverState()
	if st.Node("node2").State != failover.Failed {
		t.Fatalf("node2 is %s", st.Node("node2").State)
	}
}

// agentsBeside starts an agent beside each Dovecot node: routing on the
// users database at path, the node's doveadm API, a site check that
// passes (tune may change it), fast failover rounds and sweeps.
func agentsBeside(t *testing.T, nodes []*dovecotlab.Instance, path string, tune func(i int, cfg *agent.Config)) *agenttest.Cluster {
	t.Helper()
	return agentsWith(t, nodes, 0, path, tune)
}

// agentsWith is agentsBeside plus witnesses: agents that only vote (and
// probe the mail nodes), numbered after the mail nodes.
func agentsWith(t *testing.T, nodes []*dovecotlab.Instance, witnesses int, path string, tune func(i int, cfg *agent.Config)) *agenttest.Cluster {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsn, []byte(path), 0o600); err != nil {
		t.Fatal(err)
	}
	c := agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) {
		cfg.Routing.DSNFile = dsn
		cfg.Failover.Interval = 100 * time.Millisecond
		cfg.Failover.SweepInterval = 200 * time.Millisecond
		if i >= len(nodes) {
			cfg.Node.Role, cfg.Node.ProxyHost = agent.RoleWitness, ""
		} else {
			d := nodes[i]
			cfg.Dovecot.URL, cfg.Dovecot.APIKeyFile, cfg.Dovecot.InstanceName = d.HTTP+"/doveadm/v1", d.APIKeyFile, d.Name
			cfg.Health.Checks = []health.CheckConfig{{Name: "site", Protocol: "command", Command: "true", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}}
		}
		if tune != nil {
			tune(i, cfg)
		}
	}
	c.Add(len(nodes) + witnesses)
	c.WaitLeader(20 * time.Second)
	return c
}

// A user moved by hand (or while this node was cut off): the node's own
// sweep ends its session here; a user still routed here keeps theirs.
func TestSweepEndsSessionsOfUsersRoutedElsewhere(t *testing.T) {
	path, _ := usersDB(t, mailUsers, "127.0.1.2")
	nodes := dovecotlab.StartCluster(t, 3, path, false)
	held := loginAll(t, nodes[1].IMAP, mailUsers[:2])
	agentsBeside(t, nodes, path, nil)
	time.Sleep(time.Second) // sweeps that must kick no one
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE users SET proxy_host = '127.0.1.3' WHERE username = ?`, mailUsers[0]); err != nil {
		t.Fatal(err)
	}
	if bye, err := held[0].closed(10 * time.Second); err != nil || !bye {
		t.Fatalf("%q, routed elsewhere: bye %v, %v; want the sweep's BYE", mailUsers[0], bye, err)
	}
	held[1].c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(held[1].c, "n NOOP\r\n")
	if line, err := held[1].r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "n OK") {
		t.Fatalf("%q, still routed here, lost its session: %q %v", mailUsers[1], line, err)
	}
}

// An operator drains b with nodectl through a follower and waits: every
// user is moved, their sessions end, and nodectl returns once b's Dovecot
// holds no session; status then shows b draining, its LB signal "drain".
func TestNodectlDrainWaitsUntilTheNodeIsEmpty(t *testing.T) {
	nodectl := filepath.Join(buildBinaries(t), "nodectl")
	path, _ := usersDB(t, mailUsers, "127.0.1.2")
	nodes := dovecotlab.StartCluster(t, 3, path, false)
	var held []*imapSession
	for _, u := range mailUsers {
		for _, n := range nodes[:2] { // through a (proxied to b) and on b
			s, err := imapLogin(n.IMAP, u, mailPass)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			held = append(held, s)
		}
	}
	c := agentsBeside(t, nodes, path, func(i int, cfg *agent.Config) { cfg.Failover.SweepInterval = 0 })
	var follower *agenttest.Node
	c.WaitFor(20*time.Second, "a follower", func() bool {
		l := c.Leader()
		for _, n := range c.Running() {
			if l != nil && n != l && len(l.Status().Members) == 3 {
				follower = n
			}
		}
		return follower != nil
	})
	sock := "--socket=" + follower.Config.API.Socket
	out, err := run(t, nodectl, sock, "drain", "node2", "--reason", "disk swap", "--rate", "100", "--wait", "--wait-timeout", "60s")
	if err != nil || !strings.Contains(out, "node2 holds no sessions") || !strings.Contains(out, fmt.Sprintf("moved %d of %d users", len(mailUsers), len(mailUsers))) {
		t.Fatalf("nodectl drain --wait: %v\n%s", err, out)
	}
	for i, s := range held {
		if _, err := s.closed(10 * time.Second); err != nil {
			t.Fatalf("session %d (%q) still open after the drain: %v", i, mailUsers[i/2], err)
		}
	}
	for _, u := range mailUsers {
		s, err := imapLogin(nodes[0].IMAP, u, mailPass)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if s.Node == "b" {
			t.Fatalf("after the drain %q still logs in on b", u)
		}
	}
	out, err = run(t, nodectl, sock, "status")
	if err != nil || !regexpMatch(`node2( \*)?\s+mail\s+127\.0\.1\.2\s+draining\s+drain\s+0\s`, out) || !strings.Contains(out, "node2 is draining since") {
		t.Fatalf("status after the drain: %v\n%s", err, out)
	}
	out, err = run(t, nodectl, sock, "drain", "node9", "--yes")
	if code := exitCode(err); code != 1 || !strings.Contains(out, `no node "node9" in the cluster`) {
		t.Fatalf("drain of a missing node: exit %d\n%s", code, out)
	}
	out, err = run(t, "/bin/sh", "-c", nodectl+" --socket=/nonexistent/roost.sock status")
	if code := exitCode(err); code != 3 {
		t.Fatalf("status without roostd: exit %d\n%s", code, out)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// b's Dovecot master dies. Its mail processes would serve their sessions
// on for about ten seconds while the users' mail is served from a or c;
// once b is failed over, b's agent ends them.
func TestAgentEndsADeadMastersOrphans(t *testing.T) {
	path, _ := usersDB(t, mailUsers, "127.0.1.2")
	nodes := dovecotlab.StartCluster(t, 3, path, false)
	held := loginAll(t, nodes[1].IMAP, mailUsers)
	c := agentsBeside(t, nodes, path, func(i int, cfg *agent.Config) {
		cfg.Failover.SweepInterval = 0
		// The master's pid: a process check an operator could configure.
		cfg.Health.Checks[0].Command = "kill -0 $(cat " + nodes[i].PIDFile() + ")"
	})
	c.WaitFor(20*time.Second, "every node sees three passing", func() bool {
		for _, m := range c.Leader().Status().Members {
			if m.Health != "passing" {
				return false
			}
		}
		return true
	})
	nodes[1].Kill9()
	start := time.Now()
	for i, s := range held {
		if _, err := s.closed(30 * time.Second); err != nil {
			t.Fatalf("%q's orphaned session on b is still open: %v", mailUsers[i], err)
		}
	}
	t.Logf("orphans ended %s after the master died", time.Since(start).Round(time.Millisecond))
	// The agent logs right after its signal, maybe after the client saw
	// the end.
	if !agenttest.Eventually(5*time.Second, func() bool { return strings.Contains(c.Nodes()[1].Logs.String(), "orphans_ended") }) {
		t.Fatalf("b's agent did not end the orphans (they died on their own?):\n%s", c.Nodes()[1].Logs.String())
	}
}

// Two mail nodes and a witness. A mail node's host is lost (its agent and
// every Dovecot process killed): the survivor and the witness both cannot
// reach its IMAP port, and the leader (whichever is left) moves its users
// to the survivor, where their logins land. Either mail node may go.
func TestTwoMailNodesAndAWitnessSurviveTheLossOfEither(t *testing.T) {
	for _, lose := range []int{0, 1} {
		t.Run(fmt.Sprintf("lose-node%d", lose+1), func(t *testing.T) {
			path, store := usersDB(t, mailUsers, fmt.Sprintf("127.0.1.%d", lose+1))
			nodes := dovecotlab.StartCluster(t, 2, path, false)
			c := agentsWith(t, nodes, 1, path, func(i int, cfg *agent.Config) {
				cfg.Failover.SweepInterval = 0
				if i < 2 {
					cfg.Health.PeerAddr = nodes[i].IMAP
				}
				cfg.Health.PeerInterval, cfg.Health.PeerTimeout = 200*time.Millisecond, 200*time.Millisecond
			})
			c.WaitFor(20*time.Second, "everyone reaching both mail nodes", func() bool {
				l := c.Leader()
				if l == nil {
					return false
				}
				st := l.Status()
				n := 0
				for _, m := range st.Members {
					if m.Role == "mail" && m.PeersReach == 2 {
						n++
					}
				}
				return n == 2
			})
			lost, survivor := c.Nodes()[lose], nodes[1-lose]
			if err := lost.Stop(); err != nil {
				t.Fatal(err)
			}
			nodes[lose].KillAll()
			c.WaitFor(60*time.Second, "the lost node's users on the survivor", func() bool {
				l := c.Leader()
				if l == nil {
					return false
				}
				st := l.Agent.FailoverState()
				_, running := st.Running(lost.Name)
				return st.Node(lost.Name).State == failover.Failed && !running
			})
			for _, u := range mailUsers {
				s, err := imapLogin(survivor.IMAP, u, mailPass)
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				if s.Node != survivor.Short() {
					t.Fatalf("%q logs in on %q, want %q", u, s.Node, survivor.Short())
				}
				if j, err := store.Journal(t.Context(), u); err != nil || len(j) != 1 || j[0].To != fmt.Sprintf("127.0.1.%d", 2-lose) {
					t.Fatalf("journal of %q: %+v %v", u, j, err)
				}
			}
		})
	}
}

// b hangs (every Dovecot process stopped, as a hung FUSE mount stops
// them). A session proxied through a to b would wait for ever; when b is
// failed over, a drops every session it proxies to b's host, including
// that of a user the routing filter keeps from moving.
func TestFailoverDropsProxiedSessionsTowardsAHungNode(t *testing.T) {
	path, _ := usersDB(t, mailUsers, "127.0.1.2")
	nodes := dovecotlab.StartCluster(t, 3, path, false)
	flag := filepath.Join(t.TempDir(), "b-hung")
	kept := mailUsers[0] // not moved: the filter excludes it
	s, err := imapLogin(nodes[0].IMAP, kept, mailPass)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Node != "b" {
		t.Fatalf("%q is served by %q, want b", kept, s.Node)
	}
	c := agentsBeside(t, nodes, path, func(i int, cfg *agent.Config) {
		cfg.Failover.SweepInterval = 0
		cfg.Routing.Filter = "username <> '" + kept + "'"
		if i == 1 {
			cfg.Health.Checks[0].Command = "test ! -e " + flag
		}
	})
	nodes[1].Signal(syscall.SIGSTOP)
	defer nodes[1].Signal(syscall.SIGCONT)
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.closed(30 * time.Second); err != nil {
		t.Fatalf("the session proxied to hung b is still open: %v", err)
	}
	st := c.Leader().Agent.FailoverState()
	if st.Node("node2").State != failover.Failed {
		t.Fatalf("node2 is %s", st.Node("node2").State)
	}
}

// metricSum adds up every series of a metric on an in-process agent.
func metricSum(t *testing.T, n *agenttest.Node, name string) float64 {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", n.Config.API.Socket)
	}}}
	resp, err := hc.Get("http://roostd/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			sum += v
		}
	}
	return sum
}
