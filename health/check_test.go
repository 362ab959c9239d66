package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/roost-mail/roost/certs"
)

// listen serves each connection with handle on 127.0.0.1 until the test
// ends. These are the hostile (or scripted) peers of the checks.
func listen(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return ln.Addr().String()
}

// imapServer speaks just enough IMAP: a greeting after delay, LOGIN with
// one password, LIST, LOGOUT, STARTTLS when tlsCfg is set.
func imapServer(delay time.Duration, password string, tlsCfg *tls.Config) func(net.Conn) {
	return func(c net.Conn) {
		time.Sleep(delay)
		w := func(s string) { _, _ = c.Write([]byte(s + "\r\n")) }
		w("* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			switch strings.ToUpper(f[1]) {
			case "STARTTLS":
				w(f[0] + " OK Begin TLS negotiation now.")
				tc := tls.Server(c, tlsCfg)
				if tc.Handshake() != nil {
					return
				}
				c, r = tc, bufio.NewReader(tc)
			case "LOGIN":
				if len(f) == 4 && f[3] == `"`+password+`"` {
					w(f[0] + " OK Logged in")
				} else {
					w(f[0] + " NO [AUTHENTICATIONFAILED] Authentication failed.")
				}
			case "LIST":
				w(`* LIST (\HasNoChildren) "." INBOX`)
				w(f[0] + " OK List completed")
			case "LOGOUT":
				w("* BYE Logging out")
				w(f[0] + " OK Logout completed.")
				return
			}
		}
	}
}

const timeout = 500 * time.Millisecond

// run runs a check with the test timeout and fails the test if it
// overran the deadline.
func run(t *testing.T, c Check) error {
	t.Helper()
	start := time.Now()
	err := WithTimeout(c, timeout)(context.Background())
	if d := time.Since(start); d > timeout+200*time.Millisecond {
		t.Fatalf("check took %v with a %v timeout", d, timeout)
	}
	return err
}

func TestHostileListeners(t *testing.T) {
	closed := func() string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}()
	login := &Login{User: "probe", Password: "right"}
	tenMB := []byte("* OK " + strings.Repeat("x", 10<<20) + "\r\n") // made before any check measures its memory
	for _, tc := range []struct {
		name  string
		addr  string
		login *Login
		want  string // "" means healthy
	}{
		{"healthy", listen(t, imapServer(0, "right", nil)), login, ""},
		{"connection refused", closed, nil, "connect: dial tcp"},
		{"accepts, never greets", listen(t, func(c net.Conn) { time.Sleep(2 * time.Second) }), nil, "greeting: timed out"},
		{"greets with garbage", listen(t, func(c net.Conn) { c.Write([]byte("SSH-2.0-OpenSSH\r\n")) }), nil, `greeting: unexpected "SSH-2.0-OpenSSH", then the connection ended`},
		{"says BYE", listen(t, func(c net.Conn) { c.Write([]byte("* BYE Too many connections\r\n")) }), nil, `greeting: refused: "* BYE Too many connections"`},
		{"wrong password", listen(t, imapServer(0, "other", nil)), login, "LOGIN (credentials): refused"},
		{"slow greeting under the timeout", listen(t, imapServer(250*time.Millisecond, "right", nil)), nil, ""},
		{"slow greeting over the timeout", listen(t, imapServer(650*time.Millisecond, "right", nil)), nil, "greeting: timed out"},
		{"streams without a newline", listen(t, func(c net.Conn) {
			chunk := []byte(strings.Repeat("A", 64<<10))
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}), nil, "greeting: a line over 4096 bytes"},
		{"a 10 MB line", listen(t, func(c net.Conn) { c.Write(tenMB) }), nil, "greeting: a line over 4096 bytes"},
		{"greets a byte a second", listen(t, func(c net.Conn) {
			for _, b := range []byte("* OK ready\r\n") {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}), nil, "greeting: timed out"},
		// The reset may come before the dial returns or while it reads.
		{"resets", listen(t, func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }), nil, "connection reset by peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := run(t, IMAP(Dialogue{Addr: tc.addr}, tc.login))
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
				t.Errorf("the check allocated %d MiB: reads are not bounded", grew>>20)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want healthy", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "right") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

func testTLS(t *testing.T) (server *tls.Config, client *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.CreateCA(dir, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, err := ca.Issue(dir, "mail.test", certs.Server, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := certs.LoadPool(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}}, &tls.Config{RootCAs: pool}
}

func TestTLSAndStartTLS(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	plain := listen(t, imapServer(0, "right", srvTLS))
	implicit := listen(t, func(c net.Conn) {
		tc := tls.Server(c, srvTLS)
		if tc.Handshake() == nil {
			imapServer(0, "right", nil)(tc)
		}
	})
	login := &Login{User: "probe", Password: "right"}
	if err := run(t, IMAP(Dialogue{Addr: plain, TLS: TLSStart, TLSConfig: cliTLS}, login)); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	if err := run(t, IMAP(Dialogue{Addr: implicit, TLS: TLSImplicit, TLSConfig: cliTLS}, login)); err != nil {
		t.Fatalf("implicit TLS: %v", err)
	}
	// A certificate from an unknown CA fails; so does TLS against plain.
	if err := run(t, IMAP(Dialogue{Addr: implicit, TLS: TLSImplicit, TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}}, nil)); err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		t.Fatalf("untrusted certificate: got %v", err)
	}
	if err := run(t, IMAP(Dialogue{Addr: plain, TLS: TLSImplicit, TLSConfig: cliTLS}, nil)); err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		t.Fatalf("TLS to a plain listener: got %v", err)
	}
	// Checks explicitly off: any certificate passes.
	if err := run(t, IMAP(Dialogue{Addr: implicit, TLS: TLSImplicit, TLSConfig: &tls.Config{InsecureSkipVerify: true}}, nil)); err != nil {
		t.Fatalf("certificate checks off: %v", err)
	}
}

func TestProxyProtocolHeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A listener that requires the header, as Dovecot's haproxy = yes does.
	pl := &proxyproto.Listener{Listener: ln, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }}
	done := make(chan struct{})
	t.Cleanup(func() { pl.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); imapServer(0, "x", nil)(c) }()
		}
	}()
	if err := run(t, IMAP(Dialogue{Addr: ln.Addr().String(), ProxyHeader: true}, nil)); err != nil {
		t.Fatalf("with a PROXY header: %v", err)
	}
	if err := run(t, IMAP(Dialogue{Addr: ln.Addr().String()}, nil)); err == nil {
		t.Fatal("without the PROXY header a header-only listener answered")
	}
}

func TestOtherProtocols(t *testing.T) {
	script := func(greeting string, answers map[string]string) func(net.Conn) {
		return func(c net.Conn) {
			c.Write([]byte(greeting))
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				cmd := strings.ToUpper(strings.Fields(line + " x")[0])
				c.Write([]byte(answers[cmd]))
				if cmd == "QUIT" || cmd == "LOGOUT" {
					return
				}
			}
		}
	}
	pop := listen(t, script("+OK Dovecot ready.\r\n", map[string]string{"USER": "+OK\r\n", "PASS": "+OK Logged in.\r\n", "STAT": "+OK 0 0\r\n", "QUIT": "+OK Logging out.\r\n"}))
	popBad := listen(t, script("+OK Dovecot ready.\r\n", map[string]string{"USER": "+OK\r\n", "PASS": "-ERR [AUTH] Authentication failed.\r\n"}))
	lmtp := listen(t, script("220 node1 Dovecot ready.\r\n", map[string]string{"LHLO": "250-node1\r\n250-8BITMIME\r\n250 PIPELINING\r\n", "QUIT": "221 2.0.0 OK\r\n"}))
	lmtpBad := listen(t, script("421 4.3.2 Shutting down\r\n", nil))
	sub := listen(t, script("220 node1 ESMTP\r\n", map[string]string{"EHLO": "250-node1\r\n250 AUTH PLAIN\r\n", "QUIT": "221 Bye\r\n"}))
	sieve := listen(t, script("\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n\"SIEVE\" \"fileinto\"\r\nOK \"Dovecot ready.\"\r\n", map[string]string{"LOGOUT": "OK \"Logout completed.\"\r\n"}))
	login := &Login{User: "u", Password: "secret"}
	for name, tc := range map[string]struct {
		check Check
		want  string
	}{
		"pop3":            {POP3(Dialogue{Addr: pop}, login), ""},
		"pop3 bad pass":   {POP3(Dialogue{Addr: popBad}, login), "PASS (credentials): refused"},
		"lmtp":            {LMTP(Dialogue{Addr: lmtp}), ""},
		"lmtp 421":        {LMTP(Dialogue{Addr: lmtpBad}), "greeting: refused: \"421"},
		"submission":      {Submission(Dialogue{Addr: sub}), ""},
		"managesieve":     {ManageSieve(Dialogue{Addr: sieve}), ""},
		"lmtp is no imap": {IMAP(Dialogue{Addr: lmtp}, nil), "greeting"},
	} {
		err := run(t, tc.check)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}

func TestDoveadmAndCommand(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "X-Dovecot-API "+base64.StdEncoding.EncodeToString([]byte("key")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`[{"command":"kick","parameters":[]}]`))
	}))
	defer srv.Close()
	if err := run(t, Doveadm(srv.URL, "key", nil)); err != nil {
		t.Fatalf("doveadm: %v", err)
	}
	if err := run(t, Doveadm(srv.URL, "wrong", nil)); err == nil || !strings.Contains(err.Error(), "refused the key") {
		t.Fatalf("doveadm wrong key: %v", err)
	}
	if err := run(t, Command("exit 0")); err != nil {
		t.Fatal(err)
	}
	if err := run(t, Command("echo disk quota near; exit 2")); err == nil || !strings.Contains(err.Error(), "disk quota near") {
		t.Fatalf("failing command: %v", err)
	}
	if err := run(t, Command("sleep 10")); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("hanging command: %v", err)
	}
}

func TestTracker(t *testing.T) {
	boom := errors.New("connect: refused")
	now := time.Unix(0, 0)
	type obs struct {
		err       error
		immediate bool
		want      Status
		changed   bool
	}
	for name, seq := range map[string][]obs{
		"fall 3":                          {{boom, false, Passing, false}, {boom, false, Passing, false}, {boom, false, Critical, true}, {boom, false, Critical, false}},
		"a success resets the fall count": {{boom, false, Passing, false}, {boom, false, Passing, false}, {nil, false, Passing, false}, {boom, false, Passing, false}, {boom, false, Passing, false}, {boom, false, Critical, true}},
		"rise 2":                          {{boom, true, Critical, true}, {nil, false, Critical, false}, {boom, false, Critical, false}, {nil, false, Critical, false}, {nil, false, Passing, true}},
		"immediate":                       {{nil, false, Passing, false}, {boom, true, Critical, true}},
	} {
		tr := NewTracker(3, 2)
		for i, o := range seq {
			changed := tr.Observe("imap", SeverityCritical, o.err, o.immediate, now)
			got := tr.Checks()[0]
			if got.Status != o.want || changed != o.changed {
				t.Fatalf("%s step %d: got %s (changed %v), want %s (changed %v)", name, i, got.Status, changed, o.want, o.changed)
			}
		}
	}
	// A mount that is slow (warning), then hung (critical, immediate), then
	// slow again: it escalates at once and comes back to warning at once.
	esc := NewTracker(3, 2)
	for i, o := range []struct {
		sev       Severity
		immediate bool
		want      Status
	}{{SeverityWarning, false, Passing}, {SeverityWarning, false, Passing}, {SeverityWarning, false, Warning}, {SeverityCritical, true, Critical}, {SeverityWarning, false, Warning}} {
		esc.Observe("mount", o.sev, boom, o.immediate, now)
		if got := esc.Checks()[0].Status; got != o.want {
			t.Fatalf("escalation step %d: got %s, want %s", i, got, o.want)
		}
	}

	tr := NewTracker(1, 1)
	tr.Observe("imap", SeverityCritical, nil, false, now)
	tr.Observe("login", SeverityWarning, boom, false, now)
	if st, reasons := tr.Node(); st != Warning || len(reasons) != 1 || reasons[0] != "login: connect: refused" {
		t.Fatalf("a failing warning check: got %s %v", st, reasons)
	}
	tr.Observe("imap", SeverityCritical, boom, false, now)
	tr.Observe("doveadm", SeverityWarning, boom, false, now)
	if st, reasons := tr.Node(); st != Critical || len(reasons) != 3 || !strings.HasPrefix(reasons[0], "imap: ") {
		t.Fatalf("a failing critical check: got %s %v, want the critical reason first", st, reasons)
	}
}
