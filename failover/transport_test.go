package failover

import (
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A cluster port bound to one address dials from it too: peers and
// firewalls (and the test lab's cuts) know the node by that address.
func TestDialLeavesFromTheBindAddress(t *testing.T) {
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	s, err := newStreamLayer("127.0.0.2:0", "", nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	from := make(chan net.Addr, 1)
	go func() {
		if c, err := peer.Accept(); err == nil {
			from <- c.RemoteAddr()
			c.Close()
		}
	}()
	c, err := s.Dial(raft.ServerAddress(peer.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case a := <-from:
		if ip := a.(*net.TCPAddr).IP.String(); ip != "127.0.0.2" {
			t.Fatalf("dialed from %s, want the bind address 127.0.0.2", ip)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no connection")
	}
}

// flakyListener fails its first Accepts, as a process out of file
// descriptors sees, then accepts.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, errors.New("accept4: too many open files")
	}
	return l.Listener.Accept()
}

// The cluster port keeps accepting after errors that are not its close.
func TestAcceptRetriesAfterErrors(t *testing.T) {
	s, err := newStreamLayer("127.0.0.1:0", "", nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: s.ln}
	fl.fails.Store(3)
	s.ln = fl
	s.serve()
	defer s.Close()
	c, err := s.Dial(raft.ServerAddress(s.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case rc := <-s.raftConns:
		rc.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted after three accept errors")
	}
}
