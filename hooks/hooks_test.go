package hooks

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/failover"
)

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

var plan = failover.Plan{ID: "000007-drain", Kind: failover.PlanDrain, Node: "mail2", Host: "10.0.0.2", Reason: "kernel update"}

// A pre_move script sees the plan in its environment, and its exit status
// decides: zero lets the plan move, non-zero vetoes it with the script's
// last line, and one that runs past the timeout vetoes it too.
func TestPreMoveDecidesWithTheScriptsExitStatus(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ok := New(Config{PreMove: script(t, `test "$ROOST_PLAN $ROOST_KIND $ROOST_NODE $ROOST_HOST $ROOST_REASON" = "000007-drain drain mail2 10.0.0.2 kernel update"`), Timeout: 5 * time.Second}, log)
	if err := ok.PreMove(context.Background(), plan); err != nil {
		t.Fatalf("a script that accepts the plan's environment vetoed: %v", err)
	}
	veto := New(Config{PreMove: script(t, "echo checking\necho \"$ROOST_NODE belongs to the storage team today\"\nexit 3"), Timeout: 5 * time.Second}, log)
	if err := veto.PreMove(context.Background(), plan); err == nil || !strings.Contains(err.Error(), "exited 3: mail2 belongs to the storage team today") {
		t.Fatalf("a script exiting 3: %v", err)
	}
	slow := New(Config{PreMove: script(t, "exec sleep 30"), Timeout: 200 * time.Millisecond}, log)
	start := time.Now()
	if err := slow.PreMove(context.Background(), plan); err == nil || !strings.Contains(err.Error(), "ran past its 200ms timeout") {
		t.Fatalf("a script past its timeout: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("a script past its timeout held the plan %s", took)
	}
	none := New(Config{Timeout: time.Second}, log)
	if err := none.PreMove(context.Background(), plan); err != nil {
		t.Fatalf("no script configured: %v", err)
	}
}

func TestConfigNamesTheKey(t *testing.T) {
	for want, c := range map[string]Config{
		`pre_move "hook.sh": want an absolute path`: {PreMove: "hook.sh", Timeout: time.Second},
		"timeout 0s: want > 0":                      {},
	} {
		if err := c.Validate(); err == nil || err.Error() != want {
			t.Errorf("%+v: %v, want %q", c, err, want)
		}
	}
	dir := t.TempDir()
	if err := (Config{NodeState: dir, Timeout: time.Second}).CheckFiles(); err == nil || !strings.Contains(err.Error(), "node_state "+dir+": not an executable file") {
		t.Errorf("a directory as a hook: %v", err)
	}
}
