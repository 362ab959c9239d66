// Package fsprobe checks the shared mail filesystem the way Dovecot uses
// it: the mount is really there, and a canary file can be written, synced,
// read back and removed in time. It never lets probes pile up on a hung
// FUSE mount: one syscall at most is in flight per mount.
package fsprobe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Class is the verdict of one probe round.
type Class string

// Classes, from good to bad. Only ClassOK is healthy.
const (
	ClassOK           Class = "ok"
	ClassSlow         Class = "slow"
	ClassHung         Class = "hung"         // a call did not return within the timeout
	ClassDisconnected Class = "disconnected" // ENOTCONN: the FUSE daemon is gone
	ClassNotMounted   Class = "not-mounted"  // the path is a plain directory, or another fstype
	ClassReadOnly     Class = "read-only"
	ClassFull         Class = "full"
	ClassIOError      Class = "io-error"
	ClassMismatch     Class = "mismatch" // the canary read back differs
)

// Classes lists every class, for metrics.
var Classes = []Class{ClassOK, ClassSlow, ClassHung, ClassDisconnected, ClassNotMounted, ClassReadOnly, ClassFull, ClassIOError, ClassMismatch}

// Result is one probe round of one mount.
type Result struct {
	Mount  string    `json:"mount"`
	FSType string    `json:"fstype,omitempty"`
	Class  Class     `json:"class"`
	Op     string    `json:"op,omitempty"`  // the operation that failed or was slowest
	Err    string    `json:"err,omitempty"` // what went wrong, for people
	Time   time.Time `json:"time"`
	// Total is the round's duration (up to the timeout when hung).
	Total time.Duration `json:"total_ns"`
	// Ops holds each completed operation's latency.
	Ops map[string]time.Duration `json:"ops_ns,omitempty"`
	// FuseWaiting is the kernel's count of requests the FUSE daemon has not
	// answered (-1 when unknown: not FUSE, or fusectl unavailable).
	FuseWaiting int `json:"fuse_waiting"`
}

// OK reports whether the mount is healthy.
func (r Result) OK() bool { return r.Class == ClassOK }

// String is a one-line summary for people.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", r.Mount, r.Class)
	if r.FSType != "" {
		fmt.Fprintf(&b, " (%s)", r.FSType)
	}
	if r.Err != "" {
		fmt.Fprintf(&b, ": %s", r.Err)
	}
	fmt.Fprintf(&b, "; round %s", r.Total.Round(10*time.Microsecond))
	for _, op := range opOrder {
		if d, ok := r.Ops[op]; ok {
			fmt.Fprintf(&b, " %s=%s", op, d.Round(10*time.Microsecond))
		}
	}
	if r.FuseWaiting >= 0 {
		fmt.Fprintf(&b, "; FUSE requests unanswered: %d", r.FuseWaiting)
	}
	return b.String()
}

var opOrder = []string{"mountinfo", "open-root", "statfs", "stat", "mkdir", "create", "write", "fsync", "close", "read", "unlink"}

// Mount probes one mount. Round may be called from one goroutine at a
// time; the syscalls of a round run in the mount's helper process (see
// helper.go), and while one is stuck no other starts.
type Mount struct {
	cfg     MountConfig
	node    string
	timeout time.Duration
	slow    time.Duration
	lock    string // the helper's lock file; "" for none

	mu        sync.Mutex
	h         *helper   // the helper process; nil until started, or after it exited
	busy      bool      // the helper is in a round
	busyOp    string    // the call it is in
	busySince time.Time // when that call started
	stuckPID  int       // the busy helper's pid
	seq       uint64
	helpers   sync.WaitGroup // helper readers
}

// NewMount returns a prober for one mount; node names its canary file.
func NewMount(cfg MountConfig, node string, timeout, slow time.Duration) *Mount {
	return &Mount{cfg: cfg.withDefaults(), node: node, timeout: timeout, slow: slow}
}

// Path is the mountpoint.
func (m *Mount) Path() string { return m.cfg.Path }

// Stuck reports the call the helper has been blocked in, if any, and the
// helper's pid.
func (m *Mount) Stuck() (op string, since time.Duration, stuck bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.busy || time.Since(m.busySince) < m.timeout {
		return "", 0, false
	}
	return m.busyOp, time.Since(m.busySince), true
}

// Close ends the helper: it exits as soon as it is not in a syscall. Close
// waits up to wait for a helper that is not stuck to be gone, and never
// for a stuck one.
func (m *Mount) Close(wait time.Duration) {
	m.mu.Lock()
	h, busy := m.h, m.busy
	m.h = nil // a stuck helper keeps the mount busy until it answers
	m.mu.Unlock()
	if h == nil {
		return
	}
	h.in.Close()
	if !busy {
		select {
		case <-h.exited:
		case <-time.After(wait):
		}
	}
}

// Round runs one probe round and returns within the timeout, whatever the
// filesystem does.
func (m *Mount) Round() Result {
	start := time.Now()
	r := Result{Mount: m.cfg.Path, Time: start, FuseWaiting: -1}

	m.mu.Lock()
	if m.busy {
		op, since, pid := m.busyOp, time.Since(m.busySince), m.stuckPID
		m.mu.Unlock()
		r.Class, r.Op = ClassHung, op
		r.Err = fmt.Sprintf("%s has been blocked for %s (probe helper pid %d); no new call until it returns", op, since.Round(time.Millisecond), pid)
		m.fillWaiting(&r)
		r.Total = time.Since(start)
		return r
	}
	m.mu.Unlock()

	mi, err := findMount(m.cfg.Path)
	r.Ops = map[string]time.Duration{"mountinfo": time.Since(start)}
	switch {
	case err != nil:
		r.Class, r.Op, r.Err = ClassIOError, "mountinfo", err.Error()
		r.Total = time.Since(start)
		return r
	case mi == nil:
		r.Class, r.Op, r.Err = ClassNotMounted, "mountinfo", "no filesystem is mounted there (a bare directory would take mail on local disk)"
		r.Total = time.Since(start)
		return r
	}
	r.FSType = mi.fstype
	if ok, _ := path.Match(m.cfg.FSType, mi.fstype); !ok {
		r.Class, r.Op = ClassNotMounted, "mountinfo"
		r.Err = fmt.Sprintf("mounted as %s (from %s), want %s", mi.fstype, mi.source, m.cfg.FSType)
		r.Total = time.Since(start)
		return r
	}
	if mi.readOnly {
		r.Class, r.Op, r.Err = ClassReadOnly, "mountinfo", "mounted read-only"
		r.Total = time.Since(start)
		return r
	}

	// A new helper's start touches no mount, so it counts towards neither
	// the timeout nor the slow threshold: a loaded machine's slow exec is
	// no mount trouble.
	spawn, err := m.ensureHelper()
	if err != nil {
		r.Class, r.Op, r.Err = ClassIOError, "helper", err.Error()
		r.Total = time.Since(start)
		return r
	}
	h, seq, err := m.send(mi)
	if err != nil {
		r.Class, r.Op, r.Err = ClassIOError, "helper", err.Error()
		r.Total = time.Since(start)
		return r
	}
	timer := time.NewTimer(m.timeout - (time.Since(start) - spawn))
	defer timer.Stop()
wait:
	for {
		select {
		case rep := <-h.replies:
			if rep.Seq != seq {
				continue // a late answer to a round that timed out
			}
			res := rep.Result
			r.Class, r.Op, r.Err = res.Class, res.Op, res.Err
			for op, d := range res.Ops {
				r.Ops[op] = d
			}
			break wait
		case <-h.exited:
			r.Class, r.Op, r.Err = ClassIOError, "helper", fmt.Sprintf("the probe helper (pid %d) ended: %v", h.pid, h.err)
			break wait
		case <-timer.C:
			m.mu.Lock()
			op := m.busyOp
			m.mu.Unlock()
			r.Class, r.Op = ClassHung, op
			r.Err = fmt.Sprintf("%s did not return within %s", op, m.timeout)
			break wait
		}
	}
	r.Total = time.Since(start)
	m.fillWaitingDev(&r, mi)
	if r.Class == ClassOK && r.Total-spawn > m.slow {
		r.Class = ClassSlow
		r.Op, r.Err = slowest(r.Ops), fmt.Sprintf("round took %s, over the %s threshold", r.Total.Round(time.Millisecond), m.slow)
	}
	return r
}

// helperStart bounds how long a new helper may take to say it is ready.
const helperStart = 10 * time.Second

// ensureHelper starts a helper when there is none and waits until it is
// ready; it returns how long that took.
func (m *Mount) ensureHelper() (time.Duration, error) {
	start := time.Now()
	m.mu.Lock()
	if m.h != nil {
		m.mu.Unlock()
		return 0, nil
	}
	h, err := m.startHelper()
	if err != nil {
		m.mu.Unlock()
		return 0, err
	}
	m.h = h
	m.mu.Unlock()
	t := time.NewTimer(helperStart)
	defer t.Stop()
	select {
	case <-h.ready:
		return time.Since(start), nil
	case <-h.exited:
		return 0, fmt.Errorf("the probe helper (pid %d) ended before it was ready: %v", h.pid, h.err)
	case <-t.C:
		return 0, fmt.Errorf("the probe helper (pid %d) was not ready within %s", h.pid, helperStart)
	}
}

// send starts a round in the helper ensureHelper started, and returns it
// with the round's number.
func (m *Mount) send(mi *mountEntry) (*helper, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h == nil {
		return nil, 0, fmt.Errorf("the probe helper ended before the round")
	}
	m.seq++
	m.busy, m.busyOp, m.busySince, m.stuckPID = true, "open-root", time.Now(), m.h.pid
	req, _ := json.Marshal(helperRequest{Seq: m.seq, Mount: m.cfg, Node: m.node, Major: mi.major, Minor: mi.minor, Lock: m.lock})
	// The helper reads a request whenever it is not in a round, and only
	// then is one sent: this write never waits on a full pipe.
	if _, err := m.h.in.Write(append(req, '\n')); err != nil {
		m.busy = false
		return nil, 0, fmt.Errorf("the probe helper (pid %d) is gone: %w", m.h.pid, err)
	}
	return m.h, m.seq, nil
}

// work runs a round's syscalls in order, each timed, calling step before
// each. It runs in the helper process and may block for as long as the
// filesystem does. Every path is relative to a descriptor of the mount
// root whose device was checked, so nothing is ever written to the
// directory underneath the mount.
func work(req helperRequest, progress func(op string)) Result {
	r := Result{Mount: req.Mount.Path, Ops: map[string]time.Duration{}}
	var op string
	step := func(name string, f func() error) error {
		progress(name)
		op = name
		t := time.Now()
		err := f()
		r.Ops[name] = time.Since(t)
		return err
	}
	fail := func(err error) Result {
		r.Class, r.Op, r.Err = classify(err), op, fmt.Sprintf("%s: %v", op, err)
		return r
	}

	var root int
	if err := step("open-root", func() (err error) {
		root, err = unix.Open(req.Mount.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	}); err != nil {
		return fail(err)
	}
	defer unix.Close(root)
	var st unix.Stat_t
	if err := step("stat", func() error { return unix.Fstat(root, &st) }); err != nil {
		return fail(err)
	}
	if unix.Major(uint64(st.Dev)) != req.Major || unix.Minor(uint64(st.Dev)) != req.Minor {
		r.Class, r.Op = ClassNotMounted, "stat"
		r.Err = fmt.Sprintf("%s is on device %d:%d, not the mounted filesystem's %d:%d: it was unmounted meanwhile",
			req.Mount.Path, unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), req.Major, req.Minor)
		return r
	}
	var sfs unix.Statfs_t
	if err := step("statfs", func() error { return unix.Fstatfs(root, &sfs) }); err != nil {
		return fail(err)
	}
	if sfs.Flags&unix.ST_RDONLY != 0 {
		r.Class, r.Op, r.Err = ClassReadOnly, "statfs", "filesystem is read-only"
		return r
	}
	if sfs.Blocks > 0 && sfs.Bavail == 0 {
		r.Class, r.Op, r.Err = ClassFull, "statfs", "no free space"
		return r
	}

	dir := filepath.Clean(req.Mount.ProbeDir)
	if err := step("mkdir", func() error {
		err := unix.Mkdirat(root, dir, 0o755)
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	}); err != nil {
		return fail(err)
	}
	name := filepath.Join(dir, req.Node+".canary")
	content := []byte(fmt.Sprintf("roost canary %s %d %d\n", req.Node, req.Seq, time.Now().UnixNano()))
	var fd int
	if err := step("create", func() (err error) {
		fd, err = unix.Openat(root, name, unix.O_CREAT|unix.O_TRUNC|unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
		return err
	}); err != nil {
		return fail(err)
	}
	closed := false
	defer func() {
		if !closed {
			unix.Close(fd)
		}
	}()
	if err := step("write", func() error {
		n, err := unix.Write(fd, content)
		if err == nil && n != len(content) {
			err = fmt.Errorf("short write: %d of %d bytes", n, len(content))
		}
		return err
	}); err != nil {
		return fail(err)
	}
	if err := step("fsync", func() error { return unix.Fsync(fd) }); err != nil {
		return fail(err)
	}
	got := make([]byte, len(content)+16)
	var n int
	if err := step("read", func() (err error) {
		// Past the page cache, so the check sees what storage holds.
		_ = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
		n, err = unix.Pread(fd, got, 0)
		return err
	}); err != nil {
		return fail(err)
	}
	closed = true
	if err := step("close", func() error { return unix.Close(fd) }); err != nil {
		return fail(err)
	}
	if !bytes.Equal(got[:n], content) {
		r.Class, r.Op = ClassMismatch, "read"
		r.Err = fmt.Sprintf("canary read back %q, wrote %q", truncate(got[:n]), truncate(content))
		return r
	}
	if err := step("unlink", func() error { return unix.Unlinkat(root, name, 0) }); err != nil {
		return fail(err)
	}
	r.Class = ClassOK
	return r
}

func classify(err error) Class {
	switch {
	case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
		return ClassDisconnected
	case errors.Is(err, syscall.EROFS):
		return ClassReadOnly
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return ClassFull
	}
	return ClassIOError
}

func slowest(ops map[string]time.Duration) string {
	var name string
	var max time.Duration
	for op, d := range ops {
		if d > max {
			name, max = op, d
		}
	}
	return name
}

func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return strings.TrimSpace(string(b))
}

// fillWaiting reads the FUSE queue of the mount, when the worker is stuck
// and no mountinfo entry was read this round.
func (m *Mount) fillWaiting(r *Result) {
	if mi, err := findMount(m.cfg.Path); err == nil && mi != nil {
		r.FSType = mi.fstype
		m.fillWaitingDev(r, mi)
	}
}

func (m *Mount) fillWaitingDev(r *Result, mi *mountEntry) {
	if !strings.HasPrefix(mi.fstype, "fuse") {
		return
	}
	if w, err := fuseWaiting(mi.dev); err == nil {
		r.FuseWaiting = w
	}
}

// fuseWaiting reads /sys/fs/fuse/connections/<dev>/waiting, mounting
// fusectl first if it is not (that needs root). Reading it never blocks
// on the FUSE daemon.
func fuseWaiting(dev uint64) (int, error) {
	p := filepath.Join(fusectlDir, strconv.FormatUint(dev, 10), "waiting")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		if merr := unix.Mount("fusectl", fusectlDir, "fusectl", 0, ""); merr == nil || errors.Is(merr, unix.EBUSY) {
			b, err = os.ReadFile(p)
		}
	}
	if err != nil {
		return -1, err
	}
	return parseWaiting(b)
}

// parseWaiting reads fusectl's waiting file: a count and a newline.
func parseWaiting(b []byte) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(string(b[:min(len(b), 32)])))
	if err != nil || n < 0 || len(b) > 32 {
		return -1, fmt.Errorf("fusectl waiting: not a count: %q", b[:min(len(b), 16)]) // a short prefix, at most 66 bytes quoted
	}
	return n, nil
}

const fusectlDir = "/sys/fs/fuse/connections"
