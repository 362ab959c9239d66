package fsprobe

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A mount's probe syscalls run in a helper process, never in a thread of
// roostd: a thread blocked in a FUSE request that the daemon took cannot be
// interrupted or killed, and a process with such a thread cannot finish
// exiting, so an agent that probed in a thread could neither stop, restart
// nor fence during a hang. The helper is this same executable started again
// (from /proc/self/exe, so an upgrade that replaced the file does not
// matter) with argv[0] helperName; MaybeHelper turns it into the helper.
//
// One helper per mount lives as long as the agent and serves every round,
// so a healthy round costs a few pipe writes more than a round in a thread.
// A helper stuck in a hung mount is left alone: no new request is sent to
// it until it answers, and no second helper is started while it lives. It
// holds a lock file (Config.LockDir) for as long as it lives, so a
// restarted roostd, whose new helper finds the lock still held, knows at
// once that an earlier probe is still stuck in the mount.
//
// The protocol is JSON lines: the parent writes one helperRequest a round;
// the helper answers helperReply lines: {"op":"ready"} once, {"op":NAME}
// before each syscall, and {"result":…} at the end of the round.

// helperName is a helper's argv[0]; ps shows it with the mount path.
const helperName = "roostd-fsprobe-helper"

// maxHelperLine bounds a line of the protocol either way.
const maxHelperLine = 64 << 10

// MaybeHelper makes this process a probe helper when it was started as
// one, and then never returns; otherwise it returns at once. Call it first
// in main, and in TestMain of every test binary whose tests probe mounts:
// a program that does not cannot probe (its rounds fail, saying so).
func MaybeHelper() {
	if len(os.Args) == 0 || os.Args[0] != helperName {
		return
	}
	os.Exit(serveHelper(os.Stdin, os.Stdout))
}

type helperRequest struct {
	Seq   uint64      `json:"seq"`
	Mount MountConfig `json:"mount"`
	Node  string      `json:"node"`
	Major uint32      `json:"major"`
	Minor uint32      `json:"minor"`
	// Lock is the lock file to hold while probing; "" for none.
	Lock string `json:"lock,omitempty"`
}

type helperReply struct {
	Seq    uint64  `json:"seq,omitempty"`
	Op     string  `json:"op,omitempty"`
	PID    int     `json:"pid,omitempty"` // with op "ready"
	Result *Result `json:"result,omitempty"`
}

// serveHelper answers requests until its input ends (the agent stopped or
// died), and returns the exit status.
func serveHelper(in io.Reader, out io.Writer) int {
	enc := json.NewEncoder(out)
	if enc.Encode(helperReply{Op: "ready", PID: os.Getpid()}) != nil {
		return 1
	}
	br := bufio.NewReaderSize(in, maxHelperLine)
	var lock *os.File
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0 // EOF: nothing more to do
		}
		var req helperRequest
		if err := json.Unmarshal(line, &req); err != nil {
			fmt.Fprintf(os.Stderr, "%s: bad request: %v\n", helperName, err)
			return 2
		}
		var r Result
		if lock == nil && req.Lock != "" {
			lock, err = takeLock(req.Lock)
		}
		if err != nil {
			r = Result{Class: ClassHung, Op: "lock", Err: err.Error()}
		} else {
			r = work(req, func(op string) { enc.Encode(helperReply{Seq: req.Seq, Op: op}) })
		}
		if enc.Encode(helperReply{Seq: req.Seq, Result: &r}) != nil {
			return 0 // the agent is gone
		}
	}
}

// lockPath names the lock file of one node's probe of one mount.
func lockPath(dir, node, mount string) string {
	sum := sha256.Sum256([]byte(mount))
	return filepath.Join(dir, "fsprobe-"+node+"-"+hex.EncodeToString(sum[:8])+".lock")
}

// takeLock takes the lock file for good (it is released when the helper
// exits) and writes the helper's pid into it. When another live process
// holds it, the error names that process.
func takeLock(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("an earlier probe process (pid %s) is still blocked in this mount; no new call until it returns", strings.TrimSpace(string(b[:n])))
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// helper is the agent's side of one helper process.
type helper struct {
	pid     int
	in      io.WriteCloser
	replies chan helperReply // round ends; buffer of one, the newest kept
	exited  chan struct{}    // closed once the helper has exited
	ready   chan struct{}    // closed once it said it is ready
	err     error            // why it exited; set before exited closes
}

// startHelper starts a helper for m. Called with m.mu held.
func (m *Mount) startHelper() (*helper, error) {
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{helperName, m.cfg.Path}
	cmd.Env = []string{}
	// No stderr: a stuck helper must not hold a caller's pipes open.
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the probe helper: %w", err)
	}
	h := &helper{pid: cmd.Process.Pid, in: in, replies: make(chan helperReply, 1), exited: make(chan struct{}), ready: make(chan struct{})}
	m.helpers.Add(1)
	go func() {
		defer m.helpers.Done()
		h.err = m.readHelper(h, out)
		if h.err != nil {
			_ = cmd.Process.Kill() // our own child, by pid
		}
		if err := cmd.Wait(); h.err == nil {
			h.err = fmt.Errorf("it exited: %v", err)
		}
		m.mu.Lock()
		if m.h == h || m.h == nil {
			m.h, m.busy = nil, false
		}
		m.mu.Unlock()
		close(h.exited)
	}()
	return h, nil
}

// readHelper reads h's replies until it closes its output, and returns
// why the conversation ended (nil for a plain EOF).
func (m *Mount) readHelper(h *helper, out io.Reader) error {
	br := bufio.NewReaderSize(out, maxHelperLine)
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the probe helper: %w", err)
		}
		var rep helperReply
		if err := json.Unmarshal(line, &rep); err != nil || (first && rep.Op != "ready") {
			return fmt.Errorf("the probe helper answered %q, not the protocol (does the program call fsprobe.MaybeHelper first?)", truncate(line))
		}
		switch {
		case rep.Result != nil:
			m.mu.Lock()
			if m.h == h || m.h == nil { // nil: closed, but it was this one's round
				m.busy = false
			}
			m.mu.Unlock()
			select { // only this goroutine sends: drop a reply nobody took
			case <-h.replies:
			default:
			}
			h.replies <- rep
		case first: // "ready", checked above
			close(h.ready)
		default:
			m.mu.Lock()
			if m.h == h || m.h == nil {
				m.busyOp, m.busySince = rep.Op, time.Now()
			}
			m.mu.Unlock()
		}
	}
}
