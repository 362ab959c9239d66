package mailcluster

import (
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"
)

// Server is one backend server: Dovecot's listener and the roostd
// agent-check beside it.
type Server struct {
	Name, Addr, Agent string
}

// HAProxyConfig is what the cluster's HAProxy balances.
type HAProxyConfig struct {
	IMAP, LMTP               string // frontend addresses; LMTP may be empty
	IMAPServers, LMTPServers []Server
	Socket                   string // the admin socket (set by StartHAProxy)
}

// haproxyTmpl is HAProxy in front of Dovecot nodes that each run roostd's
// agent-check: the agent says up, drain, down or maint, HAProxy's own
// check still sees the port. A connect error is retried on another server,
// and sessions of a server marked down are shut, so clients reconnect to
// a node that serves.
var haproxyTmpl = template.Must(template.New("haproxy").Funcs(template.FuncMap{
	"host": func(a string) string { h, _, _ := net.SplitHostPort(a); return h },
	"port": func(a string) string { _, p, _ := net.SplitHostPort(a); return p },
}).Parse(`# rendered by tests/mailcluster
global
  stats socket {{.Socket}} mode 600 level admin
  maxconn 4000

defaults
  mode tcp
  timeout connect 500ms
  timeout client 30m
  timeout server 30m
  timeout check 500ms
  retries 2
  option redispatch 1

frontend imap
  bind {{.IMAP}}
  default_backend imap

backend imap
  balance roundrobin
  option tcp-check
  tcp-check connect
  tcp-check expect string "* OK"
  tcp-check send "a1 LOGOUT\r\n"
  default-server inter 1s fastinter 200ms downinter 1s fall 2 rise 2 agent-inter 500ms on-marked-down shutdown-sessions
{{- range .IMAPServers}}
  server {{.Name}} {{.Addr}} check agent-check agent-addr {{host .Agent}} agent-port {{port .Agent}}
{{- end}}
{{if .LMTP}}
frontend lmtp
  bind {{.LMTP}}
  default_backend lmtp

backend lmtp
  balance roundrobin
  option tcp-check
  tcp-check connect
  tcp-check expect string "220 "
  tcp-check send "QUIT\r\n"
  # no on-marked-down here: a delivery in flight must get its answer, or
  # the sender retries a message that was saved (a duplicate)
  default-server inter 1s fastinter 200ms downinter 1s fall 2 rise 2 agent-inter 500ms
{{- range .LMTPServers}}
  server {{.Name}} {{.Addr}} check agent-check agent-addr {{host .Agent}} agent-port {{port .Agent}}
{{- end}}
{{end}}`))

// HAProxy is a real HAProxy (Debian's package) run in the foreground.
type HAProxy struct {
	t      testing.TB
	Config string // the config file
	socket string
	proc   *Proc
}

// StartHAProxy writes cfg into dir, checks it with haproxy -c and runs it.
func StartHAProxy(t testing.TB, dir string, cfg HAProxyConfig) *HAProxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed: run scripts/test-deps.sh as root")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.Socket = filepath.Join(dir, "admin.sock")
	var b strings.Builder
	if err := haproxyTmpl.Execute(&b, cfg); err != nil {
		t.Fatal(err)
	}
	h := &HAProxy{t: t, Config: filepath.Join(dir, "haproxy.cfg"), socket: cfg.Socket}
	writeFile(t, h.Config, b.String())
	if out, err := exec.Command(bin, "-c", "-f", h.Config).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	h.proc = StartProc(t, filepath.Join(dir, "haproxy.log"), bin, "-db", "-f", h.Config)
	return h
}

// Log is HAProxy's output so far.
func (h *HAProxy) Log() string { return h.proc.Log() }

// ServerStat is a server's line in HAProxy's stats.
type ServerStat struct {
	Status   string // UP, DOWN, DRAIN, MAINT, "UP 1/2"…
	Sessions int    // current
	Total    int    // since start
}

// Stat reads backend's servers from HAProxy's admin socket (nil when it
// does not answer).
func (h *HAProxy) Stat(backend string) map[string]ServerStat {
	c, err := net.DialTimeout("unix", h.socket, time.Second)
	if err != nil {
		return nil
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "show stat\n")
	b, _ := io.ReadAll(c)
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(b), "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	out := map[string]ServerStat{}
	for _, row := range rows[1:] {
		if len(row) <= col["status"] || row[col["pxname"]] != backend || row[col["svname"]] == "BACKEND" || row[col["svname"]] == "FRONTEND" {
			continue
		}
		var s ServerStat
		s.Status = row[col["status"]]
		fmt.Sscan(row[col["scur"]], &s.Sessions)
		fmt.Sscan(row[col["stot"]], &s.Total)
		out[row[col["svname"]]] = s
	}
	return out
}
