// Package dovecot drops and lists mail sessions through doveadm: the HTTP
// API of a Dovecot (many commands in one request), or the local doveadm
// command where no API is configured. Kicks are asynchronous in Dovecot:
// a kicked session may still be listed for a moment, so callers that
// must see a node empty poll Who or ProxyList (see WaitGone).
//
// It speaks Dovecot 2.3 and 2.4, told apart by what the server answers
// (or set by version). 2.4 merged proxyKick into kick (mask, destHost)
// and proxyList into who (proxied sessions are rows of a login service,
// told apart by dest_ip with separateConnections); its doveadm crashes on
// two users in one kick, so every kick names one user.
package dovecot

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Admin is what Roost does to a Dovecot's sessions.
type Admin interface {
	// Kick ends the sessions of users on this Dovecot as their backend
	// (their mail processes), and returns how many users had some. Users
	// without sessions are not an error: kicks are idempotent. Over the
	// HTTP API, a name that is not AsMask or not UTF-8 is left out (the
	// node's sweep ends its sessions).
	Kick(ctx context.Context, users []string) (int, error)
	// ProxyKick ends the sessions this Dovecot proxies for users to
	// host, their old backend (any host if empty; Dovecot 2.3 always
	// ends them whatever their host), and returns how many connections
	// it closed. Names 2.4's kick would read as a mask (not AsMask), and
	// over HTTP names that are not UTF-8, are left out: their sessions end
	// with their backend's.
	ProxyKick(ctx context.Context, users []string, host string) (int, error)
	// ProxyKickHost ends every session this Dovecot proxies to host: for
	// a dead or hung backend.
	ProxyKickHost(ctx context.Context, host string) (int, error)
	// Who lists the sessions this Dovecot serves as backend: never the
	// login processes that proxy (Dovecot 2.4 lists them too).
	Who(ctx context.Context) ([]Session, error)
	// ProxyList lists the sessions this Dovecot proxies.
	ProxyList(ctx context.Context) ([]ProxySession, error)
	// FlushAuthCache drops users' cached passdb answers (which hold their
	// old proxy host), or the whole cache when users is empty, and
	// returns how many entries went.
	FlushAuthCache(ctx context.Context, users []string) (int, error)
}

// Session is one user's sessions of one service on a backend.
type Session struct {
	User        string
	Service     string
	Connections int
	PIDs        []int
	IPs         []string
}

// ProxySession is one proxied connection.
type ProxySession struct {
	User, Service, SourceIP, DestIP, DestPort string
}

// headerRow is what Dovecot 2.3's proxy list prints between its rows, in
// text and in the HTTP API alike.
var headerRow = ProxySession{User: "username", Service: "service", SourceIP: "src-ip", DestIP: "dest-ip", DestPort: "dest-port"}

// Config says how to reach a Dovecot's doveadm.
type Config struct {
	// URL of the doveadm HTTP API, e.g. http://127.0.0.1:8080/doveadm/v1.
	// For https, Dovecot's listener is still named "http", with ssl = yes
	// (Dovecot 2.3 speaks its own protocol on a listener of another name).
	// Empty: run the local doveadm command.
	URL string `yaml:"url"`
	// APIKeyFile holds doveadm_api_key; PasswordFile doveadm_password (for
	// basic auth as user doveadm). One of them with url.
	APIKeyFile   string `yaml:"api_key_file"`
	PasswordFile string `yaml:"password_file"`
	// CAFile verifies an https URL's certificate (system roots if empty).
	CAFile string `yaml:"ca_file"`
	// Timeout bounds one request or command.
	Timeout time.Duration `yaml:"timeout"`
	// Doveadm and DovecotConfig are the local command and its -c file,
	// for the fallback.
	Doveadm       string `yaml:"doveadm"`
	DovecotConfig string `yaml:"dovecot_config"`
	// Version is the Dovecot's doveadm dialect: "2.3", "2.4", or "auto"
	// (or empty) to ask the server once.
	Version string `yaml:"version"`
	// InstanceName is the Dovecot's instance_name, the prefix of its
	// processes' titles ("dovecot" by default): a local kick signals only
	// processes that carry it.
	InstanceName string `yaml:"instance_name"`
	// BatchSize is the kick commands per HTTP request; Parallel the
	// requests in flight at once.
	BatchSize int `yaml:"batch_size"`
	Parallel  int `yaml:"parallel"`
}

// DefaultConfig is the local doveadm with Dovecot's own configuration.
func DefaultConfig() Config {
	return Config{Timeout: 30 * time.Second, Doveadm: "doveadm", Version: "auto", InstanceName: "dovecot", BatchSize: 100, Parallel: 4}
}

// Validate reports the first problem, naming the key.
func (c Config) Validate() error {
	switch {
	case c.URL != "" && !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://"):
		return fmt.Errorf("url %q: want http:// or https://", c.URL)
	case c.URL != "" && c.APIKeyFile == "" && c.PasswordFile == "":
		return errors.New("url is set: set api_key_file (doveadm_api_key) or password_file (doveadm_password)")
	case c.APIKeyFile != "" && c.PasswordFile != "":
		return errors.New("api_key_file and password_file: set one")
	case c.URL == "" && c.Doveadm == "":
		return errors.New("neither url nor doveadm is set")
	case c.Version != "" && c.Version != "auto" && c.Version != "2.3" && c.Version != "2.4":
		return fmt.Errorf("version %q: want auto, 2.3 or 2.4", c.Version)
	case c.InstanceName == "" || strings.ContainsAny(c.InstanceName, "/\x00"):
		return fmt.Errorf("instance_name %q: want Dovecot's instance_name (default dovecot)", c.InstanceName)
	case c.Timeout <= 0:
		return fmt.Errorf("timeout %s: want > 0", c.Timeout)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("batch_size %d: want 1..10000", c.BatchSize)
	case c.Parallel < 1 || c.Parallel > 64:
		return fmt.Errorf("parallel %d: want 1..64", c.Parallel)
	}
	return nil
}

// New returns the HTTP client when a URL is configured, else the local
// command.
func New(c Config) (Admin, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.URL != "" {
		return NewHTTP(c)
	}
	return NewLocal(c), nil
}

// exitNobody is doveadm's EX_NOUSER: the kick matched nobody (2.3; 2.4
// answers count 0).
const exitNobody = 68

// dialect is the doveadm a Dovecot speaks.
type dialect int

const (
	v23 dialect = iota + 1
	v24
)

// versionDialect is the dialect a version key sets, 0 for auto.
func versionDialect(v string) dialect {
	switch v {
	case "2.3":
		return v23
	case "2.4":
		return v24
	}
	return 0
}

// dialectOnce asks the server its dialect once, after the first answer;
// a failed ask is asked again next time.
type dialectOnce struct {
	mu sync.Mutex
	d  dialect
}

func (o *dialectOnce) get(ctx context.Context, ask func(context.Context) (dialect, error)) (dialect, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.d != 0 {
		return o.d, nil
	}
	d, err := ask(ctx)
	if err != nil {
		return 0, fmt.Errorf("telling Dovecot 2.3 from 2.4 (set version to skip this): %w", err)
	}
	o.d = d
	return d, nil
}

// isLogin reports whether a service is a login process: in Dovecot 2.4's
// who, the rows of the sessions it proxies.
func isLogin(service string) bool { return strings.HasSuffix(service, "-login") }

// AsMask reports whether doveadm's kick reads user as that one name. It
// does not when the name holds a wildcard (* or ?), which kick matches
// against every session, or looks like an address or a network, which
// kick takes as one. Roost never sends such a name as a kick mask: the
// node's own agent ends those sessions by signal, matching names exactly
// (SignalKick, the sweep).
func AsMask(user string) bool {
	if strings.ContainsAny(user, "*?") {
		return false
	}
	bare := strings.TrimSuffix(strings.TrimPrefix(user, "["), "]")
	if _, err := netip.ParseAddr(bare); err == nil {
		return false
	}
	if _, err := netip.ParsePrefix(bare); err == nil {
		return false
	}
	return true
}

// ByHTTPKick reports whether a kick over the doveadm HTTP API ends user's
// sessions and no one else's: a name that is AsMask and that JSON carries.
func ByHTTPKick(user string) bool { return AsMask(user) && inJSON(user) }

// inJSON reports whether user goes into a doveadm HTTP request as itself:
// JSON carries only UTF-8 (Go's encoder replaces other bytes, and 2.4's
// parser refuses them).
func inJSON(user string) bool { return utf8.ValidString(user) }

// only returns the users that keep passes.
func only(users []string, keep func(string) bool) []string {
	out := make([]string, 0, len(users))
	for _, u := range users {
		if keep(u) {
			out = append(out, u)
		}
	}
	return out
}

// WaitGone polls until none of users has a session on a, as backend and
// as proxy, or ctx ends; it returns the users still there then.
func WaitGone(ctx context.Context, a Admin, users []string, every time.Duration) ([]string, error) {
	want := make(map[string]bool, len(users))
	for _, u := range users {
		want[u] = true
	}
	for {
		left := map[string]bool{}
		ss, err := a.Who(ctx)
		if err == nil {
			for _, s := range ss {
				if want[s.User] {
					left[s.User] = true
				}
			}
			var ps []ProxySession
			if ps, err = a.ProxyList(ctx); err == nil {
				for _, p := range ps {
					if want[p.User] {
						left[p.User] = true
					}
				}
			}
		}
		if err == nil && len(left) == 0 {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			var out []string
			for u := range left {
				out = append(out, u)
			}
			if err == nil {
				err = ctx.Err()
			}
			return out, err
		case <-time.After(every):
		}
	}
}

// UsersWithSessions lists, once each, the users with a session on
// admin's Dovecot; LMTP deliveries are left out, to finish.
func UsersWithSessions(ctx context.Context, admin Admin) ([]string, error) {
	sessions, err := admin.Who(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var users []string
	for _, s := range sessions {
		if s.Service != "lmtp" && !seen[s.User] {
			seen[s.User] = true
			users = append(users, s.User)
		}
	}
	return users, nil
}
