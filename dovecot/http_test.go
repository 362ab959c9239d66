package dovecot

import (
	"encoding/json"
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
		"batch_size 0":            func(c *Config) { c.BatchSize = 0 },
		"parallel 100":            func(c *Config) { c.Parallel = 100 },
		"neither url nor doveadm": func(c *Config) { c.Doveadm = "" },
	} {
		c := DefaultConfig()
		mutate(&c)
		if err := c.Validate(); err == nil || err.Error()[:len(want)] != want {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}
