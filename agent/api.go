package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/roost-mail/roost/alerting"
	"github.com/roost-mail/roost/api"
)

// apiServer serves the HTTP API on the local unix socket (authorised by
// its file mode) and optionally on TCP with TLS and a bearer token.
type apiServer struct {
	log       *slog.Logger
	handler   http.Handler
	unixLn    net.Listener
	tcpLn     net.Listener
	token     string
	hook      *alerting.Webhook
	closeOnce sync.Once
}

func newAPIServer(cfg APIConfig, src backend, hook *alerting.Webhook, log *slog.Logger, reg *prometheus.Registry) (*apiServer, error) {
	s := &apiServer{log: log, hook: hook}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/alertmanager", hook)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { api.WriteJSON(w, http.StatusOK, src.Status()) })
	routes(mux, src)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	s.handler = mux

	if cfg.Socket != "" {
		ln, err := listenUnix(cfg.Socket)
		if err != nil {
			return nil, fmt.Errorf("api.socket: %w", err)
		}
		s.unixLn = ln
	}
	if cfg.Listen != "" {
		tlsCfg, err := cfg.TLS.ServerConfig()
		if err != nil {
			s.close()
			return nil, fmt.Errorf("api.tls: %w", err)
		}
		if s.token, err = readToken(cfg.TokenFile); err != nil {
			s.close()
			return nil, fmt.Errorf("api.token_file: %w", err)
		}
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("api.listen: %w", err)
		}
		s.tcpLn = tls.NewListener(ln, tlsCfg)
	}
	return s, nil
}

// socketGroup owns the local socket when it exists.
const socketGroup = "roost"

// listenUnix listens on path, replacing a stale socket left by a crash but
// never one that another agent still answers on.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another agent is listening there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	// Members of the roost group (the packages create it) may use nodectl.
	if g, err := user.LookupGroup(socketGroup); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			if err := os.Chown(path, -1, gid); err != nil {
				ln.Close()
				return nil, fmt.Errorf("giving %s to group %s: %w", path, socketGroup, err)
			}
		}
	}
	return ln, nil
}

func (s *apiServer) tcpAddr() string {
	if s.tcpLn == nil {
		return ""
	}
	return s.tcpLn.Addr().String()
}

func (s *apiServer) run(ctx context.Context) error {
	var wg sync.WaitGroup
	var servers []*http.Server
	serve := func(ln net.Listener, h http.Handler) {
		hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, hs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("api_serve_failed", "addr", ln.Addr().String(), "err", err)
			}
		}()
	}
	if s.unixLn != nil {
		serve(s.unixLn, s.handler)
	}
	if s.tcpLn != nil {
		serve(s.tcpLn, s.requireToken(s.handler))
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, hs := range servers {
		_ = hs.Shutdown(sctx)
	}
	s.close()
	wg.Wait()
	return nil
}

func (s *apiServer) close() {
	s.closeOnce.Do(func() {
		if s.unixLn != nil {
			s.unixLn.Close() // also removes the socket file
		}
		if s.tcpLn != nil {
			s.tcpLn.Close()
		}
	})
}

func (s *apiServer) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/alertmanager" {
			// Alertmanager's own token, which can do nothing else.
			if !s.hook.Authorized(r) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="roostd-webhook"`)
				api.WriteJSON(w, http.StatusUnauthorized, api.Error{Error: "missing or wrong webhook token (alertmanager.webhook_token_file)"})
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if !api.Bearer(r, s.token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="roostd"`)
			api.WriteJSON(w, http.StatusUnauthorized, api.Error{Error: "missing or wrong API token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}
