package tests

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/health"
	"github.com/roost-mail/roost/tests/dovecotlab"
)

// Three agents beside three real Dovecot proxy_maybe nodes. Node b's own
// check fails: the leader moves b's users, kicks their sessions (proxied
// through a, and straight on b) through the doveadm HTTP APIs the nodes
// gossip, and their next login through a lands on a healthy node.
func TestFailoverKicksSessionsOnRealDovecot(t *testing.T) {
	path, store := usersDB(t, mailUsers, "127.0.1.2")
	nodes := dovecotlab.StartCluster(t, 3, path, false)
	dsn := filepath.Join(t.TempDir(), "dsn")
	os.WriteFile(dsn, []byte(path), 0o600)
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

	c := agenttest.New(t)
	c.Tune = func(i int, cfg *agent.Config) {
		d := nodes[i]
		key := filepath.Join(d.Dir, "api-key")
		os.WriteFile(key, []byte(d.APIKey), 0o600)
		cfg.Routing.DSNFile = dsn
		cfg.Dovecot.URL, cfg.Dovecot.APIKeyFile = d.HTTP+"/doveadm/v1", key
		cmd := "true"
		if i == 1 {
			cmd = "test ! -e " + flag
		}
		cfg.Health.Checks = []health.CheckConfig{{Name: "site", Protocol: "command", Command: cmd, Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}}
		cfg.Failover.Interval = 100 * time.Millisecond
	}
	c.Add(3)
	c.WaitLeader(20 * time.Second)
	start := time.Now()
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, s := range proxied {
		if bye, err := s.closed(30 * time.Second); err != nil || bye {
			t.Fatalf("%q's session proxied through a: bye %v, %v; want closed by the proxy kick", mailUsers[i], bye, err)
		}
	}
	for i, s := range direct {
		if bye, err := s.closed(10 * time.Second); err != nil || !bye {
			t.Fatalf("%q's session on b: bye %v, %v; want BYE from the kick", mailUsers[i], bye, err)
		}
	}
	t.Logf("sessions ended %s after the fault", time.Since(start).Round(time.Millisecond))
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
