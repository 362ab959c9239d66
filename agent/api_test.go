package agent_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/certs"
)

func TestTCPAPIRequiresTLSAndToken(t *testing.T) {
	c := agenttest.New(t)
	token := "s3cret-token-0123456789"
	tokenFile := filepath.Join(c.Dir, "api.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, key, err := c.CA.Issue(c.Dir, "api", certs.Server, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.Tune = func(i int, cfg *agent.Config) {
		cfg.Raft.BootstrapExpect = 1
		cfg.Log.Format = "json"
		cfg.API.Listen = "127.0.0.1:0"
		cfg.API.TLS = certs.Files{CertFile: cert, KeyFile: key}
		cfg.API.TokenFile = tokenFile
	}
	n := c.Add(1)[0]
	c.WaitLeader(20 * time.Second)
	pool, err := certs.LoadPool(filepath.Join(c.Dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := n.Agent.APIAddr()
	if apiAddr == "" {
		t.Fatal("agent reports no TCP API address")
	}
	tc := &tls.Config{RootCAs: pool}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := api.NewTCPClient(apiAddr, tc, token).Status(ctx)
	if err != nil || st.Node != n.Name || st.Leader != n.Name {
		t.Fatalf("status over TCP with the token: %+v, %v", st, err)
	}
	if _, err := api.NewTCPClient(apiAddr, tc, "wrong-token-0123456789").Status(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: got %v, want 401", err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	for _, path := range []string{"/v1/status", "/metrics"} {
		resp, err := hc.Get("https://" + apiAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET %s without a token: got %d, want 401", path, resp.StatusCode)
		}
	}
	// Plain HTTP on the TLS port gets nothing useful.
	if resp, err := http.Get("http://" + apiAddr + "/v1/status"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP was served on the TLS API port")
		}
	}

	// The unix socket needs no token, serves metrics, and 404s with JSON.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://roostd/metrics", nil)
	resp, err := unixHTTP(n.Config.API.Socket).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	_, _ = bodyCopy(&body, resp)
	if resp.StatusCode != 200 || !strings.Contains(body.String(), "roost_raft_leader 1") || !strings.Contains(body.String(), "roost_gossip_members") {
		t.Fatalf("metrics on the socket: %d\n%s", resp.StatusCode, body.String())
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://roostd/v1/nope", nil)
	resp, err = unixHTTP(n.Config.API.Socket).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e api.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 404 || !strings.Contains(e.Error, "/v1/nope") {
		t.Fatalf("unknown endpoint: %d %+v %v", resp.StatusCode, e, err)
	}
	resp.Body.Close()

	// JSON logs carry raft's and memberlist's lines, bridged with levels.
	var sawRaft, sawMemberlist bool
	for _, line := range strings.Split(strings.TrimSpace(n.Logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		sawRaft = sawRaft || rec["component"] == "raft"
		sawMemberlist = sawMemberlist || rec["component"] == "memberlist"
	}
	if !sawRaft || !sawMemberlist {
		t.Fatalf("raft logged: %v, memberlist logged: %v; want both bridged into slog", sawRaft, sawMemberlist)
	}
}
