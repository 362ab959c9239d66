package tests

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/tests/mailcluster"
)

// The end-to-end scenarios: the whole mail cluster of tests/mailcluster
// (three Dovecot nodes with proxy_maybe on PostgreSQL, one shared faultfs
// filesystem mounted per node, HAProxy with roostd's agent-check, three
// roostd processes at their default failover settings), and 300 users
// holding IMAP sessions through HAProxy.

func startMailCluster(t *testing.T) (*mailcluster.Cluster, []*mailcluster.Session) {
	t.Helper()
	return startMailClusterOf(t, "2.3")
}

// startMailClusterOf is startMailCluster with that Dovecot version.
func startMailClusterOf(t *testing.T, dovecot string) (*mailcluster.Cluster, []*mailcluster.Session) {
	t.Helper()
	return startMailClusterWith(t, mailcluster.Options{Dovecot: dovecot})
}

// startMailClusterWith is startMailCluster with o (its Bin filled in).
func startMailClusterWith(t *testing.T, o mailcluster.Options) (*mailcluster.Cluster, []*mailcluster.Session) {
	t.Helper()
	o.Bin = buildBinaries(t)
	c := mailcluster.Start(t, o)
	held, err := c.LoginAll(c.Users)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range held {
		t.Cleanup(func() { s.Close() })
	}
	for i, s := range held {
		if want := c.Nodes[i%3].Short; s.Node != want {
			t.Fatalf("%s is served by %q, want %q", s.User, s.Node, want)
		}
	}
	return c, held
}

// failOver breaks node b with fault and checks what every user of b must
// see: their sessions end, they log in again through HAProxy on a healthy
// node, the journal holds exactly b's users, HAProxy has b down.
func failOver(t *testing.T, fault func(b *mailcluster.Node)) (*mailcluster.Cluster, *mailcluster.Node) {
	c, held := startMailCluster(t)
	failOverIn(t, c, held, fault)
	return c, c.Nodes[1]
}

// failOverIn is failOver in a running cluster whose users hold sessions.
func failOverIn(t *testing.T, c *mailcluster.Cluster, held []*mailcluster.Session, fault func(b *mailcluster.Node)) {
	t.Helper()
	b := c.Nodes[1]
	affected := c.UsersOf(b)
	moves := map[string]int{} // off each node before, from earlier moves in this cluster
	for _, n := range c.Nodes {
		moves[n.Host] = c.JournalFrom(n.Host)
	}
	start := time.Now()
	fault(b)
	ttr, err := c.FirstLogin(affected[0], b.Short, start, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, c.AgentLogs(60))
	}
	t.Logf("%s logged in on a healthy node %s after the fault", affected[0], ttr.Round(time.Millisecond))
	c.WaitFor(30*time.Second, "node2's users moved", func() bool { return c.UsersOn(b.Host) == 0 })
	for i, s := range held {
		if c.Nodes[i%3] == b && !s.Ended(30*time.Second) {
			t.Fatalf("%s's session on failed node2 was left open", s.User)
		}
	}
	t.Logf("every session of node2's users ended %s after the fault", time.Since(start).Round(time.Millisecond))
	// A crashed node's login processes may still accept a connection for a
	// moment (a client then reconnects); once HAProxy has the node down,
	// every login must land on a healthy node at the first try.
	c.WaitFor(10*time.Second, "HAProxy to see node2 down", func() bool {
		return strings.HasPrefix(c.HAProxy.Stat("imap")["node2"].Status, "DOWN")
	})
	again, err := c.LoginAll(affected)
	if err != nil && strings.Contains(err.Error(), "[UNAVAILABLE]") {
		// Right after a failover every node is busy with its kicks (on
		// 2.4 one doveadm command per user), and on this 2-core machine
		// a proxied login may pass login_proxy_timeout. Dovecot then says
		// try again later (RFC 5530's UNAVAILABLE), and a client does:
		// all of them again, once, and now every one must succeed.
		t.Logf("%d logins right after the failover were temporarily unavailable; all again in 2 s", len(failedLogins(err)))
		time.Sleep(2 * time.Second)
		again, err = c.LoginAll(affected)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, c.DovecotLinesOf(failedLogins(err)))
	}
	served := map[string]int{}
	for _, s := range again {
		s.Close()
		served[s.Node]++
	}
	if served[b.Short] != 0 || served["a"]+served["c"] != len(affected) || served["a"] < 20 || served["c"] < 20 {
		t.Fatalf("node2's %d users now log in on %v", len(affected), served)
	}
	for _, n := range c.Nodes {
		want := 0
		if n == b {
			want = len(affected)
		}
		if got := c.JournalFrom(n.Host) - moves[n.Host]; got != want {
			t.Fatalf("the journal has %d new moves off %s, want %d", got, n.Host, want)
		}
	}
	if m, _ := c.Member(c.Nodes[0], b.Name); m.State != "failed" || m.LB != "down" {
		t.Fatalf("node2 is %q with lb %q, want failed and down", m.State, m.LB)
	}
}

// Scenarios 1, 5 and 6 in one cluster: Dovecot on node2 dies (kill -9 of
// its master) while 1,000 messages are delivered (none lost, none twice,
// none on local disk); its users' sessions end and they log in elsewhere;
// restarting Dovecot and nodectl failback bring them home. Then an
// operator drains node2 with progress: it empties, HAProxy shows it
// draining, and undrain brings its users home.
func TestE2EDovecotCrash(t *testing.T) {
	c, held := startMailCluster(t)
	b := c.Nodes[1]
	failOverIn(t, c, held, func(*mailcluster.Node) { deliverDuringCrash(t, c, "e2e") })
	b.Dovecot.Start()
	c.WaitFor(30*time.Second, "node2 passing again in every agent's view", func() bool { return c.Recovered(b) })
	if out, err := c.Ctl(c.Nodes[2], "failback", b.Name, "--yes"); err != nil {
		t.Fatalf("nodectl failback: %v\n%s", err, out)
	}
	backHome(t, c, b)
	drainAndUndrain(t, c)
}

// The scenarios above on Dovecot 2.4 nodes configured by the guide's 2.4
// blocks, in one cluster: node2's Dovecot crashes while 1,000 messages
// are delivered (none lost, none twice, none on local disk), the failover
// ends every session of node2's users and they log in elsewhere,
// failback brings them home; a drain with --wait ends their sessions
// (proxied ones too: every user holds a session through HAProxy), they
// log in elsewhere again, and undrain brings them back. The auth cache is
// on (an hour): 2.4 cannot flush it over HTTP, so every move relies on
// each node's own agent flushing it when the leader asks. (A second
// failure of node2 here would be held by the flap block, so the hung
// mount on 2.4 has a cluster of its own, in TestE2EHungMount.)
func TestE2EDovecot24(t *testing.T) {
	c, held := startMailClusterWith(t, mailcluster.Options{Dovecot: "2.4", AuthCache: true})
	b := c.Nodes[1]
	failOverIn(t, c, held, func(*mailcluster.Node) { deliverDuringCrash(t, c, "e2e24") })
	b.Dovecot.Start()
	c.WaitFor(30*time.Second, "node2 passing again in every agent's view", func() bool { return c.Recovered(b) })
	if out, err := c.Ctl(c.Nodes[2], "failback", b.Name, "--yes"); err != nil {
		t.Fatalf("nodectl failback: %v\n%s", err, out)
	}
	backHome(t, c, b)

	held, err := c.LoginAll(c.UsersOf(b))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range held {
		t.Cleanup(func() { s.Close() })
	}
	out, err := c.Ctl(c.Nodes[0], "drain", b.Name, "--reason", "kernel update", "--wait", "--wait-timeout", "60s")
	if err != nil || !strings.Contains(out, "node2 holds no sessions") {
		t.Fatalf("nodectl drain --wait: %v\n%s", err, out)
	}
	for _, s := range held {
		if !s.Ended(10 * time.Second) {
			t.Fatalf("%s's session was not ended by the drain", s.User)
		}
	}
	// Each logged in through HAProxy before, so every node may have
	// cached their old node.
	for _, u := range c.UsersOf(b)[:10] {
		s, err := c.Login(u, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if s.Node == b.Short {
			t.Fatalf("%s logs in on the drained node2: a node's auth cache still sends them there", u)
		}
	}
	if out, err := c.Ctl(c.Nodes[2], "undrain", b.Name, "--yes"); err != nil {
		t.Fatalf("nodectl undrain: %v\n%s", err, out)
	}
	backHome(t, c, b)
}

// backHome waits until b's users are home, b active and up in HAProxy,
// and one of them logs in on b again.
func backHome(t *testing.T, c *mailcluster.Cluster, b *mailcluster.Node) {
	t.Helper()
	c.WaitFor(30*time.Second, "node2's users home, node2 active and up in HAProxy", func() bool {
		m, _ := c.Member(c.Nodes[0], b.Name)
		return c.UsersOn(b.Host) == len(c.UsersOf(b)) && m.State == "active" && m.LB == "up" && c.HAProxy.Stat("imap")[b.Name].Status == "UP"
	})
	s, err := c.Login(c.UsersOf(b)[7], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s.Node != b.Short {
		t.Fatalf("back home, %s logs in on %q", s.User, s.Node)
	}
}

// Scenario 2: node2's mount of the shared filesystem hangs. After the
// failover node2 gets no new mail: HAProxy sends it no LMTP connection,
// and mail for its users lands through the healthy nodes.
func TestE2EHungMount(t *testing.T) {
	c, b := failOver(t, hangMount(t))
	mailAvoidsHungNode(t, c, b, "hung")
}

// Scenario 2 on Dovecot 2.4, configured by the guide's 2.4 blocks, with
// the auth cache on.
func TestE2EHungMountDovecot24(t *testing.T) {
	c, held := startMailClusterWith(t, mailcluster.Options{Dovecot: "2.4", AuthCache: true})
	failOverIn(t, c, held, hangMount(t))
	mailAvoidsHungNode(t, c, c.Nodes[1], "hung24")
}

// hangMount is the fault of a node's mount that hangs.
func hangMount(t *testing.T) func(b *mailcluster.Node) {
	return func(b *mailcluster.Node) {
		if err := b.FS.Set(faultfs.Fault{Hang: true}); err != nil {
			t.Fatal(err)
		}
	}
}

// mailAvoidsHungNode checks that, after the failover of b for a hung
// mount, HAProxy sends b no LMTP connection and mail to b's users lands
// through the healthy nodes.
func mailAvoidsHungNode(t *testing.T, c *mailcluster.Cluster, b *mailcluster.Node, tag string) {
	t.Helper()
	before := c.HAProxy.Stat("lmtp")[b.Name].Total
	delivered := deliverTo(t, c, c.UsersOf(b), tag)
	if after := c.HAProxy.Stat("lmtp")[b.Name].Total; after != before {
		t.Fatalf("HAProxy sent node2 %d LMTP connections after its failover", after-before)
	}
	checkMailboxes(t, c, delivered)
	if h := b.FS.Status().Hung; h == 0 {
		t.Fatal("node2's mount holds no hung request: the fault did not bite")
	}
}

// Scenario 3: node2's mount vanishes (unmounted under Dovecot). Nothing
// is written under the bare mountpoint, before or after the failover.
func TestE2EVanishedMount(t *testing.T) {
	c, b := failOver(t, func(b *mailcluster.Node) {
		if err := b.FS.Unmount(); err != nil {
			t.Fatal(err)
		}
	})
	delivered := deliverTo(t, c, c.UsersOf(b), "vanished")
	checkMailboxes(t, c, delivered)
	if left, _ := os.ReadDir(b.Mount); len(left) != 0 {
		t.Fatalf("%d entries were written under node2's bare mountpoint: %v", len(left), left)
	}
}

// Scenario 4: the whole shared filesystem is slow on every node (each
// probe round about 750 ms: past slow_threshold, within timeout). Nobody
// moves, every session stays, and status says the cluster is frozen. Even
// when the filesystem then hangs everywhere (every node critical, HAProxy
// with no server to send to) nobody moves, until the freeze is acked.
func TestE2ESlowSharedFilesystemFreezes(t *testing.T) {
	c, held := startMailCluster(t)
	for _, n := range c.Nodes {
		if err := n.FS.Set(faultfs.Fault{Delay: faultfs.Duration(250 * time.Millisecond), Ops: []string{"Write", "Fsync", "Create"}}); err != nil {
			t.Fatal(err)
		}
	}
	// Asked where it is asked next: a follower learns of the freeze a
	// moment after the leader.
	c.WaitFor(30*time.Second, "the cluster to freeze, as node3 reports", func() bool {
		st, err := c.Status(c.Nodes[2])
		return err == nil && st.Frozen != nil
	})
	out, err := c.Ctl(c.Nodes[2], "status")
	if err != nil || !strings.Contains(out, "FROZEN") || !strings.Contains(out, "shared filesystem trouble") {
		t.Fatalf("nodectl status while frozen: %v\n%s", err, out)
	}
	t.Logf("nodectl status:\n%s", out)
	unmoved := func() {
		t.Helper()
		for _, n := range c.Nodes {
			if got := c.UsersOn(n.Host); got != len(c.UsersOf(n)) || c.JournalFrom(n.Host) != 0 {
				t.Fatalf("%s has %d users and %d journaled moves during the freeze", n.Name, got, c.JournalFrom(n.Host))
			}
		}
	}
	unmoved()
	for _, s := range held {
		if !s.Alive(10 * time.Second) {
			t.Fatalf("%s's session ended on a slow filesystem", s.User)
		}
	}
	for _, n := range c.Nodes {
		if err := n.FS.Set(faultfs.Fault{Hang: true}); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitFor(15*time.Second, "every node critical", func() bool { return everyNode(c, "critical") })
	time.Sleep(3 * time.Second) // rounds in which the leader must move nobody
	unmoved()
	for _, n := range c.Nodes {
		n.FS.Clear()
	}
	c.WaitFor(30*time.Second, "every node passing again", func() bool { return everyNode(c, "passing") })
	if out, err := c.Ctl(c.Nodes[1], "ack"); err != nil {
		t.Fatalf("nodectl ack: %v\n%s", err, out)
	}
	c.WaitFor(10*time.Second, "the freeze to end", func() bool {
		st, err := c.Status(c.Nodes[0])
		return err == nil && st.Frozen == nil
	})
	unmoved()
}

// drainAndUndrain is scenario 5: every user of node2 holds a session; an
// operator drains node2 with progress: it empties, its users' sessions
// end, HAProxy shows it draining; undrain brings its users home.
func drainAndUndrain(t *testing.T, c *mailcluster.Cluster) {
	t.Helper()
	b := c.Nodes[1]
	held, err := c.LoginAll(c.UsersOf(b))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range held {
		t.Cleanup(func() { s.Close() })
	}
	out, err := c.Ctl(c.Nodes[0], "drain", b.Name, "--reason", "kernel update", "--rate", "50", "--wait", "--wait-timeout", "60s")
	if err != nil || !strings.Contains(out, "moved 100 of 100 users") || !strings.Contains(out, "node2 holds no sessions") {
		t.Fatalf("nodectl drain --wait: %v\n%s", err, out)
	}
	t.Logf("nodectl drain:\n%s", out)
	if c.UsersOn(b.Host) != 0 {
		t.Fatalf("%d users still on node2 after the drain", c.UsersOn(b.Host))
	}
	for _, s := range held {
		if !s.Ended(10 * time.Second) {
			t.Fatalf("%s's session was not ended by the drain", s.User)
		}
	}
	c.WaitFor(10*time.Second, "HAProxy to show node2 draining", func() bool {
		return strings.HasPrefix(c.HAProxy.Stat("imap")["node2"].Status, "DRAIN")
	})
	if s, err := c.LoginRetry(c.UsersOf(b)[3], 3, 10*time.Second); err != nil || s.Node == b.Short {
		t.Fatalf("a drained user logs in: %v on %v", err, s)
	} else {
		s.Close()
	}
	if out, err := c.Ctl(c.Nodes[2], "undrain", b.Name, "--yes"); err != nil {
		t.Fatalf("nodectl undrain: %v\n%s", err, out)
	}
	backHome(t, c, b)
}

// deliverDuringCrash sends 1,000 messages (Message-IDs tag-NNNN@roost.test)
// over LMTP through HAProxy, eight senders at once, and kills node2's
// Dovecot after the first quarter. A sender retries a message until it is
// accepted, as an MTA queue does. Afterwards every message is in its
// user's maildir on the shared store exactly once, and none on a node's
// local disk.
func deliverDuringCrash(t *testing.T, c *mailcluster.Cluster, tag string) {
	t.Helper()
	const total = 1000
	msgs := make([]message, total)
	for i := range msgs {
		msgs[i] = message{user: c.Users[(i*7)%len(c.Users)], id: fmt.Sprintf("%s-%04d@roost.test", tag, i)}
	}
	var next, sent, retries atomic.Int64
	var killed sync.Once
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				if i == total/4 {
					killed.Do(func() { c.Nodes[1].Dovecot.Kill9() })
				}
				for attempt := 0; ; attempt++ {
					err := c.Deliver(msgs[i].user, msgs[i].id, 10*time.Second)
					if err == nil {
						break
					}
					if attempt == 200 {
						t.Errorf("message %d to %s: %v (gave up)", i, msgs[i].user, err)
						return
					}
					retries.Add(1)
					time.Sleep(100 * time.Millisecond)
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d messages accepted, %d temporary failures retried", sent.Load(), retries.Load())
	if retries.Load() == 0 {
		t.Fatal("no delivery was refused: the crash did not happen during delivery")
	}
	c.WaitFor(30*time.Second, "node2's users moved", func() bool { return c.UsersOn(c.Nodes[1].Host) == 0 })
	checkMailboxes(t, c, msgs)
	discarded := 0
	for _, n := range c.Nodes {
		for _, l := range strings.Split(n.Dovecot.Log(), "\n") {
			if strings.Contains(l, "msgid=<"+tag+"-") && strings.Contains(l, "discard") {
				discarded++
			}
		}
	}
	t.Logf("%d copies saved by node2 before it died unanswered, retried by the sender, were dropped by Sieve's duplicate test", discarded)
	// Nothing on local disk: each Dovecot's own directory holds indexes,
	// never a message.
	for _, n := range c.Nodes {
		if found := grepTree(t, n.Dovecot.Dir, "Message-ID: <"+tag+"-"); len(found) > 0 {
			t.Fatalf("messages on %s's local disk: %v", n.Name, found)
		}
	}
}

// everyNode says whether every member reports health.
func everyNode(c *mailcluster.Cluster, health string) bool {
	for _, n := range c.Nodes { // in every agent's view: the leader's may lag
		st, err := c.Status(n)
		if err != nil {
			return false
		}
		for _, m := range st.Members {
			if m.Health != health {
				return false
			}
		}
	}
	return true
}

type message struct{ user, id string }

// deliverTo sends one message to each user, retrying temporary failures.
func deliverTo(t *testing.T, c *mailcluster.Cluster, users []string, tag string) []message {
	t.Helper()
	var out []message
	for i, u := range users {
		m := message{user: u, id: fmt.Sprintf("%s-%04d@roost.test", tag, i)}
		var err error
		for range 50 {
			if err = c.Deliver(m.user, m.id, 10*time.Second); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("delivering to %s: %v", u, err)
		}
		out = append(out, m)
	}
	return out
}

// checkMailboxes reads the shared store (its backing directory, not a
// mount) and checks that each message is in its user's maildir exactly
// once, and in no other.
func checkMailboxes(t *testing.T, c *mailcluster.Cluster, msgs []message) {
	t.Helper()
	where := map[string][]string{} // message id → users whose maildir has it
	files := map[string][]string{}
	err := filepath.WalkDir(c.Backing, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		dir := filepath.Base(filepath.Dir(path))
		if dir != "new" && dir != "cur" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if i := strings.Index(string(b), "Message-ID: <"); i >= 0 {
			id := string(b[i+len("Message-ID: <"):])
			id = id[:strings.IndexByte(id, '>')]
			rel, _ := filepath.Rel(c.Backing, path)
			where[id] = append(where[id], strings.SplitN(rel, string(filepath.Separator), 2)[0])
			files[id] = append(files[id], rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	lost, dup, wrong := 0, 0, 0
	for _, m := range msgs {
		switch got := where[m.id]; {
		case len(got) == 0:
			lost++
		case len(got) > 1:
			dup++
			t.Logf("%s is there %d times: %v", m.id, len(got), files[m.id])
			for _, n := range c.Nodes {
				for _, l := range strings.Split(n.Dovecot.Log(), "\n") {
					if strings.Contains(l, m.id) {
						t.Logf("  %s: %s", n.Name, l)
					}
				}
			}
		case got[0] != m.user:
			wrong++
		}
	}
	if lost+dup+wrong > 0 {
		t.Fatalf("of %d messages: %d lost, %d duplicated, %d in the wrong maildir", len(msgs), lost, dup, wrong)
	}
	t.Logf("all %d messages in their maildirs exactly once", len(msgs))
}

// grepTree lists the files under dir, indexes aside, that contain s.
func grepTree(t *testing.T, dir, s string) []string {
	t.Helper()
	var found []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || strings.HasPrefix(d.Name(), "dovecot.index") {
			return nil // an index's header cache holds Message-IDs legitimately
		}
		if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), s) {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// No false alarms, on the whole mail cluster: roostd alone killed on a
// node (its Dovecot fine) moves nobody and fences nobody, and neither does
// the raft leader's roostd being killed; every held session lives on.
func TestE2ENoFalseAlarmWhenOnlyRoostdDies(t *testing.T) {
	c, held := startMailCluster(t)
	leaderName := func(n *mailcluster.Node) string {
		st, err := c.Status(n)
		if err != nil {
			return ""
		}
		return st.Leader
	}
	calm := func(what string, alive []*mailcluster.Node) {
		t.Helper()
		// Long past detection (about a second) and the lease wait (about
		// two): twenty decision rounds of the leader.
		time.Sleep(8 * time.Second)
		moved := 0
		for _, n := range c.Nodes {
			moved += c.JournalFrom(n.Host)
		}
		if moved != 0 {
			t.Fatalf("%s: %d users moved", what, moved)
		}
		for _, n := range alive {
			if log := n.Agent.Log(); strings.Contains(log, "msg=fenced") {
				t.Fatalf("%s: %s fenced itself", what, n.Name)
			}
			st, err := c.Status(n)
			if err != nil {
				t.Fatalf("%s: %s does not answer: %v", what, n.Name, err)
			}
			if len(st.Plans) != 0 {
				t.Fatalf("%s: plans %+v", what, st.Plans)
			}
		}
		for _, s := range held {
			if s.Ended(0) {
				t.Fatalf("%s: %s's session ended", what, s.User)
			}
		}
	}
	var follower, leader *mailcluster.Node
	c.WaitFor(30*time.Second, "a leader", func() bool { return leaderName(c.Nodes[0]) != "" })
	for _, n := range c.Nodes {
		if n.Name == leaderName(c.Nodes[0]) {
			leader = n
		} else if follower == nil {
			follower = n
		}
	}
	follower.Agent.Signal(syscall.SIGKILL)
	var others []*mailcluster.Node
	for _, n := range c.Nodes {
		if n != follower {
			others = append(others, n)
		}
	}
	calm("roostd killed on "+follower.Name, others)
	c.RestartAgent(follower)
	c.WaitFor(30*time.Second, follower.Name+" back", func() bool { _, err := c.Status(follower); return err == nil })

	leader.Agent.Signal(syscall.SIGKILL)
	others = others[:0]
	for _, n := range c.Nodes {
		if n != leader {
			others = append(others, n)
		}
	}
	c.WaitFor(30*time.Second, "a new leader", func() bool { l := leaderName(others[0]); return l != "" && l != leader.Name })
	calm("the leader's roostd killed", others)
}

// failedLogins names the users of LoginAll's error ("login USER: ...").
func failedLogins(err error) []string {
	var users []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "login" {
			users = append(users, strings.TrimSuffix(f[1], ":"))
		}
	}
	return users
}
