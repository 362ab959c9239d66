package health

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/roost-mail/roost/certs"

	"github.com/roost-mail/roost/secret"
)

// Config is the health part of the agent's configuration.
type Config struct {
	// Fall is how many failed rounds in a row make a check fail; Rise how
	// many good ones make it pass again (HAProxy's fall/rise).
	Fall int `yaml:"fall"`
	Rise int `yaml:"rise"`
	// Interval and Timeout are every check's defaults.
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	// FastInterval (HAProxy's fastinter) paces a check, and a peer probe,
	// while its latest result disagrees with its status: after a first
	// failure the next rounds come this soon, so fall failures take about
	// fall × fast_interval rather than fall × interval. 0: interval.
	FastInterval time.Duration `yaml:"fast_interval"`
	// DownInterval (HAProxy's downinter) paces a check while it fails.
	// 0: interval.
	DownInterval time.Duration `yaml:"down_interval"`
	// Checks are this node's Dovecot services.
	Checks []CheckConfig `yaml:"checks"`
	// PeerAddr is the host:port of this node's main IMAP listener that the
	// other agents probe (a greeting), so the cluster knows who can reach
	// it. Empty: peers do not probe this node (a witness).
	PeerAddr string `yaml:"peer_addr"`
	// PeerInterval and PeerTimeout pace the probes of every peer; a peer
	// whose probe failed, that gossip suspects, or that another peer
	// cannot reach is probed at FastInterval until it is settled.
	PeerInterval time.Duration `yaml:"peer_interval"`
	PeerTimeout  time.Duration `yaml:"peer_timeout"`
}

// CheckConfig is one check of a local Dovecot service.
type CheckConfig struct {
	// Name names the check in status and metrics; default: the protocol.
	Name string `yaml:"name"`
	// Protocol is imap, pop3, lmtp, submission, sieve, doveadm or command.
	Protocol string `yaml:"protocol"`
	// Addr is host:port; for doveadm, the HTTP API's base URL.
	Addr string `yaml:"addr"`
	// TLS is "" (plain), "tls" (implicit) or "starttls".
	TLS string `yaml:"tls"`
	// CAFile checks the server certificate; InsecureSkipVerify turns the
	// check off explicitly.
	CAFile             string `yaml:"ca_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	// ProxyHeader sends a PROXY v2 header (a listener with haproxy = yes).
	ProxyHeader bool `yaml:"proxy_header"`
	// Login and PasswordFile: a test account to log in with (imap, pop3),
	// as Dovemon's default check does.
	Login        string `yaml:"login"`
	PasswordFile string `yaml:"password_file"`
	// APIKeyFile holds doveadm_api_key (doveadm).
	APIKeyFile string `yaml:"api_key_file"`
	// Command is a site-specific check run by /bin/sh (command).
	Command string `yaml:"command"`
	// Severity is critical (the node fails) or warning (it only warns).
	Severity string `yaml:"severity"`
	// Interval and Timeout override the section's defaults.
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
}

// DefaultConfig: every second, one-second timeout, fall 3, rise 5.
func DefaultConfig() Config {
	return Config{Fall: 3, Rise: 5, Interval: time.Second, Timeout: time.Second, FastInterval: 200 * time.Millisecond,
		PeerInterval: time.Second, PeerTimeout: 500 * time.Millisecond}
}

var protocols = map[string]bool{"imap": true, "pop3": true, "lmtp": true, "submission": true, "sieve": true, "doveadm": true, "command": true}

// Validate reports the first problem, naming the key (relative to the
// health section) and its value.
func (c Config) Validate() error {
	switch {
	case c.Fall < 1:
		return fmt.Errorf("fall %d: must be at least 1", c.Fall)
	case c.Rise < 1:
		return fmt.Errorf("rise %d: must be at least 1", c.Rise)
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("interval %v: must be at least 10ms", c.Interval)
	case c.Timeout <= 0 || c.Timeout > c.Interval:
		return fmt.Errorf("timeout %v: must be positive and at most interval (%v)", c.Timeout, c.Interval)
	case c.FastInterval != 0 && (c.FastInterval < 10*time.Millisecond || c.FastInterval > c.Interval || c.FastInterval > c.PeerInterval):
		return fmt.Errorf("fast_interval %v: must be 0 (interval) or from 10ms to interval (%v) and peer_interval (%v)", c.FastInterval, c.Interval, c.PeerInterval)
	case c.DownInterval != 0 && c.DownInterval < 10*time.Millisecond:
		return fmt.Errorf("down_interval %v: must be 0 (interval) or at least 10ms", c.DownInterval)
	}
	if c.PeerAddr != "" {
		if _, _, err := net.SplitHostPort(c.PeerAddr); err != nil {
			return fmt.Errorf("peer_addr %q: %w", c.PeerAddr, err)
		}
	}
	if c.PeerInterval < 10*time.Millisecond || c.PeerTimeout <= 0 || c.PeerTimeout > c.PeerInterval {
		return fmt.Errorf("peer_interval %v and peer_timeout %v: want 0 < peer_timeout <= peer_interval", c.PeerInterval, c.PeerTimeout)
	}
	names := map[string]bool{}
	for i, cc := range c.Checks {
		if err := cc.validate(c); err != nil {
			return fmt.Errorf("checks[%d].%w", i, err)
		}
		n := cc.name()
		if names[n] {
			return fmt.Errorf("checks[%d].name %q: used twice; give each check a name", i, n)
		}
		names[n] = true
	}
	return nil
}

func (cc CheckConfig) name() string {
	if cc.Name != "" {
		return cc.Name
	}
	return cc.Protocol
}

func (cc CheckConfig) validate(c Config) error {
	if !protocols[cc.Protocol] {
		return fmt.Errorf("protocol %q: want imap, pop3, lmtp, submission, sieve, doveadm or command", cc.Protocol)
	}
	switch cc.Protocol {
	case "command":
		if cc.Command == "" {
			return errors.New("command is empty")
		}
	case "doveadm":
		if !strings.HasPrefix(cc.Addr, "http://") && !strings.HasPrefix(cc.Addr, "https://") {
			return fmt.Errorf("addr %q: want the doveadm HTTP API's URL, e.g. http://127.0.0.1:8080", cc.Addr)
		}
		if cc.APIKeyFile == "" {
			return errors.New("api_key_file is empty: the doveadm API needs doveadm_api_key")
		}
	default:
		if _, _, err := net.SplitHostPort(cc.Addr); err != nil {
			return fmt.Errorf("addr %q: %w", cc.Addr, err)
		}
	}
	if cc.TLS != "" && cc.TLS != "tls" && cc.TLS != "starttls" {
		return fmt.Errorf("tls %q: want \"\", \"tls\" or \"starttls\"", cc.TLS)
	}
	if (cc.Login == "") != (cc.PasswordFile == "") {
		return errors.New("login and password_file go together")
	}
	if cc.Login != "" && cc.Protocol != "imap" && cc.Protocol != "pop3" {
		return fmt.Errorf("login: only imap and pop3 checks log in, not %s", cc.Protocol)
	}
	if cc.Severity != "" && cc.Severity != string(SeverityCritical) && cc.Severity != string(SeverityWarning) {
		return fmt.Errorf("severity %q: want critical or warning", cc.Severity)
	}
	interval, timeout := cc.intervals(c)
	if timeout > interval {
		return fmt.Errorf("timeout %v: must be at most interval (%v)", timeout, interval)
	}
	return nil
}

func (cc CheckConfig) intervals(c Config) (time.Duration, time.Duration) {
	interval, timeout := c.Interval, c.Timeout
	if cc.Interval > 0 {
		interval = cc.Interval
	}
	if cc.Timeout > 0 {
		timeout = cc.Timeout
	}
	return interval, timeout
}

// Specs builds the checks, reading the files they name.
func (c Config) Specs() ([]Spec, error) {
	var out []Spec
	for i, cc := range c.Checks {
		check, err := cc.build()
		if err != nil {
			return nil, fmt.Errorf("checks[%d]: %w", i, err)
		}
		sev := SeverityCritical
		if cc.Severity == string(SeverityWarning) {
			sev = SeverityWarning
		}
		interval, timeout := cc.intervals(c)
		out = append(out, Spec{Name: cc.name(), Check: check, Severity: sev, Interval: interval, Timeout: timeout,
			FastInterval: min(c.FastInterval, interval), DownInterval: c.DownInterval})
	}
	return out, nil
}

// Build checks cc alone, its interval being its timeout, and builds its
// check, reading the files it names: roostd probe runs the check the agent
// would run for the same entry.
func (cc CheckConfig) Build() (Check, error) {
	if err := cc.validate(Config{Interval: cc.Timeout, Timeout: cc.Timeout}); err != nil {
		return nil, err
	}
	return cc.build()
}

func (cc CheckConfig) build() (Check, error) {
	tc := &tls.Config{InsecureSkipVerify: cc.InsecureSkipVerify}
	if cc.CAFile != "" {
		pool, err := certs.LoadPool(cc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	d := Dialogue{Addr: cc.Addr, TLS: TLSMode(cc.TLS), TLSConfig: tc, ProxyHeader: cc.ProxyHeader}
	var login *Login
	if cc.Login != "" {
		pw, err := secret.Read("password_file", cc.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		login = &Login{User: cc.Login, Password: strings.TrimRight(string(pw), "\r\n")}
	}
	switch cc.Protocol {
	case "imap":
		return IMAP(d, login), nil
	case "pop3":
		return POP3(d, login), nil
	case "lmtp":
		return LMTP(d), nil
	case "submission":
		return Submission(d), nil
	case "sieve":
		return ManageSieve(d), nil
	case "doveadm":
		key, err := secret.Read("api_key_file", cc.APIKeyFile)
		if err != nil {
			return nil, fmt.Errorf("api_key_file: %w", err)
		}
		return Doveadm(cc.Addr, strings.TrimSpace(string(key)), tc), nil
	}
	return Command(cc.Command), nil
}
