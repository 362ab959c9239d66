package dovecot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Local runs the doveadm command on this node: the fallback when no HTTP
// API is configured.
type Local struct {
	cfg  Config
	dial dialectOnce
}

// NewLocal returns the local doveadm client.
func NewLocal(c Config) *Local { return &Local{cfg: c} }

// run runs doveadm with args and returns its stdout and exit code; a
// code other than 0 and ok is an error that quotes stderr.
func (l *Local) run(ctx context.Context, ok int, args ...string) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	if l.cfg.DovecotConfig != "" {
		args = append([]string{"-c", l.cfg.DovecotConfig}, args...)
	}
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, l.cfg.Doveadm, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if code != ok {
			return "", code, fmt.Errorf("%s %s: exit %d: %s", l.cfg.Doveadm, strings.Join(args, " "), code, strings.TrimSpace(errb.String()))
		}
	case err != nil:
		return "", 0, fmt.Errorf("%s: %w", l.cfg.Doveadm, err)
	}
	return out.String(), code, nil
}

// Kick ends users' sessions on this node: it lists the sessions once and
// signals their mail processes, as doveadm kick does, instead of one
// doveadm kick per user (each of which lists every session: O(n²)).
func (l *Local) Kick(ctx context.Context, users []string) (int, error) {
	return SignalKick(ctx, l, l.cfg.InstanceName, users)
}

// ProxyKick ends the connections this node proxies for users (to host,
// on 2.4, when host is an address): a list per command on 2.3, one user
// per command on 2.4, whose doveadm crashes on two.
func (l *Local) ProxyKick(ctx context.Context, users []string, host string) (int, error) {
	d, err := l.dialect(ctx)
	if err != nil {
		return 0, err
	}
	size, opts := proxyKickUsers, []string{"proxy", "kick"}
	if d == v24 {
		users = only(users, AsMask) // 2.4's proxy kick is a kick, by mask
		size = 1
		if net.ParseIP(host) != nil {
			opts = append(opts, "-h", host)
		}
	}
	return l.sumRuns(ctx, append(opts, "--"), chunks(users, size))
}

// sumRuns runs doveadm with args and each batch of names in turn, and
// sums the counts they print.
func (l *Local) sumRuns(ctx context.Context, args []string, batches [][]string) (int, error) {
	n := 0
	for _, b := range batches {
		out, _, err := l.run(ctx, 0, append(slices.Clip(args), b...)...)
		if err != nil {
			return n, err
		}
		c, err := leadingInt(out)
		if err != nil {
			return n, err
		}
		n += c
	}
	return n, nil
}

// dialect is what the local doveadm speaks: version, else told once by
// the usage that a kick without arguments prints (2.4's names -h <dest
// host>).
func (l *Local) dialect(ctx context.Context) (dialect, error) {
	if d := versionDialect(l.cfg.Version); d != 0 {
		return d, nil
	}
	return l.dial.get(ctx, func(ctx context.Context) (dialect, error) {
		ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, l.cfg.Doveadm, "kick").CombinedOutput()
		var ee *exec.ExitError
		switch {
		case !errors.As(err, &ee) || ee.ExitCode() != exitUsage:
			return 0, fmt.Errorf("%s kick without arguments: %v, want exit %d and its usage: %.200q", l.cfg.Doveadm, err, exitUsage, out)
		case bytes.Contains(out, []byte("dest host")):
			return v24, nil
		}
		return v23, nil
	})
}

// exitUsage is doveadm's EX_USAGE.
const exitUsage = 64

// ProxyKickHost ends every connection this node proxies to host.
func (l *Local) ProxyKickHost(ctx context.Context, host string) (int, error) {
	out, _, err := l.run(ctx, 0, "proxy", "kick", "-h", host)
	if err != nil {
		return 0, err
	}
	return leadingInt(out)
}

// FlushAuthCache drops users' cached passdb answers, or all of them.
func (l *Local) FlushAuthCache(ctx context.Context, users []string) (int, error) {
	if len(users) == 0 {
		out, _, err := l.run(ctx, 0, "auth", "cache", "flush")
		if err != nil {
			return 0, err
		}
		return leadingInt(out)
	}
	return l.sumRuns(ctx, []string{"auth", "cache", "flush", "--"}, flushChunks(users))
}

// Who lists the sessions this node serves.
func (l *Local) Who(ctx context.Context) ([]Session, error) {
	rows, err := l.table(ctx, 5, "who")
	if err != nil {
		return nil, err
	}
	out := make([]Session, 0, len(rows))
	for _, f := range rows {
		if !isLogin(f[2]) {
			out = append(out, parseSession(f[0], f[2], f[1], f[3], f[4]))
		}
	}
	return out, nil
}

// ProxyList lists the connections this node proxies.
func (l *Local) ProxyList(ctx context.Context) ([]ProxySession, error) {
	d, err := l.dialect(ctx)
	if err != nil {
		return nil, err
	}
	if d == v24 {
		// username, service, pid, ip, dest_ip: one row per connection.
		rows, err := l.table(ctx, 5, "who", "-1")
		if err != nil {
			return nil, err
		}
		var out []ProxySession
		for _, f := range rows {
			if f[4] != "" {
				out = append(out, ProxySession{User: f[0], Service: f[1], SourceIP: f[3], DestIP: f[4]})
			}
		}
		return out, nil
	}
	rows, err := l.table(ctx, 5, "proxy", "list")
	if err != nil {
		return nil, err
	}
	out := make([]ProxySession, 0, len(rows))
	for _, f := range rows {
		if p := (ProxySession{User: f[0], Service: f[1], SourceIP: f[2], DestIP: f[3], DestPort: f[4]}); p != headerRow {
			out = append(out, p)
		}
	}
	return out, nil
}

// table runs a listing with -f tab and returns its rows without the
// header, each with at least cols fields.
func (l *Local) table(ctx context.Context, cols int, args ...string) ([][]string, error) {
	out, _, err := l.run(ctx, 0, append([]string{"-f", "tab"}, args...)...)
	if err != nil {
		return nil, err
	}
	rows, err := parseTable(out, cols)
	if err != nil {
		return nil, fmt.Errorf("doveadm %s: %w", strings.Join(args, " "), err)
	}
	return rows, nil
}

// parseTable reads doveadm's -f tab output: a header line, then rows of
// at least cols tab-separated fields.
func parseTable(out string, cols int) ([][]string, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var rows [][]string
	for _, line := range lines[1:] {
		if line == lines[0] {
			continue // 2.3 repeats the header
		}
		f := strings.Split(line, "\t")
		if len(f) < cols {
			return nil, fmt.Errorf("line %.200q has %d fields, want %d", line, len(f), cols)
		}
		rows = append(rows, f)
	}
	return rows, nil
}

// leadingInt reads "3 connections kicked" and the like ("(null)
// connections kicked" is 2.3's zero).
func leadingInt(out string) (int, error) {
	f := strings.Fields(out)
	if len(f) > 0 && f[0] == "(null)" {
		return 0, nil
	}
	if len(f) == 0 {
		return 0, fmt.Errorf("doveadm printed %q, want a count", out)
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, fmt.Errorf("doveadm printed %q, want a count", out)
	}
	return n, nil
}

// LoginModeProblem says what keeps a Dovecot 2.4 kick from ending the
// sessions this node's login processes proxy, or "" when nothing does (or
// the Dovecot is 2.3, or doveconf is not there to ask): a login service
// of an enabled protocol with restart_request_count = 1, 2.4's default,
// where a login process serves one connection and drops every kick (see
// docs/dovecot.md, "Dovecot 2.4"). It asks doveconf, beside doveadm.
func LoginModeProblem(ctx context.Context, c Config) string {
	doveconf := "doveconf"
	if strings.Contains(c.Doveadm, "/") {
		doveconf = filepath.Join(filepath.Dir(c.Doveadm), "doveconf")
	}
	get := func(key string) (string, bool) {
		ctx, cancel := context.WithTimeout(ctx, c.Timeout)
		defer cancel()
		args := []string{"-h", key}
		if c.DovecotConfig != "" {
			args = append([]string{"-c", c.DovecotConfig}, args...)
		}
		out, err := exec.CommandContext(ctx, doveconf, args...).Output()
		return strings.TrimSpace(string(out)), err == nil
	}
	protocols, ok := get("protocols")
	if !ok {
		return ""
	}
	var bad []string
	for _, p := range strings.Fields(protocols) {
		if p != "imap" && p != "pop3" && p != "submission" {
			continue // lmtp has no login process; managesieve is not proxied by Roost
		}
		if v, ok := get("service/" + p + "-login/restart_request_count"); ok && v == "1" {
			bad = append(bad, p+"-login")
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf("Dovecot 2.4 with restart_request_count = 1 in service %s: a kick ends none of the sessions those login processes proxy; set restart_request_count = unlimited there (docs/dovecot.md, Dovecot 2.4)", strings.Join(bad, ", "))
}
