// Package api is the agent's HTTP API as its clients see it: the wire
// types, stable for scripts, and a client for nodectl and tests.
//
// A user name is any bytes but NUL, and JSON holds only UTF-8 text: every
// user field (and the user query parameter) carries the name as it is when
// it is printable UTF-8 without spaces, else quoted as Go quotes strings
// ("lat\xe9n", "john doe"); a name that starts with a double quote is
// always quoted (placement.ShowUser and placement.ParseUser).
package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
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
	// Frozen is set while mass failure holds every automatic move until
	// nodectl ack.
	Frozen *Freeze `json:"frozen,omitempty"`
	// Paused is set while an operator holds every automatic failover and
	// failback (nodectl pause).
	Paused *Pause `json:"paused,omitempty"`
	// Scheduled are the drains and maintenance that start later, soonest
	// first.
	Scheduled []Scheduled `json:"scheduled,omitempty"`
	// Plans are the running plans and the latest finished ones, oldest
	// first.
	Plans []Plan `json:"plans"`
	// DryRun lists the automatic actions (failover, failback, alerts)
	// that the answering node's configuration runs as a dry run.
	DryRun []string `json:"dry_run,omitempty"`
	// UsersKnown is false when the routing database could not be read for
	// this answer (Member.Users is then -1).
	UsersKnown bool `json:"users_known"`
}

// Freeze is why and since when automatic moves are held.
type Freeze struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// Pause is why, by whom, since and until when (zero: until resumed) an
// operator holds automatic moves.
type Pause struct {
	Reason string    `json:"reason"`
	By     string    `json:"by,omitempty"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until,omitzero"`
}

// Scheduled is a drain or maintenance that the leader starts at At.
type Scheduled struct {
	ID     string    `json:"id"`
	Op     string    `json:"op"` // drain, maintenance-on
	Node   string    `json:"node"`
	Reason string    `json:"reason,omitempty"`
	For    string    `json:"for,omitempty"`
	By     string    `json:"by,omitempty"`
	At     time.Time `json:"at"`
}

// Plan is a move of users the raft leader carries out batch by batch.
type Plan struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"` // failover, drain, failback, move
	Node     string    `json:"node,omitempty"`
	User     string    `json:"user,omitempty"`
	To       string    `json:"to,omitempty"`
	Reason   string    `json:"reason"`
	Rate     int       `json:"rate,omitempty"`
	Users    int       `json:"users,omitempty"` // to move, when known at the start
	Moved    int       `json:"moved"`
	Batches  int       `json:"batches"`
	Status   string    `json:"status"` // running, done, canceled
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	Error    string    `json:"error,omitempty"`
	// DryRun: the plan ran as a dry run (failover.mode) and moved nobody;
	// Would is how many users it would have moved.
	DryRun bool `json:"dry_run,omitempty"`
	Would  int  `json:"would,omitempty"`
}

// OpRequest is the body of the operator's POSTs; each takes the fields
// it documents.
type OpRequest struct {
	Reason string `json:"reason,omitempty"`
	// Rate is a drain's or rebalance's users per second (0: the
	// configured drain_rate).
	Rate int `json:"rate,omitempty"`
	// DryRun: say what a drain or rebalance would move, change nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Max bounds the users POST /v1/rebalance moves (0: as many as it
	// takes).
	Max int `json:"max,omitempty"`
	// On switches maintenance on or off.
	On *bool `json:"on,omitempty"`
	// User and Node: POST /v1/move's user and target node.
	User string `json:"user,omitempty"`
	Node string `json:"node,omitempty"`
	// For is how long POST /v1/pause holds (a Go duration, "2h"; empty:
	// until POST /v1/resume); By says who asks, for status.
	For string `json:"for,omitempty"`
	By  string `json:"by,omitempty"`
	// At schedules a drain or maintenance on (RFC 3339).
	At time.Time `json:"at,omitzero"`
}

// OpReply says what the raft leader did with an operator's request.
type OpReply struct {
	Leader  string         `json:"leader"`
	Message string         `json:"message"`
	Plan    string         `json:"plan,omitempty"`
	Users   int            `json:"users,omitempty"`
	Targets map[string]int `json:"targets,omitempty"`
}

// Where is GET /v1/where: where a user is routed.
type Where struct {
	User      string `json:"user"`
	ProxyHost string `json:"proxy_host"`
	Node      string `json:"node,omitempty"` // the node with that proxy_host, if any
	// Home is where the user lived before Roost first moved them (their
	// proxy_host if never moved); LastMove is Roost's latest move of them.
	Home     string `json:"home"`
	LastMove *Move  `json:"last_move,omitempty"`
}

// Move is one journaled move, from GET /v1/history.
type Move struct {
	User   string    `json:"user"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Home   string    `json:"home"`
	Reason string    `json:"reason"`
	Plan   string    `json:"plan"`
	Term   uint64    `json:"term"`
	At     time.Time `json:"at"`
}

// Sessions is GET /v1/nodes/{node}/sessions: the node's Dovecot sessions
// (doveadm who), LMTP deliveries left out.
type Sessions struct {
	Node     string   `json:"node"`
	Sessions int      `json:"sessions"`
	Users    []string `json:"users,omitempty"` // up to 100
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
	// State is the node's failover state (active, draining, maintenance,
	// failed, recovering), why and since when; LB what the load balancer
	// should do with it (up, drain, down). Mail nodes only.
	State       string    `json:"state,omitempty"`
	StateReason string    `json:"state_reason,omitempty"`
	StateSince  time.Time `json:"state_since,omitzero"`
	// StateUntil is when an operator's drain or maintenance ends by itself.
	StateUntil time.Time `json:"state_until,omitzero"`
	// HeldBy are the alerts ("alertname/fingerprint") that drained the
	// node or put it in maintenance; empty while so, an operator did.
	HeldBy []string `json:"held_by,omitempty"`
	LB     string   `json:"lb,omitempty"`
	// Cordoned: the node keeps its users, and no plan places users on it
	// (nodectl cordon), for CordonReason.
	Cordoned     bool   `json:"cordoned,omitempty"`
	CordonReason string `json:"cordon_reason,omitempty"`
	// DryRun: State was reached in a dry run (failover.mode): nobody was
	// moved, and LB stays up.
	DryRun bool `json:"dry_run,omitempty"`
	// Users is how many users the routing table has on its proxy_host
	// (-1: unknown), Weight its share beside the others' (node.weight)
	// and MaxUsers the most users plans place on it (node.max_users; 0: no
	// bound); mail nodes only.
	Users    int     `json:"users"`
	Weight   float64 `json:"weight,omitempty"`
	MaxUsers int     `json:"max_users,omitempty"`
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

// Post sends an operator's request to path (e.g. /v1/nodes/b/drain).
func (c *Client) Post(ctx context.Context, path string, req OpRequest) (OpReply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return OpReply{}, err
	}
	var r OpReply
	return r, c.do(ctx, http.MethodPost, path, bytes.NewReader(b), &r)
}

// Get fetches path (with its query) into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// StatusError is a non-2xx answer from roostd.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("roostd: %s (%d %s)", e.Message, e.Code, http.StatusText(e.Code))
}

// ErrUnreachable wraps every failure to reach roostd at all (no socket,
// refused, timed out), as opposed to an answer that says no.
var ErrUnreachable = errors.New("reaching roostd")

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
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading roostd's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return &StatusError{Code: resp.StatusCode, Message: e.Error}
		}
		return &StatusError{Code: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding roostd's answer: %w", err)
	}
	return nil
}
