package fsprobe

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/faultfs/faultfstest"
)

const (
	testTimeout = 500 * time.Millisecond
	testSlow    = 200 * time.Millisecond
)

// mountFault mounts a faultfs for one test and returns it with a prober.
func mountFault(t *testing.T) (*faultfs.FS, *Mount, string) {
	t.Helper()
	f, back, mnt := faultfstest.Mount(t)
	m := NewMount(MountConfig{Path: mnt, FSType: "fuse.faultfs"}, "node1", testTimeout, testSlow)
	t.Cleanup(func() { m.Close(time.Second) })
	return f, m, back
}

// round runs one round and checks it returned within the timeout.
func round(t *testing.T, m *Mount) Result {
	t.Helper()
	start := time.Now()
	r := m.Round()
	// A round on a hung mount must return at its timeout, not hang; a
	// loaded machine (the race detector beside mail clusters) may add a
	// few hundred milliseconds.
	if d := time.Since(start); d > 2*testTimeout {
		t.Fatalf("a round took %v, over twice the %v timeout", d, testTimeout)
	}
	return r
}

// okRound is a round of a healthy mount: a loaded machine (make test
// runs with the race detector, beside other packages) may make a round
// slow now and then, so up to three slow rounds are tried again.
func okRound(t *testing.T, m *Mount) Result {
	t.Helper()
	r := round(t, m)
	for i := 0; i < 3 && r.Class == ClassSlow; i++ {
		r = round(t, m)
	}
	return r
}

func TestHealthyMountIsOKAndLeavesNoCanary(t *testing.T) {
	_, m, back := mountFault(t)
	r := okRound(t, m)
	if r.Class != ClassOK {
		t.Fatalf("got %s, want ok", r)
	}
	for _, op := range []string{"stat", "statfs", "create", "write", "fsync", "read", "unlink"} {
		if _, ok := r.Ops[op]; !ok {
			t.Errorf("round did not time %s: %v", op, r.Ops)
		}
	}
	if r.FuseWaiting < 0 {
		t.Errorf("FUSE waiting unknown (%d) on a FUSE mount", r.FuseWaiting)
	}
	entries, _ := os.ReadDir(filepath.Join(back, ".roost-probe"))
	if len(entries) != 0 {
		t.Fatalf("canary left behind: %v", entries)
	}
}

func TestFaultClasses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault faultfs.Fault
		want  Class
		op    string
	}{
		{"slow", faultfs.Fault{Ops: []string{"Fsync"}, Delay: faultfs.Duration(300 * time.Millisecond)}, ClassSlow, "fsync"},
		{"hung", faultfs.Fault{Hang: true, Ops: []string{"Write"}}, ClassHung, "write"},
		{"read-only", faultfs.Fault{Ops: []string{"Create"}, Errno: "EROFS"}, ClassReadOnly, "create"},
		{"full", faultfs.Fault{Ops: []string{"Write"}, Errno: "ENOSPC"}, ClassFull, "write"},
		{"io-error", faultfs.Fault{Ops: []string{"Fsync"}, Errno: "EIO"}, ClassIOError, "fsync"},
		{"mismatch", faultfs.Fault{Corrupt: true}, ClassMismatch, "read"},
		{"disconnected by errno", faultfs.Fault{Ops: []string{"Create"}, Errno: "ENOTCONN"}, ClassDisconnected, "create"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, m, _ := mountFault(t)
			if r := okRound(t, m); r.Class != ClassOK {
				t.Fatalf("before the fault: %s", r)
			}
			if err := f.Set(tc.fault); err != nil {
				t.Fatal(err)
			}
			r := round(t, m)
			if r.Class != tc.want || r.Op != tc.op {
				t.Fatalf("got %s (op %s), want %s in %s", r, r.Op, tc.want, tc.op)
			}
			if tc.want == ClassHung && r.FuseWaiting < 1 {
				t.Errorf("hung, but fusectl shows %d requests waiting", r.FuseWaiting)
			}
			f.Clear()
			if !eventuallyOK(m, 3*time.Second) {
				t.Fatalf("not ok again after clearing the fault: %s", m.Round())
			}
		})
	}
}

func eventuallyOK(m *Mount, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m.Round().Class == ClassOK {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func TestCrashedDaemonIsDisconnected(t *testing.T) {
	f, m, _ := mountFault(t)
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if r := round(t, m); r.Class != ClassDisconnected {
		t.Fatalf("got %s, want disconnected", r)
	}
}

// An unmounted filesystem leaves a bare directory: the probe must say
// not-mounted and must not write its canary there.
func TestUnmountedIsNotMountedAndNothingIsWritten(t *testing.T) {
	f, m, _ := mountFault(t)
	if err := f.Unmount(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if r := round(t, m); r.Class != ClassNotMounted {
			t.Fatalf("got %s, want not-mounted", r)
		}
	}
	entries, err := os.ReadDir(m.Path())
	if err != nil || len(entries) != 0 {
		t.Fatalf("the bare mountpoint holds %v (%v): the probe wrote to local disk", entries, err)
	}
	// Another filesystem type at the path is not the mail filesystem.
	other := NewMount(MountConfig{Path: "/proc", FSType: "fuse*"}, "n", testTimeout, testSlow)
	if r := other.Round(); r.Class != ClassNotMounted || !strings.Contains(r.Err, "mounted as proc") {
		t.Fatalf("got %s, want not-mounted naming the proc fstype", r)
	}
}

// TestMain lets this test binary serve as the probe helper.
func TestMain(m *testing.M) {
	MaybeHelper()
	os.Exit(m.Run())
}

// probeCalls counts this process's probe helpers of mount (its children
// named helperName), each of which makes at most one call at a time, and the
// threads of this process inside a probe call (none: they are in the
// helpers).
func probeCalls(mount string) int {
	n := 0
	self := strconv.Itoa(os.Getpid())
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || string(cmdline) != helperName+"\x00"+mount+"\x00" {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		// pid (comm) state ppid …: comm may hold spaces, so from the last ')'.
		if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 1 && f[1] == self {
			n++
		}
	}
	buf := make([]byte, 1<<20)
	for {
		k := runtime.Stack(buf, true)
		if k < len(buf) {
			return n + strings.Count(string(buf[:k]), "fsprobe.work(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// A hung mount probed every 100 ms for a long time: at most one syscall
// (one helper process) is ever stuck, no thread of this process is, and no
// round waits longer than the timeout. The Go runtime may start a thread
// or two of its own on a loaded machine (a goroutine in a short syscall
// hands its P to a new thread), so threads are allowed a small slack that
// stays far below the 600 rounds a pile-up would add one each.
func TestHangNeverPilesUp(t *testing.T) {
	f, m, _ := mountFault(t)
	round(t, m)
	threads := threadCount(t)
	if err := f.Set(faultfs.Fault{Hang: true}); err != nil {
		t.Fatal(err)
	}
	hangFor := 60 * time.Second
	if testing.Short() {
		hangFor = 5 * time.Second
	}
	var maxG, maxT int
	for start := time.Now(); time.Since(start) < hangFor; time.Sleep(100 * time.Millisecond) {
		if r := round(t, m); r.Class != ClassHung {
			t.Fatalf("got %s during the hang, want hung", r)
		}
		maxG = max(maxG, probeCalls(m.Path()))
		maxT = max(maxT, threadCount(t)-threads)
	}
	if maxG == 0 {
		t.Fatal("never saw the stuck probe call: probeCalls counts nothing")
	}
	if maxG > 1 || maxT > runtimeThreadSlack {
		t.Fatalf("during the hang: up to %d probe calls in flight and %d extra threads, want at most 1 and %d", maxG, maxT, runtimeThreadSlack)
	}
	if op, _, stuck := m.Stuck(); !stuck || op == "" {
		t.Fatal("Stuck does not report the blocked call")
	}
	f.Clear()
	if !eventuallyOK(m, 3*time.Second) {
		t.Fatal("not ok after the hang was released")
	}
}

// runtimeThreadSlack is how many threads the Go runtime may add on its own
// during TestHangNeverPilesUp (CI once saw one under load).
const runtimeThreadSlack = 3

func threadCount(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// Latency jitter below the slow threshold never reports slow or hung.
func TestJitterBelowThresholdStaysOK(t *testing.T) {
	f, first, _ := mountFault(t)
	// A threshold well above the jitter: the race detector and a loaded
	// machine (make test runs two packages at once) add tens of ms to a
	// round of calls served by this very process.
	m := NewMount(MountConfig{Path: first.Path(), FSType: "fuse.faultfs"}, "node1", testTimeout, testTimeout-100*time.Millisecond)
	t.Cleanup(func() { m.Close(time.Second) })
	// About 15 FUSE requests a round, each 1-5 ms slower: at most ~75 ms,
	// well under the 400 ms threshold even on a loaded machine.
	if err := f.Set(faultfs.Fault{Delay: faultfs.Duration(time.Millisecond), Jitter: faultfs.Duration(4 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if r := round(t, m); r.Class != ClassOK {
			t.Fatalf("round %d: got %s under jitter well below %v", i, r, testTimeout-100*time.Millisecond)
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	text := `22 1 0:21 / /proc rw,nosuid - proc proc rw
41 26 0:38 / /srv/mail\040box rw,nosuid,nodev,relatime shared:1 - fuse.objectivefs s3://bucket rw,user_id=0
42 26 8:1 / /srv/ro ro,relatime - ext4 /dev/sda1 rw
43 41 0:300 / /srv/mail\040box rw - fuse.faultfs /back rw
`
	e, err := parseMountinfo(text, "/srv/mail box")
	if err != nil || e == nil {
		t.Fatalf("got %v, %v", e, err)
	}
	if e.fstype != "fuse.faultfs" || e.major != 0 || e.minor != 300 || e.dev != 300 {
		t.Fatalf("stacked mount: got %+v, want the top one (fuse.faultfs, 0:300)", e)
	}
	if e, _ := parseMountinfo(text, "/srv/ro"); e == nil || !e.readOnly || e.dev != 8<<20|1 {
		t.Fatalf("read-only ext4: got %+v", e)
	}
	if e, _ := parseMountinfo(text, "/srv"); e != nil {
		t.Fatalf("/srv is not a mountpoint, got %+v", e)
	}
	if _, err := parseMountinfo("1 2 x / /a rw - ext4 /dev/x rw\n", "/a"); err == nil {
		t.Fatal("a malformed device parsed without error")
	}
	// An empty source (mount -t tmpfs "" DIR), with and without systemd's
	// shared propagation field: once a panic, then "not-mounted".
	for _, line := range []string{
		"50 26 0:99 / /srv/empty rw,relatime shared:77 - tmpfs  rw,size=1024k\n",
		"50 26 0:99 / /srv/empty rw,relatime - tmpfs  rw,size=1024k\n",
	} {
		e, err := parseMountinfo(line, "/srv/empty")
		if err != nil || e == nil || e.fstype != "tmpfs" || e.source != "" || e.minor != 99 {
			t.Fatalf("%q: got %+v, %v; want the tmpfs with an empty source", line, e, err)
		}
	}
}

// A real mount with an empty source is found, and is not the mail
// filesystem's type.
func TestEmptySourceMountIsFound(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount -t tmpfs \"\" %s: %v", dir, err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	e, err := findMount(dir)
	if err != nil || e == nil || e.fstype != "tmpfs" {
		t.Fatalf("got %+v, %v; want the tmpfs", e, err)
	}
	m := NewMount(MountConfig{Path: dir, FSType: "fuse*"}, "n", testTimeout, testSlow)
	defer m.Close(time.Second)
	if r := m.Round(); r.Class != ClassNotMounted || !strings.Contains(r.Err, "mounted as tmpfs") {
		t.Fatalf("got %s, want not-mounted naming tmpfs", r)
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Mounts = []MountConfig{{Path: "/srv/mail"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for want, mutate := range map[string]func(*Config){
		"mounts[0].path \"srv\"":                    func(c *Config) { c.Mounts[0].Path = "srv" },
		"mounts[0].path \"/\"":                      func(c *Config) { c.Mounts[0].Path = "/" },
		"mounts[0].probe_dir \"../x\"":              func(c *Config) { c.Mounts[0].ProbeDir = "../x" },
		"mounts[0].fstype \"[\"":                    func(c *Config) { c.Mounts[0].FSType = "[" },
		"mounts[1].path \"/srv/mail\"":              func(c *Config) { c.Mounts = append(c.Mounts, c.Mounts[0]) },
		"slow_threshold 3s":                         func(c *Config) { c.SlowThreshold = 3 * time.Second },
		"interval 1ms":                              func(c *Config) { c.Interval = time.Millisecond },
		"timeout 1h0m0s: must be from 10ms to 1m0s": func(c *Config) { c.Timeout = time.Hour },
		"mounts[0].path is empty":                   func(c *Config) { c.Mounts[0].Path = "" },
	} {
		c := good
		c.Mounts = append([]MountConfig(nil), good.Mounts...)
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error containing %q", err, want)
		}
	}
}
