// Package lbsignal tells the load balancer in front whether this node
// should get traffic: HAProxy's agent-check line and an HTTP check for
// cloud load balancers, from a signal the agent computes.
package lbsignal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Config is how the load balancer in front learns whether this node
// should get traffic.
type Config struct {
	// AgentCheck is a host:port where HAProxy's agent-check reads one line:
	// "up ready", "up drain", "down" or "maint", then a "#" and why
	// (server … agent-check agent-port PORT). Empty: off.
	AgentCheck string `yaml:"agent_check"`
	// HTTP is a host:port answering GET /lb with 200 when the node should
	// get new connections and 503 when not, for cloud network load
	// balancers. Empty: off.
	HTTP string `yaml:"http"`
	// Weight, 1-256, is sent to HAProxy as a percentage of the server's
	// configured weight while the node is up (0: send none).
	Weight int `yaml:"weight"`
}

// Validate reports the first problem, naming the key.
func (c Config) Validate() error {
	for key, v := range map[string]string{"agent_check": c.AgentCheck, "http": c.HTTP} {
		if v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			return fmt.Errorf("%s %q: %w", key, v, err)
		}
	}
	if c.Weight < 0 || c.Weight > 256 {
		return fmt.Errorf("weight %d: want 1-256 (percent), or 0 for none", c.Weight)
	}
	return nil
}

// The signals: take new connections (Up), keep the ones there but take no
// new ones (Drain), out (Down), out for maintenance (Maint).
const (
	Up    = "up"
	Drain = "drain"
	Down  = "down"
	Maint = "maint"
)

// agentCheckLine is the HAProxy agent-check answer for a signal.
func agentCheckLine(signal, why string, weight int) string {
	words := map[string]string{Up: "up ready", Drain: "up drain", Down: "down", Maint: "maint"}[signal]
	if signal == Up && weight > 0 {
		words += fmt.Sprintf(" %d%%", weight)
	}
	// A description follows '#'; keep it one short line.
	why = strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, why)
	if len(why) > 200 {
		why = strings.ToValidUTF8(why[:200], "")
	}
	return words + " #" + why + "\n"
}

// Server serves the signal.
type Server struct {
	log     *slog.Logger
	signal  func() (string, string)
	weight  int
	agentLn net.Listener
	httpLn  net.Listener
}

// New listens where cfg says; signal is what to answer, and why.
func New(cfg Config, signal func() (string, string), log *slog.Logger) (*Server, error) {
	s := &Server{log: log, signal: signal, weight: cfg.Weight}
	var err error
	if cfg.AgentCheck != "" {
		if s.agentLn, err = net.Listen("tcp", cfg.AgentCheck); err != nil {
			return nil, fmt.Errorf("lb.agent_check: %w", err)
		}
	}
	if cfg.HTTP != "" {
		if s.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
			s.Close()
			return nil, fmt.Errorf("lb.http: %w", err)
		}
	}
	return s, nil
}

// Close stops listening (Run does on return).
func (s *Server) Close() {
	for _, ln := range []net.Listener{s.agentLn, s.httpLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// Addrs are the bound addresses (agent-check, HTTP), "" when off.
func (s *Server) Addrs() (string, string) {
	var a, h string
	if s.agentLn != nil {
		a = s.agentLn.Addr().String()
	}
	if s.httpLn != nil {
		h = s.httpLn.Addr().String()
	}
	return a, h
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer s.Close()
	if s.agentLn != nil {
		wg.Go(func() {
			var delay time.Duration
			for {
				c, err := s.agentLn.Accept()
				if errors.Is(err, net.ErrClosed) {
					return
				}
				if err != nil {
					// Out of file descriptors and the like: wait, try again.
					delay = min(max(2*delay, 5*time.Millisecond), time.Second)
					s.log.Error("lb_agent_accept_failed", "err", err, "retry_in", delay)
					time.Sleep(delay)
					continue
				}
				delay = 0
				wg.Go(func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					sig, why := s.signal()
					_, _ = c.Write([]byte(agentCheckLine(sig, why, s.weight)))
				})
			}
		})
	}
	if s.httpLn != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /lb", func(w http.ResponseWriter, r *http.Request) {
			sig, why := s.signal()
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			code := http.StatusOK
			if sig != Up {
				code = http.StatusServiceUnavailable
			}
			w.WriteHeader(code)
			fmt.Fprintf(w, "%s: %s\n", sig, why)
		})
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := hs.Serve(s.httpLn); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				s.log.Error("lb_http_failed", "err", err)
			}
		})
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = hs.Shutdown(sctx)
		}()
	}
	<-ctx.Done()
	return nil
}
