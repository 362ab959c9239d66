package faultfs

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mountT(t *testing.T) (*FS, string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("faultfs tests need root to mount FUSE (make test runs as root)")
	}
	dir := t.TempDir()
	back, mnt := filepath.Join(dir, "back"), filepath.Join(dir, "mnt")
	for _, d := range []string{back, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Mount(back, mnt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Unmount() })
	return f, back, mnt
}

func TestPassThrough(t *testing.T) {
	_, back, mnt := mountT(t)
	if err := os.WriteFile(filepath.Join(mnt, "a"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(back, "a")); err != nil || string(b) != "hello" {
		t.Fatalf("backing file: %q %v", b, err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if !strings.Contains(string(mi), mnt+" ") || !strings.Contains(string(mi), "fuse.faultfs") {
		t.Fatalf("%s not in mountinfo as fuse.faultfs", mnt)
	}
}

func TestDelayAppliesToWrites(t *testing.T) {
	f, _, mnt := mountT(t)
	if err := f.Set(Fault{Ops: []string{"Write"}, Delay: Duration(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := os.WriteFile(filepath.Join(mnt, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("a write took %v, want at least the 300ms delay", d)
	}
	start = time.Now()
	if _, err := os.Stat(filepath.Join(mnt, "x")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Fatalf("a stat took %v though only writes are delayed", d)
	}
}

func TestErrnos(t *testing.T) {
	f, _, mnt := mountT(t)
	for _, tc := range []struct {
		errno string
		op    string
		want  syscall.Errno
	}{{"EIO", "Create", syscall.EIO}, {"ENOSPC", "Write", syscall.ENOSPC}, {"EROFS", "Create", syscall.EROFS}} {
		if err := f.Set(Fault{Ops: []string{tc.op}, Errno: tc.errno}); err != nil {
			t.Fatal(err)
		}
		err := os.WriteFile(filepath.Join(mnt, "e-"+tc.errno), []byte("x"), 0o644)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s on %s: got %v, want %v", tc.errno, tc.op, err, tc.want)
		}
	}
}

func TestHangUntilRelease(t *testing.T) {
	f, _, mnt := mountT(t)
	if err := f.Set(Fault{Hang: true}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := os.Stat(filepath.Join(mnt, "nothing-here"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("stat returned (%v) while the filesystem hangs", err)
	case <-time.After(500 * time.Millisecond):
	}
	if st := f.Status(); st.Hung < 1 {
		t.Fatalf("status shows %d hung requests, want at least 1", st.Hung)
	}
	f.Clear()
	select {
	case err := <-done:
		if !os.IsNotExist(err) {
			t.Fatalf("after release: %v, want not-exist", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stat still blocked 5s after Clear")
	}
}

func TestCorruptReadsReachTheReaderPastThePageCache(t *testing.T) {
	f, _, mnt := mountT(t)
	p := filepath.Join(mnt, "c")
	if err := os.WriteFile(p, []byte("canary"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.Set(Fault{Corrupt: true}); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	_ = unix.Fadvise(int(fh.Fd()), 0, 0, unix.FADV_DONTNEED) // past the page cache
	b := make([]byte, 6)
	if _, err := fh.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(b, []byte("canary")) {
		t.Fatal("read the true content while reads are corrupted")
	}
}

func TestAbortGivesENOTCONNAndUnmountLeavesBareDir(t *testing.T) {
	f, _, mnt := mountT(t)
	if err := os.WriteFile(filepath.Join(mnt, "a"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "a")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat after abort: %v, want ENOTCONN", err)
	}
	if err := f.Unmount(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(mnt)
	if err != nil || len(entries) != 0 {
		t.Fatalf("after unmount the mountpoint holds %v (%v), want an empty directory", entries, err)
	}
}

func TestControlAPIRejectsBadFaults(t *testing.T) {
	f, _, _ := mountT(t)
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	for body, want := range map[string]string{
		`{"errno":"EWHAT"}`:      `errno \"EWHAT\"`,
		`{"ops":["Frobnicate"]}`: `op \"Frobnicate\"`,
		`{"delay":"soon"}`:       `duration \"soon\"`,
		`{"hang":true,"x":1}`:    `unknown field`,
		`not json`:               `bad fault`,
	} {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/fault", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(b.String(), want) {
			t.Errorf("PUT %s: %d %s, want 400 naming %s", body, resp.StatusCode, b.String(), want)
		}
	}
	if st := f.Status(); st.Fault.Hang || st.Fault.Errno != "" {
		t.Fatalf("a rejected fault was applied: %+v", st.Fault)
	}
}

// A process started after the mount must not hold the FUSE connection: it
// would keep a dead server's mount alive and its hung requests unabortable.
func TestChildrenDoNotInheritTheFUSEConnection(t *testing.T) {
	mountT(t)
	out, err := exec.Command("ls", "-l", "/proc/self/fd").CombinedOutput()
	if err != nil {
		t.Fatal(err, string(out))
	}
	if strings.Contains(string(out), "/dev/fuse") {
		t.Fatalf("a child process holds /dev/fuse:\n%s", out)
	}
	// The server itself still holds it.
	if self, _ := exec.Command("sh", "-c", "ls -l /proc/"+strconv.Itoa(os.Getpid())+"/fd").CombinedOutput(); !strings.Contains(string(self), "/dev/fuse") {
		t.Fatalf("the test process holds no /dev/fuse: the check looks in the wrong place\n%s", self)
	}
}
