package tests

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/certs"
	"github.com/roost-mail/roost/health"
	"github.com/roost-mail/roost/tests/dovecotlab"
)

func check(t *testing.T, c health.Check) error {
	t.Helper()
	start := time.Now()
	err := health.WithTimeout(c, 2*time.Second)(context.Background())
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Fatalf("check took %v with a 2s timeout", d)
	}
	return err
}

// The health checks against real Dovecot 2.3: banners, a test-account
// login with LIST (the password has a quote and a backslash), TLS and
// STARTTLS with a generated certificate, the PROXY protocol listener, POP3,
// LMTP and the doveadm HTTP API.
func TestHealthChecksAgainstDovecot(t *testing.T) {
	d := dovecotlab.Start(t, "health")
	pool, err := certs.LoadPool(d.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: pool}
	login := &health.Login{User: d.User, Password: d.Pass}
	for name, c := range map[string]health.Check{
		"imap banner":            health.IMAP(health.Dialogue{Addr: d.IMAP}, nil),
		"imap login and LIST":    health.IMAP(health.Dialogue{Addr: d.IMAP}, login),
		"imap STARTTLS login":    health.IMAP(health.Dialogue{Addr: d.IMAP, TLS: health.TLSStart, TLSConfig: tc}, login),
		"imaps login":            health.IMAP(health.Dialogue{Addr: d.IMAPS, TLS: health.TLSImplicit, TLSConfig: tc}, login),
		"imap with PROXY header": health.IMAP(health.Dialogue{Addr: d.IMAPPP, ProxyHeader: true}, login),
		"pop3 login and STAT":    health.POP3(health.Dialogue{Addr: d.POP3}, login),
		"pop3 STLS":              health.POP3(health.Dialogue{Addr: d.POP3, TLS: health.TLSStart, TLSConfig: tc}, login),
		"lmtp LHLO":              health.LMTP(health.Dialogue{Addr: d.LMTP}),
		"doveadm API":            health.Doveadm(d.HTTP, d.APIKey, nil),
	} {
		if err := check(t, c); err != nil {
			t.Errorf("%s: %v\n", name, err)
		}
	}
	for name, tc := range map[string]struct {
		c    health.Check
		want string
	}{
		"wrong password": {health.IMAP(health.Dialogue{Addr: d.IMAP}, &health.Login{User: d.User, Password: "wrong"}), "LOGIN (credentials): refused"},
		"unknown CA":     {health.IMAP(health.Dialogue{Addr: d.IMAPS, TLS: health.TLSImplicit, TLSConfig: &tls.Config{}}, nil), "TLS handshake"},
		"PROXY listener without header": {health.IMAP(health.Dialogue{Addr: d.IMAPPP}, nil), "greeting"},
		"doveadm wrong key":             {health.Doveadm(d.HTTP, "wrong-key", nil), "refused the key"},
	} {
		err := check(t, tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
	if t.Failed() {
		t.Logf("dovecot log:\n%s", d.Log())
	}
}
