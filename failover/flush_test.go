package failover

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
)

// A node asked over the cluster port flushes exactly the users named
// (any bytes, not only UTF-8) with its own flusher and answers its count
// or its error; a request that names nobody never reaches the flusher.
func TestFlushAuthCacheAsksTheNodesOwnAgent(t *testing.T) {
	s, err := newStreamLayer("127.0.0.1:0", "", nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{stream: s}
	var mu sync.Mutex
	var got [][]string
	calls := func() [][]string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
	c.SetFlusher(func(_ context.Context, users []string) (int, error) {
		mu.Lock()
		got = append(got, users)
		mu.Unlock()
		if users[0] == "broken" {
			return 0, errors.New("doveadm: exit status 75")
		}
		return len(users), nil
	})
	s.serve()
	defer s.Close()
	addr := s.Addr().String()
	users := []string{"alice@example.test", "lat\xe9n", "o'brien", "star*?"}
	n, err := c.FlushAuthCache(t.Context(), addr, users)
	if err != nil || n != len(users) {
		t.Fatalf("flush: %d, %v; want %d", n, err, len(users))
	}
	if got := calls(); len(got) != 1 || !slices.Equal(got[0], users) {
		t.Fatalf("the node flushed %q, want exactly %q", got, users)
	}
	if _, err := c.FlushAuthCache(t.Context(), addr, []string{"broken"}); err == nil || !strings.Contains(err.Error(), "exit status 75") {
		t.Fatalf("a failing flush answered %v, want the node's error", err)
	}
	if n, err := c.FlushAuthCache(t.Context(), addr, nil); n != 0 || err != nil || len(calls()) != 2 {
		t.Fatalf("a flush of nobody: %d, %v, %d calls; want nothing asked", n, err, len(got))
	}
}
