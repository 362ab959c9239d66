// Package dovecotlab runs real Dovecot instances on loopback for Roost's
// tests: a self-contained config per instance (no /etc/dovecot includes),
// its own base_dir, logs and ports, TLS with a generated CA, the doveadm
// HTTP API, and a PROXY protocol listener. It starts and ends only its
// own processes, by pid.
//
// Dovecot 2.3 is the host's (Debian 12). Dovecot 2.4 runs from a Debian 13
// root that scripts/dovecot24-root.sh makes (scripts/test-deps.sh runs
// it), by chroot in the host's network namespace, in a mount namespace of
// its own where the host's /tmp is bind-mounted at the same path: the
// instance's files have the same paths inside and out.
package dovecotlab

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/certs"
)

// Instance is one running Dovecot.
type Instance struct {
	t      testing.TB
	Name   string // instance_name, also in every process title
	Dir    string
	Conf   string
	IP     string
	IMAP   string // host:port, plain with STARTTLS
	IMAPS  string // implicit TLS
	IMAPPP string // PROXY protocol (haproxy = yes)
	POP3   string
	LMTP   string
	Sub    string // submission (STARTTLS)
	Sieve  string // ManageSieve
	HTTP   string // doveadm HTTP API, http://host:port
	APIKey string
	// APIKeyFile holds APIKey, for clients that read it from a file.
	APIKeyFile string
	// DoveadmPassword is doveadm_password, for basic auth as "doveadm".
	DoveadmPassword string
	CAFile          string // the CA that signed the server certificate
	User            string // a test account
	Pass            string
	Opts            Options
	// Doveadm is the local doveadm command for this instance's version
	// (for 2.4 a script that runs it in the 2.4 root, with a doveconf
	// script beside it).
	Doveadm string
	pidFile string
	short   string
}

// Versions are the Dovecot versions the tests run.
var Versions = []string{"2.3", "2.4"}

// Root24 is the Debian 13 root with Dovecot 2.4 (scripts/dovecot24-root.sh).
func Root24() string {
	if r := os.Getenv("ROOST_DOVECOT24_ROOT"); r != "" {
		return r
	}
	return "/var/cache/roost-test/trixie-dovecot24"
}

// chrootScript runs "$@" in the 2.4 root $R, with /proc, /dev and the
// host's /tmp in it; unshare gives it a mount namespace of its own, so
// the mounts end with its last process and the host never sees them.
const chrootScript = `mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; mount --rbind /tmp "$R/tmp"; exec chroot "$R" "$@"`

// Command is name with args for a Dovecot version: the host's for 2.3, in
// the 2.4 root for 2.4.
func Command(version, name string, args ...string) *exec.Cmd {
	if version != "2.4" {
		return exec.Command(name, args...)
	}
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "slave", "sh", "-ec", chrootScript, "sh", name}, args...)...)
	cmd.Env = append(os.Environ(), "R="+Root24())
	return cmd
}

// Options make an instance one node of a proxy_maybe cluster.
type Options struct {
	// IP to listen on (default 127.0.0.1); Ports reused from another node
	// (proxy_maybe proxies to the same port on the user's host).
	IP    string
	Ports map[string]int
	// SQLite is a database with users(username, password, proxy_host):
	// the passdb then answers host=proxy_host, proxy_maybe=y.
	SQLite string
	// PgSQL is a libpq connect string to such a database on PostgreSQL
	// (instead of SQLite).
	PgSQL string
	// Shared is the maildir root all nodes serve (default per instance).
	Shared string
	// AuthCache turns Dovecot's passdb cache on (1 hour).
	AuthCache bool
	// DoveadmTLS serves the doveadm HTTP API over TLS (HTTP is https://).
	DoveadmTLS bool
	// SQLConf is the SQL passdb's whole args file (the guide's, with its
	// driver and connect lines), instead of the lab's own; for 2.4 the
	// guide's SQL settings and passdb sql block, put in the main file.
	SQLConf string
	// Roost is the block of settings Roost relies on (the guide's "dovecot
	// roost" block, fitted to this node, with its Sieve duplicate check):
	// it replaces the lab's own trusted networks, proxy settings, auth
	// cache and doveadm API.
	Roost string
	// Version is the Dovecot to run: "2.3" (default, the host's) or "2.4".
	Version string
}

// APIKey is every instance's doveadm_api_key.
const APIKey = "test-api-key"

// header is every node's first settings, in 2.3 and 2.4 alike.
const header = `instance_name = {{.Name}}
base_dir = {{.Dir}}/run
state_dir = {{.Dir}}/state
log_path = {{.Dir}}/dovecot.log
protocols = imap pop3 lmtp submission sieve
listen = {{.IP}}
submission_relay_host = 127.0.0.1
submission_relay_port = 1
ssl = yes
`

// proxying is the lab's own trusted networks, auth cache and proxy
// settings, in 2.3 and 2.4 alike, unless the guide's Roost block is given;
// it opens the {{if .SQL}} that each template closes after its passdb.
const proxying = `{{if not .Opts.Roost}}haproxy_trusted_networks = 127.0.0.0/8
login_trusted_networks = 127.0.0.0/8
{{if .Opts.AuthCache}}auth_cache_size = 1M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 0{{else}}auth_cache_size = 0{{end}}{{end}}
{{if .SQL}}{{if not .Opts.Roost}}auth_proxy_self = {{.IP}}
login_proxy_timeout = 5s
lmtp_proxy = yes{{end}}
`

// listeners are every node's, in 2.3 and 2.4 alike, from the imap-login
// service's first listener on.
const listeners = `  inet_listener imap {
    port = {{.P.imap}}
  }
  inet_listener imaps {
    port = {{.P.imaps}}
    ssl = yes
  }
  inet_listener imap_haproxy {
    port = {{.P.imappp}}
    haproxy = yes
  }
}
service pop3-login {
{{- if eq .Opts.Version "2.4"}}
  restart_request_count = unlimited
{{- end}}
  inet_listener pop3 {
    port = {{.P.pop3}}
  }
  inet_listener pop3s {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    port = {{.P.lmtp}}
  }
}
service submission-login {
{{- if eq .Opts.Version "2.4"}}
  restart_request_count = unlimited
{{- end}}
  inet_listener submission {
    port = {{.P.sub}}
  }
}
service managesieve-login {
  inet_listener sieve {
    port = {{.P.sieve}}
  }
}
`

var confTmpl = template.Must(template.New("conf").Parse(`# rendered by tests/dovecotlab
` + header + `ssl_cert = <{{.Dir}}/server.pem
ssl_key = <{{.Dir}}/server-key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_chars =
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 100
mail_location = maildir:{{.Opts.Shared}}/%u/Maildir:INDEX={{.Dir}}/index/%u
` + proxying + `imap_id_send = name * x-roost-node {{.Short}} environment node={{.Short}}
passdb {
  driver = sql
  args = {{.Dir}}/sql.conf
}{{else}}passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {{.Dir}}/users
}{{end}}
userdb {
  driver = static
  args = uid=vmail gid=vmail home={{.Opts.Shared}}/%u
}
default_process_limit = 2000
default_client_limit = 4000
service anvil {
  client_limit = 8000
}
service imap-login {
  # high-performance mode, as proxies run: one process holds many
  # connections (proxyKick then reaches a few processes, not one per user)
  service_count = 0
  client_limit = 2000
` + listeners + `doveadm_password = {{.DoveadmPassword}}
{{if .Opts.Roost}}# The guide's Roost settings (docs/dovecot.md), fitted to this node:
{{.Opts.Roost}}{{else}}doveadm_api_key = {{.APIKey}}
service doveadm {
  # Dovecot tells HTTP from its doveadm protocol by this listener's name:
  # TLS is ssl = yes on "http", not a listener of another name.
  inet_listener http {
    port = {{.P.http}}{{if .Opts.DoveadmTLS}}
    ssl = yes{{end}}
  }
}{{end}}
`))

var sqlTmpl = template.Must(template.New("sql").Parse(`# rendered by tests/dovecotlab
driver = {{.SQL}}
connect = {{.SQLConnect}}
default_pass_scheme = PLAIN
password_query = SELECT username AS user, password, proxy_host AS host, 'y' AS proxy_maybe, \
  CASE '%s' WHEN 'pop3' THEN {{.P.pop3}} WHEN 'lmtp' THEN {{.P.lmtp}} ELSE {{.P.imap}} END AS port \
  FROM users WHERE username = '%u'
`))

// conf24Tmpl is confTmpl in Dovecot 2.4's syntax: the settings renamed
// (mail_driver, auth_allow_cleartext, ssl_server_*_file,
// restart_request_count), named passdb and userdb blocks, the SQL
// driver's settings in the main file, %{variables}.
var conf24Tmpl = template.Must(template.New("conf24").Parse(`# rendered by tests/dovecotlab
dovecot_config_version = 2.4.1
dovecot_storage_version = 2.4.1
` + header + `ssl_server_cert_file = {{.Dir}}/server.pem
ssl_server_key_file = {{.Dir}}/server-key.pem
auth_allow_cleartext = yes
auth_mechanisms = plain login
auth_username_chars =
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 100
mail_driver = maildir
mail_path = {{.Opts.Shared}}/%{user}/Maildir
mail_index_path = {{.Dir}}/index/%{user}
` + proxying + `imap_id_send {
  name = Dovecot
  x-roost-node = {{.Short}}
  environment = node={{.Short}}
}
{{if .Opts.SQLConf}}# The guide's SQL passdb (docs/dovecot.md), fitted to this node:
{{.Opts.SQLConf}}
{{else}}sql_driver = sqlite
sqlite_path = {{.SQLConnect}}
passdb sql {
  default_password_scheme = PLAIN
  query = SELECT username AS user, password, proxy_host AS host, 'y' AS proxy_maybe, CASE '%{protocol}' WHEN 'pop3' THEN {{.P.pop3}} WHEN 'lmtp' THEN {{.P.lmtp}} ELSE {{.P.imap}} END AS port FROM users WHERE username = '%{user}'
}{{end}}{{else}}passdb passwd-file {
  passwd_file_path = {{.Dir}}/users
}{{end}}
userdb static {
  fields {
    uid = vmail
    gid = vmail
    home = {{.Opts.Shared}}/%{user}
  }
}
default_process_limit = 2000
default_client_limit = 4000
service anvil {
  client_limit = 12000
}
service auth {
  client_limit = 12000
}
service imap-login {
  # high-performance mode, as proxies run: one process holds many
  # connections; in 2.4 only then does kick end proxied sessions (see
  # docs/dovecot.md)
  restart_request_count = unlimited
  client_limit = 2000
` + listeners + `doveadm_password = {{.DoveadmPassword}}
{{if .Opts.Roost}}# The guide's Roost settings (docs/dovecot.md), fitted to this node:
{{.Opts.Roost}}{{else}}doveadm_api_key = {{.APIKey}}
service doveadm {
  inet_listener http {
    port = {{.P.http}}{{if .Opts.DoveadmTLS}}
    ssl = yes{{end}}
  }
}{{end}}
`))

// Start renders a config and starts Dovecot on 127.0.0.1 with fresh ports.
// It fails the test when Dovecot is missing: never a silent skip.
func Start(t testing.TB, name string) *Instance {
	t.Helper()
	return StartWith(t, name, Options{})
}

// StartCluster starts n nodes on 127.0.1.1…n with the same ports, an SQL
// passdb with proxy_maybe on db and one shared maildir root: any node
// takes any login and proxies it to the user's proxy_host.
func StartCluster(t testing.TB, n int, db string, authCache bool) []*Instance {
	t.Helper()
	var ips []string
	for k := range n {
		ips = append(ips, fmt.Sprintf("127.0.1.%d", k+1))
	}
	return StartClusterOn(t, ips, db, authCache)
}

// StartClusterOn is StartCluster with node k listening on ips[k].
func StartClusterOn(t testing.TB, ips []string, db string, authCache bool) []*Instance {
	t.Helper()
	return StartClusterWith(t, ips, Options{SQLite: db, AuthCache: authCache})
}

// StartClusterWith is StartClusterOn with o's SQLite, AuthCache and
// Version.
func StartClusterWith(t testing.TB, ips []string, o Options) []*Instance {
	t.Helper()
	shared, err := os.MkdirTemp("/tmp", "roost-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := exec.Command("chown", "vmail:vmail", shared).Run(); err != nil {
		t.Fatalf("chown vmail: %v", err)
	}
	p := FreePorts(t)
	var out []*Instance
	for k, ip := range ips {
		out = append(out, StartWith(t, string(rune('a'+k)), Options{IP: ip, Ports: p, SQLite: o.SQLite, Shared: shared, AuthCache: o.AuthCache, Version: o.Version}))
	}
	return out
}

// Short is the name given to Start: what x-roost-node in the IMAP ID says.
func (i *Instance) Short() string { return i.short }

// StartWith starts an instance with options.
func StartWith(t testing.TB, name string, o Options) *Instance {
	t.Helper()
	switch o.Version {
	case "", "2.3":
		o.Version = "2.3"
		if _, err := exec.LookPath("dovecot"); err != nil {
			t.Fatal("dovecot is not installed: run scripts/test-deps.sh as root")
		}
	case "2.4":
		if _, err := os.Stat(filepath.Join(Root24(), "usr/sbin/dovecot")); err != nil {
			t.Fatalf("no Dovecot 2.4 in %s: run scripts/test-deps.sh as root (it runs scripts/dovecot24-root.sh)", Root24())
		}
		if o.PgSQL != "" && o.SQLConf == "" {
			t.Fatal("dovecotlab: PostgreSQL on 2.4 comes with the guide's SQL block (SQLConf)")
		}
	default:
		t.Fatalf("dovecotlab: Dovecot version %q: want 2.3 or 2.4", o.Version)
	}
	// Dovecot's unprivileged processes must traverse the directory: not
	// t.TempDir(), which is 0700.
	dir, err := os.MkdirTemp("/tmp", "roost-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.IP == "" {
		o.IP = "127.0.0.1"
	}
	if o.Shared == "" {
		o.Shared = filepath.Join(dir, "mail")
	}
	i := &Instance{t: t, Name: "roosttest-" + name + "-" + filepath.Base(dir)[len("roost-dovecot-"):], Dir: dir, IP: o.IP,
		APIKey: APIKey, DoveadmPassword: "test-doveadm-pw", User: "probe@example.test", Pass: `pa"ss\word`, Opts: o, short: name}
	i.Conf = filepath.Join(dir, "dovecot.conf")
	i.pidFile = filepath.Join(dir, "run", "master.pid")
	i.Doveadm = "doveadm"
	if o.Version == "2.4" {
		// doveadm and doveconf of 2.4, side by side as on a node.
		i.Doveadm = filepath.Join(dir, "doveadm")
		for _, cmd := range []string{"doveadm", "doveconf"} {
			script := fmt.Sprintf("#!/bin/sh\n# %s of Dovecot 2.4, in its root (tests/dovecotlab)\nR=%s exec unshare --mount --propagation slave sh -ec '%s' sh %s \"$@\"\n", cmd, Root24(), chrootScript, cmd)
			if err := os.WriteFile(filepath.Join(dir, cmd), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(i.cleanup)

	ca, err := certs.CreateCA(dir, "dovecotlab CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, err := ca.Issue(dir, "server", certs.Server, []string{i.IP, "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_ = cp
	if err := os.Chmod(kp, 0o600); err != nil {
		t.Fatal(err)
	}
	i.CAFile = filepath.Join(dir, "ca.pem")
	i.APIKeyFile = filepath.Join(dir, "api-key")
	if err := os.WriteFile(i.APIKeyFile, []byte(i.APIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(i.User+":{PLAIN}"+i.Pass+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"mail", "index"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := exec.Command("chown", "vmail:vmail", filepath.Join(dir, d)).Run(); err != nil {
			t.Fatalf("chown vmail: %v (is the vmail user there? scripts/test-deps.sh makes it)", err)
		}
	}
	p := o.Ports
	if p == nil {
		p = FreePorts(t)
	}
	addr := func(k string) string { return net.JoinHostPort(i.IP, strconv.Itoa(p[k])) }
	i.IMAP, i.IMAPS, i.IMAPPP, i.POP3, i.LMTP, i.HTTP = addr("imap"), addr("imaps"), addr("imappp"), addr("pop3"), addr("lmtp"), "http://"+addr("http")
	if o.DoveadmTLS {
		i.HTTP = "https://" + addr("http")
	}
	i.Sub, i.Sieve = addr("sub"), addr("sieve")
	data := struct {
		*Instance
		P               map[string]int
		SQL, SQLConnect string
	}{i, p, "", ""}
	switch {
	case o.SQLConf != "":
		data.SQL = "guide" // its own driver and connect lines
	case o.SQLite != "":
		data.SQL, data.SQLConnect = "sqlite", o.SQLite
	case o.PgSQL != "":
		data.SQL, data.SQLConnect = "pgsql", o.PgSQL
	}
	if o.Version == "2.4" {
		render(t, conf24Tmpl, i.Conf, data)
	} else {
		render(t, confTmpl, i.Conf, data)
	}
	switch {
	case o.Version == "2.4": // the SQL settings are in the main file
	case o.SQLConf != "":
		if err := os.WriteFile(filepath.Join(dir, "sql.conf"), []byte(o.SQLConf), 0o600); err != nil {
			t.Fatal(err)
		}
	case data.SQL != "":
		render(t, sqlTmpl, filepath.Join(dir, "sql.conf"), data)
	}
	i.Start()
	return i
}

// FreePorts picks the ports one node listens on (imap, imaps, imappp,
// pop3, lmtp, http, sub, sieve); a cluster's nodes share them.
func FreePorts(t testing.TB) map[string]int {
	ports := agenttest.FreePorts(t, 8)
	return map[string]int{"imap": ports[0], "imaps": ports[1], "imappp": ports[2], "pop3": ports[3], "lmtp": ports[4], "http": ports[5], "sub": ports[6], "sieve": ports[7]}
}

func render(t testing.TB, tmpl *template.Template, path string, data any) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	err = tmpl.Execute(f, data)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
}

// Start starts (or restarts) the instance and waits until IMAP greets.
func (i *Instance) Start() {
	i.t.Helper()
	if pid := i.masterPID(); pid > 0 && !alive(pid) {
		os.Remove(i.pidFile) // a dead (or zombie) master's pid file blocks a restart
		// A restart after a crash ends what the dead master left, as
		// systemd's control group would: its login processes still hold
		// the sockets ("Dovecot is already running?").
		for _, p := range i.pids() {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(i.livePids()) > 0; {
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Dovecot keeps the caller's stdout and stderr open after it forks
	// (lab gotcha 8): give it a file, never a pipe we would wait on.
	out, err := os.OpenFile(filepath.Join(i.Dir, "start.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		i.t.Fatal(err)
	}
	defer out.Close()
	// After a kill -9 the old instance's login processes hold the listening
	// sockets for a moment: retry while the ports are still taken.
	for attempt := 0; ; attempt++ {
		before, _ := os.ReadFile(filepath.Join(i.Dir, "start.out"))
		cmd := Command(i.Opts.Version, "dovecot", "-c", i.Conf)
		cmd.Stdout, cmd.Stderr = out, out
		err := cmd.Run()
		if err == nil {
			break
		}
		b, _ := os.ReadFile(filepath.Join(i.Dir, "start.out"))
		if msg := string(b[len(before):]); attempt < 50 && (strings.Contains(msg, "Address already in use") || strings.Contains(msg, "Socket already exists")) {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		i.t.Fatalf("dovecot %s -c %s: %v\n%s\n%s", i.Opts.Version, i.Conf, err, b, i.Log())
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", i.IMAP, time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "* OK") {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	i.t.Fatalf("dovecot %s did not greet on %s within 15s\n%s", i.Name, i.IMAP, i.Log())
}

// PIDFile is where the master writes its pid.
func (i *Instance) PIDFile() string { return i.pidFile }

// Kill9 kills the master with SIGKILL, as a crash: its children that
// serve sessions live on for a while as orphans (lab step 6).
func (i *Instance) Kill9() {
	i.t.Helper()
	pid := i.masterPID()
	if pid <= 0 {
		i.t.Fatal("no master pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		i.t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && alive(pid); {
		time.Sleep(20 * time.Millisecond)
	}
}

// Signal sends sig to the master and every process of the instance:
// SIGSTOP hangs it as a stalled filesystem would, SIGCONT resumes it.
func (i *Instance) Signal(sig syscall.Signal) {
	for _, pid := range i.pids() {
		_ = syscall.Kill(pid, sig)
	}
}

// KillAll kills the master and every process of the instance with
// SIGKILL, as a lost host looks to its peers: nothing answers any more.
func (i *Instance) KillAll() {
	i.t.Helper()
	i.Kill9()
	for _, pid := range i.pids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", i.IMAP, 100*time.Millisecond); err != nil {
			return
		} else {
			c.Close()
		}
	}
	i.t.Fatalf("%s still accepts IMAP connections after KillAll", i.Name)
}

// Log returns the instance's log.
func (i *Instance) Log() string {
	b, _ := os.ReadFile(filepath.Join(i.Dir, "dovecot.log"))
	return string(b)
}

func (i *Instance) masterPID() int {
	b, err := os.ReadFile(i.pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// cleanup ends the master and every process of this instance (found by
// the instance name in its title), and removes the directory.
func (i *Instance) cleanup() {
	if pid := i.masterPID(); pid > 0 && alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && alive(pid); {
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, pid := range i.pids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if i.t.Failed() && os.Getenv("ROOST_KEEP") != "" {
		return // kept for a look at its dovecot.log
	}
	os.RemoveAll(i.Dir)
}

// pids lists the processes whose title names this instance.
func (i *Instance) pids() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && (strings.HasPrefix(string(b), i.Name+"/") || strings.HasPrefix(string(b), "dovecot-"+i.Name+"/") || strings.Contains(string(b), i.Conf)) {
			out = append(out, pid)
		}
	}
	return out
}

// livePids are the instance's processes that still run.
func (i *Instance) livePids() []int {
	var out []int
	for _, p := range i.pids() {
		if alive(p) {
			out = append(out, p)
		}
	}
	return out
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}
