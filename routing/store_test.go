package routing

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mail/roost/placement"
	"github.com/roost-mail/roost/routing/routingtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(killMeEnv) != "" {
		os.Exit(moveAndHang())
	}
	os.Exit(routingtest.Main(m))
}

// odd user names: quotes, backslashes, unicode, SQL, doveadm's and
// LIKE's wildcards, 255 bytes.
var oddUsers = []string{
	`o'brien@example.com`, `back\slash@example.com`, `"quoted"@example.com`, "`tick`@example.com",
	"a*b?@example.com", "a%b_c@example.com", "tab\there@example.com",
	"jürgen.müller@exämple.de", "用户@例子.中国", `x'; DROP TABLE users; --`,
	strings.Repeat("a", 243) + "@example.com",
}

// forEachDriver runs the test on SQLite, PostgreSQL and MariaDB.
func forEachDriver(t *testing.T, fn func(t *testing.T, driver string)) {
	for _, d := range routingtest.Drivers {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}

// newStore makes users(username, password, proxy_host, active) with n
// users spread over 10.0.0.1–5 plus the odd users on 10.0.0.1, and opens
// a Store on it.
func newStore(t testing.TB, driver string, n int) (*Store, *routingtest.DB) {
	t.Helper()
	db := routingtest.Open(t, driver)
	db.CreateUsers(t, n, 5)
	for _, u := range oddUsers {
		db.Exec(t, `INSERT INTO users (username, proxy_host) VALUES (?, '10.0.0.1')`, u)
	}
	return openStore(t, db, ""), db
}

func openStore(t testing.TB, db *routingtest.DB, filter string) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Driver, cfg.Filter = db.Driver, filter
	cfg.DSNFile = filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(cfg.DSNFile, []byte(db.DSN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func count(t testing.TB, db *routingtest.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Admin.QueryRow(db.Rebind(q), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func movesOff(t testing.TB, s *Store, from string, to []placement.Target) []placement.Move {
	t.Helper()
	var moves []placement.Move
	err := s.UsersOn(context.Background(), from, func(u string) error {
		tg, _ := Choose(u, to)
		moves = append(moves, placement.Move{User: u, From: from, To: tg.Host})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return moves
}

var fourTargets = []placement.Target{{Node: "n2", Host: "10.0.0.2", Weight: 1}, {Node: "n3", Host: "10.0.0.3", Weight: 1}, {Node: "n4", Host: "10.0.0.4", Weight: 1}, {Node: "n5", Host: "10.0.0.5", Weight: 1}}

// checkJournalMatchesTable: every journaled user's last move ends where
// the table says it is, and each moved user was journaled exactly once.
func checkJournalMatchesTable(t *testing.T, db *routingtest.DB, moved int) {
	t.Helper()
	if n := count(t, db, `SELECT COUNT(*) FROM roost_journal`); n != moved {
		t.Errorf("journal has %d rows, %d users moved", n, moved)
	}
	if n := count(t, db, `SELECT COUNT(DISTINCT username) FROM roost_journal`); n != moved {
		t.Errorf("journal names %d users, %d moved", n, moved)
	}
	if n := count(t, db, `SELECT COUNT(*) FROM roost_journal j JOIN users u ON u.username = j.username WHERE u.proxy_host <> j.to_host`); n != 0 {
		t.Errorf("%d journal rows disagree with the table", n)
	}
}

func TestMoveOneHostsUsersBalancedAndJournaled(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driver string) {
		ctx := context.Background()
		s, db := newStore(t, driver, 50000)
		before, err := s.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		moves := movesOff(t, s, "10.0.0.1", fourTargets)
		if len(moves) != before["10.0.0.1"] || len(moves) != 10000+len(oddUsers) {
			t.Fatalf("listed %d users on the host, counted %d", len(moves), before["10.0.0.1"])
		}
		total := 0
		for i := 0; i < len(moves); i += 2000 {
			n, err := s.MoveBatch(ctx, placement.Fence{Term: 3, Leader: "n2"}, "plan-1", "node failed", moves[i:min(i+2000, len(moves))])
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
		mean := float64(len(moves)) / 4
		for _, tg := range fourTargets {
			g := after[tg.Host] - before[tg.Host]
			if d := float64(g) - mean; d > 0.05*mean || d < -0.05*mean {
				t.Errorf("%s gained %d, over 5%% from the mean %.0f", tg.Host, g, mean)
			}
		}
		checkJournalMatchesTable(t, db, len(moves))
		for _, m := range moves[:50] {
			j, err := s.Journal(ctx, m.User)
			if err != nil || len(j) != 1 || j[0].From != m.From || j[0].To != m.To || j[0].Home != m.From || j[0].Term != 3 ||
				j[0].Plan != "plan-1" || j[0].Reason != "node failed" || time.Since(j[0].At) > time.Hour || time.Since(j[0].At) < -time.Hour {
				t.Fatalf("journal of %q: %+v %v", m.User, j, err)
			}
		}
		// A host's history: its latest moves, newest first.
		h, err := s.History(ctx, "", fourTargets[1].Host, time.Time{}, 7)
		if err != nil || len(h) != 7 {
			t.Fatalf("history of %s: %d entries, %v", fourTargets[1].Host, len(h), err)
		}
		for i, e := range h {
			if e.To != fourTargets[1].Host || (i > 0 && e.At.After(h[i-1].At)) {
				t.Fatalf("history entry %d: %+v", i, e)
			}
		}
		if h, err := s.History(ctx, moves[0].User, "", time.Time{}, 0); err != nil || len(h) != 1 || h[0].User != moves[0].User {
			t.Fatalf("history of %q: %+v %v", moves[0].User, h, err)
		}
		if h, err := s.History(ctx, "", "", time.Now().Add(time.Hour), 0); err != nil || len(h) != 0 {
			t.Fatalf("history since an hour from now: %d entries, %v", len(h), err)
		}
		if h, err := s.History(ctx, "", "", time.Now().Add(-time.Hour), 3); err != nil || len(h) != 3 {
			t.Fatalf("history since an hour ago: %d entries, %v", len(h), err)
		}
		// Running the same batch again changes nothing.
		if n, err := s.MoveBatch(ctx, placement.Fence{Term: 3, Leader: "n2"}, "plan-1", "node failed", moves); err != nil || n != 0 {
			t.Fatalf("re-run moved %d (%v), want 0", n, err)
		}
		checkJournalMatchesTable(t, db, len(moves))
	})
}

func TestOddUserNamesMoveLikeAnyOther(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driver string) {
		ctx := context.Background()
		s, db := newStore(t, driver, 10)
		var moves []placement.Move
		for _, u := range oddUsers {
			moves = append(moves, placement.Move{User: u, From: "10.0.0.1", To: "10.0.0.2"})
		}
		n, err := s.MoveBatch(ctx, placement.Fence{Term: 1, Leader: "a"}, "p", "drain", moves)
		if err != nil || n != len(oddUsers) {
			t.Fatalf("moved %d of %d: %v", n, len(oddUsers), err)
		}
		for _, u := range oddUsers {
			if h, err := s.Lookup(ctx, u); err != nil || h != "10.0.0.2" {
				t.Fatalf("%q: %s %v", u, h, err)
			}
			if j, err := s.Journal(ctx, u); err != nil || len(j) != 1 || j[0].User != u {
				t.Fatalf("journal of %q: %+v %v", u, j, err)
			}
		}
		if c := count(t, db, `SELECT COUNT(*) FROM users`); c != 10+len(oddUsers) {
			t.Fatalf("the users table has %d rows: the injection did something", c)
		}
		checkJournalMatchesTable(t, db, len(oddUsers))
		if _, err := s.Lookup(ctx, "nobody"); !errors.Is(err, ErrNoUser) {
			t.Fatalf("lookup of a missing user: %v", err)
		}
	})
}

// A name that is not UTF-8 (Dovecot accepts any bytes but NUL) moves
// exactly, distinct from its UTF-8 look-alike: SQLite holds such names
// (PostgreSQL's and MariaDB's UTF-8 tables cannot).
func TestNonUTF8NamesMoveExactly(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t, "sqlite", 0)
	latin1, utf8 := "lat\xe9n@example.com", "lat\u00e9n@example.com"
	for _, u := range []string{latin1, utf8} {
		db.Exec(t, `INSERT INTO users (username, proxy_host) VALUES (?, '10.0.0.9')`, u)
	}
	var on []string
	if err := s.UsersOn(ctx, "10.0.0.9", func(u string) error { on = append(on, u); return nil }); err != nil || len(on) != 2 || on[0] != latin1 && on[1] != latin1 {
		t.Fatalf("users on 10.0.0.9: %q %v", on, err)
	}
	n, err := s.MoveBatch(ctx, placement.Fence{Term: 1, Leader: "a"}, "p", "drain", []placement.Move{{User: latin1, From: "10.0.0.9", To: "10.0.0.2"}})
	if err != nil || n != 1 {
		t.Fatalf("moved %d: %v", n, err)
	}
	hosts, err := s.HostsOf(ctx, []string{latin1, utf8})
	if err != nil || hosts[latin1] != "10.0.0.2" || hosts[utf8] != "10.0.0.9" {
		t.Fatalf("after moving %q: %q %v; want it moved and %q not", latin1, hosts, err, utf8)
	}
	if j, err := s.Journal(ctx, latin1); err != nil || len(j) != 1 || j[0].User != latin1 {
		t.Fatalf("journal of %q: %+v %v", latin1, j, err)
	}
	if c := count(t, db, `SELECT COUNT(*) FROM roost_journal WHERE username = ?`, utf8); c != 0 {
		t.Fatalf("the journal names %q %d times", utf8, c)
	}
}

func TestHostsOf(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driver string) {
		s, _ := newStore(t, driver, 2500)
		users := append([]string{"nobody"}, oddUsers...)
		for i := range 2500 {
			users = append(users, fmt.Sprintf("user%07d", i))
		}
		got, err := s.HostsOf(context.Background(), users)
		if err != nil || len(got) != 2500+len(oddUsers) || got["user0000007"] != "10.0.0.3" || got[oddUsers[0]] != "10.0.0.1" {
			t.Fatalf("%d hosts, user0000007 on %q: %v", len(got), got["user0000007"], err)
		}
		if _, ok := got["nobody"]; ok {
			t.Fatal("a missing user has a host")
		}
	})
}

func TestStaleTermIsFencedAndWritesNothing(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driver string) {
		ctx := context.Background()
		s, db := newStore(t, driver, 100)
		if _, err := s.MoveBatch(ctx, placement.Fence{Term: 7, Leader: "new"}, "p7", "failover", []placement.Move{{User: "user0000000", From: "10.0.0.1", To: "10.0.0.2"}}); err != nil {
			t.Fatal(err)
		}
		// A deposed leader (term 6) tries to move someone: the database refuses.
		n, err := s.MoveBatch(ctx, placement.Fence{Term: 6, Leader: "old"}, "p6", "failover", []placement.Move{{User: "user0000005", From: "10.0.0.1", To: "10.0.0.3"}})
		if !errors.Is(err, placement.ErrFenced) || n != 0 || !strings.Contains(err.Error(), "stored term 7 by new") {
			t.Fatalf("stale writer: moved %d, %v; want ErrFenced", n, err)
		}
		// So does another leader claiming the same term.
		if _, err := s.MoveBatch(ctx, placement.Fence{Term: 7, Leader: "impostor"}, "p7", "failover", []placement.Move{{User: "user0000005", From: "10.0.0.1", To: "10.0.0.3"}}); !errors.Is(err, placement.ErrFenced) {
			t.Fatalf("a second leader of term 7 wrote: %v", err)
		}
		if h, _ := s.Lookup(ctx, "user0000005"); h != "10.0.0.1" {
			t.Fatalf("the stale writer's move landed: %s", h)
		}
		checkJournalMatchesTable(t, db, 1)
		if f, _, err := s.CurrentFence(ctx); err != nil || f != (placement.Fence{Term: 7, Leader: "new"}) {
			t.Fatalf("fence %+v %v", f, err)
		}
	})
}

// Two writers race for the same users: the database lets one term win;
// every user ends on exactly one host with exactly one journal entry.
func TestRacingWritersNeverBothWin(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driver string) {
		for round := range 3 {
			ctx := context.Background()
			s, db := newStore(t, driver, 5000)
			a := movesOff(t, s, "10.0.0.1", []placement.Target{{Node: "n2", Host: "10.0.0.2", Weight: 1}})
			b := movesOff(t, s, "10.0.0.1", []placement.Target{{Node: "n3", Host: "10.0.0.3", Weight: 1}})
			fences := []placement.Fence{{Term: 5, Leader: "a"}, {Term: 4, Leader: "b"}}
			if round == 2 {
				fences[1] = placement.Fence{Term: 5, Leader: "b"} // two leaders claim one term
			}
			var wg sync.WaitGroup
			errs, moved := make([]error, 2), make([]int, 2)
			for i, ms := range [][]placement.Move{a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					moved[i], errs[i] = s.MoveBatch(ctx, fences[i], "race", "test", ms)
				}()
			}
			wg.Wait()
			wins := 0
			for i := range 2 {
				if errs[i] != nil && !errors.Is(errs[i], placement.ErrFenced) {
					t.Fatalf("writer %d: %v", i, errs[i])
				}
				if moved[i] > 0 {
					wins++
				}
			}
			if wins != 1 || moved[0]+moved[1] != len(a) {
				t.Fatalf("round %d: moved %v (errors %v): want exactly one writer to move all %d", round, moved, errs, len(a))
			}
			checkJournalMatchesTable(t, db, len(a))
		}
	})
}
func TestHomedOnForFailback(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driver string) {
		ctx := context.Background()
		s, _ := newStore(t, driver, 50)
		ms := movesOff(t, s, "10.0.0.1", []placement.Target{{Node: "n2", Host: "10.0.0.2", Weight: 1}})
		if _, err := s.MoveBatch(ctx, placement.Fence{Term: 1, Leader: "x"}, "p1", "failover", ms); err != nil {
			t.Fatal(err)
		}
		// Moved on again (10.0.0.2 failed too): home stays 10.0.0.1.
		var again []placement.Move
		for _, m := range ms[:3] {
			again = append(again, placement.Move{User: m.User, From: "10.0.0.2", To: "10.0.0.3"})
		}
		if _, err := s.MoveBatch(ctx, placement.Fence{Term: 2, Leader: "x"}, "p2", "failover", again); err != nil {
			t.Fatal(err)
		}
		// One came home by hand already: not listed.
		home := []placement.Move{{User: ms[5].User, From: "10.0.0.2", To: "10.0.0.1"}}
		if _, err := s.MoveBatch(ctx, placement.Fence{Term: 2, Leader: "x"}, "p3", "failback", home); err != nil {
			t.Fatal(err)
		}
		homed := map[string]string{}
		if err := s.HomedOn(ctx, "10.0.0.1", func(u, now string) error { homed[u] = now; return nil }); err != nil {
			t.Fatal(err)
		}
		if len(homed) != len(ms)-1 || homed[again[0].User] != "10.0.0.3" || homed[ms[4].User] != "10.0.0.2" {
			t.Fatalf("%d users homed on 10.0.0.1, want %d: %v", len(homed), len(ms)-1, homed)
		}
		if _, ok := homed[ms[5].User]; ok {
			t.Fatalf("a user already home is listed")
		}
		if j, _ := s.Journal(ctx, again[0].User); len(j) != 2 || j[1].Home != "10.0.0.1" {
			t.Fatalf("second move's home: %+v", j)
		}
		// An operator's move makes the target the user's home: a failback
		// of the old home leaves the user where it was put.
		put := []placement.Move{{User: ms[4].User, From: "10.0.0.2", To: "10.0.0.4", Rehome: true}}
		if _, err := s.MoveBatch(ctx, placement.Fence{Term: 2, Leader: "x"}, "p4", "moved by an operator", put); err != nil {
			t.Fatal(err)
		}
		if j, _ := s.Journal(ctx, ms[4].User); len(j) != 2 || j[1].Home != "10.0.0.4" {
			t.Fatalf("an operator's move's home: %+v", j)
		}
		homed = map[string]string{}
		if err := s.HomedOn(ctx, "10.0.0.1", func(u, now string) error { homed[u] = now; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, ok := homed[ms[4].User]; ok || len(homed) != len(ms)-2 {
			t.Fatalf("after an operator's move, %d homed on 10.0.0.1 (want %d), moved user listed: %v", len(homed), len(ms)-2, ok)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for want, mutate := range map[string]func(*Config){
		`driver "oracle": want sqlite, postgres or mysql`: func(c *Config) { c.Driver = "oracle" },
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

func TestOpenNamesABadDSN(t *testing.T) {
	for driver, dsn := range map[string]string{"postgres": "host=127.0.0.1 port=notaport", "mysql": "root@tcp(127.0.0.1:3306", "sqlite": "/x.db?mode=ro"} {
		cfg := DefaultConfig()
		cfg.Driver, cfg.DSNFile = driver, filepath.Join(t.TempDir(), "dsn")
		os.WriteFile(cfg.DSNFile, []byte(dsn), 0o600)
		_, err := Open(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "not a "+driver+" data source name") || !strings.Contains(err.Error(), cfg.DSNFile) {
			t.Errorf("%s: %v", driver, err)
		}
	}
}

// The operator's filter keeps Roost's hands off the users it excludes.
func TestFilterExcludesUsers(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driver string) {
		ctx := context.Background()
		s, db := newStore(t, driver, 20)
		db.Exec(t, `UPDATE users SET active = 0 WHERE username = 'user0000000'`)
		f := openStore(t, db, "active = 1")
		if _, err := f.Lookup(ctx, "user0000000"); !errors.Is(err, ErrNoUser) {
			t.Fatalf("an inactive user was visible: %v", err)
		}
		n, err := f.MoveBatch(ctx, placement.Fence{Term: 1, Leader: "x"}, "p", "drain", []placement.Move{{User: "user0000000", From: "10.0.0.1", To: "10.0.0.2"}, {User: "user0000005", From: "10.0.0.1", To: "10.0.0.2"}})
		if err != nil || n != 1 {
			t.Fatalf("moved %d (%v), want only the active user", n, err)
		}
		if h, _ := s.Lookup(ctx, "user0000000"); h != "10.0.0.1" {
			t.Fatalf("the inactive user moved to %s", h)
		}
		cfg := f.cfg
		cfg.Filter = "no_such_column = 1"
		if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "routing.table, user_column, host_column, filter") {
			t.Fatalf("a broken filter opened: %v", err)
		}
	})
}

// A writer killed in the middle of a batch leaves nothing of it: not a
// user moved, not a journal row, not the fence advanced. Twice over: the
// roostd process dies (SIGKILL), and the database ends its session.
const killMeEnv = "ROOST_ROUTING_TEST_KILLME"

// moveAndHang is the killed writer: it moves users off 10.0.0.1 and,
// with the batch written but not committed, says so and waits to die.
func moveAndHang() int {
	cfg := DefaultConfig()
	cfg.Driver, cfg.DSNFile = os.Getenv("DRIVER"), os.Getenv("DSN_FILE")
	s, err := Open(context.Background(), cfg)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	testHookBeforeCommit = func() {
		fmt.Println("midway")
		time.Sleep(time.Minute)
	}
	ms := []placement.Move{}
	_ = s.UsersOn(context.Background(), "10.0.0.1", func(u string) error {
		ms = append(ms, placement.Move{User: u, From: "10.0.0.1", To: "10.0.0.2"})
		return nil
	})
	_, err = s.MoveBatch(context.Background(), placement.Fence{Term: 9, Leader: "doomed"}, "p", "test", ms)
	fmt.Println("committed?", err)
	return 0
}

func TestKilledWriterLeavesNoPartialBatch(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driver string) {
		ctx := context.Background()
		s, db := newStore(t, driver, 3000)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), killMeEnv+"=1", "DRIVER="+driver, "DSN_FILE="+s.cfg.DSNFile)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line != "midway\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the writer said %q", line)
		}
		// The batch is written, uncommitted, and its rows are locked.
		cmd.Process.Kill()
		cmd.Wait()
		checkUntouched(t, s, db)

		if driver == "sqlite" {
			return // an embedded database has no session to end
		}
		testHookBeforeCommit = func() {
			if n := db.Kill(t); n == 0 {
				t.Errorf("no session to kill")
			}
		}
		defer func() { testHookBeforeCommit = nil }()
		ms := movesOff(t, s, "10.0.0.1", fourTargets)
		if n, err := s.MoveBatch(ctx, placement.Fence{Term: 9, Leader: "doomed"}, "p", "test", ms); err == nil {
			t.Fatalf("moved %d in a killed session", n)
		}
		testHookBeforeCommit = nil
		checkUntouched(t, s, db)
	})
}

func checkUntouched(t *testing.T, s *Store, db *routingtest.DB) {
	t.Helper()
	// The server rolls the dead session back; a new writer gets its locks.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c, err := s.Counts(ctx); err != nil || c["10.0.0.1"] != 600+len(oddUsers) {
		t.Fatalf("after the kill: %v %v", c, err)
	}
	if n := count(t, db, `SELECT COUNT(*) FROM roost_journal`); n != 0 {
		t.Fatalf("%d journal rows of a killed batch", n)
	}
	if n := count(t, db, `SELECT COUNT(*) FROM roost_fence WHERE term = 9`); n != 0 {
		t.Fatalf("a killed batch advanced the fence")
	}
	if n, err := s.MoveBatch(ctx, placement.Fence{Term: 2, Leader: "next"}, "p", "test", []placement.Move{{User: "user0000000", From: "10.0.0.1", To: "10.0.0.3"}}); err != nil || n != 1 {
		t.Fatalf("after the kill a writer moved %d: %v", n, err)
	}
	if _, err := s.MoveBatch(ctx, placement.Fence{Term: 2, Leader: "next"}, "p", "test", []placement.Move{{User: "user0000000", From: "10.0.0.3", To: "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `DELETE FROM roost_journal`)
}

// A writer that freezes inside its transaction (a paused VM, SIGSTOP)
// must not hold the fence for ever: the server ends its idle transaction
// and the next leader writes; the frozen writer's commit then fails and
// leaves nothing behind.
func TestFrozenWriterDoesNotBlockTheNextLeader(t *testing.T) {
	defer func(d time.Duration) { txIdle = d }(txIdle)
	txIdle = time.Second
	for _, driver := range []string{"postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			frozen, db := newStore(t, driver, 1000)
			next := openStore(t, db, "")
			var first atomic.Bool
			midway, thaw := make(chan struct{}), make(chan struct{})
			testHookBeforeCommit = func() {
				if first.CompareAndSwap(false, true) {
					close(midway)
					<-thaw
				}
			}
			defer func() { testHookBeforeCommit = nil }()
			done := make(chan error, 1)
			go func() {
				ms := movesOff(t, frozen, "10.0.0.1", fourTargets[:1])
				_, err := frozen.MoveBatch(context.Background(), placement.Fence{Term: 5, Leader: "old"}, "p1", "test", ms)
				done <- err
			}()
			<-midway
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			start := time.Now()
			ms := movesOff(t, next, "10.0.0.1", fourTargets[1:2])
			n, err := next.MoveBatch(ctx, placement.Fence{Term: 6, Leader: "new"}, "p2", "test", ms)
			if err != nil || n != 200+len(oddUsers) {
				t.Fatalf("the next leader, behind a frozen writer: moved %d, %v", n, err)
			}
			t.Logf("the next leader wrote after %s", time.Since(start).Round(time.Millisecond))
			close(thaw)
			if err := <-done; err == nil {
				t.Fatal("the frozen writer's commit succeeded after its transaction was ended")
			}
			if c := count(t, db, `SELECT COUNT(*) FROM roost_journal WHERE term = 5`); c != 0 {
				t.Fatalf("%d journal rows of the frozen writer", c)
			}
			if c := count(t, db, `SELECT COUNT(*) FROM users WHERE proxy_host = '`+fourTargets[1].Host+`'`); c != 400+len(oddUsers) {
				t.Fatalf("%s holds %d users, want its 200 and the moved %d", fourTargets[1].Host, c, 200+len(oddUsers))
			}
		})
	}
}
