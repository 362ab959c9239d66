package agent

import (
	"strings"
	"testing"
)

func TestAgentCheckLine(t *testing.T) {
	for _, tc := range []struct {
		signal, why string
		weight      int
		want        string
	}{
		{lbUp, "active", 0, "up ready #active\n"},
		{lbUp, "active", 50, "up ready 50% #active\n"},
		{lbDrain, "draining: disk swap", 50, "up drain #draining: disk swap\n"},
		{lbDown, "critical: mount /srv/mail: hung\nsecond line", 0, "down #critical: mount /srv/mail: hung second line\n"},
		{lbMaint, "maintenance: kernel", 0, "maint #maintenance: kernel\n"},
	} {
		if got := agentCheckLine(tc.signal, tc.why, tc.weight); got != tc.want {
			t.Errorf("%s %q %d: got %q, want %q", tc.signal, tc.why, tc.weight, got, tc.want)
		}
	}
}

func TestLBConfigValidate(t *testing.T) {
	for cfg, want := range map[LBConfig]string{
		{AgentCheck: "nope"}: `agent_check "nope"`,
		{HTTP: "1.2.3.4"}:    `http "1.2.3.4"`,
		{Weight: 257}:        "weight 257: want 1-256",
		{Weight: -1}:         "weight -1",
	} {
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: got %v, want %q", cfg, err, want)
		}
	}
	if err := (LBConfig{AgentCheck: "0.0.0.0:7949", HTTP: "[::]:7950", Weight: 100}).Validate(); err != nil {
		t.Error(err)
	}
}
