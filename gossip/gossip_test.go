package gossip

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func startNode(t *testing.T, name string, join ...string) *Gossip {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Bind, cfg.InsecurePlaintext, cfg.Join = "127.0.0.1:0", true, join
	g, err := New(cfg, name, Meta{Role: "mail"}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { g.Run(ctx, false) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return g
}

// memberlist drops an update whose incarnation lost a race with a
// refutation, and only the unconfirmed broadcast's timeout shows it (see
// SetMeta). Such an update must still reach the peers.
func TestDroppedMetaUpdateIsResent(t *testing.T) {
	a := startNode(t, "a")
	b := startNode(t, "b", a.Addr())
	waitFor(t, "b sees a", func() bool { return len(b.Members()) == 2 })

	a.updateMu.Lock()
	real := a.updateNode
	dropped := false
	a.updateNode = func(d time.Duration) error {
		if !dropped {
			dropped = true // lost, as memberlist loses it: no broadcast, a timeout
			return errors.New("timeout waiting for update broadcast")
		}
		return real(d)
	}
	a.updateMu.Unlock()
	if err := a.SetMeta(func(m *Meta) { m.Health = "critical" }); err != nil {
		t.Fatal(err)
	}
	if !dropped {
		t.Fatal("the update was not attempted")
	}
	waitFor(t, "b sees a critical", func() bool {
		for _, m := range b.Members() {
			if m.Name == "a" && m.Meta.Health == "critical" {
				return true
			}
		}
		return false
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}
