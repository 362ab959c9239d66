package dovecot

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
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

// Kick sends one kick command per user (Dovecot takes one user mask per
// kick), batch_size to a request and parallel requests at once.
func (h *HTTP) Kick(ctx context.Context, users []string) (int, error) {
	batches := chunks(users, h.cfg.BatchSize)
	kicked := make([]int, len(batches))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(h.cfg.Parallel)
	for bi, batch := range batches {
		g.Go(func() error {
			cmds := make([]Command, len(batch))
			for i, u := range batch {
				cmds[i] = Command{Name: "kick", Params: map[string]any{"mask": []string{u}}}
			}
			replies, err := h.Do(ctx, cmds)
			if err != nil {
				return err
			}
			for i, r := range replies {
				switch {
				case r.Err == nil:
					kicked[bi]++
				case r.Err.ExitCode == exitNobody: // nobody to kick: done already
				default:
					return fmt.Errorf("kicking %q: %w", batch[i], r.Err)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	return sum(kicked), err
}

// proxyKickUsers is the users per proxyKick command: it takes a list.
const proxyKickUsers = 1000

// ProxyKick ends the connections this Dovecot proxies for users.
func (h *HTTP) ProxyKick(ctx context.Context, users []string) (int, error) {
	var cmds []Command
	for _, b := range chunks(users, proxyKickUsers) {
		cmds = append(cmds, Command{Name: "proxyKick", Params: map[string]any{"user": b}})
	}
	return h.count(ctx, cmds, "count")
}

// ProxyKickHost ends every connection this Dovecot proxies to host.
func (h *HTTP) ProxyKickHost(ctx context.Context, host string) (int, error) {
	return h.count(ctx, []Command{{Name: "proxyKick", Params: map[string]any{"host": host}}}, "count")
}

// FlushAuthCache drops users' cached passdb answers, or all of them.
func (h *HTTP) FlushAuthCache(ctx context.Context, users []string) (int, error) {
	if len(users) == 0 {
		// Without the parameter Dovecot 2.3 drops the connection.
		return h.count(ctx, []Command{{Name: "authCacheFlush", Params: map[string]any{"user": []string{}}}}, "entries")
	}
	var cmds []Command
	for _, b := range chunks(users, proxyKickUsers) {
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
		out = append(out, parseSession(r["username"], r["service"], r["connections"], r["pids"], r["ips"]))
	}
	return out, nil
}

// ProxyList lists the connections this Dovecot proxies.
func (h *HTTP) ProxyList(ctx context.Context) ([]ProxySession, error) {
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

func chunks(xs []string, n int) [][]string {
	var out [][]string
	for i := 0; i < len(xs); i += n {
		out = append(out, xs[i:min(i+n, len(xs))])
	}
	return out
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}
