package routing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/roost-mail/roost/placement"
	"github.com/roost-mail/roost/secret"
)

// Config is the routing part of the agent's configuration: where the
// users table is and what its columns are called. The table is the
// operator's; Roost changes only the host column, and only under its fence.
type Config struct {
	// Driver is sqlite (embedded: one host and the demo), postgres or
	// mysql (MySQL and MariaDB).
	Driver string `yaml:"driver"`
	// DSNFile holds the data source name, so a password never sits in
	// this file: for sqlite the database path, for postgres a libpq
	// connection string or URL, for mysql go-sql-driver's
	// user:password@tcp(host:3306)/mail.
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
	if _, ok := dialects[c.Driver]; !ok {
		return fmt.Errorf("driver %q: want sqlite, postgres or mysql", c.Driver)
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
	// ErrNoUser: no such user (or the filter excludes it).
	ErrNoUser = errors.New("no such user")
)

// Store is the users table plus Roost's fence and move journal. Its
// methods are safe for concurrent use; they block on the database.
type Store struct {
	cfg Config
	d   *dialect
	db  *sql.DB
	// table, user and host are the operator's names, quoted.
	table, user, host string
}

// batchSize bounds the users per statement: placeholders stay far below
// every driver's limit (SQLite 32766, PostgreSQL and MySQL 65535).
const batchSize = 1000

// testHookBeforeCommit, when set, runs after a batch is written and
// before it commits: tests kill the writer there.
var testHookBeforeCommit func()

// Open connects, and creates or migrates Roost's own tables.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b, err := secret.Read("routing dsn_file", cfg.DSNFile)
	if err != nil {
		return nil, err
	}
	d := dialects[cfg.Driver]
	dsn, err := d.dsn(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("routing dsn_file %s: not a %s data source name: %w", cfg.DSNFile, cfg.Driver, err)
	}
	db, err := sql.Open(d.sqlDriver, dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(8)
	db.SetConnMaxIdleTime(time.Minute)
	s := &Store{cfg: cfg, d: &d, db: db, table: d.quote(cfg.Table), user: d.quote(cfg.UserColumn), host: d.quote(cfg.HostColumn)}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) filter() string {
	if s.cfg.Filter == "" {
		return ""
	}
	return " AND (" + s.cfg.Filter + ")"
}

// schemaVersion is the version of Roost's own tables.
const schemaVersion = 1

// conn is what *sql.Conn and *sql.Tx share.
type conn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) migrate(ctx context.Context) (err error) {
	c, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connecting to the routing database: %w", err)
	}
	defer c.Close()
	var x conn = c
	if s.d.lock != "" {
		if _, err := c.ExecContext(ctx, s.d.lock); err != nil {
			return fmt.Errorf("migrating routing tables: %w", err)
		}
		defer c.ExecContext(context.Background(), s.d.unlock)
	} else {
		tx, err := c.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrating routing tables: %w", err)
		}
		x = tx
		defer func() {
			if err == nil {
				err = tx.Commit()
			} else {
				tx.Rollback()
			}
		}()
	}
	for _, m := range s.d.ddl {
		if _, err := x.ExecContext(ctx, m); err != nil {
			return fmt.Errorf("migrating routing tables: %w", err)
		}
	}
	var n int
	if err := x.QueryRowContext(ctx, `SELECT COUNT(*) FROM roost_fence`).Scan(&n); err != nil {
		return fmt.Errorf("migrating routing tables: %w", err)
	}
	if n == 0 {
		q := s.d.query(`INSERT INTO roost_fence (id, term, leader, updated) VALUES (1, 0, '', `).arg(time.Now().UTC()).w(`)`)
		if _, err := x.ExecContext(ctx, q.String(), q.args...); err != nil {
			return fmt.Errorf("migrating routing tables: %w", err)
		}
	}
	var v int
	switch err := x.QueryRowContext(ctx, `SELECT version FROM roost_schema`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		q := s.d.query(`INSERT INTO roost_schema (version) VALUES (`).arg(schemaVersion).w(`)`)
		if _, err := x.ExecContext(ctx, q.String(), q.args...); err != nil {
			return err
		}
	case err != nil:
		return err
	case v > schemaVersion:
		return fmt.Errorf("routing tables are at schema version %d, newer than this roostd's %d: upgrade roostd", v, schemaVersion)
	}
	q := s.lookup("")
	rows, err := x.QueryContext(ctx, q.String(), q.args...)
	if err != nil {
		return fmt.Errorf("reading the users table (routing.table, user_column, host_column, filter): %w", err)
	}
	return rows.Close()
}

// UsersOn calls fn with each user whose host is host, in name order,
// streaming the rows.
func (s *Store) UsersOn(ctx context.Context, host string, fn func(user string) error) error {
	q := s.d.query(`SELECT `, s.user, ` FROM `, s.table, ` WHERE `, s.host, ` = `).arg(host).w(s.filter(), ` ORDER BY `, s.user)
	rows, err := s.db.QueryContext(ctx, q.String(), q.args...)
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
	q := s.d.query(`SELECT `, s.host, `, COUNT(*) FROM `, s.table, ` WHERE 1=1`, s.filter(), ` GROUP BY `, s.host)
	rows, err := s.db.QueryContext(ctx, q.String())
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

func (s *Store) lookup(user string) *query {
	return s.d.query(`SELECT `, s.host, ` FROM `, s.table, ` WHERE `, s.user, ` = `).arg(user).w(s.filter())
}

// Lookup returns a user's host.
func (s *Store) Lookup(ctx context.Context, user string) (string, error) {
	var h sql.NullString
	q := s.lookup(user)
	err := s.db.QueryRowContext(ctx, q.String(), q.args...).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNoUser
	}
	return h.String, err
}

// HostsOf returns the hosts of the given users (those that exist and
// pass the filter), in one query per 1,000 users.
func (s *Store) HostsOf(ctx context.Context, users []string) (map[string]string, error) {
	out := make(map[string]string, len(users))
	for i := 0; i < len(users); i += batchSize {
		q := s.d.query(`SELECT `, s.user, `, `, s.host, ` FROM `, s.table, ` WHERE `, s.user, ` IN (SELECT roost_u FROM `)
		s.d.rows(q, []string{"roost_u"}, [][]string{users[i:min(i+batchSize, len(users))]})
		q.w(`)`, s.filter())
		if err := s.each(ctx, s.db, q, func(u, h string) { out[u] = h }); err != nil {
			return nil, fmt.Errorf("looking up %d users: %w", len(users), err)
		}
	}
	return out, nil
}

// CurrentFence returns the stored fence: the newest writer.
func (s *Store) CurrentFence(ctx context.Context) (placement.Fence, time.Time, error) {
	var f placement.Fence
	var at time.Time
	err := s.db.QueryRowContext(ctx, `SELECT term, leader, updated FROM roost_fence WHERE id = 1`).Scan(&f.Term, &f.Leader, &at)
	return f, at, err
}

// MoveBatch moves a batch in one transaction: it first advances the fence
// (and fails with placement.ErrFenced, writing nothing, when a newer term, or
// another leader of the same term, has written), then updates each user
// only if it is still on From, and journals each row that changed.
// Running the same batch again changes nothing. It returns how many users
// moved.
func (s *Store) MoveBatch(ctx context.Context, f placement.Fence, plan, reason string, moves []placement.Move) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("routing batch: %w", err)
	}
	defer tx.Rollback()
	var bounds []string
	if s.d.txBounds != nil {
		bounds = s.d.txBounds(txIdle)
	}
	for _, b := range bounds {
		if _, err := tx.ExecContext(ctx, b); err != nil && !unknownVariable(err) {
			return 0, fmt.Errorf("routing batch: %s: %w", b, err)
		}
	}
	now := time.Now().UTC()
	term := int64(f.Term)
	q := s.d.query(`UPDATE roost_fence SET term = `).arg(term).w(`, leader = `).arg(f.Leader).w(`, updated = `).arg(now).
		w(` WHERE id = 1 AND (term < `).arg(term).w(` OR (term = `).arg(term).w(` AND leader = `).arg(f.Leader).w(`))`)
	res, err := tx.ExecContext(ctx, q.String(), q.args...)
	if err != nil {
		return 0, fmt.Errorf("advancing the fence: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		var stored placement.Fence
		_ = tx.QueryRowContext(ctx, `SELECT term, leader FROM roost_fence WHERE id = 1`).Scan(&stored.Term, &stored.Leader)
		return 0, fmt.Errorf("%w (stored term %d by %s, ours %d by %s)", placement.ErrFenced, stored.Term, stored.Leader, f.Term, f.Leader)
	}
	// One UPDATE per source host and chunk: a batch has one source host in
	// a failover or drain, several in a failback.
	bySource := map[string][]placement.Move{}
	var sources []string
	for _, m := range moves {
		if m.To == m.From {
			continue
		}
		if _, ok := bySource[m.From]; !ok {
			sources = append(sources, m.From)
		}
		bySource[m.From] = append(bySource[m.From], m)
	}
	moved := 0
	for _, from := range sources {
		ms := bySource[from]
		for i := 0; i < len(ms); i += batchSize {
			n, err := s.moveChunk(ctx, tx, f, plan, reason, now, from, ms[i:min(i+batchSize, len(ms))])
			if err != nil {
				return 0, err
			}
			moved += n
		}
	}
	if testHookBeforeCommit != nil {
		testHookBeforeCommit()
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("committing routing batch: %w", err)
	}
	return moved, nil
}

// moveChunk moves users that all come from one host: it locks their rows,
// keeps those still on from, rewrites them in one UPDATE and journals
// them in one INSERT.
func (s *Store) moveChunk(ctx context.Context, tx *sql.Tx, f placement.Fence, plan, reason string, now time.Time, from string, ms []placement.Move) (int, error) {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.User
	}
	q := s.d.query(`SELECT `, s.user, `, `, s.host, ` FROM `, s.table, ` WHERE `, s.user, ` IN (SELECT roost_u FROM `)
	s.d.rows(q, []string{"roost_u"}, [][]string{names})
	q.w(`)`, s.filter(), s.d.forUpdate)
	current := map[string]string{}
	if err := s.each(ctx, tx, q, func(u, h string) { current[u] = h }); err != nil {
		return 0, fmt.Errorf("reading users on %s: %w", from, err)
	}
	names = names[:0]
	var tos []string
	rehome := map[string]bool{}
	for _, m := range ms {
		if m.Rehome {
			rehome[m.User] = true
		}
		if h, ok := current[m.User]; ok && h == from {
			names, tos = append(names, m.User), append(tos, m.To)
			delete(current, m.User) // a user listed twice moves once
		}
	}
	if len(names) == 0 {
		return 0, nil // already moved, or moved by hand meanwhile: leave them
	}
	// The rows are locked; the UPDATE still checks the host, so a move
	// never lands on a user that is no longer on from.
	q = s.d.query(`UPDATE `, s.table)
	if s.d.updateJoin {
		q.w(` JOIN `)
		s.d.rows(q, []string{"roost_u", "roost_to"}, [][]string{names, tos})
		q.w(` ON `, s.table, `.`, s.user, ` = roost_v.roost_u SET `, s.table, `.`, s.host, ` = roost_v.roost_to`)
	} else {
		q.w(` SET `, s.host, ` = roost_v.roost_to FROM `)
		s.d.rows(q, []string{"roost_u", "roost_to"}, [][]string{names, tos})
	}
	q.w(` WHERE `, s.table, `.`, s.user, ` = roost_v.roost_u AND `, s.table, `.`, s.host, ` = `).arg(from).w(s.filter())
	res, err := tx.ExecContext(ctx, q.String(), q.args...)
	if err != nil {
		return 0, fmt.Errorf("moving users off %s: %w", from, err)
	}
	if n, err := res.RowsAffected(); err != nil || int(n) != len(names) {
		return 0, fmt.Errorf("moving users off %s: %d rows changed of %d locked (%v); nothing written", from, n, len(names), err)
	}
	// A user's home is where they lived before Roost first moved them.
	homes := map[string]string{}
	q = s.d.query(`SELECT username, home FROM roost_journal WHERE username IN (SELECT roost_u FROM `)
	s.d.rows(q, []string{"roost_u"}, [][]string{names})
	q.w(`) ORDER BY id`)
	if err := s.each(ctx, tx, q, func(u, h string) { homes[u] = h }); err != nil {
		return 0, fmt.Errorf("reading the journal: %w", err)
	}
	home := make([]string, len(names))
	for i, u := range names {
		switch home[i] = homes[u]; {
		case rehome[u]:
			home[i] = tos[i]
		case home[i] == "":
			home[i] = from
		}
	}
	q = s.d.query(`INSERT INTO roost_journal (username, from_host, to_host, home, reason, plan, term, at) SELECT roost_u, `).argAs(from, "text").
		w(`, roost_to, roost_home, `).argAs(reason, "text").w(`, `).argAs(plan, "text").w(`, `).argAs(int64(f.Term), "bigint").w(`, `).argAs(now, "timestamptz").w(` FROM `)
	s.d.rows(q, []string{"roost_u", "roost_to", "roost_home"}, [][]string{names, tos, home})
	if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
		return 0, fmt.Errorf("journaling moves off %s: %w", from, err)
	}
	return len(names), nil
}

// each runs a two-column string query, calling fn per row.
func (s *Store) each(ctx context.Context, c conn, q *query, fn func(a, b string)) error {
	rows, err := c.QueryContext(ctx, q.String(), q.args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		var b sql.NullString
		if err := rows.Scan(&a, &b); err != nil {
			return err
		}
		fn(a, b.String)
	}
	return rows.Err()
}

// Entry is one journaled move.
type Entry struct {
	User, From, To, Home, Reason, Plan string
	Term                               uint64
	At                                 time.Time
}

// Journal returns a user's moves, oldest first.
func (s *Store) Journal(ctx context.Context, user string) ([]Entry, error) {
	es, err := s.History(ctx, user, "", time.Time{}, 0)
	slices.Reverse(es)
	return es, err
}

// History returns journaled moves, newest first: a user's (user set), a
// host's (moves from or to it), or everyone's; since a time (unless
// zero); at most limit (0: all).
func (s *Store) History(ctx context.Context, user, host string, since time.Time, limit int) ([]Entry, error) {
	q := s.d.query(`SELECT username, from_host, to_host, home, reason, plan, term, at FROM roost_journal WHERE 1 = 1`)
	if user != "" {
		q.w(` AND username = `).arg(user)
	}
	if host != "" {
		q.w(` AND (from_host = `).arg(host).w(` OR to_host = `).arg(host).w(`)`)
	}
	if !since.IsZero() {
		q.w(` AND at >= `).argAs(since.UTC(), "timestamptz")
	}
	q.w(` ORDER BY id DESC`)
	if limit > 0 {
		q.w(fmt.Sprintf(` LIMIT %d`, limit))
	}
	rows, err := s.db.QueryContext(ctx, q.String(), q.args...)
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
	q := s.d.query(`SELECT j.username, u.`, s.host, ` FROM roost_journal j JOIN `, s.table, ` u ON u.`, s.user, ` = j.username
		WHERE j.home = `).arg(host).w(` AND j.id = (SELECT MAX(j2.id) FROM roost_journal j2 WHERE j2.username = j.username) AND u.`, s.host, ` <> `).arg(host).
		w(s.filter(), ` ORDER BY j.username`)
	var users, hosts []string
	if err := s.each(ctx, s.db, q, func(u, h string) { users, hosts = append(users, u), append(hosts, h) }); err != nil {
		return fmt.Errorf("listing users homed on %s: %w", host, err)
	}
	for i, u := range users {
		if err := fn(u, hosts[i]); err != nil {
			return err
		}
	}
	return nil
}

// unknownVariable: MySQL lacks a variable that MariaDB has (error 1193).
func unknownVariable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1193
}
