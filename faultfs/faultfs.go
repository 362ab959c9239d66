// Package faultfs is a FUSE filesystem that passes through to a backing
// directory and injects the failures of a shared mail filesystem on
// command: latency, hangs, errors and corrupted reads. Roost's tests mount
// it under real probes and real Dovecot; operators use it on game days.
package faultfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Fault is what to inject into the FUSE requests it applies to.
type Fault struct {
	// Ops limits the fault to these FUSE operations (Lookup, GetAttr,
	// Create, Open, Read, Write, Fsync, Unlink, Mkdir, StatFs, ...); empty
	// means every operation.
	Ops []string `json:"ops,omitempty"`
	// Delay is added to every affected request.
	Delay Duration `json:"delay,omitempty"`
	// Jitter adds a further uniformly random delay in [0, Jitter).
	Jitter Duration `json:"jitter,omitempty"`
	// Hang blocks affected requests until Release or Clear, as a FUSE
	// daemon that stopped answering.
	Hang bool `json:"hang,omitempty"`
	// Errno fails affected requests: EIO, ENOSPC, EROFS, ENOTCONN, ...
	Errno string `json:"errno,omitempty"`
	// Corrupt flips the bytes of every read, as a stale or broken cache.
	Corrupt bool `json:"corrupt,omitempty"`
}

// Duration is a time.Duration that reads and writes as "250ms" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("duration %q: want a non-negative duration such as 250ms", s)
	}
	*d = Duration(v)
	return nil
}

var errnos = map[string]syscall.Errno{
	"EIO": syscall.EIO, "ENOSPC": syscall.ENOSPC, "EROFS": syscall.EROFS, "ENOTCONN": syscall.ENOTCONN,
	"EACCES": syscall.EACCES, "EDQUOT": syscall.EDQUOT, "ESTALE": syscall.ESTALE, "ETIMEDOUT": syscall.ETIMEDOUT,
}

// Validate checks the fault's fields.
func (f Fault) Validate() error {
	if f.Errno != "" {
		if _, ok := errnos[f.Errno]; !ok {
			names := make([]string, 0, len(errnos))
			for n := range errnos {
				names = append(names, n)
			}
			return fmt.Errorf("errno %q: want one of %s", f.Errno, strings.Join(names, ", "))
		}
	}
	for _, op := range f.Ops {
		if !knownOps[op] {
			return fmt.Errorf("op %q: not a FUSE operation faultfs knows", op)
		}
	}
	return nil
}

func (f Fault) applies(op string) bool {
	if len(f.Ops) == 0 {
		return true
	}
	for _, o := range f.Ops {
		if o == op || (o == "Write" && op == "Writev") {
			return true
		}
	}
	return false
}

// FS is one mounted faultfs.
type FS struct {
	Mountpoint string
	Backing    string
	srv        *fuse.Server

	mu      sync.Mutex
	fault   Fault
	release chan struct{} // closed to free hung requests
	hung    int           // requests blocked now
}

// Options tune a mount.
type Options struct {
	// Name is the fstype suffix: "fuse.<Name>" in /proc/self/mountinfo.
	Name string
	// AllowOther lets other users (Dovecot's mail user) use the mount.
	AllowOther bool
}

// Mount mounts backing at mountpoint and serves it until Unmount. It needs
// root (or /dev/fuse access and fusermount).
func Mount(backing, mountpoint string, opts Options) (*FS, error) {
	if opts.Name == "" {
		opts.Name = "faultfs"
	}
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("faultfs backing %s: %w", backing, err)
	}
	// No kernel caching: several mounts of one backing store must see each
	// other's writes at once, as nodes sharing a mail filesystem do.
	zero := time.Duration(0)
	f := &FS{Mountpoint: mountpoint, Backing: backing, release: make(chan struct{})}
	raw := fs.NewNodeFS(root, &fs.Options{EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero})
	srv, err := fuse.NewServer(&faultRaw{RawFileSystem: raw, f: f}, mountpoint, &fuse.MountOptions{
		Name:        opts.Name,
		FsName:      backing,
		AllowOther:  opts.AllowOther,
		DirectMount: true,
		MaxWrite:    1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("mounting faultfs on %s: %w", mountpoint, err)
	}
	closeFUSEOnExec()
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, fmt.Errorf("mounting faultfs on %s: %w", mountpoint, err)
	}
	f.srv = srv
	return f, nil
}

// Set replaces the current fault. Requests hung by the previous fault stay
// hung until Release or Clear.
func (f *FS) Set(flt Fault) error {
	if err := flt.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	f.fault = flt
	f.mu.Unlock()
	return nil
}

// Clear removes the fault and frees hung requests.
func (f *FS) Clear() {
	f.mu.Lock()
	f.fault = Fault{}
	f.mu.Unlock()
	f.Release()
}

// Release frees the requests hung now; the fault stays.
func (f *FS) Release() {
	f.mu.Lock()
	close(f.release)
	f.release = make(chan struct{})
	f.mu.Unlock()
}

// Status is the current fault and the number of hung requests.
type Status struct {
	Mountpoint string `json:"mountpoint"`
	Backing    string `json:"backing"`
	Fault      Fault  `json:"fault"`
	Hung       int    `json:"hung_requests"`
}

// Status reports the current fault.
func (f *FS) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Status{Mountpoint: f.Mountpoint, Backing: f.Backing, Fault: f.fault, Hung: f.hung}
}

// Unmount frees hung requests and unmounts (lazily if busy).
func (f *FS) Unmount() error {
	f.Clear()
	err := f.srv.Unmount()
	if err != nil {
		// Busy: detach now, as `umount -l` does.
		if lerr := syscall.Unmount(f.Mountpoint, syscall.MNT_DETACH); lerr == nil {
			err = nil
		}
	}
	f.srv.Wait()
	return err
}

// Abort cuts the kernel's FUSE connection, as a crashed daemon does: every
// access then fails with ENOTCONN until the mount is unmounted.
func (f *FS) Abort() error {
	var st syscall.Stat_t
	if err := syscall.Stat(f.Mountpoint, &st); err != nil && !errors.Is(err, syscall.ENOTCONN) {
		return err
	}
	dev, err := deviceOf(f.Mountpoint)
	if err != nil {
		return err
	}
	conn := filepath.Join(fusectl, strconv.FormatUint(dev, 10))
	if _, err := os.Stat(conn); err != nil {
		// fusectl is often not mounted; mounting it needs root.
		if err := syscall.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("mounting fusectl on %s: %w", fusectl, err)
		}
	}
	return os.WriteFile(filepath.Join(conn, "abort"), []byte("1"), 0)
}

const fusectl = "/sys/fs/fuse/connections"

// deviceOf reads the mount's device number from /proc/self/mountinfo (a
// stat could hang on a broken mount).
func deviceOf(mountpoint string) (uint64, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	var dev uint64
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != mountpoint {
			continue
		}
		var major, minor uint64
		if _, err := fmt.Sscanf(f[2], "%d:%d", &major, &minor); err != nil {
			return 0, err
		}
		dev, found = major<<20|minor, true
	}
	if !found {
		return 0, fmt.Errorf("%s is not mounted", mountpoint)
	}
	return dev, nil
}

// inject applies the current fault to one request of op. Like slow
// storage or a stuck daemon it ignores the kernel's interrupts: a delayed
// request completes late, a hung one waits for Release.
func (f *FS) inject(op string, _ <-chan struct{}) fuse.Status {
	f.mu.Lock()
	flt, release := f.fault, f.release
	f.mu.Unlock()
	if !flt.applies(op) {
		return fuse.OK
	}
	if d := time.Duration(flt.Delay); d > 0 || flt.Jitter > 0 {
		if flt.Jitter > 0 {
			d += time.Duration(rand.Int64N(int64(flt.Jitter)))
		}
		time.Sleep(d)
	}
	if flt.Hang {
		f.mu.Lock()
		f.hung++
		f.mu.Unlock()
		<-release
		f.mu.Lock()
		f.hung--
		f.mu.Unlock()
	}
	if flt.Errno != "" {
		return fuse.Status(errnos[flt.Errno])
	}
	return fuse.OK
}

func (f *FS) corrupt() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fault.Corrupt
}

// Handler is the control API:
//
//	GET  /status          the fault and the number of hung requests
//	PUT  /fault           set a fault (JSON Fault); 400 names a bad field
//	POST /clear           remove the fault, free hung requests
//	POST /release         free hung requests, keep the fault
func (f *FS) Handler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, f.Status()) })
	mux.HandleFunc("PUT /fault", func(w http.ResponseWriter, r *http.Request) {
		var flt Fault
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&flt); err != nil {
			reply(w, 400, map[string]string{"error": "bad fault: " + err.Error()})
			return
		}
		if err := f.Set(flt); err != nil {
			reply(w, 400, map[string]string{"error": err.Error()})
			return
		}
		reply(w, 200, f.Status())
	})
	mux.HandleFunc("POST /clear", func(w http.ResponseWriter, r *http.Request) { f.Clear(); reply(w, 200, f.Status()) })
	mux.HandleFunc("POST /release", func(w http.ResponseWriter, r *http.Request) { f.Release(); reply(w, 200, f.Status()) })
	return mux
}

// closeFUSEOnExec marks this process's /dev/fuse descriptors close-on-exec.
// go-fuse's direct mount opens /dev/fuse without O_CLOEXEC, so every
// process started afterwards (Dovecot, an agent) would hold the FUSE
// connection: it would outlive this server, and a hung request could then
// never be aborted by the kernel. Mount before starting such processes.
func closeFUSEOnExec() {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/fuse" {
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				syscall.CloseOnExec(fd)
			}
		}
	}
}
