package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/roost-mail/roost/routing/routingtest"
	"github.com/roost-mail/roost/tests/dovecotlab"
	"github.com/roost-mail/roost/tests/mailcluster"
)

// The operator's guide (docs/) cannot drift from the code: every block it
// marks is run here by the real thing. Roost configurations also pass the
// agent's own test (agent/config_test.go); the Dovecot settings, the Sieve
// script and the PostgreSQL and SQLite passdb queries run in the
// end-to-end cluster (tests/mailcluster reads them from docs/dovecot.md).

func docBlocksOf(t *testing.T, lang, tag string) []mailcluster.DocBlock {
	t.Helper()
	blocks, err := mailcluster.DocBlocks("../docs", lang, tag)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 {
		t.Fatalf("no %q block in docs/", strings.TrimSpace(lang+" "+tag))
	}
	return blocks
}

// etcRoostDir is /etc/roost as the guide has it: made with roostd's own
// commands (keygen, tls ca, tls cert), and the secret files it names.
func etcRoostDir(t *testing.T, roostd string) string {
	t.Helper()
	dir := t.TempDir()
	key, err := run(t, roostd, "keygen")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"gossip.key": key, "api.token": "0123456789abcdef0123456789abcdef\n", "webhook.token": "fedcba9876543210fedcba9876543210\n",
		"doveadm.key": "doveadm-api-key\n", "probe.pw": "probe\n", "routing.dsn": "host=10.0.0.5 dbname=mail user=roost\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsDir := filepath.Join(dir, "tls")
	if out, err := run(t, roostd, "tls", "ca", "--dir", tlsDir); err != nil {
		t.Fatal(err, out)
	}
	for n, use := range map[string]string{"node1": "node", "node2": "node", "node3": "node", "api": "server"} {
		if out, err := run(t, roostd, "tls", "cert", "--dir", tlsDir, "--name", n, "--for", use, "--host", "10.0.0.1"); err != nil {
			t.Fatal(err, out)
		}
	}
	return dir
}

func TestDocsRoostConfigsPassCheckConfig(t *testing.T) {
	roostd := filepath.Join(buildBinaries(t), "roostd")
	etc := etcRoostDir(t, roostd)
	for _, b := range docBlocksOf(t, "yaml", "roost-config") {
		path := filepath.Join(t.TempDir(), "roost.yaml")
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(b.Body, "/etc/roost/", etc+"/")), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, roostd, "check-config", "--config", path); err != nil || !strings.Contains(out, "OK") {
			t.Errorf("%s: roostd check-config: %v\n%s", b, err, out)
		}
	}
}

func TestDocsHAProxyConfigsPassHAProxy(t *testing.T) {
	for _, b := range docBlocksOf(t, "haproxy", "") {
		dir := t.TempDir()
		cfg := strings.ReplaceAll(b.Body, "/run/haproxy/admin.sock", filepath.Join(dir, "admin.sock"))
		path := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("haproxy", "-c", "-f", path).CombinedOutput(); err != nil {
			t.Errorf("%s: haproxy -c: %v\n%s", b, err, out)
		}
	}
}

// promFiles stands in for the files Prometheus and Alertmanager configs
// name under /etc.
func promFiles(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"roost.token", "roost-ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rules, err := filepath.Abs("../packaging/prometheus/roost-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("/etc/prometheus/", dir+"/", "/etc/alertmanager/", dir+"/",
		"/usr/share/roost/prometheus/roost-rules.yml", rules).Replace(body)
}

func TestDocsPrometheusAndAlertmanagerConfigs(t *testing.T) {
	check := func(b mailcluster.DocBlock, name string, args ...string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "config.yml")
		if err := os.WriteFile(path, []byte(promFiles(t, b.Body)), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(name, append(args, path)...).CombinedOutput(); err != nil {
			t.Errorf("%s: %s %s: %v\n%s", b, name, strings.Join(args, " "), err, out)
		}
	}
	for _, b := range docBlocksOf(t, "prometheus-config", "") {
		check(b, "promtool", "check", "config")
	}
	for _, b := range docBlocksOf(t, "prometheus-rules", "") {
		check(b, "promtool", "check", "rules")
	}
	for _, b := range docBlocksOf(t, "alertmanager-config", "") {
		check(b, "amtool", "check-config")
	}
}

// Every nodectl and roostd command in the guide's shell blocks exists,
// and takes the flags it is shown with (its --help lists them).
func TestDocsCommandsMatchTheirHelp(t *testing.T) {
	bin := buildBinaries(t)
	usage := regexp.MustCompile(`(?m)^Usage:\n  (.*)$`)
	n := 0
	for _, b := range docBlocksOf(t, "sh", "") {
		for _, line := range strings.Split(b.Body, "\n") {
			line, _, _ = strings.Cut(line, "#")
			args := shellWords(line)
			if len(args) == 0 || (args[0] != "nodectl" && args[0] != "roostd") {
				continue
			}
			n++
			out, err := exec.Command(filepath.Join(bin, args[0]), append(args[1:], "--help")...).CombinedOutput()
			m := usage.FindStringSubmatch(string(out))
			if err != nil || m == nil {
				t.Errorf("%s: %s --help: %v\n%s", b, line, err, out)
				continue
			}
			// The Usage line names the command: its words must be the ones
			// the guide typed (an unknown verb gets its parent's usage).
			var path []string
			for _, w := range strings.Fields(m[1]) {
				if strings.ToLower(w) != w || strings.HasPrefix(w, "[") {
					break
				}
				path = append(path, w)
			}
			if len(path) > len(args) || strings.Join(path, " ") != strings.Join(args[:len(path)], " ") || len(path) < 2 {
				t.Errorf("%s: %q is not a command (its --help is for %q)", b, line, strings.Join(path, " "))
				continue
			}
			for _, a := range args[len(path):] {
				if flag, _, _ := strings.Cut(a, "="); strings.HasPrefix(flag, "--") && !strings.Contains(string(out), flag+" ") {
					t.Errorf("%s: %q: %s --help has no %s", b, line, strings.Join(path, " "), flag)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d nodectl or roostd commands found in docs/", n)
	}
}

// shellWords splits a command line on spaces, keeping quoted words whole.
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	quote, in := rune(0), false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// Every Dovecot block of the guide is valid Dovecot 2.3 configuration, as
// doveconf reads it (the Roost settings and the SQL passdb also run in the
// end-to-end cluster and TestDocsMySQLPassdbLogsIn).
func TestDocsDovecotBlocksParse(t *testing.T) {
	for _, b := range docBlocksOf(t, "dovecot", "") {
		path := filepath.Join(t.TempDir(), "dovecot.conf")
		if err := os.WriteFile(path, []byte("ssl = no\n"+b.Body), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("doveconf", "-n", "-c", path).CombinedOutput(); err != nil {
			t.Errorf("%s: doveconf -n: %v\n%s", b, err, out)
		}
	}
}

// Every Dovecot 2.4 block of the guide is valid 2.4 configuration, as
// 2.4's doveconf reads it, after the version lines that 2.4 requires
// first (one block is those lines).
func TestDocsDovecot24BlocksParse(t *testing.T) {
	blocks := docBlocksOf(t, "dovecot24", "")
	if len(blocks) < 6 {
		t.Fatalf("%d dovecot24 blocks in the guide, want the version lines, three SQL passdbs, the Roost settings and the mail location", len(blocks))
	}
	for _, b := range blocks {
		body := b.Body
		if !strings.HasPrefix(body, "dovecot_config_version") {
			body = blocks[0].Body + "ssl = no\n" + body
		}
		dir, err := os.MkdirTemp("/tmp", "roost-doc24-") // under /tmp: the 2.4 root sees it
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "dovecot.conf")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := dovecotlab.Command("2.4", "doveconf", "-n", "-c", path).CombinedOutput(); err != nil {
			t.Errorf("%s: Dovecot 2.4's doveconf -n: %v\n%s", b, err, out)
		}
	}
}

// The guide's MySQL/MariaDB passdb query, on a real MariaDB: a user logs in
// through Dovecot 2.3 and 2.4 with it (PostgreSQL's and SQLite's run the
// end-to-end cluster).
func TestDocsMySQLPassdbLogsIn(t *testing.T) {
	for _, version := range dovecotlab.Versions {
		t.Run(version, func(t *testing.T) { mysqlPassdbLogsIn(t, version) })
	}
}

func mysqlPassdbLogsIn(t *testing.T, version string) {
	db := routingtest.Open(t, "mysql")
	db.Exec(t, `CREATE TABLE users (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255) NOT NULL, proxy_host VARCHAR(255))`)
	db.Exec(t, `INSERT INTO users VALUES (?, ?, ?)`, "o'brien@example.test", "{PLAIN}"+mailcluster.Password, "127.0.0.1")
	cfg, err := mysql.ParseDSN(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	ports := dovecotlab.FreePorts(t)
	var conf string
	if version == "2.4" {
		conf, err = mailcluster.FitSQL24(docBlocksOf(t, "dovecot24", "sql-mysql")[0].Body, cfg.Addr, [][2]string{{"dbname", cfg.DBName}, {"user", cfg.User}}, ports)
	} else {
		conf, err = mailcluster.FitSQL(docBlocksOf(t, "dovecot-sql", "mysql")[0].Body, fmt.Sprintf("host=%s dbname=%s user=%s", cfg.Addr, cfg.DBName, cfg.User), ports)
	}
	if err != nil {
		t.Fatal(err)
	}
	d := dovecotlab.StartWith(t, "maria", dovecotlab.Options{Ports: ports, SQLConf: conf, Version: version})
	s, err := mailcluster.LoginAt(d.IMAP, "o'brien@example.test", mailcluster.Password, 10*time.Second)
	if err != nil {
		t.Fatalf("login with the guide's MySQL passdb: %v\n%s", err, d.Log())
	}
	s.Close()
	if s.Node != "maria" {
		t.Fatalf("served by %q, want this node (auth_proxy_self, proxy_maybe)", s.Node)
	}
	if _, err := mailcluster.LoginAt(d.IMAP, "o'brien@example.test", "wrong", 10*time.Second); err == nil {
		t.Fatal("a wrong password logs in: the query does not check it")
	}
}
