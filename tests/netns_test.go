package tests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	sw     *tunSwitch // nil: a bridge
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

func newNetLab(t *testing.T, n int) *netLab { return makeNetLab(t, n, nil) }

// newSwitchedLab is a netLab whose bridge is a switch in this process:
// each namespace's eth0 and the host's side are TUN devices, and the
// switch relays every IPv4 packet between them delay(src, dst) after it
// was sent, or drops it when delay is negative (packets of one flow may overtake each other, as with netem's
// jitter). This kernel has no netem; this is how a link gets jitter.
func newSwitchedLab(t *testing.T, n int, delay func(src, dst netip.Addr, pkt []byte) time.Duration) *netLab {
	return makeNetLab(t, n, delay)
}

func makeNetLab(t *testing.T, n int, delay func(src, dst netip.Addr, pkt []byte) time.Duration) *netLab {
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
	var sw *tunSwitch
	if delay == nil {
		ipCmd(t, "link", "add", l.bridge, "type", "bridge")
		t.Cleanup(func() { exec.Command("ip", "link", "del", l.bridge).Run() })
	} else {
		sw = newTunSwitch(t, l.bridge, delay)
		l.sw = sw
	}
	ipCmd(t, "addr", "add", l.prefix+"254/24", "dev", l.bridge)
	ipCmd(t, "link", "set", l.bridge, "up")
	for i := range n {
		ns := fmt.Sprintf("roost-%s-%d", tag, i+1)
		host, peer := fmt.Sprintf("rv%s-%d", tag, i+1), "eth0"
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		l.ns = append(l.ns, ns)
		if sw == nil {
			ipCmd(t, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
			t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
			ipCmd(t, "link", "set", host, "master", l.bridge, "up")
		} else {
			sw.port(host, netip.MustParseAddr(l.ip(i)))
			ipCmd(t, "link", "set", host, "netns", ns)
			ipCmd(t, "-n", ns, "link", "set", host, "name", peer)
		}
		ipCmd(t, "-n", ns, "addr", "add", l.ip(i)+"/24", "dev", peer)
		ipCmd(t, "-n", ns, "link", "set", peer, "up")
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	return l
}

// tunSwitch relays IPv4 packets between TUN devices: to the port of the
// packet's destination address, or to the host's port for any other.
type tunSwitch struct {
	t       *testing.T
	delay   func(src, dst netip.Addr, pkt []byte) time.Duration
	host    *os.File
	mu      sync.Mutex
	ports   map[netip.Addr]*os.File
	wg      sync.WaitGroup
	held    atomic.Int64 // packets delayed
	dropped atomic.Int64 // packets lost on purpose
}

// newTunSwitch makes the host's port, a TUN device named name in this
// namespace; it and every port end with the test.
func newTunSwitch(t *testing.T, name string, delay func(src, dst netip.Addr, pkt []byte) time.Duration) *tunSwitch {
	s := &tunSwitch{t: t, delay: delay, ports: map[netip.Addr]*os.File{}}
	s.host = s.open(name)
	t.Cleanup(func() {
		s.mu.Lock()
		files := []*os.File{s.host}
		for _, f := range s.ports {
			files = append(files, f)
		}
		s.mu.Unlock()
		for _, f := range files {
			f.Close() // a TUN device goes with its last file
		}
		s.wg.Wait()
	})
	return s
}

// port makes the TUN device name for addr; the caller moves it into a
// namespace.
func (s *tunSwitch) port(name string, addr netip.Addr) {
	f := s.open(name)
	s.mu.Lock()
	s.ports[addr] = f
	s.mu.Unlock()
}

func (s *tunSwitch) open(name string) *os.File {
	s.t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		s.t.Fatalf("open /dev/net/tun: %v (CONFIG_TUN)", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		s.t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		s.t.Fatalf("TUNSETIFF %s: %v", name, err)
	}
	f := os.NewFile(uintptr(fd), name) // non-blocking: reads end when it is closed
	s.wg.Go(func() { s.relay(f) })
	return f
}

// relay forwards every packet read from f until f is closed.
func (s *tunSwitch) relay(f *os.File) {
	buf := make([]byte, 65536)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return
		}
		if n < 20 || buf[0]>>4 != 4 {
			continue // IPv4 only: IPv6 router solicitations and the like go nowhere
		}
		src, dst := netip.AddrFrom4([4]byte(buf[12:16])), netip.AddrFrom4([4]byte(buf[16:20]))
		s.mu.Lock()
		out, ok := s.ports[dst]
		s.mu.Unlock()
		if !ok {
			out = s.host
		}
		if out == f {
			continue
		}
		pkt := bytes.Clone(buf[:n])
		d := s.delay(src, dst, pkt)
		if d < 0 {
			s.dropped.Add(1)
			continue
		}
		if d > 0 {
			s.held.Add(1)
			time.AfterFunc(d, func() { out.Write(pkt) })
		} else {
			out.Write(pkt)
		}
	}
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

// Two labs of one process get different devices, namespaces and subnets,
// and leave nothing behind once their test ends, failed or not.
func TestNetLabsAreUniqueAndCleanedUp(t *testing.T) {
	var a, b *netLab
	t.Run("two at once", func(t *testing.T) {
		a = newNetLab(t, 2)
		b = newSwitchedLab(t, 2, func(_, _ netip.Addr, _ []byte) time.Duration { return 0 })
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

// A switched lab's links carry what the switch is told: a packet to
// node1 is held 150 ms (so a refused connection takes at least that),
// one to node2 is not held, and a cut still cuts.
func TestSwitchedLabDelaysPackets(t *testing.T) {
	const hold = 150 * time.Millisecond
	l := newSwitchedLab(t, 2, func(_, dst netip.Addr, _ []byte) time.Duration {
		if dst.As4()[3] == 1 { // node1, l.ip(0)
			return hold
		}
		return 0
	})
	refused := func(ip string) time.Duration {
		start := time.Now()
		c, err := net.DialTimeout("tcp", ip+":9", 5*time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("%s:9 answered; nothing listens there", ip)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s:9: %v, want connection refused through the switch", ip, err)
		}
		return time.Since(start)
	}
	for range 3 {
		if d := refused(l.ip(0)); d < hold {
			t.Fatalf("node1 refused in %v, though the switch holds its packets %v", d, hold)
		}
		refused(l.ip(1))
	}
	l.cut(0)
	out, err := exec.Command("ip", "netns", "exec", l.ns[0], "bash", "-c", "exec 3<>/dev/tcp/"+l.ip(1)+"/9").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unreachable") && !strings.Contains(string(out), "Invalid argument") {
		t.Fatalf("node1 reached node2 after the cut: %v %s", err, out)
	}
}
