package tests

import (
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roost-mail/roost/agent/agenttest"
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
		"submission EHLO":        health.Submission(health.Dialogue{Addr: d.Sub}),
		"submission STARTTLS":    health.Submission(health.Dialogue{Addr: d.Sub, TLS: health.TLSStart, TLSConfig: tc}),
		"managesieve greeting":   health.ManageSieve(health.Dialogue{Addr: d.Sieve}),
		"managesieve STARTTLS":   health.ManageSieve(health.Dialogue{Addr: d.Sieve, TLS: health.TLSStart, TLSConfig: tc}),
		"doveadm API":            health.Doveadm(d.HTTP, d.APIKey, nil),
	} {
		if err := check(t, c); err != nil {
			t.Errorf("%s: %v\n", name, err)
		}
	}
	// Dovecot answers a wrong password after auth_failure_delay (2 s), in
	// batches, so up to 4 s: give that check longer, or it reads as a timeout.
	start := time.Now()
	err = health.WithTimeout(health.IMAP(health.Dialogue{Addr: d.IMAP}, &health.Login{User: d.User, Password: "wrong"}), 5*time.Second)(context.Background())
	if err == nil || !strings.Contains(err.Error(), "LOGIN (credentials): refused") {
		t.Errorf("wrong password: got %v after %v, want LOGIN refused\n%s", err, time.Since(start), d.Log())
	}
	for name, tc := range map[string]struct {
		c    health.Check
		want string
	}{
		"unknown CA":                    {health.IMAP(health.Dialogue{Addr: d.IMAPS, TLS: health.TLSImplicit, TLSConfig: &tls.Config{}}, nil), "TLS handshake"},
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

// Dovecot killed with SIGKILL: the node is critical after fall rounds of
// the check; restarted: passing again after rise rounds. Transitions are
// published and logged once each.
func TestHealthRunnerSeesDovecotDieAndReturn(t *testing.T) {
	d := dovecotlab.Start(t, "runner")
	const interval, fall, rise = 200 * time.Millisecond, 3, 5
	logs := &agenttest.SyncBuffer{}
	r, err := health.NewRunner([]health.Spec{{
		Name: "imap", Severity: health.SeverityCritical, Interval: interval, Timeout: interval,
		Check: health.IMAP(health.Dialogue{Addr: d.IMAP}, &health.Login{User: d.User, Password: d.Pass}),
	}}, fall, rise, slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// Let it settle on passing (it starts passing and stays there).
	time.Sleep(3 * interval)
	if rep := r.Report(); rep.Status != health.Passing {
		t.Fatalf("before the kill: %+v", rep)
	}
	waitStatus := func(want health.Status, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < within {
			select {
			case rep := <-r.Updates():
				if rep.Status == want {
					return time.Since(start)
				}
			case <-time.After(50 * time.Millisecond):
			}
		}
		t.Fatalf("not %s within %v: %+v\n%s", want, within, r.Report(), d.Log())
		return 0
	}
	d.Kill9()
	// fall failing rounds, with up to one interval (+10% jitter) each and a
	// round in progress.
	took := waitStatus(health.Critical, time.Duration(fall+2)*interval*11/10)
	t.Logf("critical %v after kill -9 (fall %d × interval %v)", took, fall, interval)
	// Refused, or (while an orphaned login process still holds the
	// listener) a greeting that never comes.
	if rep := r.Report(); len(rep.Reasons) != 1 || !(strings.Contains(rep.Reasons[0], "imap: connect") || strings.Contains(rep.Reasons[0], "imap: greeting")) {
		t.Fatalf("reason: %+v", rep.Reasons)
	}
	d.Start()
	took = waitStatus(health.Passing, time.Duration(rise+2)*interval*11/10)
	t.Logf("passing %v after restart (rise %d × interval %v)", took, rise, interval)
	if n := strings.Count(logs.String(), "health_check_changed"); n != 2 {
		t.Fatalf("%d transition log lines, want 2 (critical, passing):\n%s", n, logs.String())
	}
}
