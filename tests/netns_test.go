package tests

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// netLab is n network namespaces on one bridge: node i has 10.213.S.i+1,
// the host 10.213.S.254. cut(i) blackholes node i's routes to every other
// node (both directions fail: its replies go nowhere) while it still
// reaches the host, where the database is.
type netLab struct {
	t      *testing.T
	prefix string // "10.213.S."
	bridge string
	ns     []string
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("no ip command: install iproute2 (scripts/test-deps.sh does)")
	}
	id := os.Getpid() % 200
	l := &netLab{t: t, prefix: fmt.Sprintf("10.213.%d.", id), bridge: fmt.Sprintf("rbr%d", os.Getpid()%100000)}
	ipCmd(t, "link", "add", l.bridge, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", l.bridge).Run() })
	ipCmd(t, "addr", "add", l.prefix+"254/24", "dev", l.bridge)
	ipCmd(t, "link", "set", l.bridge, "up")
	for i := range n {
		ns := fmt.Sprintf("roost%d-%d", os.Getpid(), i+1)
		host, peer := fmt.Sprintf("rv%d-%d", os.Getpid()%100000, i+1), "eth0"
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		l.ns = append(l.ns, ns)
		ipCmd(t, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
		ipCmd(t, "link", "set", host, "master", l.bridge, "up")
		ipCmd(t, "-n", ns, "addr", "add", l.ip(i)+"/24", "dev", peer)
		ipCmd(t, "-n", ns, "link", "set", peer, "up")
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	return l
}

func (l *netLab) ip(i int) string     { return fmt.Sprintf("%s%d", l.prefix, i+1) }
func (l *netLab) hostIP() string      { return l.prefix + "254" }
func (l *netLab) wrap(i int) []string { return []string{"ip", "netns", "exec", l.ns[i]} }

// hostAddr adds another address on the host's side of the bridge (for a
// server the namespaces reach, such as a Dovecot node) and returns it.
func (l *netLab) hostAddr(last int) string {
	l.t.Helper()
	ip := fmt.Sprintf("%s%d", l.prefix, last)
	ipCmd(l.t, "addr", "add", ip+"/32", "dev", l.bridge)
	return ip
}

// block makes node i unable to reach ip (and ip's answers to it).
func (l *netLab) block(i int, ip string) {
	l.t.Helper()
	ipCmd(l.t, "-n", l.ns[i], "route", "add", "blackhole", ip+"/32")
}

// cut cuts node i off from every other node.
func (l *netLab) cut(i int) {
	l.t.Helper()
	for j := range l.ns {
		if j != i {
			ipCmd(l.t, "-n", l.ns[i], "route", "add", "blackhole", l.ip(j)+"/32")
		}
	}
}

// heal undoes cut.
func (l *netLab) heal(i int) {
	l.t.Helper()
	for j := range l.ns {
		if j != i {
			ipCmd(l.t, "-n", l.ns[i], "route", "del", "blackhole", l.ip(j)+"/32")
		}
	}
}

// forward listens on the host's bridge address and relays every
// connection to target (a server that listens on loopback only); it
// returns the address to dial from the namespaces.
func (l *netLab) forward(target string) string {
	l.t.Helper()
	ln, err := net.Listen("tcp", l.hostIP()+":0")
	if err != nil {
		l.t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				track(c, true)
				track(u, true)
				defer track(c, false)
				defer track(u, false)
				done := make(chan struct{}, 2)
				go func() { io.Copy(u, c); done <- struct{}{} }()
				go func() { io.Copy(c, u); done <- struct{}{} }()
				<-done
			})
		}
	})
	l.t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
