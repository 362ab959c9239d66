// Package health checks a node's Dovecot services and turns the results
// into the node's status with HAProxy-style fall/rise hysteresis.
package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// Check is one probe of one service. It returns nil when the service is
// healthy and an error saying what is wrong otherwise, and it never runs
// past ctx's deadline. The caller owns timing and hysteresis.
type Check func(ctx context.Context) error

// Step is one exchange of a line-based protocol dialogue: send a line
// (none for the greeting), then read lines until one matches Expect
// (success) or Fail (the service said no).
type Step struct {
	// Name names the step in errors ("LOGIN"); default: Send's first word.
	Name   string
	Send   string
	Expect *regexp.Regexp
	Fail   *regexp.Regexp
	// StartTLS upgrades the connection after this step succeeds.
	StartTLS bool
	// Secret hides Send in error messages (passwords).
	Secret bool
}

// TLSMode is how a check secures its connection.
type TLSMode string

// TLS modes.
const (
	TLSNone     TLSMode = ""
	TLSImplicit TLSMode = "tls"      // TLS from the first byte (imaps, pop3s)
	TLSStart    TLSMode = "starttls" // upgrade with the protocol's STARTTLS
)

// Dialogue is a protocol check: connect, optionally send a PROXY protocol
// header, optionally start TLS, then run the steps.
type Dialogue struct {
	Addr      string
	TLS       TLSMode
	TLSConfig *tls.Config // certificate checks; nil means the system roots
	// ProxyHeader sends a PROXY protocol v2 header first, for listeners
	// that sit behind HAProxy (haproxy = yes in Dovecot).
	ProxyHeader bool
	// Source, when set, is the local IP to connect from (peers probe from
	// their own address, as a client elsewhere would).
	Source string
	Steps  []Step
}

// Check returns the dialogue as a Check.
func (d Dialogue) Check() Check { return d.run }

func (d Dialogue) run(ctx context.Context) error {
	var dialer net.Dialer
	if d.Source != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(d.Source)}
	}
	raw, err := dialer.DialContext(ctx, "tcp", d.Addr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	// Close the connection when ctx ends so a blocked read returns.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	var conn net.Conn = raw
	if d.ProxyHeader {
		if _, err := proxyproto.HeaderProxyFromAddrs(2, raw.LocalAddr(), raw.RemoteAddr()).WriteTo(raw); err != nil {
			return fmt.Errorf("PROXY header: %w", err)
		}
	}
	if d.TLS == TLSImplicit {
		if conn, err = d.handshake(ctx, raw); err != nil {
			return err
		}
	}
	r := bufio.NewReaderSize(conn, maxLine)
	for i, s := range d.Steps {
		if s.Send != "" {
			if _, err := fmt.Fprintf(conn, "%s\r\n", s.Send); err != nil {
				return fmt.Errorf("step %d: sending: %w", i+1, ctxErr(ctx, err))
			}
		}
		if err := expect(r, s); err != nil {
			what := s.Name
			switch {
			case what == "" && s.Send == "":
				what = "greeting"
			case what == "":
				what = strings.Fields(s.Send)[0]
			}
			if s.Secret {
				what += " (credentials)"
			}
			return fmt.Errorf("%s: %w", what, ctxErr(ctx, err))
		}
		if s.StartTLS && d.TLS == TLSStart {
			if conn, err = d.handshake(ctx, conn); err != nil {
				return err
			}
			r = bufio.NewReaderSize(conn, maxLine)
		}
	}
	return nil
}

func (d Dialogue) handshake(ctx context.Context, c net.Conn) (net.Conn, error) {
	cfg := d.TLSConfig
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		host, _, _ := net.SplitHostPort(d.Addr)
		cfg.ServerName = host
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", ctxErr(ctx, err))
	}
	return tc, nil
}

// maxLines and maxLine bound what a check reads of one answer: a
// greeting or a capability list, not a flood. A server (or anything on
// the path) that streams bytes makes the check fail, never the agent grow.
const (
	maxLines = 200
	maxLine  = 4096
)

func expect(r *bufio.Reader, s Step) error {
	last := ""
	for range maxLines {
		b, err := r.ReadSlice('\n')
		line := string(b)
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("a line over %d bytes: %q…", maxLine, clip(line))
		}
		if err != nil {
			if line == "" {
				line = last
			}
			if line != "" {
				return fmt.Errorf("unexpected %q, then the connection ended: %w", clip(strings.TrimSpace(line)), err)
			}
			return fmt.Errorf("no answer: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if s.Fail != nil && s.Fail.MatchString(line) {
			return fmt.Errorf("refused: %q", clip(line))
		}
		if s.Expect.MatchString(line) {
			return nil
		}
		last = line
	}
	return fmt.Errorf("no expected answer (%s) in %d lines", s.Expect, maxLines)
}

// ctxErr names a deadline as a timeout rather than a closed connection.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("timed out: %w", ctx.Err())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("timed out: %w", err)
	}
	return err
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// Login is a test account for a login check.
type Login struct {
	User     string
	Password string
}

var (
	reIMAPGreeting = regexp.MustCompile(`^\* (OK|PREAUTH)`)
	reIMAPBye      = regexp.MustCompile(`^\* BYE`)
	rePOPOK        = regexp.MustCompile(`^\+OK`)
	rePOPErr       = regexp.MustCompile(`^-ERR`)
	reSMTPGreeting = regexp.MustCompile(`^220 `)
	reSMTPOK       = regexp.MustCompile(`^250 `)
	reSMTPErr      = regexp.MustCompile(`^[45]\d\d `)
	reSieveOK      = regexp.MustCompile(`^OK`)
	reSieveErr     = regexp.MustCompile(`^(NO|BYE)`)
)

func imapTagged(tag string) (*regexp.Regexp, *regexp.Regexp) {
	return regexp.MustCompile(`^` + tag + ` OK`), regexp.MustCompile(`^` + tag + ` (NO|BAD)`)
}

// IMAP checks the greeting, optionally STARTTLS and a login with LIST.
func IMAP(d Dialogue, login *Login) Check {
	d.Steps = []Step{{Expect: reIMAPGreeting, Fail: reIMAPBye}}
	if d.TLS == TLSStart {
		ok, no := imapTagged("s1")
		d.Steps = append(d.Steps, Step{Name: "STARTTLS", Send: "s1 STARTTLS", Expect: ok, Fail: no, StartTLS: true})
	}
	if login != nil {
		ok, no := imapTagged("a1")
		d.Steps = append(d.Steps, Step{Name: "LOGIN", Send: "a1 LOGIN " + imapQuote(login.User) + " " + imapQuote(login.Password), Expect: ok, Fail: no, Secret: true})
		ok, no = imapTagged("a2")
		d.Steps = append(d.Steps, Step{Name: "LIST", Send: `a2 LIST "" "INBOX"`, Expect: ok, Fail: no})
	}
	ok, no := imapTagged("a3")
	d.Steps = append(d.Steps, Step{Name: "LOGOUT", Send: "a3 LOGOUT", Expect: ok, Fail: no})
	return d.Check()
}

// IMAPGreeting checks only that the server greets: what peers probe, at
// the least cost to the peer's Dovecot.
func IMAPGreeting(d Dialogue) Check {
	d.Steps = []Step{{Expect: reIMAPGreeting, Fail: reIMAPBye}}
	return d.Check()
}

func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// POP3 checks the greeting, optionally STLS and USER/PASS/STAT.
func POP3(d Dialogue, login *Login) Check {
	d.Steps = []Step{{Expect: rePOPOK, Fail: rePOPErr}}
	if d.TLS == TLSStart {
		d.Steps = append(d.Steps, Step{Send: "STLS", Expect: rePOPOK, Fail: rePOPErr, StartTLS: true})
	}
	if login != nil {
		d.Steps = append(d.Steps,
			Step{Send: "USER " + login.User, Expect: rePOPOK, Fail: rePOPErr},
			Step{Send: "PASS " + login.Password, Expect: rePOPOK, Fail: rePOPErr, Secret: true},
			Step{Send: "STAT", Expect: rePOPOK, Fail: rePOPErr})
	}
	d.Steps = append(d.Steps, Step{Send: "QUIT", Expect: rePOPOK, Fail: rePOPErr})
	return d.Check()
}

// LMTP checks the greeting and LHLO.
func LMTP(d Dialogue) Check {
	d.Steps = []Step{
		{Expect: reSMTPGreeting, Fail: reSMTPErr},
		{Send: "LHLO roost.health", Expect: reSMTPOK, Fail: reSMTPErr},
		{Send: "QUIT", Expect: regexp.MustCompile(`^221`), Fail: reSMTPErr},
	}
	return d.Check()
}

// Submission checks the greeting, EHLO and optionally STARTTLS.
func Submission(d Dialogue) Check {
	d.Steps = []Step{
		{Expect: reSMTPGreeting, Fail: reSMTPErr},
		{Send: "EHLO roost.health", Expect: reSMTPOK, Fail: reSMTPErr},
	}
	if d.TLS == TLSStart {
		d.Steps = append(d.Steps, Step{Send: "STARTTLS", Expect: reSMTPGreeting, Fail: reSMTPErr, StartTLS: true},
			Step{Send: "EHLO roost.health", Expect: reSMTPOK, Fail: reSMTPErr})
	}
	d.Steps = append(d.Steps, Step{Send: "QUIT", Expect: regexp.MustCompile(`^221`), Fail: reSMTPErr})
	return d.Check()
}

// ManageSieve checks the greeting (capabilities ending in OK).
func ManageSieve(d Dialogue) Check {
	d.Steps = []Step{{Expect: reSieveOK, Fail: reSieveErr}}
	if d.TLS == TLSStart {
		d.Steps = append(d.Steps, Step{Send: "STARTTLS", Expect: reSieveOK, Fail: reSieveErr, StartTLS: true},
			Step{Expect: reSieveOK, Fail: reSieveErr}) // capabilities again after TLS
	}
	d.Steps = append(d.Steps, Step{Send: "LOGOUT", Expect: reSieveOK, Fail: reSieveErr})
	return d.Check()
}

// WithTimeout bounds a check by timeout.
func WithTimeout(c Check, timeout time.Duration) Check {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return c(ctx)
	}
}
