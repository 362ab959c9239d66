package tests

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/faultfs/faultfstest"
)

// helperPIDs lists the live probe helpers of mount on this machine.
func helperPIDs(mount string) []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if string(b) == "roostd-fsprobe-helper\x00"+mount+"\x00" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// A node's mail mount hangs with the request taken by the FUSE daemon
// (what a stalled ObjectiveFS does). roostd stops within 2 s of SIGTERM
// all the same; started again while the hang lasts, it reports the mount
// hung and its LB signal down at once; when the mount answers again the
// stuck helper ends, and once roostd stops no helper is left and the lock
// is free.
func TestAgentStopsAndRestartsDuringAMountHang(t *testing.T) {
	f, _, mnt := faultfstest.Mount(t)
	lockDir := t.TempDir()
	lbPort := agenttest.FreePorts(t, 1)[0]
	c := startProcs(t, 3, func(i int) string {
		if i != 1 {
			return ""
		}
		return fmt.Sprintf("fsprobe:\n  mounts:\n    - path: %s\n      fstype: fuse.faultfs\n  lock_dir: %s\nlb:\n  http: 127.0.0.1:%d\n", mnt, lockDir, lbPort)
	})
	p := c.procs[1]
	mount := func() (class, reason string) {
		st, err := c.status(p)
		if err != nil || len(st.Mounts) != 1 {
			return "", ""
		}
		return st.Mounts[0].Class, st.Mounts[0].Reason
	}
	lbCode := func() int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/lb", lbPort))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	c.waitFor(60*time.Second, "node2's mount probed ok", func() bool { cl, _ := mount(); return cl == "ok" })
	if got := len(helperPIDs(mnt)); got != 1 {
		t.Fatalf("%d probe helpers for the mount, want 1", got)
	}

	if err := f.Set(faultfs.Fault{Hang: true}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(10*time.Second, "the mount hung and the LB signal down", func() bool {
		cl, _ := mount()
		return cl == "hung" && lbCode() == http.StatusServiceUnavailable
	})

	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		t.Logf("roostd stopped %v after SIGTERM during the hang", time.Since(start).Round(time.Millisecond))
	case <-time.After(2 * time.Second):
		t.Fatalf("roostd still runs 2 s after SIGTERM during a mount hang:\n%s", p.log)
	}
	stuck := helperPIDs(mnt)
	if len(stuck) != 1 {
		t.Fatalf("%d probe helpers after roostd stopped during the hang, want the 1 stuck one", len(stuck))
	}

	c.start(p)
	c.waitFor(15*time.Second, "the restarted roostd reporting the mount hung, LB down", func() bool {
		cl, reason := mount()
		return cl == "hung" && strings.Contains(reason, "still blocked") && lbCode() == http.StatusServiceUnavailable
	})
	if got := len(helperPIDs(mnt)); got > 2 {
		t.Fatalf("%d probe helpers during the hang, want at most the stuck one and the new one", got)
	}

	f.Clear()
	c.waitFor(15*time.Second, "the mount ok again and the stuck helper gone", func() bool {
		cl, _ := mount()
		pids := helperPIDs(mnt)
		return cl == "ok" && len(pids) == 1 && pids[0] != stuck[0]
	})
	c.waitFor(15*time.Second, "the LB signal up", func() bool { return lbCode() == http.StatusOK })

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		t.Fatal("roostd still runs 2 s after SIGTERM")
	}
	if !agenttest.Eventually(2*time.Second, func() bool { return len(helperPIDs(mnt)) == 0 }) {
		t.Fatalf("probe helpers left after roostd stopped: %v", helperPIDs(mnt))
	}
	locks, _ := filepath.Glob(filepath.Join(lockDir, "fsprobe-node2-*.lock"))
	if len(locks) != 1 {
		t.Fatalf("lock files %v, want one for node2's mount", locks)
	}
	lf, err := os.OpenFile(locks[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("the probe lock is still held after roostd and its helpers are gone: %v", err)
	}
}
