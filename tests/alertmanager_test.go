package tests

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/alerting"
	"github.com/roost-mail/roost/certs"
	"github.com/roost-mail/roost/health"
)

// startAlertmanager runs Debian's prometheus-alertmanager with one route:
// every alert goes to webhook (roostd's), with tokenFile and caFile.
func startAlertmanager(t *testing.T, webhook, tokenFile, caFile string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus-alertmanager")
	if err != nil {
		t.Fatal("prometheus-alertmanager is not installed: run scripts/test-deps.sh as root")
	}
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", agenttest.FreePorts(t, 1)[0])
	cfg := fmt.Sprintf(`route:
  receiver: roost
  group_by: [alertname, node]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: roost
    webhook_configs:
      - url: %s
        send_resolved: true
        http_config:
          authorization:
            credentials_file: %s
          tls_config:
            ca_file: %s
`, webhook, tokenFile, caFile)
	path := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &agenttest.SyncBuffer{}
	cmd := exec.Command(bin, "--config.file="+path, "--storage.path="+dir, "--web.listen-address="+addr, "--cluster.listen-address=")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager log:\n%s", log.String())
		}
	})
	if !agenttest.Eventually(30*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}) {
		t.Fatalf("alertmanager not ready on %s:\n%s", addr, log.String())
	}
	return "http://" + addr
}

func amtool(t *testing.T, am string, args ...string) string {
	t.Helper()
	out, err := exec.Command("amtool", append(args, "--alertmanager.url="+am)...).CombinedOutput()
	if err != nil {
		t.Fatalf("amtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A real Alertmanager routes an alert sent with amtool to roostd's
// webhook, which drains the node the alert names; resolving the alert
// undrains it. Roost's own alert for a failed-over node is visible in
// Alertmanager (amtool alert query).
func TestAlertmanagerDrivesDrainsAndShowsRoostsAlerts(t *testing.T) {
	path, _ := usersDB(t, mailUsers, "127.0.1.2")
	dsn := writeDSN(t, path)
	c := agenttest.New(t)
	token, webhookToken := filepath.Join(c.Dir, "api.token"), filepath.Join(c.Dir, "webhook.token")
	os.WriteFile(token, []byte("api-token-0123456789abcdef\n"), 0o600)
	os.WriteFile(webhookToken, []byte("webhook-token-0123456789abcdef\n"), 0o600)
	cert, key, err := c.CA.Issue(c.Dir, "api", certs.Server, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	apiPort := agenttest.FreePorts(t, 1)[0]
	flag := filepath.Join(c.Dir, "node3-broken")
	var am string
	c.Tune = func(i int, cfg *agent.Config) {
		cfg.Routing.DSNFile = dsn
		cfg.Failover.Interval = 100 * time.Millisecond
		cmd := "true"
		if i == 2 {
			cmd = "test ! -e " + flag
		}
		cfg.Health.Checks = []health.CheckConfig{{Name: "site", Protocol: "command", Command: cmd, Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}}
		cfg.Alertmanager.URLs, cfg.Alertmanager.ResendInterval, cfg.Alertmanager.SilenceDrained = []string{am}, time.Second, true
		if i == 0 {
			cfg.API.Listen, cfg.API.TLS, cfg.API.TokenFile = fmt.Sprintf("127.0.0.1:%d", apiPort), certs.Files{CertFile: cert, KeyFile: key}, token
			cfg.Alertmanager.WebhookTokenFile = webhookToken
		}
		// Every node knows the rules: the leader's silences spare them.
		cfg.Alertmanager.Rules = []alerting.Rule{{Alertname: "MailDiskFailing", Action: "drain", UndoOnResolve: true}}
	}
	am = startAlertmanager(t, fmt.Sprintf("https://127.0.0.1:%d/v1/alertmanager", apiPort), webhookToken, filepath.Join(c.Dir, "ca.pem"))
	c.Add(3)
	c.WaitLeader(20 * time.Second)
	state := func(node string) string {
		l := c.Leader()
		if l == nil {
			return ""
		}
		return string(l.Agent.FailoverState().Node(node).State)
	}

	amtool(t, am, "alert", "add", "MailDiskFailing", "node=node2", "severity=critical")
	c.WaitFor(30*time.Second, "node2 drained by the alert", func() bool { return state("node2") == "draining" })
	c.WaitFor(30*time.Second, "a silence for drained node2", func() bool {
		return strings.Contains(amtool(t, am, "silence", "query", "node=node2"), "roost: node2 is drained")
	})
	if !strings.Contains(c.Nodes()[0].Logs.String(), `alert_handled`) {
		t.Fatal("node1 logged no handled alert")
	}
	amtool(t, am, "alert", "add", "MailDiskFailing", "node=node2", "severity=critical", "--end="+time.Now().UTC().Format(time.RFC3339))
	c.WaitFor(30*time.Second, "node2 back once the alert resolved", func() bool { return state("node2") == "active" })
	c.WaitFor(30*time.Second, "the silence expired", func() bool {
		return !strings.Contains(amtool(t, am, "silence", "query", "node=node2"), "roost: node2 is drained")
	})

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(30*time.Second, "node3 failed over", func() bool { return state("node3") == "failed" })
	var out string
	c.WaitFor(30*time.Second, "Roost's alert in Alertmanager", func() bool {
		out = amtool(t, am, "alert", "query", "alertname=RoostNodeFailedOver")
		return strings.Contains(out, "node3 was failed over")
	})

	// The webhook takes only its own token, and a malformed payload
	// changes nothing.
	pool, err := certs.LoadPool(filepath.Join(c.Dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	send := func(tok, body string) int {
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("https://127.0.0.1:%d/v1/alertmanager", apiPort), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send("api-token-0123456789abcdef", `{"version":"4"}`); code != http.StatusUnauthorized {
		t.Fatalf("the API token on the webhook: %d, want 401", code)
	}
	if code := send("webhook-token-0123456789abcdef", `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"MailDiskFailing","node":"node1"}}]}`); code != http.StatusBadRequest {
		t.Fatalf("an alert without a fingerprint: %d, want 400", code)
	}
	if s := state("node1"); s != "active" {
		t.Fatalf("node1 is %s after a rejected payload", s)
	}
}
