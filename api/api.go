// Package api is the agent's HTTP API as its clients see it: the wire
// types, stable for scripts, and a client for nodectl and tests.
package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Status is GET /v1/status: the cluster as the answering node sees it.
type Status struct {
	Node             string   `json:"node"`
	Version          string   `json:"version"`
	Leader           string   `json:"leader"`
	Term             uint64   `json:"term"`
	ClusterID        string   `json:"cluster_id"`
	FailureTolerance int      `json:"failure_tolerance"` // -1 unless asked on the leader
	Members          []Member `json:"members"`
	// Health and Mounts are the answering node's own checks.
	Health Health  `json:"health"`
	Mounts []Mount `json:"mounts"`
}

// Health is a node's own health: its status, why, and every check.
type Health struct {
	Status  string   `json:"status"` // passing, warning, critical
	Reasons []string `json:"reasons,omitempty"`
	Checks  []Check  `json:"checks"`
}

// Check is one health check after fall/rise.
type Check struct {
	Name     string    `json:"name"`
	Status   string    `json:"status"`
	Severity string    `json:"severity"`
	Reason   string    `json:"reason,omitempty"`
	Since    time.Time `json:"since"`
}

// Mount is the last probe of one mail filesystem mount.
type Mount struct {
	Path        string        `json:"path"`
	FSType      string        `json:"fstype"`
	Class       string        `json:"class"` // ok, slow, hung, disconnected, not-mounted, read-only, full, io-error, mismatch
	Op          string        `json:"op,omitempty"`
	Reason      string        `json:"reason,omitempty"`
	Total       time.Duration `json:"round_ns"`
	FuseWaiting int           `json:"fuse_waiting"` // -1: unknown
	Time        time.Time     `json:"time"`
}

// Member is one node of the cluster.
type Member struct {
	Name      string `json:"name"`
	Role      string `json:"role"` // mail, witness
	ProxyHost string `json:"proxy_host"`
	Gossip    string `json:"gossip"` // alive, suspect, dead, left
	Addr      string `json:"addr"`   // gossip address
	RaftAddr  string `json:"raft_addr"`
	Raft      string `json:"raft"` // leader, voter, nonvoter, none
	Version   string `json:"version"`
	Self      bool   `json:"self"`
	// Health is what the node reports about itself (gossiped).
	Health       string `json:"health"`
	HealthReason string `json:"health_reason,omitempty"`
	// What the peers see: how many alive peers reach its Dovecot, and
	// which do not.
	PeersReach  int      `json:"peers_reach"`
	PeersCannot []string `json:"peers_cannot,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// DefaultSocket is where roostd listens for local clients.
const DefaultSocket = "/run/roost/roost.sock"

// Client talks to one agent. It is safe for concurrent use.
type Client struct {
	hc    *http.Client
	base  string
	token string
}

// NewUnixClient talks to the agent's local socket; file permissions
// authorise the caller, so no token is sent.
func NewUnixClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, base: "http://roostd"}
}

// NewTCPClient talks to an agent's TCP API over TLS with a bearer token.
func NewTCPClient(addr string, tlsConfig *tls.Config, token string) *Client {
	tr := &http.Transport{TLSClientConfig: tlsConfig}
	return &Client{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, base: "https://" + addr, token: token}
}

// Status fetches GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("reaching roostd: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading roostd's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("roostd: %s (%s)", e.Error, resp.Status)
		}
		return fmt.Errorf("roostd: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding roostd's answer: %w", err)
	}
	return nil
}
