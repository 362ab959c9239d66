package dovecot

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestRepairReplies(t *testing.T) {
	for in, want := range map[string]string{
		// Dovecot 2.3.19, an unknown command before a kick, verbatim:
		`[["error",{"type":"unknownMethod", "exitCode":0},"c0"]["error",{"type":"exitCode", "exitCode":68},"c1"]]`: `[["error",{"type":"unknownMethod", "exitCode":0},"c0"],["error",{"type":"exitCode", "exitCode":68},"c1"]]`,
		// well-formed answers and brackets inside strings stay as they are
		`[["doveadmResponse",[{"username":"a]["}],"c0"],["doveadmResponse",[],"c1"]]`: `[["doveadmResponse",[{"username":"a]["}],"c0"],["doveadmResponse",[],"c1"]]`,
		`[["doveadmResponse",[{"username":"q\"]["}],"c0"]]`:                           `[["doveadmResponse",[{"username":"q\"]["}],"c0"]]`,
	} {
		got := string(repairReplies([]byte(in)))
		if got != want {
			t.Errorf("repair(%s)\n got %s\nwant %s", in, got, want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("not JSON: %s", got)
		}
	}
}

func TestParseSession(t *testing.T) {
	s := parseSession("bob", "imap", "2", "(19835 19836)", "(127.0.0.1 ::1)")
	if s.User != "bob" || s.Connections != 2 || len(s.PIDs) != 2 || s.PIDs[1] != 19836 || len(s.IPs) != 2 || s.IPs[1] != "::1" {
		t.Fatalf("%+v", s)
	}
}

func TestConfigValidate(t *testing.T) {
	for want, mutate := range map[string]func(*Config){
		`url "ftp://x": want http:// or https://`: func(c *Config) { c.URL = "ftp://x" },
		"url is set: set api_key_file":            func(c *Config) { c.URL = "http://x" },
		"api_key_file and password_file: set one": func(c *Config) { c.URL, c.APIKeyFile, c.PasswordFile = "http://x", "/a", "/b" },
		"batch_size 0":                         func(c *Config) { c.BatchSize = 0 },
		"parallel 100":                         func(c *Config) { c.Parallel = 100 },
		"neither url nor doveadm":              func(c *Config) { c.Doveadm = "" },
		`version "2.5": want auto, 2.3 or 2.4`: func(c *Config) { c.Version = "2.5" },
	} {
		c := DefaultConfig()
		mutate(&c)
		if err := c.Validate(); err == nil || err.Error()[:len(want)] != want {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}

// The command lists of the doveadm HTTP API: kick's parameters tell 2.4
// (destHost, mask) from 2.3 (user mask only; proxyKick takes host).
func TestListDialect(t *testing.T) {
	for in, want := range map[string]dialect{
		`[{"command":"kick","parameters":[{"name":"socketPath","type":"string"},{"name":"passdbField","type":"string"},{"name":"destHost","type":"string"},{"name":"mask","type":"array"}]}]`:                               v24,
		`[{"command":"who","parameters":[]},{"command":"kick","parameters":[{"name":"socketPath","type":"string"},{"name":"mask","type":"array"}]},{"command":"proxyKick","parameters":[{"name":"host","type":"string"}]}]`: v23,
	} {
		if got, err := listDialect([]byte(in)); err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{`[{"command":"who","parameters":[]}]`, `{"command":"kick"}`, ``} {
		if d, err := listDialect([]byte(bad)); err == nil {
			t.Errorf("%q: %v, want an error", bad, d)
		}
	}
}

// Dovecot 2.4's who with separateConnections, as it answered: a served
// session has no dest_ip, a proxied one its backend's.
func TestProxied24(t *testing.T) {
	var rows []map[string]string
	if err := json.Unmarshal([]byte(`[{"username":"u3","service":"imap-login","pid":"10817","ip":"127.0.0.1","dest_ip":"127.0.3.2"},{"username":"u1","service":"imap","pid":"10814","ip":"127.0.0.1","dest_ip":""}]`), &rows); err != nil {
		t.Fatal(err)
	}
	got := proxied24(rows)
	if len(got) != 1 || got[0] != (ProxySession{User: "u3", Service: "imap-login", SourceIP: "127.0.0.1", DestIP: "127.0.3.2"}) {
		t.Fatalf("%+v", got)
	}
}

// A cache flush line must fit Dovecot's auth master connection: every
// chunk's CACHE-FLUSH line (names tab-escaped) is at most authMasterLine
// bytes, the chunks hold every name once in order, and a name too long
// to share a line goes alone.
func TestFlushChunksFitTheAuthMasterLine(t *testing.T) {
	var users []string
	for i := range 300 {
		users = append(users, fmt.Sprintf("user%04d@a-rather-long-mail-domain.example.test", i))
	}
	users = append(users, "tab\there", strings.Repeat("x", 2000), "last")
	chunks := flushChunks(users)
	var all []string
	for _, c := range chunks {
		line := "CACHE-FLUSH\t4294967295"
		for _, u := range c {
			line += "\t" + strings.NewReplacer("\x01", "\x011", "\t", "\x01t", "\r", "\x01r", "\n", "\x01n").Replace(u)
		}
		if len(line)+1 > authMasterLine && len(c) > 1 {
			t.Fatalf("a chunk of %d names makes a %d-byte line, over %d", len(c), len(line)+1, authMasterLine)
		}
		all = append(all, c...)
	}
	if !slices.Equal(all, users) {
		t.Fatal("the chunks do not hold every name once, in order")
	}
	if len(chunks) < 15 {
		t.Fatalf("%d chunks for %d long names: too few to fit", len(chunks), len(users))
	}
	for _, c := range chunks {
		if slices.Contains(c, users[301]) && len(c) != 1 {
			t.Fatal("the 2000-byte name shares its chunk")
		}
	}
}

func TestAsMask(t *testing.T) {
	for user, want := range map[string]bool{
		"alice@example.com": true,
		"o'brien":           true,
		"jürgen":            true,
		"lat\xe9n":          true, // a mask of itself, though JSON cannot carry it
		"a*b":               false,
		"who?":              false,
		"10.0.0.1":          false,
		"10.0.0.0/8":        false,
		"::1":               false,
		"[2001:db8::1]":     false,
		"fe80::/10":         false,
		"10.0.0.1.example":  true,
		"12345":             true,
	} {
		if got := AsMask(user); got != want {
			t.Errorf("AsMask(%q) = %v, want %v", user, got, want)
		}
	}
}
