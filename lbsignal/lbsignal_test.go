package lbsignal

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAgentCheckLine(t *testing.T) {
	for _, tc := range []struct {
		signal, why string
		weight      int
		want        string
	}{
		{Up, "active", 0, "up ready #active\n"},
		{Up, "active", 50, "up ready 50% #active\n"},
		{Drain, "draining: disk swap", 50, "up drain #draining: disk swap\n"},
		{Down, "critical: mount /srv/mail: hung\nsecond line", 0, "down #critical: mount /srv/mail: hung second line\n"},
		{Maint, "maintenance: kernel", 0, "maint #maintenance: kernel\n"},
	} {
		if got := agentCheckLine(tc.signal, tc.why, tc.weight); got != tc.want {
			t.Errorf("%s %q %d: got %q, want %q", tc.signal, tc.why, tc.weight, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for cfg, want := range map[Config]string{
		{AgentCheck: "nope"}: `agent_check "nope"`,
		{HTTP: "1.2.3.4"}:    `http "1.2.3.4"`,
		{Weight: 257}:        "weight 257: want 1-256",
		{Weight: -1}:         "weight -1",
	} {
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: got %v, want %q", cfg, err, want)
		}
	}
	if err := (Config{AgentCheck: "0.0.0.0:7949", HTTP: "[::]:7950", Weight: 100}).Validate(); err != nil {
		t.Error(err)
	}
}

// The server answers what the signal says now, on both listeners: the
// agent-check line, and 200 or 503 with the reason over HTTP.
func TestServerAnswersTheSignalNow(t *testing.T) {
	var mu sync.Mutex
	sig, why := Up, "active"
	signal := func() (string, string) { mu.Lock(); defer mu.Unlock(); return sig, why }
	s, err := New(Config{AgentCheck: "127.0.0.1:0", HTTP: "127.0.0.1:0", Weight: 50}, signal, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	agentAddr, httpAddr := s.Addrs()
	check := func(wantLine string, wantCode int, wantBody string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", agentAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(line) != wantLine {
			t.Errorf("agent-check: %q (%v), want %q", line, err, wantLine)
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + httpAddr + "/lb")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantCode || string(body) != wantBody {
			t.Errorf("GET /lb: %d %q, want %d %q", resp.StatusCode, body, wantCode, wantBody)
		}
	}
	check("up ready 50% #active\n", http.StatusOK, "up: active\n")
	mu.Lock()
	sig, why = Down, "critical: mount /srv/mail: hung"
	mu.Unlock()
	check("down #critical: mount /srv/mail: hung\n", http.StatusServiceUnavailable, "down: critical: mount /srv/mail: hung\n")
}
