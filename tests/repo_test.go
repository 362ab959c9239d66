package tests

import (
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
	// Its own process group, so the test can Ctrl-C it as a terminal does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &agenttest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.After(4 * time.Minute)
	for !strings.Contains(out.String(), "Ctrl-C stops everything") {
		select {
		case err := <-exited:
			t.Fatalf("the demo ended before Ctrl-C: %v\n%s", err, out)
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
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
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
