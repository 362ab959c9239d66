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
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/tests/mailcluster"
)

// procCluster is a cluster of roostd processes on loopback, configured
// the way an operator does it: roostd keygen, tls ca, tls cert and a YAML
// file per node that check-config accepts.
type procCluster struct {
	t               *testing.T
	roostd, nodectl string
	dir, sockDir    string
	procs           []*proc
}

// startProcs starts n roostd processes named node1… with proxy_host
// 127.0.1.1…; extra(i) is YAML appended to node i's file (sections the
// base file does not have).
func startProcs(t *testing.T, n int, extra func(i int) string) *procCluster {
	t.Helper()
	return startProcsWith(t, procOptions{n: n, extra: extra})
}

// procOptions shape a procCluster.
type procOptions struct {
	n     int
	extra func(i int) string
	// ip is node i's address (default 127.0.0.1) and wrap the command
	// that runs its roostd (e.g. ip netns exec NS), if any.
	ip   func(i int) string
	wrap func(i int) []string
	// proxyHost is node i's proxy_host (default 127.0.1.i+1).
	proxyHost func(i int) string
}

func startProcsWith(t *testing.T, o procOptions) *procCluster {
	t.Helper()
	n, extra := o.n, o.extra
	if o.ip == nil {
		o.ip = func(int) string { return "127.0.0.1" }
	}
	if o.proxyHost == nil {
		o.proxyHost = func(i int) string { return fmt.Sprintf("127.0.1.%d", i+1) }
	}
	bin := buildBinaries(t)
	c := &procCluster{t: t, roostd: filepath.Join(bin, "roostd"), nodectl: filepath.Join(bin, "nodectl"), dir: t.TempDir()}
	var err error
	if c.sockDir, err = os.MkdirTemp("", "roostp"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(c.sockDir) })
	key, err := run(t, c.roostd, "keygen")
	if err != nil {
		t.Fatalf("keygen: %v %s", err, key)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "gossip.key"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, c.roostd, "tls", "ca", "--dir", c.dir); err != nil {
		t.Fatalf("tls ca: %v %s", err, out)
	}
	ports := agenttest.FreePorts(t, 2*n)
	var join []string
	for i := range n {
		join = append(join, fmt.Sprintf("%s:%d", o.ip(i), ports[i]))
	}
	for i := range n {
		name := fmt.Sprintf("node%d", i+1)
		if out, err := run(t, c.roostd, "tls", "cert", "--dir", c.dir, "--name", name, "--host", o.ip(i)); err != nil {
			t.Fatalf("tls cert: %v %s", err, out)
		}
		cfg := mailcluster.AgentBase{Name: name, ProxyHost: o.proxyHost(i), IP: o.ip(i), Dir: c.dir, Socket: filepath.Join(c.sockDir, name+".sock"),
			GossipPort: ports[i], RaftPort: ports[n+i], Join: join}.YAML()
		if extra != nil {
			cfg += extra(i)
		}
		path := filepath.Join(c.dir, name+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, c.roostd, "check-config", "--config", path); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("check-config %s: %v %s", name, err, out)
		}
		p := &proc{name: name, socket: filepath.Join(c.sockDir, name+".sock"), config: path}
		if o.wrap != nil {
			p.wrap = o.wrap(i)
		}
		c.procs = append(c.procs, p)
		c.start(p)
	}
	t.Cleanup(c.stopAll)
	return c
}

// start starts (or restarts) p's roostd.
func (c *procCluster) start(p *proc) {
	c.t.Helper()
	if p.log == nil {
		p.log = &agenttest.SyncBuffer{}
	}
	args := append(append([]string(nil), p.wrap...), c.roostd, "--config", p.config)
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(p.cmd, p.done)
}

// running says whether p's roostd runs.
func (p *proc) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 kills p's roostd as a crash does.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

func (c *procCluster) stopAll() {
	for _, p := range c.procs {
		if p.running() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
				c.t.Errorf("%s ignored SIGTERM for 10s", p.name)
			}
		}
		if c.t.Failed() {
			c.t.Logf("%s log:\n%s", p.name, p.log.String())
		}
	}
}

// status is nodectl status --json on p.
func (c *procCluster) status(p *proc) (api.Status, error) {
	out, err := exec.Command(c.nodectl, "--socket", p.socket, "status", "--json").Output()
	if err != nil {
		return api.Status{}, err
	}
	var st api.Status
	return st, json.Unmarshal(out, &st)
}

// nodectl runs nodectl on p.
func (c *procCluster) ctl(p *proc, args ...string) (string, error) {
	return run(c.t, c.nodectl, append([]string{"--socket", p.socket}, args...)...)
}

// leader is the leader every running process agrees on, or nil.
func (c *procCluster) leader() *proc {
	name := ""
	for _, p := range c.procs {
		if !p.running() {
			continue
		}
		st, err := c.status(p)
		if err != nil || st.Leader == "" || (name != "" && st.Leader != name) {
			return nil
		}
		name = st.Leader
	}
	return c.byName(name)
}

func (c *procCluster) byName(name string) *proc {
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func (c *procCluster) waitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	if !agenttest.Eventually(timeout, cond) {
		c.t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}
