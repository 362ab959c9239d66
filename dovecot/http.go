package dovecot

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/roost-mail/roost/secret"
)

// HTTP is a client of one Dovecot's doveadm HTTP API.
type HTTP struct {
	cfg  Config
	auth string
	hc   *http.Client
	dial dialectOnce
}

// NewHTTP reads the credentials and returns the client.
func NewHTTP(c Config) (*HTTP, error) {
	h := &HTTP{cfg: c}
	switch {
	case c.APIKeyFile != "":
		key, err := readSecret(c.APIKeyFile, "api_key_file")
		if err != nil {
			return nil, err
		}
		h.auth = "X-Dovecot-API " + base64.StdEncoding.EncodeToString([]byte(key))
	case c.PasswordFile != "":
		pw, err := readSecret(c.PasswordFile, "password_file")
		if err != nil {
			return nil, err
		}
		h.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte("doveadm:"+pw))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", c.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	h.hc = &http.Client{Transport: tr, Timeout: c.Timeout}
	return h, nil
}

func readSecret(path, key string) (string, error) {
	b, err := secret.Read(key, path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Command is one doveadm command: its HTTP name (kick, proxyKick, who…)
// and parameters.
type Command struct {
	Name   string
	Params map[string]any
}

// Reply is one command's answer: rows, or Dovecot's error.
type Reply struct {
	Rows []map[string]string
	Err  *CommandError
}

// CommandError is a command that failed in Dovecot.
type CommandError struct {
	Command  string
	Type     string // exitCode, unknownMethod, invalidRequest…
	ExitCode int
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("doveadm %s: %s %d", e.Command, e.Type, e.ExitCode)
}

// Do sends commands in one request and returns their replies in order.
func (h *HTTP) Do(ctx context.Context, cmds []Command) ([]Reply, error) {
	req := make([][3]any, len(cmds))
	for i, c := range cmds {
		p := c.Params
		if p == nil {
			p = map[string]any{}
		}
		req[i] = [3]any{c.Name, p, "c" + strconv.Itoa(i)}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", h.auth)
	resp, err := h.hc.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("doveadm API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("doveadm API %s: reading the answer: %w", h.cfg.URL, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("doveadm API %s refused the credentials (401): check api_key_file against doveadm_api_key, or password_file against doveadm_password", h.cfg.URL)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("doveadm API %s: %s: %s", h.cfg.URL, resp.Status, bytes.TrimSpace(b))
	}
	return decodeReplies(b, cmds, h.cfg.URL)
}

// decodeReplies reads the API's answer to cmds (url names the API in
// errors).
func decodeReplies(b []byte, cmds []Command, url string) ([]Reply, error) {
	// A reply is [type, payload, tag]. Dovecot 2.3 closes the payload
	// after the first row of a listing that prints row by row (who) and
	// puts the other rows after it: [type, [row1], row2, row3, tag].
	var raw [][]json.RawMessage
	if err := json.Unmarshal(repairReplies(b), &raw); err != nil {
		return nil, fmt.Errorf("doveadm API %s: answer is not a list of replies: %w", url, err)
	}
	if len(raw) != len(cmds) {
		return nil, fmt.Errorf("doveadm API %s: %d replies to %d commands", url, len(raw), len(cmds))
	}
	out := make([]Reply, len(raw))
	for i, r := range raw {
		var kind, tag string
		if len(r) < 3 || json.Unmarshal(r[0], &kind) != nil || json.Unmarshal(r[len(r)-1], &tag) != nil || tag != "c"+strconv.Itoa(i) {
			return nil, fmt.Errorf("doveadm API %s: reply %d is not [type, payload, tag c%d]: %.300s", url, i, i, b)
		}
		switch kind {
		case "doveadmResponse":
			var rows []map[string]any
			if err := json.Unmarshal(r[1], &rows); err != nil {
				return nil, fmt.Errorf("doveadm API %s: %s rows: %w", url, cmds[i].Name, err)
			}
			for _, extra := range r[2 : len(r)-1] {
				var row map[string]any
				if err := json.Unmarshal(extra, &row); err != nil {
					return nil, fmt.Errorf("doveadm API %s: %s row: %w", url, cmds[i].Name, err)
				}
				rows = append(rows, row)
			}
			for _, row := range rows {
				m := make(map[string]string, len(row))
				for k, v := range row {
					m[k] = fmt.Sprint(v)
				}
				out[i].Rows = append(out[i].Rows, m)
			}
		case "error":
			var e struct {
				Type     string `json:"type"`
				ExitCode int    `json:"exitCode"`
			}
			if err := json.Unmarshal(r[1], &e); err != nil {
				return nil, fmt.Errorf("doveadm API %s: %s error: %w", url, cmds[i].Name, err)
			}
			out[i].Err = &CommandError{Command: cmds[i].Name, Type: e.Type, ExitCode: e.ExitCode}
		default:
			return nil, fmt.Errorf("doveadm API %s: reply type %q", url, kind)
		}
	}
	return out, nil
}

// repairReplies puts back the comma that Dovecot 2.3 leaves out after an
// unknownMethod error reply ("…,\"c0\"][\"error\"…"), so one unknown
// command does not make the whole answer unreadable. Only at the top
// level and outside strings.
func repairReplies(b []byte) []byte {
	out := make([]byte, 0, len(b)+8)
	depth, inString, escaped, prev := 0, false, false, byte(0)
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			if c == '[' && depth == 1 && prev == ']' {
				out = append(out, ',')
			}
			depth++
		case c == ']' || c == '}':
			depth--
		}
		out = append(out, c)
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			prev = c
		}
	}
	return out
}

// dialect is what the server speaks: version, else asked once from the
// API's command list (2.4's kick takes destHost).
func (h *HTTP) dialect(ctx context.Context) (dialect, error) {
	if d := versionDialect(h.cfg.Version); d != 0 {
		return d, nil
	}
	return h.dial.get(ctx, h.askDialect)
}

func (h *HTTP) askDialect(ctx context.Context) (dialect, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, h.cfg.URL, nil)
	if err != nil {
		return 0, err
	}
	hr.Header.Set("Authorization", h.auth)
	resp, err := h.hc.Do(hr)
	if err != nil {
		return 0, fmt.Errorf("doveadm API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, fmt.Errorf("doveadm API %s: reading the command list: %w", h.cfg.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("doveadm API %s: command list: %s", h.cfg.URL, resp.Status)
	}
	return listDialect(b)
}

// listDialect reads the API's command list: 2.4's kick takes destHost,
// 2.3's proxyKick takes host.
func listDialect(b []byte) (dialect, error) {
	var cmds []struct {
		Command    string `json:"command"`
		Parameters []struct {
			Name string `json:"name"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal(b, &cmds); err != nil {
		return 0, fmt.Errorf("command list is not a JSON list of commands: %w", err)
	}
	for _, c := range cmds {
		if c.Command != "kick" {
			continue
		}
		for _, p := range c.Parameters {
			if p.Name == "destHost" {
				return v24, nil
			}
		}
		return v23, nil
	}
	return 0, errors.New("the command list has no kick command")
}

// batched sends cmds batch_size to a request, parallel requests at once,
// and returns their replies in order.
func (h *HTTP) batched(ctx context.Context, cmds []Command) ([]Reply, error) {
	out := make([]Reply, len(cmds))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(h.cfg.Parallel)
	for start := 0; start < len(cmds); start += h.cfg.BatchSize {
		batch := cmds[start:min(start+h.cfg.BatchSize, len(cmds))]
		g.Go(func() error {
			replies, err := h.Do(ctx, batch)
			if err != nil {
				return err
			}
			copy(out[start:], replies)
			return nil
		})
	}
	return out, g.Wait()
}

// kickOne is one user's kick: Dovecot takes one mask per kick, and 2.4's
// doveadm crashes on two.
func kickOne(user string) Command {
	return Command{Name: "kick", Params: map[string]any{"mask": []string{user}}}
}

// Kick sends one kick command per user, of those it can name exactly.
func (h *HTTP) Kick(ctx context.Context, users []string) (int, error) {
	users = only(users, ByHTTPKick)
	cmds := make([]Command, len(users))
	for i, u := range users {
		cmds[i] = kickOne(u)
	}
	replies, err := h.batched(ctx, cmds)
	kicked := 0
	for i, r := range replies {
		switch {
		case r.Err == nil && r.Rows == nil && err != nil: // never sent
		case r.Err == nil:
			if n, ok := rowCount(r.Rows); ok && n == 0 {
				continue // 2.4: nobody to kick
			}
			kicked++
		case r.Err.ExitCode == exitNobody: // 2.3: nobody to kick
		default:
			return kicked, fmt.Errorf("kicking %q: %w", users[i], r.Err)
		}
	}
	return kicked, err
}

// rowCount is a kick's answer: one row with a count.
func rowCount(rows []map[string]string) (int, bool) {
	if len(rows) != 1 {
		return 0, false
	}
	n, err := strconv.Atoi(rows[0]["count"])
	return n, err == nil
}

// proxyKickUsers is the users per 2.3 proxyKick command: it takes a list.
const proxyKickUsers = 1000

// ProxyKick ends the connections this Dovecot proxies for users (to host,
// on 2.4, when host is an address: destHost takes no name).
func (h *HTTP) ProxyKick(ctx context.Context, users []string, host string) (int, error) {
	d, err := h.dialect(ctx)
	if err != nil {
		return 0, err
	}
	users = only(users, inJSON)
	var cmds []Command
	if d == v23 {
		// 2.3's proxyKick matches names exactly.
		for _, b := range chunks(users, proxyKickUsers) {
			cmds = append(cmds, Command{Name: "proxyKick", Params: map[string]any{"user": b}})
		}
		return h.count(ctx, cmds, "count")
	}
	for _, u := range only(users, AsMask) {
		c := kickOne(u)
		if net.ParseIP(host) != nil {
			c.Params["destHost"] = host
		}
		cmds = append(cmds, c)
	}
	replies, err := h.batched(ctx, cmds)
	if err != nil {
		return 0, err
	}
	return sumCounts(replies, cmds, "count")
}

// ProxyKickHost ends every connection this Dovecot proxies to host.
func (h *HTTP) ProxyKickHost(ctx context.Context, host string) (int, error) {
	d, err := h.dialect(ctx)
	if err != nil {
		return 0, err
	}
	if d == v23 {
		return h.count(ctx, []Command{{Name: "proxyKick", Params: map[string]any{"host": host}}}, "count")
	}
	if net.ParseIP(host) == nil {
		return 0, fmt.Errorf("doveadm kick: Dovecot 2.4 finds proxied sessions by the address of their host, and %q is not one", host)
	}
	return h.count(ctx, []Command{{Name: "kick", Params: map[string]any{"destHost": host}}}, "count")
}

// ErrNoHTTPAuthCacheFlush: Dovecot 2.4.1's doveadm HTTP server crashes on
// authCacheFlush in every form (an assertion on its user parameter), so
// each node's own agent flushes its cache with the local doveadm.
var ErrNoHTTPAuthCacheFlush = errors.New("the doveadm HTTP API of Dovecot 2.4 cannot flush the auth cache (its doveadm asserts on the user parameter): the node's own agent flushes it with the local doveadm")

// FlushAuthCache drops users' cached passdb answers, or all of them.
func (h *HTTP) FlushAuthCache(ctx context.Context, users []string) (int, error) {
	d, err := h.dialect(ctx)
	if err != nil {
		return 0, err
	}
	if d == v24 {
		return 0, ErrNoHTTPAuthCacheFlush
	}
	if len(users) == 0 {
		// Without the parameter Dovecot 2.3 drops the connection.
		return h.count(ctx, []Command{{Name: "authCacheFlush", Params: map[string]any{"user": []string{}}}}, "entries")
	}
	var cmds []Command
	for _, b := range flushChunks(users) {
		cmds = append(cmds, Command{Name: "authCacheFlush", Params: map[string]any{"user": b}})
	}
	return h.count(ctx, cmds, "entries")
}

// count runs cmds and sums the field of their rows.
func (h *HTTP) count(ctx context.Context, cmds []Command, field string) (int, error) {
	if len(cmds) == 0 {
		return 0, nil
	}
	replies, err := h.Do(ctx, cmds)
	if err != nil {
		return 0, err
	}
	return sumCounts(replies, cmds, field)
}

// sumCounts sums the field of the replies' rows; the first error ends it.
func sumCounts(replies []Reply, cmds []Command, field string) (int, error) {
	n := 0
	for _, r := range replies {
		if r.Err != nil {
			return n, r.Err
		}
		for _, row := range r.Rows {
			if row[field] == "(null)" { // 2.3 says so for none
				continue
			}
			v, err := strconv.Atoi(row[field])
			if err != nil {
				return n, fmt.Errorf("doveadm %s: %s %q is not a number", cmds[0].Name, field, row[field])
			}
			n += v
		}
	}
	return n, nil
}

// Who lists the sessions this Dovecot serves.
func (h *HTTP) Who(ctx context.Context) ([]Session, error) {
	rows, err := h.rows(ctx, Command{Name: "who"})
	if err != nil {
		return nil, err
	}
	out := make([]Session, 0, len(rows))
	for _, r := range rows {
		if !isLogin(r["service"]) {
			out = append(out, parseSession(r["username"], r["service"], r["connections"], r["pids"], r["ips"]))
		}
	}
	return out, nil
}

// ProxyList lists the connections this Dovecot proxies.
func (h *HTTP) ProxyList(ctx context.Context) ([]ProxySession, error) {
	d, err := h.dialect(ctx)
	if err != nil {
		return nil, err
	}
	if d == v24 {
		rows, err := h.rows(ctx, Command{Name: "who", Params: map[string]any{"separateConnections": true}})
		if err != nil {
			return nil, err
		}
		return proxied24(rows), nil
	}
	rows, err := h.rows(ctx, Command{Name: "proxyList"})
	if err != nil {
		return nil, err
	}
	out := make([]ProxySession, 0, len(rows))
	for _, r := range rows {
		if p := (ProxySession{User: r["username"], Service: r["service"], SourceIP: r["src-ip"], DestIP: r["dest-ip"], DestPort: r["dest-port"]}); p != headerRow {
			out = append(out, p)
		}
	}
	return out, nil
}

// proxied24 are the rows of 2.4's who with separateConnections that a
// login process proxies: those with a dest_ip.
func proxied24(rows []map[string]string) []ProxySession {
	var out []ProxySession
	for _, r := range rows {
		if r["dest_ip"] != "" {
			out = append(out, ProxySession{User: r["username"], Service: r["service"], SourceIP: r["ip"], DestIP: r["dest_ip"]})
		}
	}
	return out
}

func (h *HTTP) rows(ctx context.Context, c Command) ([]map[string]string, error) {
	replies, err := h.Do(ctx, []Command{c})
	if err != nil {
		return nil, err
	}
	if replies[0].Err != nil {
		return nil, replies[0].Err
	}
	return replies[0].Rows, nil
}

// parseSession reads who's fields: pids "(1 2)", ips "(127.0.0.1)".
func parseSession(user, service, conns, pids, ips string) Session {
	s := Session{User: user, Service: service}
	s.Connections, _ = strconv.Atoi(conns)
	for _, p := range strings.Fields(strings.Trim(pids, "()")) {
		if pid, err := strconv.Atoi(p); err == nil {
			s.PIDs = append(s.PIDs, pid)
		}
	}
	s.IPs = strings.Fields(strings.Trim(ips, "()"))
	return s
}

// authMasterLine is the longest line Dovecot's auth process reads from
// an auth master connection (MAX_INBUF_SIZE in auth-master-connection.c,
// 2.3 and 2.4). doveadm sends a cache flush as one line, CACHE-FLUSH, an
// id and the tab-escaped names; a longer line is dropped and doveadm
// reports 0 entries flushed, without an error.
const authMasterLine = 1024

// flushChunks splits users into lists whose CACHE-FLUSH line fits in
// authMasterLine, with room for the command, its id and the newline. A
// name too long to fit alone goes alone; Dovecot cannot flush it.
func flushChunks(users []string) [][]string {
	const room = authMasterLine - 64
	var out [][]string
	start, size := 0, 0
	for i, u := range users {
		n := len(u) + 1 // and its tab
		for _, c := range []byte(u) {
			if c == 1 || c == '\t' || c == '\r' || c == '\n' {
				n++ // str_tabescape doubles these
			}
		}
		if i > start && size+n > room {
			out = append(out, users[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(users) {
		out = append(out, users[start:])
	}
	return out
}

func chunks(xs []string, n int) [][]string {
	var out [][]string
	for i := 0; i < len(xs); i += n {
		out = append(out, xs[i:min(i+n, len(xs))])
	}
	return out
}
