package health

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// roostd probe's checks come from Build: an entry the agent's
// configuration would refuse is refused with the same words, and one it
// takes is the agent's check.
func TestBuildIsTheAgentsCheck(t *testing.T) {
	for want, cc := range map[string]CheckConfig{
		`addr "nope"`:                     {Protocol: "lmtp", Addr: "nope", Timeout: time.Second},
		`tls "ssl"`:                       {Protocol: "imap", Addr: "127.0.0.1:143", TLS: "ssl", Timeout: time.Second},
		"login: only imap and pop3":       {Protocol: "lmtp", Addr: "127.0.0.1:24", Login: "u", PasswordFile: "/dev/null", Timeout: time.Second},
		"api_key_file: ":                  {Protocol: "doveadm", Addr: "http://127.0.0.1:8080", APIKeyFile: "/nonexistent/key", Timeout: time.Second},
		"want the doveadm HTTP API's URL": {Protocol: "doveadm", Addr: "127.0.0.1:8080", APIKeyFile: "/dev/null", Timeout: time.Second},
	} {
		if _, err := cc.Build(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error containing %q", cc, err, want)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	check, err := CheckConfig{Protocol: "lmtp", Addr: addr, Timeout: time.Second}.Build()
	if err != nil {
		t.Fatal(err)
	}
	if err := WithTimeout(check, time.Second)(context.Background()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("an LMTP check of a closed port: %v, want connection refused", err)
	}
}
