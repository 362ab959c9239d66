package tests

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent/agenttest"
)

// NOTICE must name every third-party module the binaries link, at the
// version they link.
func TestNoticeListsShippedModules(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}}{{end}}{{end}}", "./cmd/roostd", "./cmd/nodectl", "./cmd/faultfs")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	notice, err := os.ReadFile("../NOTICE")
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if mod != "" && !strings.Contains(string(notice), mod+" ") {
			t.Errorf("NOTICE lacks %q: run scripts/notice.sh", mod)
		}
	}
}

// make demo runs the whole mail cluster end to end: node2's Dovecot dies,
// its users move and log in elsewhere, failback brings them home; Ctrl-C
// then ends every process and mount the demo started.
func TestDemo(t *testing.T) {
	bin := buildBinaries(t)
	demo := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", demo, "./cmd/demo").CombinedOutput(); err != nil {
		t.Fatalf("go build ./tests/cmd/demo: %v\n%s", err, out)
	}
	cmd := exec.Command(demo, "-bin", bin)
	// Its own process group, so the test can Ctrl-C it as a terminal does;
	// and Ctrl-C if this test binary dies (go test's -timeout runs no
	// cleanup): a demo left running once held 127.0.1.1-3 through the
	// next runs of make test and failed their mail clusters.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	// Its stdout is a pipe whose reader goes away before Ctrl-C, as tee
	// does in `make demo | tee log`: the demo must still clean up.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out, stderr := &agenttest.SyncBuffer{}, &agenttest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = pw, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	readerDone := make(chan struct{})
	go func() { defer close(readerDone); io.Copy(out, pr) }()
	exited, gone := make(chan error, 1), make(chan struct{})
	go func() { exited <- cmd.Wait(); close(gone) }()
	t.Cleanup(func() {
		// A failed test stops the demo as Ctrl-C does, so it ends its
		// cluster too; killed only if it does not within a minute.
		select {
		case <-gone:
			return
		default:
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-gone:
		case <-time.After(time.Minute):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	deadline := time.After(4 * time.Minute)
	for !strings.Contains(out.String(), "Ctrl-C stops everything") {
		select {
		case err := <-exited:
			t.Fatalf("the demo ended before Ctrl-C: %v\n%s\nstderr:\n%s", err, out, stderr)
		case <-deadline:
			t.Fatalf("the demo did not finish its show in 4 minutes:\n%s", out)
		case <-time.After(200 * time.Millisecond):
		}
	}
	for _, want := range []string{
		"served by node a: 100, b: 100, c: 100",
		"node2's agent reports it critical",
		"done: 100 users moved off node2",
		"HAProxy marks node2 DOWN",
		"all 100 IMAP sessions of node2's users have ended",
		"logs in through HAProxy again, now on node",
		"node2's 100 users are home and node2 is active again",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("the demo's output lacks %q:\n%s", want, out)
		}
	}
	dir := regexp.MustCompile(`configs and logs: (/tmp/roost-mc-[0-9]+)`).FindStringSubmatch(out.String())
	if dir == nil {
		t.Fatalf("the demo does not say where its cluster lives:\n%s", out)
	}
	pr.Close() // the reader exits first
	<-readerDone
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the demo exited with %v after Ctrl-C (want 0); stderr:\n%s", err, stderr)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the demo did not stop within a minute of Ctrl-C:\n%s", out)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), dir[1]) {
		t.Fatalf("the demo left its mounts under %s", dir[1])
	}
	if _, err := os.Stat(dir[1]); !os.IsNotExist(err) {
		t.Fatalf("the demo left %s behind (%v)", dir[1], err)
	}
	if ps, _ := exec.Command("pgrep", "-f", dir[1]).Output(); len(ps) > 0 {
		t.Fatalf("processes of the demo still run after Ctrl-C: %s", ps)
	}
}

// testDepsPackages reads the Debian packages scripts/test-deps.sh installs
// for make test (its first pkgs=( … ) list).
func testDepsPackages(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../scripts/test-deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\npkgs=\(([^)]*)\)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("scripts/test-deps.sh has no pkgs=( … ) list")
	}
	pkgs := map[string]bool{}
	for _, p := range strings.Fields(string(m[1])) {
		pkgs[p] = true
	}
	return pkgs
}

// Every Dovecot driver, protocol and plugin that the guide or a test's
// Dovecot configuration names comes from a package that
// scripts/test-deps.sh installs: a machine where someone installed one by
// hand must not hide a missing install step (dovecot-mysql once did).
func TestTestDepsInstallEveryDovecotPartNamed(t *testing.T) {
	// What Debian package brings each part; "" is dovecot-core.
	drivers := map[string]string{"mysql": "dovecot-mysql", "pgsql": "dovecot-pgsql", "sqlite": "dovecot-sqlite",
		"ldap": "dovecot-ldap", "sql": "", "passwd": "", "passwd-file": "", "static": "", "pam": "", "checkpassword": ""}
	protocols := map[string]string{"imap": "dovecot-imapd", "pop3": "dovecot-pop3d", "lmtp": "dovecot-lmtpd",
		"submission": "dovecot-submissiond", "sieve": "dovecot-managesieved"}
	plugins := map[string]string{"sieve": "dovecot-sieve", "$mail_plugins": "", "quota": "", "acl": "", "zlib": "",
		"mail_log": "", "notify": "", "lazy_expunge": "", "trash": "", "virtual": "", "mail_crypt": ""}
	var files []string
	for _, glob := range []string{"../docs/*.md", "../README.md", "*.go", "*/*.go", "cmd/*/*.go"} {
		m, _ := filepath.Glob(glob)
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d files to read: %v", len(files), files)
	}
	need := map[string]string{} // package → where it was named
	named := 0
	look := func(table map[string]string, kind, word, where string) {
		named++
		pkg, ok := table[word]
		switch {
		case !ok:
			t.Errorf("%s names Dovecot %s %q, which this test cannot place in a package: add it to the test's table and its package to scripts/test-deps.sh", where, kind, word)
		case pkg != "":
			need[pkg] = where
		}
	}
	// 2.3's driver = X, 2.4's sql_driver = X and passdb X { … }.
	driverRE := regexp.MustCompile(`(?m)^\s*(?:driver|sql_driver)\s*=\s*([a-z-]+)\s*$|data\.SQL, data\.SQLConnect = "([a-z]+)"|^\s*(?:passdb|userdb)\s+([a-z-]+)\s*\{`)
	protoRE := regexp.MustCompile(`(?m)^\s*protocols\s*=\s*([^"\x60\n]*)$`)
	pluginRE := regexp.MustCompile(`(?m)^\s*mail_plugins\s*=\s*([^"\x60\n]*)$`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range driverRE.FindAllStringSubmatch(string(b), -1) {
			look(drivers, "driver", m[1]+m[2]+m[3], f)
		}
		for _, m := range protoRE.FindAllStringSubmatch(string(b), -1) {
			for _, p := range strings.Fields(m[1]) {
				look(protocols, "protocol", p, f)
			}
		}
		for _, m := range pluginRE.FindAllStringSubmatch(string(b), -1) {
			for _, p := range strings.Fields(m[1]) {
				look(plugins, "plugin", p, f)
			}
		}
	}
	if named < 5 {
		t.Fatalf("found only %d Dovecot parts named in %d files: the patterns no longer match", named, len(files))
	}
	have := testDepsPackages(t)
	have24 := dovecot24Packages(t)
	for pkg, where := range need {
		if !have[pkg] {
			t.Errorf("%s needs the Debian package %s, which scripts/test-deps.sh does not install", where, pkg)
		}
		if !have24[pkg] {
			t.Errorf("%s needs the Debian package %s, which scripts/dovecot24-root.sh does not install in the Dovecot 2.4 root", where, pkg)
		}
	}
}

// dovecot24Packages reads the packages of the Dovecot 2.4 root
// (scripts/dovecot24-root.sh's PKGS="…").
func dovecot24Packages(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../scripts/dovecot24-root.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\nPKGS="([^"]*)"`).FindSubmatch(b)
	if m == nil {
		t.Fatal(`scripts/dovecot24-root.sh has no PKGS="…" list`)
	}
	pkgs := map[string]bool{}
	for _, p := range strings.Fields(string(m[1])) {
		pkgs[p] = true
	}
	return pkgs
}

// The README and the guide point at nothing outside the repository: a
// clone has only what is in it. Every relative link resolves to a file in
// the tree.
func TestDocsPointInsideTheRepository(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../docs/*.md")
	files = append(files, "../README.md")
	linkRE := regexp.MustCompile(`\]\(([^)#\s]+)(?:#[^)]*)?\)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "../shared") {
			t.Errorf("%s names ../shared, which a clone does not have", f)
		}
		if strings.Contains(string(b), "sudo make") {
			t.Errorf("%s says sudo make: sudo may drop Go from PATH; say 'as root' as the README does", f)
		}
		for _, m := range linkRE.FindAllStringSubmatch(string(b), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			p, _ := filepath.Abs(filepath.Join(filepath.Dir(f), link))
			if !strings.HasPrefix(p, root+string(filepath.Separator)) {
				t.Errorf("%s links to %s, outside the repository", f, link)
			} else if _, err := os.Stat(p); err != nil {
				t.Errorf("%s links to %s, which does not exist", f, link)
			}
		}
	}
}
