package routing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// odd user names: quotes, backslashes, unicode, SQL, 255 bytes.
var oddUsers = []string{
	`o'brien@example.com`, `back\slash@example.com`, `"quoted"@example.com`,
	"jürgen.müller@exämple.de", "用户@例子.中国", `x'; DROP TABLE users; --`,
	strings.Repeat("a", 243) + "@example.com",
}

func newStore(t *testing.T, n int) (*Store, *sql.DB) {
	t.Helper()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mail.db")
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE users (username TEXT PRIMARY KEY, password TEXT, proxy_host TEXT, active INTEGER DEFAULT 1)`); err != nil {
		t.Fatal(err)
	}
	tx, _ := db.Begin()
	for i := range n {
		if _, err := tx.Exec(`INSERT INTO users (username, proxy_host) VALUES (?, ?)`, fmt.Sprintf("user%05d", i), fmt.Sprintf("10.0.0.%d", i%5+1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range oddUsers {
		if _, err := tx.Exec(`INSERT INTO users (username, proxy_host) VALUES (?, '10.0.0.1')`, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	dsn := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsn, []byte(dbPath+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DSNFile = dsn
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, db
}

func movesOff(t *testing.T, s *Store, from string, to []Target) []Move {
	t.Helper()
	var moves []Move
	err := s.UsersOn(context.Background(), from, func(u string) error {
		tg, _ := Choose(u, to)
		moves = append(moves, Move{User: u, From: from, To: tg.Host})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return moves
}

func TestMoveOneHostsUsersBalancedAndJournaled(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, 50000)
	before, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	to := []Target{{Node: "n2", Host: "10.0.0.2", Weight: 1}, {Node: "n3", Host: "10.0.0.3", Weight: 1}, {Node: "n4", Host: "10.0.0.4", Weight: 1}, {Node: "n5", Host: "10.0.0.5", Weight: 1}}
	moves := movesOff(t, s, "10.0.0.1", to)
	if len(moves) != before["10.0.0.1"] {
		t.Fatalf("listed %d users on the host, counted %d", len(moves), before["10.0.0.1"])
	}
	total := 0
	for i := 0; i < len(moves); i += 500 {
		n, err := s.MoveBatch(ctx, Fence{Term: 3, Leader: "n2"}, "plan-1", "node failed", moves[i:min(i+500, len(moves))])
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != len(moves) {
		t.Fatalf("moved %d of %d", total, len(moves))
	}
	after, _ := s.Counts(ctx)
	if after["10.0.0.1"] != 0 {
		t.Fatalf("%d users left on the failed host", after["10.0.0.1"])
	}
	gained := map[string]int{}
	for _, m := range moves {
		gained[m.To]++
	}
	mean := float64(len(moves)) / 4
	for h, g := range gained {
		if d := float64(g) - mean; d > 0.05*mean || d < -0.05*mean {
			t.Errorf("%s gained %d, over 5%% from the mean %.0f", h, g, mean)
		}
	}
	// Each moved user: journaled once, matching the table.
	for _, m := range moves[:200] {
		j, err := s.Journal(ctx, m.User)
		if err != nil || len(j) != 1 || j[0].From != m.From || j[0].To != m.To || j[0].Home != m.From || j[0].Term != 3 || j[0].Plan != "plan-1" {
			t.Fatalf("journal of %q: %+v %v", m.User, j, err)
		}
		if h, _ := s.Lookup(ctx, m.User); h != m.To {
			t.Fatalf("%q is on %s, journal says %s", m.User, h, m.To)
		}
	}
	// Running the same batch again changes nothing.
	if n, err := s.MoveBatch(ctx, Fence{Term: 3, Leader: "n2"}, "plan-1", "node failed", moves); err != nil || n != 0 {
		t.Fatalf("re-run moved %d (%v), want 0", n, err)
	}
}

func TestOddUserNamesMoveLikeAnyOther(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t, 10)
	var moves []Move
	for _, u := range oddUsers {
		moves = append(moves, Move{User: u, From: "10.0.0.1", To: "10.0.0.2"})
	}
	n, err := s.MoveBatch(ctx, Fence{Term: 1, Leader: "a"}, "p", "drain", moves)
	if err != nil || n != len(oddUsers) {
		t.Fatalf("moved %d of %d: %v", n, len(oddUsers), err)
	}
	for _, u := range oddUsers {
		if h, err := s.Lookup(ctx, u); err != nil || h != "10.0.0.2" {
			t.Fatalf("%q: %s %v", u, h, err)
		}
	}
	var count int
	if err := db.QueryRow(`SELECT COUNT(*) FROM users`).Scan(&count); err != nil || count != 10+len(oddUsers) {
		t.Fatalf("the users table has %d rows (%v): the injection did something", count, err)
	}
	if _, err := s.Lookup(ctx, "nobody"); !errors.Is(err, ErrNoUser) {
		t.Fatalf("lookup of a missing user: %v", err)
	}
}

func TestStaleTermIsFencedAndWritesNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, 100)
	if _, err := s.MoveBatch(ctx, Fence{Term: 7, Leader: "new"}, "p7", "failover", []Move{{User: "user00000", From: "10.0.0.1", To: "10.0.0.2"}}); err != nil {
		t.Fatal(err)
	}
	// A deposed leader (term 6) tries to move someone: the database refuses.
	n, err := s.MoveBatch(ctx, Fence{Term: 6, Leader: "old"}, "p6", "failover", []Move{{User: "user00005", From: "10.0.0.1", To: "10.0.0.3"}})
	if !errors.Is(err, ErrFenced) || n != 0 || !strings.Contains(err.Error(), "stored term 7 by new") {
		t.Fatalf("stale writer: moved %d, %v; want ErrFenced", n, err)
	}
	if h, _ := s.Lookup(ctx, "user00005"); h != "10.0.0.1" {
		t.Fatalf("the stale writer's move landed: %s", h)
	}
	if j, _ := s.Journal(ctx, "user00005"); len(j) != 0 {
		t.Fatalf("the stale writer journaled: %+v", j)
	}
}

// Two writers race for the same users: the database lets one term win;
// every user ends on exactly one host with exactly one journal entry.
func TestRacingWritersNeverBothWin(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, 2000)
	moves := func(to string) []Move {
		var ms []Move
		_ = s.UsersOn(ctx, "10.0.0.1", func(u string) error { ms = append(ms, Move{User: u, From: "10.0.0.1", To: to}); return nil })
		return ms
	}
	a, b := moves("10.0.0.2"), moves("10.0.0.3")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, w := range []struct {
		f  Fence
		ms []Move
	}{{Fence{Term: 5, Leader: "a"}, a}, {Fence{Term: 4, Leader: "b"}, b}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.MoveBatch(ctx, w.f, "race", "test", w.ms)
		}()
	}
	wg.Wait()
	if errs[0] != nil {
		t.Fatalf("the newer term failed: %v", errs[0])
	}
	for _, m := range a {
		j, _ := s.Journal(ctx, m.User)
		h, _ := s.Lookup(ctx, m.User)
		if len(j) != 1 || j[0].To != h {
			t.Fatalf("%s: on %s, journal %+v", m.User, h, j)
		}
	}
}

func TestHomedOnForFailback(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, 50)
	ms := movesOff(t, s, "10.0.0.1", []Target{{Node: "n2", Host: "10.0.0.2", Weight: 1}})
	if _, err := s.MoveBatch(ctx, Fence{Term: 1, Leader: "x"}, "p1", "failover", ms); err != nil {
		t.Fatal(err)
	}
	// Moved on again (10.0.0.2 failed too): home stays 10.0.0.1.
	var again []Move
	for _, m := range ms[:3] {
		again = append(again, Move{User: m.User, From: "10.0.0.2", To: "10.0.0.3"})
	}
	if _, err := s.MoveBatch(ctx, Fence{Term: 2, Leader: "x"}, "p2", "failover", again); err != nil {
		t.Fatal(err)
	}
	var homed []string
	if err := s.HomedOn(ctx, "10.0.0.1", func(u, now string) error { homed = append(homed, u); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(homed) != len(ms) {
		t.Fatalf("%d users homed on 10.0.0.1, want %d", len(homed), len(ms))
	}
	if j, _ := s.Journal(ctx, again[0].User); len(j) != 2 || j[1].Home != "10.0.0.1" {
		t.Fatalf("second move's home: %+v", j)
	}
}

func TestConfigValidate(t *testing.T) {
	for want, mutate := range map[string]func(*Config){
		`driver "oracle"`:                    func(c *Config) { c.Driver = "oracle" },
		`driver "postgres": not in this`:     func(c *Config) { c.Driver = "postgres" },
		"dsn_file is empty":                  func(c *Config) { c.DSNFile = "" },
		`table "users; drop"`:                func(c *Config) { c.Table = "users; drop" },
		`host_column "proxy-host"`:           func(c *Config) { c.HostColumn = "proxy-host" },
		`filter "active = 1; DELETE FROM x"`: func(c *Config) { c.Filter = "active = 1; DELETE FROM x" },
	} {
		c := DefaultConfig()
		c.DSNFile = "/x"
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}

// The operator's filter keeps Roost's hands off the users it excludes.
func TestFilterExcludesUsers(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t, 20)
	if _, err := db.Exec(`UPDATE users SET active = 0 WHERE username = 'user00000'`); err != nil {
		t.Fatal(err)
	}
	cfg := s.cfg
	cfg.Filter = "active = 1"
	f, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Lookup(ctx, "user00000"); !errors.Is(err, ErrNoUser) {
		t.Fatalf("an inactive user was visible: %v", err)
	}
	n, err := f.MoveBatch(ctx, Fence{Term: 1, Leader: "x"}, "p", "drain", []Move{{User: "user00000", From: "10.0.0.1", To: "10.0.0.2"}, {User: "user00005", From: "10.0.0.1", To: "10.0.0.2"}})
	if err != nil || n != 1 {
		t.Fatalf("moved %d (%v), want only the active user", n, err)
	}
	if h, _ := s.Lookup(ctx, "user00000"); h != "10.0.0.1" {
		t.Fatalf("the inactive user moved to %s", h)
	}
	cfg.Filter = "no_such_column = 1"
	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "routing.table, user_column, host_column, filter") {
		t.Fatalf("a broken filter opened: %v", err)
	}
}
