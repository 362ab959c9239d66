package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent/agenttest"
)

// roostd probe fs against the faultfs binary, as an operator would use
// both: the verdict and exit status for a healthy, hung, crashed and
// vanished mount, each within the timeout.
func TestProbeFSCommandAgainstFaultfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount FUSE (make test runs as root)")
	}
	bin := buildBinaries(t)
	roostd, faultfs := filepath.Join(bin, "roostd"), filepath.Join(bin, "faultfs")
	dir := t.TempDir()
	back, mnt := filepath.Join(dir, "back"), filepath.Join(dir, "mnt")
	for _, d := range []string{back, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	control := fmt.Sprintf("127.0.0.1:%d", agenttest.FreePorts(t, 1)[0])
	daemon := exec.Command(faultfs, "mount", "--backing", back, "--mountpoint", mnt, "--control", control)
	logs := &agenttest.SyncBuffer{}
	daemon.Stdout, daemon.Stderr = logs, logs
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = daemon.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Error("faultfs ignored SIGTERM")
		}
		_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
	})
	if !agenttest.Eventually(10*time.Second, func() bool { return strings.Contains(logs.String(), "mounted on") }) {
		t.Fatalf("faultfs did not mount:\n%s", logs.String())
	}
	ctl := func(args ...string) {
		t.Helper()
		if out, err := run(t, faultfs, append([]string{"ctl", "--control", control}, args...)...); err != nil {
			t.Fatalf("faultfs ctl %v: %v %s", args, err, out)
		}
	}
	probe := func(wantClass string, wantExit int) {
		t.Helper()
		start := time.Now()
		cmd := exec.Command(roostd, "probe", "fs", mnt, "--fstype", "fuse.faultfs", "--timeout", "1s", "--json")
		out, err := cmd.Output()
		took := time.Since(start)
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		var r struct{ Class, Err string }
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("probe output is not JSON: %q", out)
		}
		if r.Class != wantClass || code != wantExit {
			t.Fatalf("probe: class %s (%s), exit %d; want %s, exit %d", r.Class, r.Err, code, wantClass, wantExit)
		}
		if took > 2500*time.Millisecond {
			t.Fatalf("probe took %v with a 1s timeout", took)
		}
	}
	probe("ok", 0)
	ctl("set", "--hang")
	probe("hung", 1)
	ctl("clear")
	probe("ok", 0)
	ctl("set", "--delay", "700ms", "--ops", "Fsync")
	probe("slow", 1)
	ctl("clear")
	ctl("crash")
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("faultfs did not exit on crash")
	}
	probe("disconnected", 1)
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	probe("not-mounted", 1)
	if entries, _ := os.ReadDir(mnt); len(entries) != 0 {
		t.Fatalf("the bare mountpoint holds %v: something wrote to local disk", entries)
	}
}

// A probe's --timeout must be positive: 0 or a negative one is refused,
// naming the flag, before anything is probed.
func TestProbeRefusesANonPositiveTimeout(t *testing.T) {
	roostd := filepath.Join(buildBinaries(t), "roostd")
	for _, args := range [][]string{
		{"probe", "imap", "127.0.0.1:1", "--timeout=0"},
		{"probe", "lmtp", "127.0.0.1:1", "--timeout=-1s"},
		{"probe", "fs", "/tmp", "--timeout=0"},
		{"probe", "fs", "/tmp", "--timeout=-1s"},
	} {
		out, err := run(t, roostd, args...)
		if err == nil || !strings.Contains(out, "timeout") {
			t.Errorf("roostd %v: %v, %q; want a refusal naming the timeout", args, err, out)
		}
	}
}
