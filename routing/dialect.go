package routing

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"
	_ "modernc.org/sqlite"             // driver "sqlite", the embedded one
)

// dialect is what differs between the three databases: how a DSN is
// opened, how names are quoted, placeholders, row locks and Roost's own
// tables' DDL.
type dialect struct {
	name      string
	sqlDriver string
	// dollar: placeholders are $1, $2… (PostgreSQL), else ?.
	dollar bool
	// quote wraps an identifier.
	quote func(string) string
	// forUpdate locks the rows a SELECT read until the transaction ends
	// (SQLite needs none: its write transaction locks the database).
	forUpdate string
	// dsn checks the operator's DSN and adds what Roost needs.
	dsn func(string) (string, error)
	// ddl creates Roost's tables; lock and unlock serialise agents that
	// migrate at the same time.
	ddl          []string
	lock, unlock string
	// rows writes a table expression "… AS roost_v" with columns cols
	// holding data (data[c] is column c), passed as one parameter per
	// column or one JSON parameter: a batch joins it, where a CASE of n
	// WHENs would cost O(n²) and a statement per row a round trip each.
	rows func(q *query, cols []string, data [][]string)
	// txBounds start every write transaction: a writer that freezes (a
	// paused VM, SIGSTOP) in the middle of one must not hold the fence and
	// the rows locked for ever, or the next leader could never write. The
	// server ends a transaction left idle for txIdle, and a writer waits
	// twice that for a lock (longer than a frozen writer can hold it).
	// Statements that fail with "unknown variable" (MySQL has no
	// idle_transaction_timeout) are skipped.
	txBounds func(idle time.Duration) []string
	// updateJoin: UPDATE t JOIN v ON … SET (MySQL), not UPDATE t SET … FROM v.
	updateJoin bool
}

// txIdle bounds how long a frozen writer can hold its transaction open.
// Tests shorten it.
var txIdle = 10 * time.Second

var dialects = map[string]dialect{
	"sqlite": {
		name: "sqlite", sqlDriver: "sqlite",
		quote: func(s string) string { return `"` + s + `"` },
		dsn: func(s string) (string, error) {
			if strings.ContainsAny(s, "?") {
				return "", fmt.Errorf("want a database file path, got %q", s)
			}
			// immediate: a write transaction takes the write lock at BEGIN,
			// so two writers serialise instead of failing at upgrade.
			return s + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate", nil
		},
		ddl: []string{
			`CREATE TABLE IF NOT EXISTS roost_schema (version INTEGER NOT NULL)`,
			`CREATE TABLE IF NOT EXISTS roost_fence (id INTEGER PRIMARY KEY CHECK (id = 1), term BIGINT NOT NULL, leader TEXT NOT NULL, updated TIMESTAMP NOT NULL)`,
			`CREATE TABLE IF NOT EXISTS roost_journal (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT NOT NULL, from_host TEXT NOT NULL,
				to_host TEXT NOT NULL, home TEXT NOT NULL, reason TEXT NOT NULL, plan TEXT NOT NULL, term BIGINT NOT NULL, at TIMESTAMP NOT NULL)`,
			`CREATE INDEX IF NOT EXISTS roost_journal_user ON roost_journal (username, id)`,
			`CREATE INDEX IF NOT EXISTS roost_journal_home ON roost_journal (home)`,
		},
		// Each value travels in hex: JSON holds only UTF-8, and a user
		// name is any bytes Dovecot accepts (SQLite's TEXT holds them).
		rows: func(q *query, cols []string, data [][]string) {
			q.w(`(SELECT `)
			for i, c := range cols {
				if i > 0 {
					q.w(", ")
				}
				q.w("CAST(unhex(value->>", strconv.Itoa(i), ") AS TEXT) AS ", c)
			}
			q.w(` FROM json_each(`).arg(rowsJSON(data, hex.EncodeToString)).w(`)) AS roost_v`)
		},
	},
	"postgres": {
		name: "postgres", sqlDriver: "pgx", dollar: true,
		quote:     func(s string) string { return `"` + s + `"` },
		forUpdate: " FOR UPDATE",
		dsn: func(s string) (string, error) {
			if _, err := pgx.ParseConfig(s); err != nil {
				return "", err
			}
			return s, nil
		},
		ddl: []string{
			`CREATE TABLE IF NOT EXISTS roost_schema (version INTEGER NOT NULL)`,
			`CREATE TABLE IF NOT EXISTS roost_fence (id INTEGER PRIMARY KEY CHECK (id = 1), term BIGINT NOT NULL, leader TEXT NOT NULL, updated TIMESTAMPTZ NOT NULL)`,
			`CREATE TABLE IF NOT EXISTS roost_journal (id BIGSERIAL PRIMARY KEY, username TEXT NOT NULL, from_host TEXT NOT NULL,
				to_host TEXT NOT NULL, home TEXT NOT NULL, reason TEXT NOT NULL, plan TEXT NOT NULL, term BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL)`,
			`CREATE INDEX IF NOT EXISTS roost_journal_user ON roost_journal (username, id)`,
			`CREATE INDEX IF NOT EXISTS roost_journal_home ON roost_journal (home)`,
		},
		rows: func(q *query, cols []string, data [][]string) {
			q.w(`unnest(`)
			for i, col := range data {
				if i > 0 {
					q.w(", ")
				}
				q.argAs(col, "text[]")
			}
			q.w(`) AS roost_v(`, strings.Join(cols, ", "), `)`)
		},
		// Concurrent CREATE TABLE IF NOT EXISTS can fail in PostgreSQL.
		lock: `SELECT pg_advisory_lock(7007001)`, unlock: `SELECT pg_advisory_unlock(7007001)`,
		txBounds: func(idle time.Duration) []string {
			return []string{
				fmt.Sprintf(`SET LOCAL idle_in_transaction_session_timeout = %d`, idle.Milliseconds()),
				fmt.Sprintf(`SET LOCAL lock_timeout = %d`, 2*idle.Milliseconds()),
			}
		},
	},
	"mysql": {
		name: "mysql", sqlDriver: "mysql",
		quote:     func(s string) string { return "`" + s + "`" },
		forUpdate: " FOR UPDATE",
		dsn: func(s string) (string, error) {
			c, err := mysql.ParseDSN(s)
			if err != nil {
				return "", err
			}
			// Times as time.Time in UTC; RowsAffected counts matched rows,
			// so rewriting the fence with equal values still counts.
			c.ParseTime, c.Loc, c.ClientFoundRows = true, time.UTC, true
			return c.FormatDSN(), nil
		},
		ddl: []string{
			`CREATE TABLE IF NOT EXISTS roost_schema (version INT NOT NULL) ENGINE=InnoDB`,
			`CREATE TABLE IF NOT EXISTS roost_fence (id INT PRIMARY KEY CHECK (id = 1), term BIGINT NOT NULL, leader VARCHAR(255) NOT NULL,
				updated DATETIME(6) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
			`CREATE TABLE IF NOT EXISTS roost_journal (id BIGINT AUTO_INCREMENT PRIMARY KEY, username VARCHAR(255) NOT NULL, from_host VARCHAR(255) NOT NULL,
				to_host VARCHAR(255) NOT NULL, home VARCHAR(255) NOT NULL, reason VARCHAR(1000) NOT NULL, plan VARCHAR(255) NOT NULL, term BIGINT NOT NULL,
				at DATETIME(6) NOT NULL, INDEX roost_journal_user (username, id), INDEX roost_journal_home (home)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		},
		updateJoin: true,
		rows: func(q *query, cols []string, data [][]string) {
			q.w(`JSON_TABLE(`).arg(rowsJSON(data, nil)).w(`, '$[*]' COLUMNS (`)
			for i, c := range cols {
				if i > 0 {
					q.w(", ")
				}
				q.w(c, ` VARCHAR(1000) CHARACTER SET utf8mb4 PATH '$[`, strconv.Itoa(i), `]'`)
			}
			q.w(`)) AS roost_v`)
		},
		lock: `SELECT GET_LOCK('roost_migrate', 60)`, unlock: `SELECT RELEASE_LOCK('roost_migrate')`,
		txBounds: func(idle time.Duration) []string {
			return []string{
				fmt.Sprintf(`SET SESSION idle_transaction_timeout = %d`, max(1, int(idle.Seconds()))), // MariaDB 10.3+
				fmt.Sprintf(`SET SESSION innodb_lock_wait_timeout = %d`, max(1, int(2*idle.Seconds()))),
			}
		},
	},
}

// rowsJSON encodes columns as the JSON array of rows [[c0, c1, …], …],
// each value through enc if not nil.
func rowsJSON(data [][]string, enc func([]byte) string) string {
	rows := make([][]string, len(data[0]))
	for r := range rows {
		rows[r] = make([]string, len(data))
		for c := range data {
			rows[r][c] = data[c][r]
			if enc != nil {
				rows[r][c] = enc([]byte(data[c][r]))
			}
		}
	}
	b, _ := json.Marshal(rows)
	return string(b)
}

// query builds one statement with the dialect's placeholders.
type query struct {
	d    *dialect
	b    strings.Builder
	args []any
}

func (d *dialect) query(sql ...string) *query {
	q := &query{d: d}
	for _, s := range sql {
		q.b.WriteString(s)
	}
	return q
}

// w writes SQL text.
func (q *query) w(sql ...string) *query {
	for _, s := range sql {
		q.b.WriteString(s)
	}
	return q
}

// arg writes a placeholder for v.
func (q *query) arg(v any) *query {
	q.args = append(q.args, v)
	if q.d.dollar {
		q.b.WriteString("$" + strconv.Itoa(len(q.args)))
	} else {
		q.b.WriteByte('?')
	}
	return q
}

// argAs writes a placeholder for v, cast to pgType in PostgreSQL, whose
// parameters otherwise have no type where SQL gives none.
func (q *query) argAs(v any, pgType string) *query {
	q.arg(v)
	if q.d.dollar {
		q.b.WriteString("::" + pgType)
	}
	return q
}

func (q *query) String() string { return q.b.String() }
