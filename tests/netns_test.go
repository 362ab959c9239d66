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

// labs numbers the netLabs of this test process: with the pid, it makes
// every lab's device and namespace names unique, so two labs (of one
// process or of two) never meet a device the other has not yet removed.
var labs struct {
	sync.Mutex
	seq int
}

// freeSubnet returns a third octet S for 10.213.S.0/24 that no interface
// of this machine uses. Called under labs' lock.
func freeSubnet(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		t.Fatalf("ip addr show: %v", err)
	}
	for s := 1; s < 250; s++ {
		if !strings.Contains(string(out), fmt.Sprintf(" 10.213.%d.", s)) {
			return s
		}
	}
	t.Fatal("no free 10.213.S.0/24 subnet for a test network")
	return 0
}

func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("no ip command: install iproute2 (scripts/test-deps.sh does)")
	}
	labs.Lock()
	defer labs.Unlock()
	labs.seq++
	// 6 hex digits: a Linux device name holds at most 15 bytes.
	tag := fmt.Sprintf("%04x%02x", os.Getpid()&0xffff, labs.seq&0xff)
	l := &netLab{t: t, prefix: fmt.Sprintf("10.213.%d.", freeSubnet(t)), bridge: "rbr" + tag}
	// Cleanups run even when the test fails, last first: each host-side
	// veth and namespace, then the bridge. Deleting a device is
	// synchronous; a namespace's own end goes with its peer.
	ipCmd(t, "link", "add", l.bridge, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", l.bridge).Run() })
	ipCmd(t, "addr", "add", l.prefix+"254/24", "dev", l.bridge)
	ipCmd(t, "link", "set", l.bridge, "up")
	for i := range n {
		ns := fmt.Sprintf("roost-%s-%d", tag, i+1)
		host, peer := fmt.Sprintf("rv%s-%d", tag, i+1), "eth0"
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		l.ns = append(l.ns, ns)
		ipCmd(t, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
		t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
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

// lose makes node i's namespace drop one packet in every (at random),
// both ways, with an nftables rule of its own.
func (l *netLab) lose(i, every int) {
	l.t.Helper()
	script := fmt.Sprintf("add table inet lossy\nadd chain inet lossy out { type filter hook output priority 0 ; }\nadd chain inet lossy in { type filter hook input priority 0 ; }\nadd rule inet lossy out oifname \"eth0\" numgen random mod %[1]d == 0 drop\nadd rule inet lossy in iifname \"eth0\" numgen random mod %[1]d == 0 drop\n", every)
	cmd := exec.Command("ip", "netns", "exec", l.ns[i], "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("nft in %s: %v: %s", l.ns[i], err, out)
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

// Two labs of one process get different devices, namespaces and subnets,
// and leave nothing behind once their test ends, failed or not.
func TestNetLabsAreUniqueAndCleanedUp(t *testing.T) {
	var a, b *netLab
	t.Run("two at once", func(t *testing.T) {
		a, b = newNetLab(t, 2), newNetLab(t, 2)
		if a.bridge == b.bridge || a.prefix == b.prefix || a.ns[0] == b.ns[0] {
			t.Fatalf("two labs share names: %s %s %s and %s %s %s", a.bridge, a.prefix, a.ns[0], b.bridge, b.prefix, b.ns[0])
		}
	})
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	nss, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range []*netLab{a, b} {
		if l == nil {
			t.Fatal("a lab was not made")
		}
		if strings.Contains(string(links), l.bridge) || strings.Contains(string(links), "rv"+l.bridge[3:]) {
			t.Errorf("devices of %s are still there:\n%s", l.bridge, links)
		}
		for _, ns := range l.ns {
			if strings.Contains(string(nss), ns) {
				t.Errorf("namespace %s is still there", ns)
			}
		}
	}
}
