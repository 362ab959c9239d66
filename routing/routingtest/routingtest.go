// Package routingtest runs the databases Roost's routing is tested on:
// a private PostgreSQL and a private MariaDB server (Debian's packages,
// started as their system users in a temporary directory, one each per
// test binary) and SQLite files. Each test gets a database of its own.
// It starts and ends only its own processes, by pid.
package routingtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"
	_ "modernc.org/sqlite"             // driver "sqlite"
)

// Drivers are the routing drivers, as routing.Config.Driver names them.
var Drivers = []string{"sqlite", "postgres", "mysql"}

// Main runs the tests and then stops the servers they started. Use it
// from TestMain: os.Exit(routingtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops every server this process started (a program that used Open
// calls it before it exits).
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	for k, s := range servers {
		s.stop()
		delete(servers, k)
	}
}

var (
	mu      sync.Mutex
	servers = map[string]*server{}
	dbSeq   atomic.Int64
)

type server struct {
	dir   string
	cmd   *exec.Cmd
	admin string         // DSN of the superuser, without a database
	sig   syscall.Signal // what shuts it down fast
	err   error
	// restart starts the server again on its data and port (PostgreSQL).
	restart func() error
	exited  chan struct{} // closed once cmd has exited and been reaped
}

// run starts cmd and reaps it when it exits.
func (s *server) run() error {
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(s.cmd, s.exited)
	return nil
}

// DB is one test's database.
type DB struct {
	Driver string
	DSN    string  // what routing's dsn_file holds
	Admin  *sql.DB // the same database as its owner, for fixtures
}

// Open gives the test a fresh, empty database on driver's server.
func Open(tb testing.TB, driver string) *DB {
	tb.Helper()
	n := dbSeq.Add(1)
	name := fmt.Sprintf("roost_t%d", n)
	switch driver {
	case "sqlite":
		path := filepath.Join(tb.TempDir(), "mail.db")
		admin, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { admin.Close() })
		return &DB{Driver: driver, DSN: path, Admin: admin}
	case "postgres":
		s := start(tb, driver, startPostgres)
		exec1(tb, "pgx", s.admin+" dbname=postgres", "CREATE DATABASE "+name)
		dsn := s.admin + " dbname=" + name
		admin, err := sql.Open("pgx", dsn)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { admin.Close() })
		return &DB{Driver: driver, DSN: dsn, Admin: admin}
	case "mysql":
		s := start(tb, driver, startMariaDB)
		exec1(tb, "mysql", s.admin, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
		dsn := strings.Replace(s.admin, ")/", ")/"+name, 1)
		admin, err := sql.Open("mysql", dsn)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { admin.Close() })
		return &DB{Driver: driver, DSN: dsn, Admin: admin}
	}
	tb.Fatalf("routingtest: unknown driver %q", driver)
	return nil
}

// Rebind turns ? placeholders into the driver's ($1… for PostgreSQL).
func (d *DB) Rebind(q string) string {
	if d.Driver != "postgres" {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Exec runs a fixture statement with ? placeholders, failing the test on error.
func (d *DB) Exec(tb testing.TB, q string, args ...any) sql.Result {
	tb.Helper()
	r, err := d.Admin.Exec(d.Rebind(q), args...)
	if err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return r
}

// CreateUsers creates the operator's table users(username, password,
// proxy_host, active) with n users user0000000… spread over hosts
// 10.0.0.1–10.0.0.<hosts>, generated inside the database (fast for a
// million rows).
func (d *DB) CreateUsers(tb testing.TB, n, hosts int) {
	tb.Helper()
	d.Exec(tb, `CREATE TABLE users (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255), proxy_host VARCHAR(255), active INTEGER DEFAULT 1)`)
	if n == 0 {
		return
	}
	var q string
	switch d.Driver {
	case "postgres":
		q = fmt.Sprintf(`INSERT INTO users (username, proxy_host) SELECT 'user' || lpad(g::text, 7, '0'), '10.0.0.' || (g %% %d + 1) FROM generate_series(0, %d) g`, hosts, n-1)
	case "mysql":
		q = fmt.Sprintf(`INSERT INTO users (username, proxy_host) SELECT CONCAT('user', LPAD(seq, 7, '0')), CONCAT('10.0.0.', seq %% %d + 1) FROM seq_0_to_%d`, hosts, n-1)
	default:
		q = fmt.Sprintf(`WITH RECURSIVE g(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM g WHERE x < %d)
			INSERT INTO users (username, proxy_host) SELECT 'user' || printf('%%07d', x), '10.0.0.' || (x %% %d + 1) FROM g`, n-1, hosts)
	}
	d.Exec(tb, q)
	if d.Driver == "postgres" {
		d.Exec(tb, `ANALYZE users`)
	}
}

// Kill ends, on the server, every session of the database but the
// fixture's own: what a DBA's pg_terminate_backend or KILL does to a
// writer in the middle of a transaction. It returns how many it ended.
func (d *DB) Kill(tb testing.TB) int {
	tb.Helper()
	ctx := context.Background()
	conn, err := d.Admin.Conn(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	var q string
	switch d.Driver {
	case "postgres":
		q = `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`
	case "mysql":
		q = `SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()`
	default:
		tb.Fatalf("Kill: not for %s", d.Driver)
	}
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		tb.Fatal(err)
	}
	var ids []int64
	n := 0
	for rows.Next() {
		var v any
		if err := rows.Scan(&v); err != nil {
			tb.Fatal(err)
		}
		n++
		if id, ok := v.(int64); ok {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if d.Driver == "mysql" {
		for _, id := range ids {
			if _, err := conn.ExecContext(ctx, "KILL "+strconv.FormatInt(id, 10)); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return n
}

func exec1(tb testing.TB, driver, dsn, q string) {
	tb.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
}

// start returns the running server for driver, starting it once.
func start(tb testing.TB, driver string, fn func(*server) error) *server {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	s, ok := servers[driver]
	if !ok {
		s = &server{}
		servers[driver] = s
		s.err = fn(s)
	}
	if s.err != nil {
		tb.Fatalf("starting %s for the test: %v", driver, s.err)
	}
	return s
}

func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(s.sig)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

// sysUser returns the uid and gid of a system user.
func sysUser(name string) (uint32, uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s (is the server's Debian package installed? scripts/test-deps.sh installs it): %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid), nil
}

// tempDirFor makes a directory under /tmp owned by a system user.
func tempDirFor(owner, prefix string) (string, uint32, uint32, error) {
	uid, gid, err := sysUser(owner)
	if err != nil {
		return "", 0, 0, err
	}
	dir, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		return "", 0, 0, err
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return "", 0, 0, err
	}
	return dir, uid, gid, nil
}

// asUser runs cmd as uid:gid; the server gets sig if the test binary
// dies without stopping it.
func asUser(cmd *exec.Cmd, uid, gid uint32, sig syscall.Signal) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}, Setpgid: true, Pdeathsig: sig}
	return cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady pings until the server answers, the process dies or 60 s pass.
func waitReady(s *server, driver, dsn, logFile string) error {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	exited := s.exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("%s exited: %s", s.cmd.Path, tail(log))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("%s not ready after 60 s: %v: %s", s.cmd.Path, err, tail(log))
		}
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func startPostgres(s *server) error {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		return errors.New("no /usr/lib/postgresql/*/bin/postgres: install Debian's postgresql (scripts/test-deps.sh does)")
	}
	bin := filepath.Dir(bins[len(bins)-1])
	dir, uid, gid, err := tempDirFor("postgres", "roost-pg-")
	if err != nil {
		return err
	}
	s.dir, s.sig = dir, syscall.SIGINT // PostgreSQL's fast shutdown
	data := filepath.Join(dir, "data")
	out, err := asUser(exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-E", "UTF8",
		"--locale=C.UTF-8", "--auth-local=trust", "--auth-host=trust", "--no-sync"), uid, gid, 0).CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %v: %s", err, tail(out))
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	logFile := filepath.Join(dir, "postgres.log")
	s.admin = fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable", port)
	s.restart = func() error {
		lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer lf.Close() // the server has its own copy
		os.Chown(logFile, int(uid), int(gid))
		s.cmd = asUser(exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100"), uid, gid, s.sig)
		s.cmd.Stdout, s.cmd.Stderr = lf, lf
		if err := s.run(); err != nil {
			return err
		}
		return waitReady(s, "pgx", s.admin+" dbname=postgres", logFile)
	}
	return s.restart()
}

// Down stops the test binary's PostgreSQL server (a fast shutdown: every
// session ends, new ones are refused) and returns a function that starts
// it again on the same data and port. Every test of the binary shares the
// server: use it only in a test that runs alone.
func (d *DB) Down(tb testing.TB) (up func()) {
	tb.Helper()
	if d.Driver != "postgres" {
		tb.Fatalf("Down: only for postgres, not %s", d.Driver)
	}
	s := start(tb, d.Driver, startPostgres)
	mu.Lock()
	defer mu.Unlock()
	_ = s.cmd.Process.Signal(s.sig)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		tb.Fatal("postgres did not stop within 30s of its fast shutdown")
	}
	return func() {
		tb.Helper()
		mu.Lock()
		defer mu.Unlock()
		if err := s.restart(); err != nil {
			tb.Fatalf("restarting postgres: %v", err)
		}
	}
}

func startMariaDB(s *server) error {
	bin, err := exec.LookPath("mariadbd")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mariadbd"); err != nil {
			return errors.New("no mariadbd: install Debian's mariadb-server (scripts/test-deps.sh does)")
		}
	}
	dir, uid, gid, err := tempDirFor("mysql", "roost-mariadb-")
	if err != nil {
		return err
	}
	s.dir, s.sig = dir, syscall.SIGTERM
	data := filepath.Join(dir, "data")
	out, err := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=mysql",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	if err != nil {
		return fmt.Errorf("mariadb-install-db: %v: %s", err, tail(out))
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	sock := filepath.Join(dir, "mysqld.sock")
	logFile := filepath.Join(dir, "error.log")
	s.cmd = asUser(exec.Command(bin, "--no-defaults", "--datadir="+data, "--socket="+sock, "--port="+strconv.Itoa(port),
		"--bind-address=127.0.0.1", "--pid-file="+filepath.Join(dir, "mysqld.pid"), "--log-error="+logFile,
		"--skip-log-bin", "--innodb-buffer-pool-size=256M", "--max-connections=200"), uid, gid, s.sig)
	if err := s.run(); err != nil {
		return err
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", sock
	s.admin = cfg.FormatDSN()
	return waitReady(s, "mysql", s.admin, logFile)
}
