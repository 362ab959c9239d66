package failover

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The cluster port carries several channels. After the TLS handshake the
// dialer writes one byte naming the channel, as Consul does on its server
// port.
const (
	chanRaft  byte = 'R' // raft RPCs, handed to raft's NetworkTransport
	chanStats byte = 'S' // one JSON serverStats answer, for autopilot
	chanOp    byte = 'O' // one operator Request forwarded to the leader
	chanFlush byte = 'F' // one auth cache flush asked of a node (flush.go)
)

const handshakeTimeout = 5 * time.Second

// streamLayer is raft's StreamLayer over TCP with optional mutual TLS. It
// accepts every connection on its own goroutine, checks the certificate,
// reads the channel byte and routes the connection; raft sees only raft
// connections through Accept.
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	serverTLS *tls.Config // nil: plain TCP, only by explicit configuration
	clientTLS *tls.Config
	log       *slog.Logger
	handlers  map[byte]func(net.Conn)

	raftConns chan net.Conn
	done      chan struct{}
	// dialCtx ends the dials in flight when raft shuts down: a dial to a
	// silent peer would otherwise hold the shutdown for raft's timeout.
	dialCtx   context.Context
	stopDials context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup

	// conns are the open connections, accepted and dialed: raft's transport
	// does not close them on shutdown, so the layer does.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// trackedConn removes itself from the layer's set when closed.
type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// track registers c; it returns false (and closes c) once the layer is closed.
func (s *streamLayer) track(c net.Conn) (net.Conn, bool) {
	tc := &trackedConn{Conn: c, s: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		c.Close()
		return nil, false
	}
	s.conns[tc] = struct{}{}
	return tc, true
}

func newStreamLayer(bind, advertise string, serverTLS, clientTLS *tls.Config, log *slog.Logger) (*streamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listening on raft address %s: %w", bind, err)
	}
	adv := ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("raft advertise %q: %w", advertise, err)
		}
		adv = a
	} else if tcp := ln.Addr().(*net.TCPAddr); tcp.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft bind %s is a wildcard: set raft.advertise", bind)
	}
	s := &streamLayer{
		ln: ln, advertise: adv, serverTLS: serverTLS, clientTLS: clientTLS, log: log,
		handlers:  map[byte]func(net.Conn){},
		conns:     map[net.Conn]struct{}{},
		raftConns: make(chan net.Conn),
		done:      make(chan struct{}),
	}
	s.dialCtx, s.stopDials = context.WithCancel(context.Background())
	return s, nil
}

// handle registers a handler for a channel; call before serve.
func (s *streamLayer) handle(ch byte, h func(net.Conn)) { s.handlers[ch] = h }

// serve accepts connections until Close.
func (s *streamLayer) serve() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var delay time.Duration
		for {
			c, err := s.ln.Accept()
			if err != nil {
				select {
				case <-s.done:
					return
				default:
				}
				// Out of file descriptors and the like: wait and try again,
				// as memberlist does; the cluster port must not stay deaf.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Error("raft_accept_failed", "err", err, "retry_in", delay)
				select {
				case <-s.done:
					return
				case <-time.After(delay):
				}
				continue
			}
			delay = 0
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.route(c)
			}()
		}
	}()
}

func (s *streamLayer) route(c net.Conn) {
	c, ok := s.track(c)
	if !ok {
		return
	}
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	if s.serverTLS != nil {
		tc := tls.Server(c, s.serverTLS)
		if err := tc.Handshake(); err != nil {
			s.log.Warn("raft_peer_refused", "remote", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		c = tc
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	if b[0] == chanRaft {
		select {
		case s.raftConns <- c:
		case <-s.done:
			c.Close()
		}
		return
	}
	h, ok := s.handlers[b[0]]
	if !ok {
		s.log.Warn("raft_unknown_channel", "remote", c.RemoteAddr().String(), "channel", b[0])
		c.Close()
		return
	}
	h(c)
}

// Accept returns the next raft connection.
func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.raftConns:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and waits for the connections being routed.
func (s *streamLayer) Close() error {
	s.closeOnce.Do(func() {
		s.stopDials()
		close(s.done)
		s.ln.Close()
		s.mu.Lock()
		conns := s.conns
		s.conns = nil
		s.mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	s.wg.Wait()
	return nil
}

// Addr is the advertised address.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial opens a raft connection to a peer.
func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return s.dial(string(addr), chanRaft, timeout)
}

func (s *streamLayer) dial(addr string, ch byte, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if tcp, ok := s.ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		// Leave from the address the cluster port is bound to, as peers
		// and firewalls know this node by it (on a host with several
		// addresses the kernel might pick another).
		d.LocalAddr = &net.TCPAddr{IP: tcp.IP}
	}
	raw, err := d.DialContext(s.dialCtx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, ok := s.track(raw)
	if !ok {
		return nil, net.ErrClosed
	}
	if s.clientTLS != nil {
		tc := tls.Client(c, s.clientTLS)
		_ = tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		_ = tc.SetDeadline(time.Time{})
		c = tc
	}
	if _, err := c.Write([]byte{ch}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
