package tests

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/dovecot"
	"github.com/roost-mail/roost/placement"
	"github.com/roost-mail/roost/routing"
	"github.com/roost-mail/roost/tests/dovecotlab"
)

// mailUsers are the test's accounts: plain and odd names.
var mailUsers = []string{"mover@example.test", "o'brien@example.test", "jürgen@exämple.de"}

const mailPass = "secret"

// usersDB makes the operator's SQLite users table, everyone on host, and
// a routing store on it.
func usersDB(t testing.TB, users []string, host string) (string, *routing.Store) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "roost-usersdb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "mail.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE users (username TEXT PRIMARY KEY, password TEXT NOT NULL, proxy_host TEXT)`); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if _, err := db.Exec(`INSERT INTO users VALUES (?, ?, ?)`, u, mailPass, host); err != nil {
			t.Fatal(err)
		}
	}
	cfg := routing.DefaultConfig()
	cfg.DSNFile = filepath.Join(dir, "dsn")
	if err := os.WriteFile(cfg.DSNFile, []byte(path), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := routing.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return path, s
}

// imapSession is a logged-in IMAP client.
type imapSession struct {
	c    net.Conn
	r    *bufio.Reader
	Node string // x-roost-node of the Dovecot that serves it
}

// imapLogin logs in at addr (literals, so any user name goes) and asks
// the serving node's name with ID.
func imapLogin(addr, user, pass string) (*imapSession, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	s := &imapSession{c: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if line, err := s.r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
		c.Close()
		return nil, fmt.Errorf("greeting %q: %v", line, err)
	}
	fmt.Fprintf(c, "a LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\nb ID NIL\r\n", len(user), user, len(pass), pass)
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("login of %q at %s: %v", user, addr, err)
		}
		switch {
		case strings.HasPrefix(line, "a ") && !strings.HasPrefix(line, "a OK"):
			c.Close()
			return nil, fmt.Errorf("login of %q at %s: %s", user, addr, strings.TrimSpace(line))
		case strings.HasPrefix(line, "* ID "):
			if i := strings.Index(line, `"x-roost-node" "`); i >= 0 {
				rest := line[i+len(`"x-roost-node" "`):]
				s.Node = rest[:strings.IndexByte(rest, '"')]
			}
		case strings.HasPrefix(line, "b OK"):
			c.SetDeadline(time.Time{})
			return s, nil
		}
	}
}

// loginAll logs every user in at addr; the sessions close when the test
// ends.
func loginAll(t *testing.T, addr string, users []string) []*imapSession {
	t.Helper()
	var out []*imapSession
	for _, u := range users {
		s, err := imapLogin(addr, u, mailPass)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		out = append(out, s)
	}
	return out
}

// closed waits until the server ends the session, and says whether it
// said BYE first.
func (s *imapSession) closed(timeout time.Duration) (bye bool, err error) {
	s.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		line, err := s.r.ReadString('\n')
		if strings.HasPrefix(line, "* BYE") {
			bye = true
		}
		if errors.Is(err, io.EOF) {
			return bye, nil
		}
		if err != nil {
			return bye, err
		}
	}
}

func (s *imapSession) Close() { s.c.Close() }

// admins returns the HTTP API client and the local doveadm for a node.
func admins(t testing.TB, d *dovecotlab.Instance) map[string]dovecot.Admin {
	t.Helper()
	c := dovecot.DefaultConfig()
	c.URL, c.APIKeyFile = d.HTTP+"/doveadm/v1", d.APIKeyFile
	h, err := dovecot.New(c)
	if err != nil {
		t.Fatal(err)
	}
	l := dovecot.DefaultConfig()
	l.DovecotConfig, l.InstanceName, l.Doveadm = d.Conf, d.Name, d.Doveadm
	local, err := dovecot.New(l)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]dovecot.Admin{"http": h, "local": local}
}

// cluster starts n nodes of Dovecot version on 127.0.1.1… with the
// passdb path.
func cluster(t testing.TB, version string, n int, path string, authCache bool) []*dovecotlab.Instance {
	t.Helper()
	var ips []string
	for k := range n {
		ips = append(ips, fmt.Sprintf("127.0.1.%d", k+1))
	}
	return dovecotlab.StartClusterWith(t, ips, dovecotlab.Options{SQLite: path, AuthCache: authCache, Version: version})
}

// Sessions of users proxied through node a to node b; rewrite to node c;
// proxy-kick on a and kick on b; the next login lands on c. Through the
// HTTP API and through the local doveadm, on Dovecot 2.3 and 2.4.
func TestRewriteAndKickSendsUsersToTheNewNode(t *testing.T) {
	for _, version := range dovecotlab.Versions {
		for _, via := range []string{"http", "local"} {
			t.Run(version+"/"+via, func(t *testing.T) { rewriteAndKick(t, version, via) })
		}
	}
}

func rewriteAndKick(t *testing.T, version, via string) {
	ctx := context.Background()
	path, store := usersDB(t, mailUsers, "127.0.1.2")
	nodes := cluster(t, version, 3, path, false)
	a, b := admins(t, nodes[0])[via], admins(t, nodes[1])[via]
	held := loginAll(t, nodes[0].IMAP, mailUsers)
	for i, s := range held {
		if s.Node != "b" {
			t.Fatalf("%q logged in through a is served by %q, want b", mailUsers[i], s.Node)
		}
	}
	// And each straight on b, as a client the load balancer sent there.
	direct := loginAll(t, nodes[1].IMAP, mailUsers)
	who, err := b.Who(ctx)
	if err != nil || !sessionsOf(who, mailUsers, 2) {
		t.Fatalf("who on b: %+v %v", who, err)
	}
	pl, err := a.ProxyList(ctx)
	if err != nil || len(pl) != len(mailUsers) || pl[0].DestIP != "127.0.1.2" {
		t.Fatalf("proxy list on a: %+v %v", pl, err)
	}
	// a only proxies them: its Who lists none (Dovecot 2.4's who has the
	// login processes' rows), so the sweep's signal kick on a ends
	// nothing, above all not a login process that proxies other users.
	if who, err := a.Who(ctx); err != nil || len(who) != 0 {
		t.Fatalf("who on a, which only proxies: %+v %v", who, err)
	}
	if n, err := dovecot.SignalKick(ctx, a, nodes[0].Name, mailUsers[:1]); err != nil || n != 0 {
		t.Fatalf("a signal kick on the proxy a signalled %d users' processes: %v", n, err)
	}
	for i, s := range held {
		if !s.noop() {
			t.Fatalf("%q's proxied session ended after a signal kick on the proxy", mailUsers[i])
		}
	}

	var moves []placement.Move
	for _, u := range mailUsers {
		moves = append(moves, placement.Move{User: u, From: "127.0.1.2", To: "127.0.1.3"})
	}
	if n, err := store.MoveBatch(ctx, placement.Fence{Term: 1, Leader: "test"}, "p1", "test", moves); err != nil || n != len(moves) {
		t.Fatalf("moved %d: %v", n, err)
	}
	// Dovecot 2.3 counts only the last user's connections, so the
	// count says "some"; the sessions say "all".
	if n, err := a.ProxyKick(ctx, mailUsers, "127.0.1.2"); err != nil || n < 1 {
		t.Fatalf("proxy kick on a: %d %v", n, err)
	}
	for i, s := range held {
		if bye, err := s.closed(10 * time.Second); err != nil || bye {
			t.Fatalf("%q's proxied session: bye %v, %v; want closed without BYE", mailUsers[i], bye, err)
		}
	}
	if pl, err := a.ProxyList(ctx); err != nil || len(pl) != 0 {
		t.Fatalf("a still proxies %+v %v", pl, err)
	}
	// A local kick signals only this Dovecot's processes.
	if n, err := dovecot.SignalKick(ctx, b, "another-dovecot", mailUsers); err != nil || n != 0 {
		t.Fatalf("a kick for another instance signalled %d users' processes: %v", n, err)
	}
	if who, err := b.Who(ctx); err != nil || !sessionsOf(who, mailUsers, 1) {
		t.Fatalf("who on b after a kick for another instance: %+v %v", who, err)
	}
	if n, err := b.Kick(ctx, mailUsers); err != nil || n != len(mailUsers) {
		t.Fatalf("kick on b: %d users, %v", n, err)
	}
	for i, s := range direct {
		if bye, err := s.closed(10 * time.Second); err != nil || !bye {
			t.Fatalf("%q's session on b: bye %v, %v; want BYE and close", mailUsers[i], bye, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if left, err := dovecot.WaitGone(wctx, b, mailUsers, 100*time.Millisecond); err != nil {
		t.Fatalf("still on b: %v %v", left, err)
	}
	// Kicks are idempotent: nobody left is not an error.
	if n, err := b.Kick(ctx, mailUsers); err != nil || n != 0 {
		t.Fatalf("second kick: %d %v", n, err)
	}
	for _, entry := range nodes {
		for _, u := range mailUsers {
			s, err := imapLogin(entry.IMAP, u, mailPass)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if s.Node != "c" {
				t.Fatalf("after the move %q logged in through %s is served by %q, want c", u, entry.Short(), s.Node)
			}
		}
	}
}

// sessionsOf: who lists exactly users, each with conns imap connections.
func sessionsOf(ss []dovecot.Session, users []string, conns int) bool {
	var got []string
	for _, s := range ss {
		if s.Service == "imap" && s.Connections == conns && len(s.PIDs) == conns {
			got = append(got, s.User)
		}
	}
	slices.Sort(got)
	want := slices.Clone(users)
	slices.Sort(want)
	return slices.Equal(got, want)
}

// With the auth cache on, a rewrite alone leaves users on the old node
// (the cached passdb answer holds the old host); flushing the moved users
// on every node sends them to the new one. Dovecot 2.4's HTTP API cannot
// flush (its doveadm asserts): the local doveadm does.
func TestAuthCacheFlushMatters(t *testing.T) {
	for _, version := range dovecotlab.Versions {
		t.Run(version, func(t *testing.T) { authCacheFlush(t, version) })
	}
}

func authCacheFlush(t *testing.T, version string) {
	ctx := context.Background()
	// A plan's batch: more users than one line of Dovecot's auth master
	// protocol (1024 bytes) can name.
	users := slices.Clone(mailUsers)
	for i := range 100 {
		users = append(users, fmt.Sprintf("batch-%03d@a-rather-long-mail-domain.example.test", i))
	}
	path, store := usersDB(t, users, "127.0.1.2")
	nodes := cluster(t, version, 3, path, true)
	login := func(u string) string {
		t.Helper()
		s, err := imapLogin(nodes[0].IMAP, u, mailPass)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		return s.Node
	}
	for _, u := range users {
		if n := login(u); n != "b" {
			t.Fatalf("%q on %q, want b", u, n)
		}
	}
	var moves []placement.Move
	for _, u := range users {
		moves = append(moves, placement.Move{User: u, From: "127.0.1.2", To: "127.0.1.3"})
	}
	if _, err := store.MoveBatch(ctx, placement.Fence{Term: 1, Leader: "test"}, "p1", "test", moves); err != nil {
		t.Fatal(err)
	}
	if n := login(mailUsers[0]); n != "b" {
		t.Fatalf("without a flush the cached answer should still send %q to b; it went to %q (is the auth cache on?)", mailUsers[0], n)
	}
	for i, d := range nodes {
		via := []string{"http", "local"}[i%2]
		if version == "2.4" {
			if _, err := admins(t, d)["http"].FlushAuthCache(ctx, users); !errors.Is(err, dovecot.ErrNoHTTPAuthCacheFlush) {
				t.Fatalf("flush over 2.4's HTTP API: %v, want %v", err, dovecot.ErrNoHTTPAuthCacheFlush)
			}
			via = "local"
		}
		n, err := admins(t, d)[via].FlushAuthCache(ctx, users)
		if err != nil {
			t.Fatalf("flush on %s via %s: %v", d.Short(), via, err)
		}
		if d == nodes[0] && n < len(users) {
			t.Fatalf("the proxy a flushed %d entries via %s, want one for each of %d users", n, via, len(users))
		}
	}
	for _, u := range users {
		if n := login(u); n != "c" {
			t.Fatalf("after the flush %q is on %q, want c", u, n)
		}
	}
}

// Sessions proxied to a hung or dead backend are dropped by host.
func TestProxyKickByHost(t *testing.T) {
	for _, version := range dovecotlab.Versions {
		t.Run(version, func(t *testing.T) { proxyKickByHost(t, version) })
	}
}

func proxyKickByHost(t *testing.T, version string) {
	ctx := context.Background()
	path, _ := usersDB(t, mailUsers, "127.0.1.2")
	nodes := cluster(t, version, 2, path, false)
	s, err := imapLogin(nodes[0].IMAP, mailUsers[0], mailPass)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The proxy registers the session a moment after the login answers.
	if !agenttest.Eventually(5*time.Second, func() bool {
		pl, err := admins(t, nodes[0])["http"].ProxyList(ctx)
		return err == nil && len(pl) == 1
	}) {
		t.Fatal("a does not list the proxied session")
	}
	for via, a := range admins(t, nodes[0]) {
		n, err := a.ProxyKickHost(ctx, "127.0.1.2")
		if err != nil {
			t.Fatalf("%s: %v", via, err)
		}
		if n != 1 {
			t.Fatalf("%s kicked %d connections to 127.0.1.2, want 1", via, n)
		}
		if bye, err := s.closed(5 * time.Second); err != nil || bye {
			t.Fatalf("proxied session after a proxy kick: bye %v, %v (want EOF without BYE)", bye, err)
		}
		break // the session is gone; the other client is checked by count below
	}
	for via, a := range admins(t, nodes[0]) {
		if n, err := a.ProxyKickHost(ctx, "127.0.1.9"); err != nil || n != 0 {
			t.Fatalf("%s: kick of an unused host: %d %v", via, n, err)
		}
	}
}

// Bad credentials and a dead API say what is wrong.
func TestDoveadmAPIErrorsNameTheProblem(t *testing.T) {
	ctx := context.Background()
	d := dovecotlab.Start(t, "apierr")
	key := filepath.Join(d.Dir, "wrong-key")
	os.WriteFile(key, []byte("wrong"), 0o600)
	c := dovecot.DefaultConfig()
	c.URL, c.APIKeyFile = d.HTTP+"/doveadm/v1", key
	a, err := dovecot.New(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Who(ctx); err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "api_key_file") {
		t.Fatalf("wrong key: %v", err)
	}
	c.URL = "http://127.0.0.1:1/doveadm/v1"
	a, _ = dovecot.New(c)
	if _, err := a.Kick(ctx, []string{"x"}); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("dead API: %v", err)
	}
	h, err := dovecot.NewHTTP(dovecot.Config{URL: d.HTTP + "/doveadm/v1", APIKeyFile: filepath.Join(d.Dir, "no-such-key"), Timeout: 5 * time.Second, BatchSize: 1, Parallel: 1})
	if err == nil {
		t.Fatalf("a missing key file: %v", h)
	}
	h, err = dovecot.NewHTTP(dovecot.Config{URL: d.HTTP + "/doveadm/v1", APIKeyFile: d.APIKeyFile, Timeout: 5 * time.Second, BatchSize: 1, Parallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.Do(ctx, []dovecot.Command{{Name: "noSuchCommand"}, {Name: "kick", Params: map[string]any{"mask": []string{"nobody"}}}})
	if err != nil || r[0].Err == nil || r[0].Err.Type != "unknownMethod" || r[1].Err == nil || r[1].Err.ExitCode != 68 {
		t.Fatalf("replies %+v %v", r, err)
	}
	l := dovecot.DefaultConfig()
	l.DovecotConfig = "/nonexistent/dovecot.conf"
	local, _ := dovecot.New(l)
	if _, err := local.Who(ctx); err == nil || !strings.Contains(err.Error(), "/nonexistent/dovecot.conf") {
		t.Fatalf("local doveadm with a bad config: %v", err)
	}
}

// The API over TLS, with doveadm_password (basic auth as user doveadm).
func TestDoveadmAPIPasswordOverTLS(t *testing.T) {
	ctx := context.Background()
	d := dovecotlab.StartWith(t, "apitls", dovecotlab.Options{DoveadmTLS: true})
	pw := filepath.Join(d.Dir, "doveadm-password")
	os.WriteFile(pw, []byte(d.DoveadmPassword+"\n"), 0o600)
	c := dovecot.DefaultConfig()
	c.URL, c.PasswordFile, c.CAFile = d.HTTP+"/doveadm/v1", pw, d.CAFile
	if !strings.HasPrefix(c.URL, "https://") {
		t.Fatalf("the lab serves %s, want https", c.URL)
	}
	a, err := dovecot.New(c)
	if err != nil {
		t.Fatal(err)
	}
	s, err := imapLogin(d.IMAP, d.User, d.Pass)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	who, err := a.Who(ctx)
	if err != nil || len(who) != 1 || who[0].User != d.User {
		t.Fatalf("who over TLS with the password: %+v %v", who, err)
	}
	c.CAFile = ""
	a, _ = dovecot.New(c)
	if _, err := a.Who(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("TLS without the CA: %v", err)
	}
	os.WriteFile(pw, []byte("wrong"), 0o600)
	c.CAFile = d.CAFile
	a, _ = dovecot.New(c)
	if _, err := a.Who(ctx); err == nil || !strings.Contains(err.Error(), "password_file") {
		t.Fatalf("wrong password: %v", err)
	}
}

// noop says whether the session still answers.
func (s *imapSession) noop() bool {
	s.c.SetDeadline(time.Now().Add(5 * time.Second))
	defer s.c.SetDeadline(time.Time{})
	fmt.Fprintf(s.c, "n NOOP\r\n")
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return false
		}
		if strings.HasPrefix(line, "n ") {
			return strings.HasPrefix(line, "n OK")
		}
	}
}

// A killed master's mail processes keep serving their sessions; EndOrphans
// ends them (and, while the master lives, nothing; nor another instance's).
func TestEndOrphansAfterTheMasterDies(t *testing.T) {
	d := dovecotlab.Start(t, "orphans")
	other := dovecotlab.Start(t, "bystander")
	s, err := imapLogin(d.IMAP, d.User, d.Pass)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o, err := imapLogin(other.IMAP, other.User, other.Pass)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if pids, err := dovecot.EndOrphans(d.Name); err != nil || len(pids) != 0 {
		t.Fatalf("with the master alive EndOrphans ended %v (%v)", pids, err)
	}
	if !s.noop() {
		t.Fatal("the session died while its master lived")
	}
	other.Kill9()
	d.Kill9()
	if !s.noop() {
		t.Fatal("the orphan did not serve on: the test shows nothing")
	}
	pids, err := dovecot.EndOrphans(d.Name)
	if err != nil || len(pids) == 0 {
		t.Fatalf("EndOrphans: %v %v", pids, err)
	}
	if _, err := s.closed(3 * time.Second); err != nil {
		t.Fatalf("the orphan's session is still open: %v", err)
	}
	if !o.noop() {
		t.Fatal("the other instance's orphan was ended too")
	}
}

// The agent learns of the Dovecot master's exit the moment it happens:
// WatchMaster finds the master of the instance and calls back with its
// pid when it is killed, and finds the next one after a restart.
func TestWatchMasterSeesTheMasterDie(t *testing.T) {
	d := dovecotlab.Start(t, "watchm")
	pid := dovecot.MasterPID(d.Name)
	if pid == 0 {
		t.Fatal("MasterPID found no master of a running Dovecot")
	}
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan int, 4)
	done := make(chan struct{})
	go func() {
		dovecot.WatchMaster(ctx, d.Name, 100*time.Millisecond, func(p int) { exited <- p })
		close(done)
	}()
	defer func() { cancel(); <-done }()
	time.Sleep(300 * time.Millisecond) // let it find the master
	d.Kill9()
	select {
	case got := <-exited:
		if got != pid {
			t.Fatalf("exited(%d), want the master's pid %d", got, pid)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchMaster did not see the master die")
	}
	d.Start()
	next := 0
	if !agenttest.Eventually(10*time.Second, func() bool { next = dovecot.MasterPID(d.Name); return next != 0 && next != pid }) {
		t.Fatal("no new master after the restart")
	}
	time.Sleep(300 * time.Millisecond)
	d.Kill9()
	select {
	case got := <-exited:
		if got != next {
			t.Fatalf("exited(%d) after the restart, want %d", got, next)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchMaster did not watch the restarted master")
	}
}

// roostd warns at start when Dovecot 2.4's login processes serve one
// connection each (2.4's default), where a kick ends none of the sessions
// they proxy; it asks the node's doveconf. Not on 2.3, not when every
// login service of an enabled protocol serves many.
func TestLoginModeProblem(t *testing.T) {
	ctx := context.Background()
	for _, version := range dovecotlab.Versions {
		d := dovecotlab.StartWith(t, "mode"+strings.ReplaceAll(version, ".", ""), dovecotlab.Options{Version: version})
		c := dovecot.DefaultConfig()
		c.Doveadm, c.DovecotConfig = d.Doveadm, d.Conf
		if p := dovecot.LoginModeProblem(ctx, c); p != "" {
			t.Fatalf("%s, login processes of many connections: %q, want none", version, p)
		}
		if version != "2.4" {
			continue
		}
		b, err := os.ReadFile(d.Conf)
		if err != nil {
			t.Fatal(err)
		}
		// imap-login's is the first; without it, 2.4's default (1).
		single := strings.Replace(string(b), "restart_request_count = unlimited", "", 1)
		c.DovecotConfig = filepath.Join(d.Dir, "single.conf")
		if err := os.WriteFile(c.DovecotConfig, []byte(single), 0o644); err != nil {
			t.Fatal(err)
		}
		if p := dovecot.LoginModeProblem(ctx, c); !strings.Contains(p, "service imap-login:") || strings.Contains(p, "pop3") {
			t.Fatalf("2.4, imap-login one connection per process: %q, want a problem naming imap-login only", p)
		}
	}
}

// A name holding doveadm's wildcards never acts as a mask: a kick of
// "a*b" ends no session of "axb" or "ayzb", through the HTTP API or the
// local doveadm, on Dovecot 2.3 and 2.4. Its own sessions end by signal,
// matched exactly (SignalKick: the local kick, and the node's sweep,
// which ends them where the HTTP API leaves them out).
func TestKickNeverWildcards(t *testing.T) {
	for _, version := range dovecotlab.Versions {
		for _, via := range []string{"http", "local"} {
			t.Run(version+"/"+via, func(t *testing.T) { kickNeverWildcards(t, version, via) })
		}
	}
}

func kickNeverWildcards(t *testing.T, version, via string) {
	ctx := context.Background()
	wild, others := "a*b@example.test", []string{"axb@example.test", "ayzb@example.test"}
	users := append([]string{wild}, others...)
	path, _ := usersDB(t, users, "127.0.1.2")
	nodes := cluster(t, version, 2, path, false)
	a, b := admins(t, nodes[0])[via], admins(t, nodes[1])[via]
	proxied := loginAll(t, nodes[0].IMAP, users) // through a to b
	direct := loginAll(t, nodes[1].IMAP, users)

	n, err := b.Kick(ctx, []string{wild})
	if err != nil {
		t.Fatalf("kick of %q on b: %v", wild, err)
	}
	if via == "http" {
		// Left out: the sweep's signal kick ends it, by exact name.
		if n != 0 {
			t.Fatalf("the HTTP kick of %q counted %d users: it went out as a mask", wild, n)
		}
		if n, err = dovecot.SignalKick(ctx, b, nodes[1].Name, []string{wild}); err != nil {
			t.Fatal(err)
		}
	}
	if n != 1 {
		t.Fatalf("kicked %d users of %q, want 1", n, wild)
	}
	if _, err := direct[0].closed(10 * time.Second); err != nil {
		t.Fatalf("%q's session on b: %v", wild, err)
	}
	if _, err := proxied[0].closed(10 * time.Second); err != nil {
		t.Fatalf("%q's session proxied by a, once its backend session ended: %v", wild, err)
	}
	// A proxy kick by the name on a: whatever it ends (2.3 matches names
	// exactly; 2.4's is a mask, so it is left out), it ends no one else.
	if _, err := a.ProxyKick(ctx, []string{wild}, "127.0.1.2"); err != nil {
		t.Fatalf("proxy kick of %q on a: %v", wild, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if left, err := dovecot.WaitGone(wctx, b, []string{wild}, 100*time.Millisecond); err != nil {
		t.Fatalf("%q still on b: %v %v", wild, left, err)
	}
	time.Sleep(500 * time.Millisecond) // a kick is asynchronous: give a wrong one time to land
	for i, u := range others {
		if !direct[i+1].noop() || !proxied[i+1].noop() {
			t.Fatalf("%q's session ended by a kick of %q", u, wild)
		}
	}
	if who, err := b.Who(ctx); err != nil || !sessionsOf(who, others, 2) {
		t.Fatalf("who on b after the kicks of %q: %+v %v; want %q with two sessions each", wild, who, err, others)
	}
}
