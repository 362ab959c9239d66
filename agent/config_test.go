package agent_test

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/certs"
)

// etcRoost makes a stand-in for /etc/roost with every file the examples
// name: a gossip key, a CA and certificates for node1..3, an API token.
func etcRoost(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.CreateCA(tlsDir, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node1", "node2", "node3", "api"} {
		if _, _, err := ca.Issue(tlsDir, n, certs.Node, []string{"127.0.0.1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"gossip.key":  agenttest.NewKey() + "\n",
		"api.token":   "0123456789abcdef0123456789abcdef\n",
		"probe.pw":    "probe-password\n",
		"doveadm.key": "doveadm-api-key\n",
		"routing.dsn": "postgres://roost:secret@10.0.0.9:5432/mail\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// checkExample parses a shipped example and checks the files it names, as
// `roostd check-config` does, with /etc/roost pointing at real files.
func checkExample(t *testing.T, name, yaml string) {
	t.Helper()
	if _, err := agent.ParseConfig([]byte(yaml)); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	etc := etcRoost(t)
	cfg, err := agent.ParseConfig([]byte(strings.ReplaceAll(yaml, "/etc/roost/", etc+"/")))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := cfg.CheckFiles(); err != nil {
		t.Fatalf("%s: check-config fails: %v", name, err)
	}
}

func TestShippedExampleConfigIsValid(t *testing.T) {
	b, err := os.ReadFile("../packaging/roost.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "packaging/roost.yaml", string(b))
}

// Every YAML block in the README and docs that looks like a roostd config
// (the guide marks them "yaml roost-config") must pass check-config.
func TestDocumentedConfigsAreValid(t *testing.T) {
	files, _ := filepath.Glob("../docs/*.md")
	files = append(files, "../README.md")
	block := regexp.MustCompile("(?s)```yaml(?: roost-config)?\n(.*?)```")
	found := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range block.FindAllStringSubmatch(string(b), -1) {
			if !strings.Contains(m[1], "node:") {
				continue
			}
			found++
			checkExample(t, f+" block "+string(rune('1'+i)), m[1])
		}
	}
	if found == 0 {
		t.Fatal("no roostd config found in README.md or docs/")
	}
}

// The smallest valid config, which the bad ones below break one key at a time.
const minimal = `
node:
  name: node1
  proxy_host: 10.0.0.1
gossip:
  advertise: 10.0.0.1:7946
  key_file: /etc/roost/gossip.key
raft:
  advertise: 10.0.0.1:7947
  tls:
    ca_file: /etc/roost/tls/ca.pem
    cert_file: /etc/roost/tls/node1.pem
    key_file: /etc/roost/tls/node1-key.pem
`

func TestMinimalConfigAppliesDefaults(t *testing.T) {
	cfg, err := agent.ParseConfig([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	def := agent.DefaultConfig()
	if cfg.Gossip.ProbeInterval != def.Gossip.ProbeInterval || cfg.Raft.BootstrapExpect != 3 || cfg.Raft.HeartbeatTimeout != time.Second || cfg.API.Socket != "/run/roost/roost.sock" {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestBadConfigsNameTheKey(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(minimal, old) {
			t.Fatalf("test bug: %q not in the minimal config", old)
		}
		return strings.Replace(minimal, old, new, 1)
	}
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", minimal + "nodes:\n  x: 1\n", `unknown key "nodes"`},
		{"misspelt nested key", replace("  proxy_host:", "  proxyhost:"), `unknown key "node.proxyhost"`},
		{"misspelt deep key", replace("    ca_file:", "    cafile:"), `unknown key "raft.tls.cafile"`},
		{"bad duration", minimal + "  heartbeat_timeout: 1x\n", `raft.heartbeat_timeout: invalid value "1x"`},
		{"duration without unit", replace("gossip:\n", "gossip:\n  probe_interval: fast\n"), `gossip.probe_interval: invalid value "fast"`},
		{"bad int", minimal + "  bootstrap_expect: three\n", `raft.bootstrap_expect: invalid value "three"`},
		{"bad bool", replace("gossip:\n", "gossip:\n  insecure_plaintext: maybe\n"), `gossip.insecure_plaintext: invalid value "maybe"`},
		{"join not a list", replace("gossip:\n", "gossip:\n  join: {a: b}\n"), "gossip.join"},
		{"missing proxy_host", replace("  proxy_host: 10.0.0.1\n", ""), "node.proxy_host is empty"},
		{"bad node name", replace("name: node1", "name: \"node 1\""), `node.name "node 1"`},
		{"bad role", replace("node:\n", "node:\n  role: backup\n"), `node.role "backup"`},
		{"witness with proxy_host", replace("node:\n", "node:\n  role: witness\n"), `node.proxy_host "10.0.0.1": a witness`},
		{"no gossip key", replace("  key_file: /etc/roost/gossip.key\n", ""), "gossip.key_file is empty"},
		{"key and plaintext", replace("gossip:\n", "gossip:\n  insecure_plaintext: true\n"), "gossip.key_file and insecure_plaintext"},
		{"wildcard without advertise", replace("  advertise: 10.0.0.1:7946\n", ""), `gossip.advertise is empty and bind "0.0.0.0:7946"`},
		{"bad advertise", replace("advertise: 10.0.0.1:7946", "advertise: mail1"), `gossip.advertise "mail1"`},
		{"bad join address", replace("gossip:\n", "gossip:\n  join: [10.0.0.2]\n"), `gossip.join "10.0.0.2"`},
		{"probe timeout over interval", replace("gossip:\n", "gossip:\n  probe_timeout: 2s\n"), "gossip.probe_timeout 2s"},
		{"no raft tls", replace("    ca_file: /etc/roost/tls/ca.pem\n", ""), "raft.tls.ca_file is empty"},
		{"raft tls and plaintext", minimal + "  insecure_plaintext: true\n", "raft.tls and insecure_plaintext"},
		{"bootstrap_expect 2", minimal + "  bootstrap_expect: 2\n", "raft.bootstrap_expect 2"},
		{"bootstrap over voters", minimal + "  bootstrap_expect: 7\n", "raft.bootstrap_expect 7"},
		{"lease over heartbeat", minimal + "  leader_lease_timeout: 2s\n", "raft.leader_lease_timeout 2s"},
		{"election under heartbeat", minimal + "  election_timeout: 100ms\n", "raft.election_timeout 100ms"},
		{"bad log level", minimal + "log:\n  level: loud\n", `log.level "loud"`},
		{"bad log format", minimal + "log:\n  format: xml\n", `log.format "xml"`},
		{"api listen without tls", minimal + "api:\n  listen: 127.0.0.1:7948\n", "api.tls.cert_file and api.tls.key_file are required"},
		{"api listen without token", minimal + "api:\n  listen: 127.0.0.1:7948\n  tls: {cert_file: a, key_file: b}\n", "api.token_file is required"},
		{"no api at all", minimal + "api:\n  socket: \"\"\n", "api.socket and api.listen are both empty"},
		{"not yaml", "node: [\n", "not valid YAML"},
		{"two documents", minimal + "---\nnode: {}\n", "more than one YAML document"},
		{"empty file", "", "node.proxy_host is empty"},
		{"bad health protocol", minimal + "health:\n  checks: [{protocol: smtp, addr: 1.2.3.4:25}]\n", `health.checks[0].protocol "smtp"`},
		{"login without password", minimal + "health:\n  checks: [{protocol: imap, addr: 1.2.3.4:143, login: x}]\n", "health.checks[0].login and password_file go together"},
		{"doveadm without key", minimal + "health:\n  checks: [{protocol: doveadm, addr: http://1.2.3.4:8080}]\n", "health.checks[0].api_key_file is empty"},
		{"same check twice", minimal + "health:\n  checks: [{protocol: lmtp, addr: 1.2.3.4:24}, {protocol: lmtp, addr: 1.2.3.4:24}]\n", `health.checks[1].name "lmtp": used twice`},
		{"health timeout over interval", minimal + "health:\n  timeout: 5s\n", "health.timeout 5s"},
		{"bad fsprobe mount", minimal + "fsprobe:\n  mounts: [{path: relative}]\n", `fsprobe.mounts[0].path "relative"`},
		{"max_failed_fraction NaN", minimal + "failover:\n  max_failed_fraction: .nan\n", "failover.max_failed_fraction NaN"},
		{"max_failed_fraction infinite", minimal + "failover:\n  max_failed_fraction: .inf\n", "failover.max_failed_fraction +Inf"},
		{"fence_after too short", minimal + "failover:\n  fence_after: 10ms\n", "failover.fence_after 10ms"},
		{"unknown failover mode", minimal + "failover:\n  mode: dry\n", `failover.mode "dry": want enforce or dryrun`},
		{"unknown action", minimal + "failover:\n  actions:\n    rebalance: dryrun\n", `failover.actions: "rebalance": want failover, failback or alerts`},
		{"unknown action mode", minimal + "failover:\n  actions:\n    failback: off\n", `failover.actions: failback: "off": want enforce or dryrun`},
		{"fast interval over interval", minimal + "health:\n  fast_interval: 2s\n", "health.fast_interval 2s"},
		{"relative lock dir", minimal + "fsprobe:\n  lock_dir: run/roost\n", `fsprobe.lock_dir "run/roost"`},
		{"a fraction of a rate", minimal + "failover:\n  drain_rate: 2.5\n", "failover.drain_rate: 2.5 is not a whole number"},
		{"a fraction of a check count", minimal + "health:\n  fall: 1.5\n", "health.fall: 1.5 is not a whole number"},
		{"a fraction of a weight", minimal + "lb:\n  weight: 0.5\n", "lb.weight: 0.5 is not a whole number"},
		{"a long bad value is clipped", minimal + "failover:\n  drain_rate: 1." + strings.Repeat("5", 100000) + "\n", "failover.drain_rate: 1.555"},
		{"an hour-long mount probe", minimal + "fsprobe:\n  timeout: 1h\n  slow_threshold: 1s\n", "fsprobe.timeout 1h0m0s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := agent.ParseConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestCheckFilesNamesTheBrokenFile(t *testing.T) {
	etc := etcRoost(t)
	good := strings.ReplaceAll(minimal, "/etc/roost/", etc+"/")
	cases := []struct{ name, yaml, want string }{
		{"missing gossip key", strings.Replace(good, "gossip.key", "nope.key", 1), "nope.key: no such file or directory"},
		{"missing cert", strings.Replace(good, "node1.pem", "node9.pem", 1), "raft.tls: loading"},
		{"random bytes as the gossip key", strings.Replace(good, etc+"/gossip.key", "/dev/urandom", 1), "gossip.key_file: gossip key file /dev/urandom: not a regular file"},
		{"zeros as a doveadm key", good + "dovecot:\n  url: http://127.0.0.1:8080/doveadm/v1\n  api_key_file: /dev/zero\n", "/dev/zero: not a regular file"},
		{"an empty DSN file", good + "routing:\n  driver: sqlite\n  dsn_file: " + filepath.Join(etc, "empty.token") + "\n", "empty.token is empty"},
		{"a FIFO as a password", good + "health:\n  checks: [{protocol: imap, addr: 127.0.0.1:143, login: probe, password_file: " + filepath.Join(etc, "fifo") + "}]\n", "fifo: not a regular file"},
	}
	if err := os.WriteFile(filepath.Join(etc, "empty.token"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(etc, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "short.key"), []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct{ name, yaml, want string }{"short gossip key", strings.Replace(good, "gossip.key", "short.key", 1), "line 1: key size must be 16, 24 or 32 bytes"})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := agent.ParseConfig([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.CheckFiles()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// packaging/roost.yaml, the reference the guide points to, names every key
// the code reads: a key a struct gains without a line in the example fails
// here. Keys of list items (health.checks, alertmanager.rules) must appear
// at least in a commented example.
func TestExampleConfigNamesEveryKey(t *testing.T) {
	raw, err := os.ReadFile("../packaging/roost.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	var walk func(typ reflect.Type, path string, m map[string]any, listed bool)
	walk = func(typ reflect.Type, path string, m map[string]any, listed bool) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			key := strings.TrimPrefix(path+"."+name, ".")
			n++
			var sub map[string]any
			if listed || m == nil {
				if !regexp.MustCompile(`(?m)^[ #-]*` + regexp.QuoteMeta(name) + `:`).Match(raw) {
					t.Errorf("packaging/roost.yaml does not show %s", key)
				}
			} else if v, ok := m[name]; !ok {
				t.Errorf("packaging/roost.yaml lacks %s", key)
			} else {
				sub, _ = v.(map[string]any)
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case ft.Kind() == reflect.Struct && ft.PkgPath() != "time":
				walk(ft, key, sub, listed || m == nil)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), key+"[]", nil, true)
			}
		}
	}
	walk(reflect.TypeOf(agent.Config{}), "", doc, false)
	if n < 80 {
		t.Fatalf("walked only %d keys: the walk is broken", n)
	}
}
