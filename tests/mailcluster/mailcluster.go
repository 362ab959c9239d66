// Package mailcluster runs a whole Roost mail cluster on one machine, from
// nothing: a users table (a private PostgreSQL, or SQLite), three Dovecot
// nodes (2.3, or 2.4) on 127.0.1.1–3 with proxy_maybe, an SQL passdb, lmtp_proxy and
// the doveadm HTTP API, their maildirs on per-node faultfs FUSE mounts of
// one shared backing store and their indexes on local directories, HAProxy
// in front using each node's agent-check, and a roostd agent beside each
// node. The end-to-end tests, the time-to-recover benchmark and make demo
// all run this cluster. It ends what it started, and only that, by pid.
package mailcluster

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/routing/routingtest"
	"github.com/roost-mail/roost/tests/dovecotlab"
)

// guide is the operator's guide's Dovecot configuration (docs/dovecot.md),
// fitted to this cluster: the SQL passdb file for the cluster's database,
// and the Roost settings block, per node.
type guide struct {
	sql   string
	roost func(n *Node) string
}

func (c *Cluster) guide(ports map[string]int) guide {
	t := c.t
	snippet := func(lang, tag string) string {
		b, err := DocSnippet(lang, tag)
		if err != nil {
			t.Fatal(err)
		}
		return b.Body
	}
	var sql string
	var err error
	roost := snippet("dovecot", "roost")
	if c.opts.Dovecot == "2.4" {
		roost = snippet("dovecot24", "roost")
		host, params := c.DSN, [][2]string(nil)
		if c.opts.DB == "postgres" {
			host, params = libpqParams(c.DSN)
		}
		sql, err = FitSQL24(snippet("dovecot24", "sql-"+c.opts.DB), host, params, ports)
	} else {
		sql, err = FitSQL(snippet("dovecot-sql", c.opts.DB), c.DSN, ports)
	}
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(c.Dir, "roost-dedupe.sieve")
	writeFile(t, script, snippet("sieve", "roost-dedupe"))
	if err := os.Chmod(script, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := dovecotlab.Command(c.opts.Dovecot, "sievec", script).CombinedOutput(); err != nil {
		t.Fatalf("sievec %s (the guide's script): %v\n%s", script, err, out)
	}
	return guide{sql: sql, roost: func(n *Node) string {
		out, err := fit(roost, "docs/dovecot.md's Roost settings",
			"auth_proxy_self = 10.0.0.1", "auth_proxy_self = "+n.Host,
			"login_trusted_networks = 10.0.0.0/24", "login_trusted_networks = 127.0.0.0/8",
			"haproxy_trusted_networks = 10.0.0.100", "haproxy_trusted_networks = 127.0.0.0/8",
			"port = 8080", fmt.Sprintf("port = %d", ports["http"]),
			"CHANGE-ME-to-a-long-random-secret", dovecotlab.APIKey,
			"/etc/dovecot/sieve/roost-dedupe.sieve", script)
		if err == nil && c.opts.AuthCache {
			out, err = fit(out, "docs/dovecot.md's Roost settings", "\nauth_cache_size = 0\n", "\nauth_cache_size = 1M\nauth_cache_ttl = 1 hour\n")
		}
		if err != nil {
			t.Fatal(err)
		}
		return out
	}}
}

// FitSQL fits one of the guide's SQL passdb files to a database (dsn, as
// Dovecot's connect string or an SQLite path) and to listeners on ports.
func FitSQL(conf, dsn string, ports map[string]int) (string, error) {
	var lines []string
	found := false
	for _, l := range strings.Split(conf, "\n") {
		if strings.HasPrefix(l, "connect = ") {
			l, found = "connect = "+dsn, true
		}
		lines = append(lines, l)
	}
	if !found {
		return "", fmt.Errorf("the guide's SQL passdb has no connect line:\n%s", conf)
	}
	return fitPorts(strings.Join(lines, "\n"), "the guide's SQL passdb", ports)
}

// libpqParams splits a libpq connect string ("host=… port=… user=…") into
// its host and the other parameters, as 2.4's pgsql block takes them.
func libpqParams(dsn string) (host string, params [][2]string) {
	for _, f := range strings.Fields(dsn) {
		k, v, _ := strings.Cut(f, "=")
		if k == "host" {
			host = v
			continue
		}
		params = append(params, [2]string{k, v})
	}
	return host, params
}

// FitSQL24 fits one of the guide's Dovecot 2.4 SQL passdb blocks to a
// database and to listeners on ports: the driver's block (pgsql or mysql
// 10.0.0.5 { … }) becomes one for host with params (libpq's
// parameters for pgsql, mysql's settings), or sqlite_path becomes host.
func FitSQL24(conf, host string, params [][2]string, ports map[string]int) (string, error) {
	lines := strings.Split(conf, "\n")
	var out []string
	found := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "sqlite_path = "):
			out, found = append(out, "sqlite_path = "+host), true
			continue
		case l == "pgsql 10.0.0.5 {" || l == "mysql 10.0.0.5 {":
			driver, _, _ := strings.Cut(l, " ")
			for i < len(lines) && lines[i] != "}" {
				i++ // the guide's block, to its closing brace
			}
			out = append(out, driver+" "+host+" {")
			indent := "  "
			if driver == "pgsql" {
				out, indent = append(out, "  parameters {"), "    "
			}
			for _, kv := range params {
				out = append(out, indent+kv[0]+" = "+kv[1])
			}
			if driver == "pgsql" {
				out = append(out, "  }")
			}
			out, found = append(out, "}"), true
			continue
		}
		out = append(out, l)
	}
	if !found {
		return "", fmt.Errorf("the guide's 2.4 SQL passdb has no sqlite_path line nor a pgsql or mysql 10.0.0.5 block:\n%s", conf)
	}
	return fitPorts(strings.Join(out, "\n"), "the guide's 2.4 SQL passdb", ports)
}

// fitPorts fits an SQL passdb's per-protocol ports to listeners on ports.
func fitPorts(s, what string, ports map[string]int) (string, error) {
	return fit(s, what,
		"THEN 24", fmt.Sprintf("THEN %d", ports["lmtp"]),
		"THEN 110", fmt.Sprintf("THEN %d", ports["pop3"]),
		"ELSE 143", fmt.Sprintf("ELSE %d", ports["imap"]))
}

// fit replaces each old with its new in s, and fails when one is missing:
// the guide changed, and the harness must follow it.
func fit(s, what string, oldnew ...string) (string, error) {
	for i := 0; i < len(oldnew); i += 2 {
		if !strings.Contains(s, oldnew[i]) {
			return "", fmt.Errorf("%s no longer say %q: fit tests/mailcluster to the guide", what, oldnew[i])
		}
		s = strings.ReplaceAll(s, oldnew[i], oldnew[i+1])
	}
	return s, nil
}

// Options shape a cluster.
type Options struct {
	// DB is the routing database: "postgres" (default) or "sqlite".
	DB string
	// Users on each node (default 100): user0001@example.test… spread
	// round-robin, user k on node k mod 3.
	Users int
	// Bin holds the roostd and nodectl binaries.
	Bin string
	// Agent is YAML appended to node i's roostd config: sections the base
	// config does not have (failover, hooks, alertmanager).
	Agent func(i int) string
	// Logf reports progress (default: the test's log).
	Logf func(format string, args ...any)
	// Dovecot is the version the nodes run: "2.3" (default) or "2.4",
	// with the guide's blocks for it.
	Dovecot string
	// AuthCache keeps Dovecot's auth cache on (an hour), as the guide
	// allows, where its block turns it off: a moved user then reaches
	// their new node only if Roost flushes the cache on every node.
	AuthCache bool
	// Spare adds a fourth node, node4 on 127.0.1.4, that starts with no
	// users: a node just added to the cluster.
	Spare bool
	// MaxUsers is every node's node.max_users (0: no bound).
	MaxUsers int
}

// Password is every mail user's password.
const Password = `s3cret "pw"`

// Cluster is a running mail cluster.
type Cluster struct {
	t     testing.TB
	opts  Options
	Dir   string
	Nodes []*Node
	// Users are the mail users, Users[k] on Nodes[k%3] at start.
	Users []string
	// DB is the users table's database; DSN what roostd and Dovecot use.
	DB  *sql.DB
	DSN string
	// Backing is the shared filesystem's store every mount passes to.
	Backing string
	// IMAP and LMTP are HAProxy's frontends.
	IMAP, LMTP string
	HAProxy    *HAProxy
	Nodectl    string
}

// Node is one mail node: Dovecot, its mount and its agent.
type Node struct {
	Name    string // roostd's node name: node1…
	Host    string // its proxy_host and address: 127.0.1.1…
	Short   string // Dovecot's x-roost-node: a…
	Dovecot *dovecotlab.Instance
	// FS is the node's mount of the shared filesystem, at Mount.
	FS     *faultfs.FS
	Mount  string
	Socket string // roostd's API socket
	Config string // roostd's config file
	// LBAgent is roostd's agent-check address.
	LBAgent string
	Agent   *Proc
}

// Start brings the whole cluster up and waits until it serves: a raft
// leader, every node passing with its users, HAProxy seeing all three up.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.DB == "" {
		o.DB = "postgres"
	}
	if o.Users == 0 {
		o.Users = 100
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	if o.Dovecot == "" {
		o.Dovecot = "2.3"
	}
	for _, bin := range []string{"haproxy", "dovecot"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed: run scripts/test-deps.sh as root", bin)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("the mail cluster needs root: FUSE mounts, Dovecot's mail user")
	}
	dir, err := os.MkdirTemp("/tmp", "roost-mc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() || os.Getenv("ROOST_KEEP") == "" {
			os.RemoveAll(dir)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, dir)
		}
	})
	// Dovecot's unprivileged processes traverse it.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, opts: o, Dir: dir, Nodectl: filepath.Join(o.Bin, "nodectl")}
	start := time.Now()
	c.startDB()
	c.mount()
	o.Logf("users table on %s with %d users, shared filesystem mounted %d times", o.DB, len(c.Users), len(c.Nodes))
	ports := dovecotlab.FreePorts(t)
	guide := c.guide(ports)
	for i, n := range c.Nodes {
		opts := dovecotlab.Options{IP: n.Host, Ports: ports, Shared: n.Mount, SQLConf: guide.sql, Roost: guide.roost(n), Version: o.Dovecot}
		if o.DB == "sqlite" {
			opts.SQLite = c.DSN
		} else {
			opts.PgSQL = c.DSN
		}
		n.Dovecot = dovecotlab.StartWith(t, string(rune('a'+i)), opts)
	}
	t.Cleanup(func() { // before their directories go
		if t.Failed() {
			for _, n := range c.Nodes {
				logTail(t, n.Name+"'s dovecot.log", n.Dovecot.Log())
			}
		}
	})
	o.Logf("%d Dovecot %s nodes up on 127.0.1.1-%d (imap %d, lmtp %d)", len(c.Nodes), o.Dovecot, len(c.Nodes), ports["imap"], ports["lmtp"])
	c.startAgents()
	c.startHAProxy()
	c.WaitFor(60*time.Second, "every node passing with its users, HAProxy seeing them up", func() bool {
		st, err := c.Status(c.Nodes[0])
		if err != nil || st.Leader == "" || len(st.Members) != len(c.Nodes) {
			return false
		}
		for _, m := range st.Members {
			users := o.Users
			if m.Name == "node4" {
				users = 0
			}
			if m.Health != "passing" || m.Users != users || m.LB != "up" {
				return false
			}
		}
		for _, s := range c.HAProxy.Stat("imap") {
			if s.Status != "UP" {
				return false
			}
		}
		return true
	})
	// Cleanups run last-first: this one, first. A process blocked in a
	// hung FUSE request cannot exit, so the faults go before the processes.
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			n.FS.Clear()
		}
	})
	o.Logf("cluster serving in %s: IMAP %s, LMTP %s through HAProxy", time.Since(start).Round(100*time.Millisecond), c.IMAP, c.LMTP)
	return c
}

// startDB creates the users table: user k on 127.0.1.(k mod 3 + 1).
func (c *Cluster) startDB() {
	t := c.t
	nodes := 3
	if c.opts.Spare {
		nodes = 4
	}
	for i := range nodes {
		c.Nodes = append(c.Nodes, &Node{Name: fmt.Sprintf("node%d", i+1), Host: fmt.Sprintf("127.0.1.%d", i+1), Short: string(rune('a' + i))})
	}
	var driver string
	switch c.opts.DB {
	case "sqlite":
		driver, c.DSN = "sqlite", filepath.Join(c.Dir, "mail.db")
	case "postgres":
		db := routingtest.Open(t, "postgres")
		driver, c.DSN = "pgx", db.DSN
	default:
		t.Fatalf("mailcluster: DB %q: want postgres or sqlite", c.opts.DB)
	}
	db, err := sql.Open(driver, c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c.DB = db
	exec := func(q string, args ...any) {
		if driver == "pgx" {
			for k := range args {
				q = strings.Replace(q, "?", fmt.Sprintf("$%d", k+1), 1)
			}
		}
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE users (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255) NOT NULL, proxy_host VARCHAR(255))`)
	for k := range 3 * c.opts.Users {
		u := fmt.Sprintf("user%04d@example.test", k)
		c.Users = append(c.Users, u)
		exec(`INSERT INTO users (username, password, proxy_host) VALUES (?, ?, ?)`, u, "{PLAIN}"+Password, c.Nodes[k%3].Host)
	}
}

// mount makes the shared store and mounts it once per node. A mountpoint
// is root's and not writable by the mail user, so a node whose mount is
// gone cannot write mail under the bare directory.
func (c *Cluster) mount() {
	t := c.t
	c.Backing = filepath.Join(c.Dir, "shared")
	if err := os.Mkdir(c.Backing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("chown", "vmail:vmail", c.Backing).Run(); err != nil {
		t.Fatalf("chown vmail %s: %v (scripts/test-deps.sh makes the vmail user)", c.Backing, err)
	}
	for _, n := range c.Nodes {
		n.Mount = filepath.Join(c.Dir, "mnt-"+n.Short)
		if err := os.Mkdir(n.Mount, 0o755); err != nil {
			t.Fatal(err)
		}
		fs, err := faultfs.Mount(c.Backing, n.Mount, faultfs.Options{AllowOther: true})
		if err != nil {
			t.Fatal(err)
		}
		n.FS = fs
		t.Cleanup(func() { _ = fs.Unmount() })
	}
}

// startAgents writes keys, certificates and a config per node the way an
// operator does (roostd keygen, tls ca, tls cert, check-config) and starts
// the roostd processes.
func (c *Cluster) startAgents() {
	t := c.t
	roostd := filepath.Join(c.opts.Bin, "roostd")
	key := c.run(roostd, "keygen")
	writeFile(t, filepath.Join(c.Dir, "gossip.key"), key)
	c.run(roostd, "tls", "ca", "--dir", c.Dir)
	writeFile(t, filepath.Join(c.Dir, "routing.dsn"), c.DSN)
	driver := c.opts.DB
	ports := agenttest.FreePorts(t, 3)
	var join []string
	for _, n := range c.Nodes {
		join = append(join, fmt.Sprintf("%s:%d", n.Host, ports[0]))
	}
	for i, n := range c.Nodes {
		c.run(roostd, "tls", "cert", "--dir", c.Dir, "--name", n.Name, "--host", n.Host)
		d := n.Dovecot
		n.Socket = filepath.Join(c.Dir, n.Name+".sock")
		n.LBAgent = fmt.Sprintf("%s:%d", n.Host, ports[2])
		cfg := AgentBase{Name: n.Name, ProxyHost: n.Host, IP: n.Host, Dir: c.Dir, Socket: n.Socket,
			GossipPort: ports[0], RaftPort: ports[1], Join: join, MaxUsers: c.opts.MaxUsers}.YAML() + fmt.Sprintf(`fsprobe:
  mounts:
    - path: %[1]s
      fstype: fuse.faultfs
health:
  peer_addr: %[2]s
  checks:
    - protocol: imap
      addr: %[2]s
    - protocol: lmtp
      addr: %[3]s
    - protocol: doveadm
      addr: %[4]s
      api_key_file: %[5]s
      severity: warning
routing:
  driver: %[6]s
  dsn_file: %[9]s/routing.dsn
dovecot:
  url: %[4]s/doveadm/v1
  api_key_file: %[5]s
  instance_name: %[7]s
  doveadm: %[10]s
  dovecot_config: %[11]s
lb:
  agent_check: %[8]s
`, n.Mount, d.IMAP, d.LMTP, d.HTTP, d.APIKeyFile, driver, d.Name, n.LBAgent, c.Dir, d.Doveadm, d.Conf)
		if c.opts.Agent != nil {
			cfg += c.opts.Agent(i)
		}
		n.Config = filepath.Join(c.Dir, n.Name+".yaml")
		writeFile(t, n.Config, cfg)
		if out := c.run(roostd, "check-config", "--config", n.Config); !strings.Contains(out, "OK") {
			t.Fatalf("check-config %s: %s", n.Name, out)
		}
		n.Agent = StartProc(t, filepath.Join(c.Dir, n.Name+".log"), roostd, "--config", n.Config)
	}
	c.opts.Logf("%d roostd agents started (configs and logs in %s)", len(c.Nodes), c.Dir)
}

// AgentBase is the node, log, gossip, raft and api sections of a test
// agent's configuration: its files (gossip.key, ca.pem, NAME.pem,
// NAME-key.pem) in Dir, as roostd keygen and roostd tls make them.
type AgentBase struct {
	Name, ProxyHost, IP, Dir, Socket string
	GossipPort, RaftPort             int
	Join                             []string
	MaxUsers                         int
}

// YAML renders the sections, debug logging and fast joins included.
func (a AgentBase) YAML() string {
	return fmt.Sprintf(`node:
  name: %[1]s
  proxy_host: %[2]s
  data_dir: %[3]s/%[1]s
  max_users: %[9]d
log:
  level: debug
gossip:
  bind: %[4]s:%[5]d
  join: [%[6]s]
  join_retry_interval: 200ms
  key_file: %[3]s/gossip.key
raft:
  bind: %[4]s:%[7]d
  bootstrap_expect: 3
  server_stabilization_time: 1s
  tls:
    ca_file: %[3]s/ca.pem
    cert_file: %[3]s/%[1]s.pem
    key_file: %[3]s/%[1]s-key.pem
api:
  socket: %[8]s
`, a.Name, a.ProxyHost, a.Dir, a.IP, a.GossipPort, strings.Join(a.Join, ", "), a.RaftPort, a.Socket, a.MaxUsers)
}

// RestartAgent starts node n's roostd again after it ended.
func (c *Cluster) RestartAgent(n *Node) {
	n.Agent = StartProc(c.t, filepath.Join(c.Dir, n.Name+".log"), filepath.Join(c.opts.Bin, "roostd"), "--config", n.Config)
}

func (c *Cluster) startHAProxy() {
	var imap, lmtp []Server
	for _, n := range c.Nodes {
		imap = append(imap, Server{Name: n.Name, Addr: n.Dovecot.IMAP, Agent: n.LBAgent})
		lmtp = append(lmtp, Server{Name: n.Name, Addr: n.Dovecot.LMTP, Agent: n.LBAgent})
	}
	ports := agenttest.FreePorts(c.t, 2)
	c.IMAP, c.LMTP = fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	c.HAProxy = StartHAProxy(c.t, filepath.Join(c.Dir, "haproxy"), HAProxyConfig{IMAP: c.IMAP, LMTP: c.LMTP, IMAPServers: imap, LMTPServers: lmtp})
}

// run runs a command to completion, failing the test on error.
func (c *Cluster) run(name string, args ...string) string {
	c.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Ctl runs nodectl against node n's agent and returns its output.
func (c *Cluster) Ctl(n *Node, args ...string) (string, error) {
	out, err := exec.Command(c.Nodectl, append([]string{"--socket", n.Socket}, args...)...).CombinedOutput()
	return string(out), err
}

// Status asks node n's agent for the cluster's status.
func (c *Cluster) Status(n *Node) (api.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return api.NewUnixClient(n.Socket).Status(ctx)
}

// Member is what node n's agent says about member name.
func (c *Cluster) Member(n *Node, name string) (api.Member, bool) {
	st, err := c.Status(n)
	if err != nil {
		return api.Member{}, false
	}
	for _, m := range st.Members {
		if m.Name == name {
			return m, true
		}
	}
	return api.Member{}, false
}

// Recovered says whether every agent sees b passing and reachable by all
// its peers: only then does the leader accept b's failback.
func (c *Cluster) Recovered(b *Node) bool {
	for _, n := range c.Nodes {
		if n.Agent == nil {
			continue
		}
		if m, ok := c.Member(n, b.Name); !ok || m.Health != "passing" || len(m.PeersCannot) > 0 {
			return false
		}
	}
	return true
}

// WaitFor polls cond every 50 ms until it holds, failing the test (with
// every agent's log tail) after timeout.
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	ctx := c.t.Context() // canceled when a program's run is stopped
	if agenttest.Eventually(timeout, func() bool { return ctx.Err() != nil || cond() }) {
		if ctx.Err() != nil {
			c.t.Fatalf("stopped while waiting for %s", what)
		}
		return
	}
	c.t.Fatalf("waited %s for %s\n%s", timeout, what, c.AgentLogs(40))
}

// DovecotLinesOf is every node's Dovecot log lines that name one of
// users (at most 20 a node), for a failure.
func (c *Cluster) DovecotLinesOf(users []string) string {
	var b strings.Builder
	for _, n := range c.Nodes {
		var keep []string
		for _, l := range strings.Split(n.Dovecot.Log(), "\n") {
			for _, u := range users {
				if strings.Contains(l, u) {
					keep = append(keep, l)
					break
				}
			}
		}
		fmt.Fprintf(&b, "--- %s's dovecot.log on %s:\n%s\n", n.Name, strings.Join(users, ", "), strings.Join(keep[max(0, len(keep)-20):], "\n"))
	}
	return b.String()
}

// AgentLogs is the last lines of every agent's log, for a failure.
func (c *Cluster) AgentLogs(lines int) string {
	var b strings.Builder
	for _, n := range c.Nodes {
		if n.Agent != nil {
			fmt.Fprintf(&b, "--- %s's roostd:\n%s\n", n.Name, tail(n.Agent.Log(), lines))
		}
	}
	return b.String()
}

// UsersOn counts the users the table routes to host.
func (c *Cluster) UsersOn(host string) int {
	var n int
	c.queryRow(&n, `SELECT COUNT(*) FROM users WHERE proxy_host = ?`, host)
	return n
}

// HostOf is where the table routes user.
func (c *Cluster) HostOf(user string) string {
	var h string
	c.queryRow(&h, `SELECT proxy_host FROM users WHERE username = ?`, user)
	return h
}

// JournalFrom counts the journal's moves off host.
func (c *Cluster) JournalFrom(host string) int {
	var n int
	c.queryRow(&n, `SELECT COUNT(*) FROM roost_journal WHERE from_host = ?`, host)
	return n
}

// queryRow scans one value of a query with one ? placeholder.
func (c *Cluster) queryRow(dest any, q string, arg any) {
	c.t.Helper()
	if c.opts.DB == "postgres" {
		q = strings.Replace(q, "?", "$1", 1)
	}
	if err := c.DB.QueryRow(q, arg).Scan(dest); err != nil {
		c.t.Fatal(err)
	}
}

// UsersOf lists the users that start on node n.
func (c *Cluster) UsersOf(n *Node) []string {
	var out []string
	for k, u := range c.Users {
		if c.Nodes[k%3] == n {
			out = append(out, u)
		}
	}
	return out
}

// NodeByShort finds the node whose Dovecot says x-roost-node s.
func (c *Cluster) NodeByShort(s string) *Node {
	for _, n := range c.Nodes {
		if n.Short == s {
			return n
		}
	}
	return nil
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// Proc is a process the cluster started; it ends with the test (SIGTERM,
// then SIGKILL) and with the test binary (Pdeathsig).
type Proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// StartProc starts name with args, its output appended to logFile.
func StartProc(t testing.TB, logFile, name string, args ...string) *Proc {
	t.Helper()
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := &Proc{cmd: exec.Command(name, args...), log: logFile, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	return p
}

// Pid is the process's pid.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Log is what the process wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// Stop ends the process: SIGTERM, and SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) {
	if !p.Running() {
		return
	}
	p.Signal(syscall.SIGCONT) // a stopped process cannot handle SIGTERM
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Signal(syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(grace): // stuck in the kernel (a hung mount): leave it to Pdeathsig
		}
	}
}

// logTails shows, for a failed test, the warnings and errors of every log
// under dir (roostd's, HAProxy's), the last 40 of each:
// all a CI run keeps of a cluster it removes.
func logTails(t testing.TB, dir string) {
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil {
			logTail(t, strings.TrimPrefix(path, dir+"/"), string(b))
		}
		return nil
	})
}

// logTail logs the last 40 warnings and errors of one log.
func logTail(t testing.TB, name, log string) {
	const tailLines = 40
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if interesting.MatchString(l) {
			keep = append(keep, l)
		}
	}
	if len(keep) > tailLines {
		keep = keep[len(keep)-tailLines:]
	}
	if len(keep) > 0 {
		t.Logf("%s (last %d warnings and errors):\n%s", name, len(keep), strings.Join(keep, "\n"))
	}
}

var interesting = regexp.MustCompile(`(?i)level=(warn|error)|warning|alert|error|fatal|panic|disconnected|kick|unavailable`)
