package mailcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/roost-mail/roost/routing/routingtest"
)

// Prog lets a program (make demo, the time-to-recover bench command) run
// the harness, which is written against testing.TB: Fatal ends the run
// with its message, Cleanup functions run at Close, last first. Only the
// methods the harness calls are implemented; the embedded nil TB panics
// on any other.
type Prog struct {
	testing.TB
	name   string
	out    io.Writer
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	closed   bool // Close began: a cleanup registered now runs at once
}

// fatal is what Fatal panics with; Run recovers it.
type fatal struct{ msg string }

// NewProg makes a Prog that logs to out.
func NewProg(name string, out io.Writer) *Prog {
	ctx, cancel := context.WithCancel(context.Background())
	return &Prog{name: name, out: out, ctx: ctx, cancel: cancel}
}

// Run calls fn, turning a Fatal inside it into an error.
func (p *Prog) Run(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%s", f.msg)
		}
	}()
	fn()
	return nil
}

// Close runs the cleanups, last registered first, and stops the database
// servers the run started.
func (p *Prog) Close() {
	p.cancel()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	for {
		p.mu.Lock()
		if len(p.cleanups) == 0 {
			p.mu.Unlock()
			break
		}
		fn := p.cleanups[len(p.cleanups)-1]
		p.cleanups = p.cleanups[:len(p.cleanups)-1]
		p.mu.Unlock()
		p.runCleanup(fn)
	}
	routingtest.Stop()
}

// runCleanup runs one cleanup; a Fatal inside it is reported and the
// next cleanup still runs.
func (p *Prog) runCleanup(fn func()) {
	if err := p.Run(fn); err != nil {
		fmt.Fprintf(os.Stderr, "%s: cleanup: %v\n", p.name, err)
	}
}

func (p *Prog) Helper()      {}
func (p *Prog) Name() string { return p.name }
func (p *Prog) Failed() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.failed }
func (p *Prog) Context() context.Context {
	return p.ctx
}

// Cleanup registers fn for Close; after Close began (Ctrl-C while the
// cluster still starts) it runs fn at once, so nothing started late is
// left behind.
func (p *Prog) Cleanup(fn func()) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		fn()
		return
	}
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, fn)
}
func (p *Prog) Log(args ...any) { fmt.Fprintln(p.out, args...) }
func (p *Prog) Logf(format string, args ...any) {
	fmt.Fprintf(p.out, format+"\n", args...)
}
func (p *Prog) Errorf(format string, args ...any) {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
func (p *Prog) Error(args ...any) { p.Errorf("%s", fmt.Sprint(args...)) }
func (p *Prog) Fatalf(format string, args ...any) {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	panic(fatal{fmt.Sprintf(format, args...)})
}
func (p *Prog) Fatal(args ...any) { p.Fatalf("%s", fmt.Sprint(args...)) }

// TempDir makes a directory removed at Close.
func (p *Prog) TempDir() string {
	dir, err := os.MkdirTemp("", "roost-prog-")
	if err != nil {
		p.Fatal(err)
	}
	p.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
