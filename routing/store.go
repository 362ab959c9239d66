package routing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the embedded driver
)

// Config is the routing part of the agent's configuration: where the
// users table is and what its columns are called. The table is the
// operator's; Roost changes only the host column, and only under its fence.
type Config struct {
	// Driver is sqlite (embedded, one host and the demo); postgres and
	// mysql follow.
	Driver string `yaml:"driver"`
	// DSNFile holds the data source name (for sqlite, the database path),
	// so a password never sits in this file.
	DSNFile string `yaml:"dsn_file"`
	// Table, UserColumn and HostColumn name the passdb's users table, its
	// user name column and its proxy_host column.
	Table      string `yaml:"table"`
	UserColumn string `yaml:"user_column"`
	HostColumn string `yaml:"host_column"`
	// Filter is an optional SQL condition limiting the users Roost may
	// move, e.g. "active = 1". It is the operator's SQL, used verbatim.
	Filter string `yaml:"filter"`
}

// DefaultConfig names the lab's schema: users(username, proxy_host).
func DefaultConfig() Config {
	return Config{Driver: "sqlite", Table: "users", UserColumn: "username", HostColumn: "proxy_host"}
}

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// Validate reports the first problem, naming the key (relative to the
// routing section) and its value.
func (c Config) Validate() error {
	switch c.Driver {
	case "sqlite":
	case "postgres", "mysql":
		return fmt.Errorf("driver %q: not in this version yet; sqlite is", c.Driver)
	default:
		return fmt.Errorf("driver %q: want sqlite", c.Driver)
	}
	if c.DSNFile == "" {
		return errors.New("dsn_file is empty")
	}
	for key, v := range map[string]string{"table": c.Table, "user_column": c.UserColumn, "host_column": c.HostColumn} {
		if !ident.MatchString(v) {
			return fmt.Errorf("%s %q: want an SQL identifier (letters, digits, _)", key, v)
		}
	}
	if strings.Contains(c.Filter, ";") {
		return fmt.Errorf("filter %q: one condition, no ';'", c.Filter)
	}
	return nil
}

// Errors callers act on.
var (
	// ErrFenced: a writer with a newer term has written; this one is
	// deposed and wrote nothing.
	ErrFenced = errors.New("fenced: a newer raft term has written routing")
	// ErrNoUser: no such user (or the filter excludes it).
	ErrNoUser = errors.New("no such user")
)

// Store is the users table plus Roost's fence and move journal. Its
// methods are safe for concurrent use; they block on the database.
type Store struct {
	cfg Config
	db  *sql.DB
	q   queries
}

type queries struct {
	usersOn, count, lookup, move string
}

// Open connects, and creates or migrates Roost's own tables.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(cfg.DSNFile)
	if err != nil {
		return nil, fmt.Errorf("routing dsn_file: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	db, err := sql.Open("sqlite", dsn+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, db: db}
	s.q = s.buildQueries()
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func quote(id string) string { return `"` + id + `"` }

func (s *Store) where() string {
	if s.cfg.Filter == "" {
		return ""
	}
	return " AND (" + s.cfg.Filter + ")"
}

func (s *Store) buildQueries() queries {
	t, u, h := quote(s.cfg.Table), quote(s.cfg.UserColumn), quote(s.cfg.HostColumn)
	return queries{
		usersOn: fmt.Sprintf(`SELECT %s FROM %s WHERE %s = ?%s ORDER BY %s`, u, t, h, s.where(), u),
		count:   fmt.Sprintf(`SELECT %s, COUNT(*) FROM %s WHERE 1=1%s GROUP BY %s`, h, t, s.where(), h),
		lookup:  fmt.Sprintf(`SELECT %s FROM %s WHERE %s = ?%s`, h, t, u, s.where()),
		move:    fmt.Sprintf(`UPDATE %s SET %s = ? WHERE %s = ? AND %s = ?%s`, t, h, u, h, s.where()),
	}
}

// schemaVersion is the version of Roost's own tables.
const schemaVersion = 1

var migrations = []string{
	`CREATE TABLE IF NOT EXISTS roost_schema (version INTEGER NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS roost_fence (id INTEGER PRIMARY KEY CHECK (id = 1), term BIGINT NOT NULL, leader TEXT NOT NULL, updated TIMESTAMP NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS roost_journal (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT NOT NULL, from_host TEXT NOT NULL,
		to_host TEXT NOT NULL, home TEXT NOT NULL, reason TEXT NOT NULL, plan TEXT NOT NULL, term BIGINT NOT NULL, at TIMESTAMP NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS roost_journal_user ON roost_journal (username, id)`,
	`INSERT INTO roost_fence (id, term, leader, updated) SELECT 1, 0, '', CURRENT_TIMESTAMP WHERE NOT EXISTS (SELECT 1 FROM roost_fence)`,
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrating routing tables: %w", err)
	}
	defer tx.Rollback()
	for _, m := range migrations {
		if _, err := tx.ExecContext(ctx, m); err != nil {
			return fmt.Errorf("migrating routing tables: %w", err)
		}
	}
	var v int
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM roost_schema`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO roost_schema (version) VALUES (?)`, schemaVersion); err != nil {
			return err
		}
	case err != nil:
		return err
	case v > schemaVersion:
		return fmt.Errorf("routing tables are at schema version %d, newer than this roostd's %d: upgrade roostd", v, schemaVersion)
	}
	rows, err := tx.QueryContext(ctx, s.q.lookup, "")
	if err != nil {
		return fmt.Errorf("reading the users table (routing.table, user_column, host_column, filter): %w", err)
	}
	rows.Close()
	return tx.Commit()
}

// UsersOn calls fn with each user whose host is host, in name order.
func (s *Store) UsersOn(ctx context.Context, host string, fn func(user string) error) error {
	rows, err := s.db.QueryContext(ctx, s.q.usersOn, host)
	if err != nil {
		return fmt.Errorf("listing users on %s: %w", host, err)
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return err
		}
		if err := fn(u); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Counts returns the number of users per host.
func (s *Store) Counts(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, s.q.count)
	if err != nil {
		return nil, fmt.Errorf("counting users per host: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var h sql.NullString
		var n int
		if err := rows.Scan(&h, &n); err != nil {
			return nil, err
		}
		out[h.String] += n
	}
	return out, rows.Err()
}

// Lookup returns a user's host.
func (s *Store) Lookup(ctx context.Context, user string) (string, error) {
	var h sql.NullString
	err := s.db.QueryRowContext(ctx, s.q.lookup, user).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNoUser
	}
	return h.String, err
}

// Fence is the writer's raft term and name.
type Fence struct {
	Term   uint64
	Leader string
}

// Move is one user's move from one host to another.
type Move struct {
	User, From, To string
}

// MoveBatch moves a batch in one transaction: it first advances the fence
// (and fails with ErrFenced, writing nothing, when a newer term has
// written), then updates each user only if it is still on From, and
// journals each row that changed. Running the same batch again changes
// nothing. It returns how many users moved.
func (s *Store) MoveBatch(ctx context.Context, f Fence, plan, reason string, moves []Move) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("routing batch: %w", err)
	}
	defer tx.Rollback()
	now := time.Now().UTC()
	res, err := tx.ExecContext(ctx, `UPDATE roost_fence SET term = ?, leader = ?, updated = ? WHERE id = 1 AND term <= ?`, f.Term, f.Leader, now, f.Term)
	if err != nil {
		return 0, fmt.Errorf("advancing the fence: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		var term uint64
		var leader string
		_ = tx.QueryRowContext(ctx, `SELECT term, leader FROM roost_fence WHERE id = 1`).Scan(&term, &leader)
		return 0, fmt.Errorf("%w (stored term %d by %s, ours %d by %s)", ErrFenced, term, leader, f.Term, f.Leader)
	}
	update, err := tx.PrepareContext(ctx, s.q.move)
	if err != nil {
		return 0, err
	}
	defer update.Close()
	moved := 0
	for _, m := range moves {
		res, err := update.ExecContext(ctx, m.To, m.User, m.From)
		if err != nil {
			return 0, fmt.Errorf("moving %q: %w", m.User, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue // already moved, or moved by hand meanwhile: leave it
		}
		home := m.From
		var prev string
		switch err := tx.QueryRowContext(ctx, `SELECT home FROM roost_journal WHERE username = ? ORDER BY id DESC LIMIT 1`, m.User).Scan(&prev); {
		case err == nil:
			home = prev
		case !errors.Is(err, sql.ErrNoRows):
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO roost_journal (username, from_host, to_host, home, reason, plan, term, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			m.User, m.From, m.To, home, reason, plan, f.Term, now); err != nil {
			return 0, fmt.Errorf("journaling %q: %w", m.User, err)
		}
		moved++
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("committing routing batch: %w", err)
	}
	return moved, nil
}

// Entry is one journaled move.
type Entry struct {
	User, From, To, Home, Reason, Plan string
	Term                               uint64
	At                                 time.Time
}

// Journal returns a user's moves, oldest first.
func (s *Store) Journal(ctx context.Context, user string) ([]Entry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT username, from_host, to_host, home, reason, plan, term, at FROM roost_journal WHERE username = ? ORDER BY id`, user)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.User, &e.From, &e.To, &e.Home, &e.Reason, &e.Plan, &e.Term, &e.At); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// HomedOn calls fn with each user whose home (where they lived before
// Roost first moved them) is host and who lives elsewhere now: the users a
// failback brings back.
func (s *Store) HomedOn(ctx context.Context, host string, fn func(user, now string) error) error {
	q := fmt.Sprintf(`SELECT j.username, u.%[1]s FROM roost_journal j JOIN %[2]s u ON u.%[3]s = j.username
		WHERE j.id = (SELECT MAX(id) FROM roost_journal WHERE username = j.username) AND j.home = ? AND u.%[1]s <> ? ORDER BY j.username`,
		quote(s.cfg.HostColumn), quote(s.cfg.Table), quote(s.cfg.UserColumn))
	rows, err := s.db.QueryContext(ctx, q, host, host)
	if err != nil {
		return fmt.Errorf("listing users homed on %s: %w", host, err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, h string
		if err := rows.Scan(&u, &h); err != nil {
			return err
		}
		if err := fn(u, h); err != nil {
			return err
		}
	}
	return rows.Err()
}
