package failover

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/raft"

	"github.com/roost-mail/roost/placement"
)

// Operator requests. Their names are the API's and nodectl's verbs.
const (
	OpDrain          = "drain"
	OpUndrain        = "undrain"
	OpMaintenanceOn  = "maintenance-on"
	OpMaintenanceOff = "maintenance-off"
	OpFailback       = "failback"
	OpMove           = "move"
	OpAck            = "ack"
	OpPause          = "pause"
	OpResume         = "resume"
	OpCordon         = "cordon"
	OpUncordon       = "uncordon"
	OpRebalance      = "rebalance"
)

// maxPause bounds a pause's, a drain's or a maintenance's --for, and
// maxSchedule how far ahead one is scheduled.
const (
	maxPause    = 30 * 24 * time.Hour
	maxSchedule = 365 * 24 * time.Hour
)

// Request is an operator's write. Any node takes it; the leader carries
// it out (a follower forwards it over the cluster port).
type Request struct {
	Op   string `json:"op"`
	Node string `json:"node,omitempty"`
	// User is a move's user, as placement.ShowUser writes it.
	User   string `json:"user,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Rate is users per second for a drain (0: failover.drain_rate).
	Rate int `json:"rate,omitempty"`
	// DryRun: say what a drain or rebalance would move, and change
	// nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Max bounds the users a rebalance moves (0: as many as it takes).
	Max int `json:"max,omitempty"`
	// Alert is set when an Alertmanager alert asks ("alertname/
	// fingerprint"); empty, an operator asks. Who asked owns what it
	// did: a resolved alert undoes only what it holds, never an
	// operator's action.
	Alert string `json:"alert,omitempty"`
	// By says who asked (a pause shows it); For is how long a pause, a
	// drain or maintenance lasts (0: until resumed or undone).
	By  string        `json:"by,omitempty"`
	For time.Duration `json:"for,omitempty"`
	// At schedules a drain or maintenance: the leader carries it out then
	// (zero: now).
	At time.Time `json:"at,omitzero"`
}

// Reply says what the leader did.
type Reply struct {
	Leader  string `json:"leader"`
	Message string `json:"message"`
	// Plan is the plan started (or already running), if any.
	Plan string `json:"plan,omitempty"`
	// Users is how many users the plan concerns (a drain's, counted when
	// it starts) and Targets how many each node would take (dry run).
	Users   int            `json:"users,omitempty"`
	Targets map[string]int `json:"targets,omitempty"`
}

// Kinds of operator errors, for the API's status codes.
var (
	ErrInvalid  = errors.New("invalid request")          // 400
	ErrNotFound = errors.New("not found")                // 404
	ErrConflict = errors.New("conflicts with the state") // 409
	// ErrEmptyUser is every refusal of an empty user name, whichever
	// request carried it.
	ErrEmptyUser = placement.ErrEmptyUser
	ErrNoLeader  = errors.New("no leader") // 503
)

// opError is an operator error of one of the kinds above.
func opError(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// errorKind names an error's kind for the wire.
func errorKind(err error) string {
	for _, k := range []error{ErrInvalid, ErrNotFound, ErrConflict, ErrNoLeader} {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	return ""
}

func kindOf(name string) error {
	for _, k := range []error{ErrInvalid, ErrNotFound, ErrConflict, ErrNoLeader} {
		if k.Error() == name {
			return k
		}
	}
	return nil
}

// Validate checks what a request carries, before any node acts on it.
func (r Request) Validate() error {
	switch r.Op {
	case OpDrain, OpUndrain, OpMaintenanceOn, OpMaintenanceOff, OpFailback, OpCordon, OpUncordon:
		if r.Node == "" {
			return opError(ErrInvalid, "%s: no node given", r.Op)
		}
	case OpPause:
		if strings.TrimSpace(r.Reason) == "" {
			return opError(ErrInvalid, "pause: say why (reason): status shows it to everyone")
		}

	case OpResume:
	case OpRebalance:
		if r.Node != "" {
			return opError(ErrInvalid, "rebalance: balances every active node, takes none (%q)", r.Node)
		}
	case OpMove:
		if _, err := placement.ParseUser(r.User); err != nil {
			return opError(ErrInvalid, "%s", err)
		}
		if r.Node == "" {
			return opError(ErrInvalid, "move: want a user and a node")
		}
	case OpAck:
	default:
		return opError(ErrInvalid, "unknown operation %q", r.Op)
	}
	if r.Rate < 0 {
		return opError(ErrInvalid, "rate %d: want users per second, > 0 (or 0 for the default)", r.Rate)
	}
	if r.Max < 0 || (r.Max != 0 && r.Op != OpRebalance) {
		return opError(ErrInvalid, "%s max %d: only a rebalance takes a most users to move, > 0", r.Op, r.Max)
	}
	if r.DryRun && r.Op != OpDrain && r.Op != OpMaintenanceOn && r.Op != OpRebalance {
		return opError(ErrInvalid, "%s has no dry run", r.Op)
	}
	for what, s := range map[string]string{"node": r.Node, "user": r.User, "reason": r.Reason} {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return opError(ErrInvalid, "%s %q: not valid UTF-8 text", what, s)
		}
	}
	if r.Alert != "" && r.Op != OpDrain && r.Op != OpUndrain && r.Op != OpMaintenanceOn && r.Op != OpMaintenanceOff {
		return opError(ErrInvalid, "%s: an alert may only drain, undrain or switch maintenance", r.Op)
	}
	if !utf8.ValidString(r.Alert) || strings.ContainsRune(r.Alert, 0) || len(r.Alert) > 512 {
		return opError(ErrInvalid, "alert: want UTF-8 text of at most 512 bytes")
	}
	if len(r.Node) > 255 || len(r.User) > 1024 || len(r.Reason) > 1024 || len(r.By) > 255 {
		return opError(ErrInvalid, "node or by (255 bytes), user or reason (1024 bytes) too long")
	}
	if !utf8.ValidString(r.By) || strings.ContainsRune(r.By, 0) {
		return opError(ErrInvalid, "by %q: not valid UTF-8 text", r.By)
	}
	if r.For != 0 && r.Op != OpPause && r.Op != OpDrain && r.Op != OpMaintenanceOn {
		return opError(ErrInvalid, "%s takes no duration (for)", r.Op)
	}
	if r.For < 0 || r.For > maxPause {
		return opError(ErrInvalid, "%s for %v: want a duration up to %v, or none (until undone)", r.Op, r.For, maxPause)
	}
	if !r.At.IsZero() && (r.Op != OpDrain && r.Op != OpMaintenanceOn || r.DryRun || r.Alert != "") {
		return opError(ErrInvalid, "%s: only an operator's drain or maintenance is scheduled (at), and never a dry run", r.Op)
	}
	if r.For != 0 && r.Alert != "" {
		return opError(ErrInvalid, "%s: an alert's action lasts while the alert fires, not for a duration", r.Op)
	}
	return nil
}

// Operate carries out an operator's request: here on the leader, else on
// the leader by forwarding.
func (c *Cluster) Operate(ctx context.Context, r Request) (Reply, error) {
	if err := r.Validate(); err != nil {
		return Reply{}, err
	}
	if c.raft.State() == raft.Leader {
		return c.operate(ctx, r)
	}
	addr, id := c.raft.LeaderWithID()
	if addr == "" {
		return Reply{}, opError(ErrNoLeader, "no raft leader now (an election, or no quorum): try again in a few seconds")
	}
	return c.forward(ctx, string(addr), string(id), r)
}

// forwardTimeout bounds a forwarded request: a dry run lists a node's
// users.
const forwardTimeout = 60 * time.Second

// wireReply is a forwarded request's answer.
type wireReply struct {
	Reply Reply  `json:"reply"`
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"`
}

// SetOpKeys sets the keys that authenticate operator requests forwarded
// over the cluster port, the first to sign: a peer's TLS certificate
// alone does not let it drain, move or ack. The agent derives them from
// the gossip keyring (OpKey), which every node holds and a certificate
// does not carry. Without keys (a cluster in insecure_plaintext) forwarded
// requests go unsigned and are taken unsigned. Call it before Run.
func (c *Cluster) SetOpKeys(keys [][]byte) { c.opKeys = keys }

// OpKey derives the key that signs forwarded operator requests from a
// gossip key, so neither can be computed from the other's use.
func OpKey(gossipKey []byte) []byte {
	m := hmac.New(sha256.New, gossipKey)
	m.Write([]byte("roost: forwarded operator requests, v1"))
	return m.Sum(nil)
}

// signedOp is a forwarded request on the wire: the request, when it was
// sent and an HMAC of both, so the leader takes it only from a node that
// holds the cluster's key, and only for opSkew.
type signedOp struct {
	Request json.RawMessage `json:"request"`
	Sent    int64           `json:"sent"` // Unix seconds
	MAC     []byte          `json:"mac,omitempty"`
}

// opSkew is how far a signed request's time may be from the leader's.
const opSkew = 2 * time.Minute

func opMAC(key []byte, sent int64, req []byte) []byte {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%d\n", sent)
	m.Write(req)
	return m.Sum(nil)
}

// sign wraps a request for the wire.
func (c *Cluster) sign(r Request, now time.Time) (signedOp, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return signedOp{}, err
	}
	op := signedOp{Request: b, Sent: now.Unix()}
	if len(c.opKeys) > 0 {
		op.MAC = opMAC(c.opKeys[0], op.Sent, b)
	}
	return op, nil
}

// open checks a signed request from a peer and returns it.
func (c *Cluster) open(op signedOp, from string, now time.Time) (Request, error) {
	if len(c.opKeys) > 0 {
		ok := false
		for _, k := range c.opKeys {
			ok = ok || hmac.Equal(op.MAC, opMAC(k, op.Sent, op.Request))
		}
		var err error
		if !ok {
			err = opError(ErrInvalid, "forwarded operator request refused: it is not signed with this cluster's gossip key (a cluster certificate alone cannot drain, move or ack)")
		} else if d := now.Sub(time.Unix(op.Sent, 0)); d > opSkew || d < -opSkew {
			err = opError(ErrInvalid, "forwarded operator request refused: sent %s from the leader's clock (more than %s): check the nodes' clocks", d.Round(time.Second), opSkew)
		}
		if err != nil {
			c.log.Warn("operator_request_refused", "from", from, "err", err)
			return Request{}, err
		}
	}
	var r Request
	dec := json.NewDecoder(bytes.NewReader(op.Request))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, opError(ErrInvalid, "forwarded operator request: %v", err)
	}
	return r, r.Validate()
}

func (c *Cluster) forward(ctx context.Context, addr, leader string, r Request) (Reply, error) {
	op, err := c.sign(r, time.Now())
	if err != nil {
		return Reply{}, err
	}
	conn, err := c.stream.dial(addr, chanOp, 5*time.Second)
	if err != nil {
		return Reply{}, opError(ErrNoLeader, "forwarding to the leader %s (%s): %v", leader, addr, err)
	}
	defer conn.Close()
	dl := time.Now().Add(forwardTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(op); err != nil {
		return Reply{}, opError(ErrNoLeader, "forwarding to the leader %s: %v", leader, err)
	}
	var w wireReply
	if err := json.NewDecoder(io.LimitReader(conn, 1<<20)).Decode(&w); err != nil {
		return Reply{}, opError(ErrNoLeader, "the leader %s did not answer: %v", leader, err)
	}
	if w.Error != "" {
		if k := kindOf(w.Kind); k != nil {
			return w.Reply, &kindError{kind: k, msg: w.Error}
		}
		return w.Reply, errors.New(w.Error)
	}
	return w.Reply, nil
}

// serveOp answers one forwarded request; only the leader carries it out.
func (c *Cluster) serveOp(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(forwardTimeout))
	var op signedOp
	var r Request
	var w wireReply
	dec := json.NewDecoder(io.LimitReader(conn, 1<<20))
	dec.DisallowUnknownFields()
	err := dec.Decode(&op)
	if err == nil {
		r, err = c.open(op, conn.RemoteAddr().String(), time.Now())
	}
	if err == nil {
		if c.raft.State() != raft.Leader {
			err = opError(ErrNoLeader, "%s is not the leader any more: try again", c.id)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
			w.Reply, err = c.operate(ctx, r)
			cancel()
		}
	}
	if err != nil {
		w.Error, w.Kind = err.Error(), errorKind(err)
	}
	_ = json.NewEncoder(conn).Encode(w)
}

// operate carries out a request on the leader, planned and applied by
// applyPlanned: the leader's own decisions see its effect, and never wait
// on the routing database for it.
func (c *Cluster) operate(ctx context.Context, r Request) (Reply, error) {
	w := c.leading
	if w == nil {
		return Reply{}, opError(ErrConflict, "the leader %s has no routing database (routing.dsn_file is empty): it cannot move users", c.id)
	}
	var reply Reply
	var err error
	cmds, after, aerr := c.applyPlanned(func(st State) []command {
		var cmds []command
		reply, cmds, err = request(ctx, r, st, w.View(), time.Now(), w.policy(), w.Executor)
		return cmds
	})
	reply.Leader = c.id
	switch {
	case err != nil:
		return reply, err
	case errors.Is(aerr, ErrNoLeader):
		return reply, aerr
	case aerr != nil:
		return reply, opError(ErrConflict, "%v", aerr)
	}
	for _, cmd := range cmds {
		if cmd.Op == opPlanStart { // the entry's last plan got the newest number
			reply.Plan = fmt.Sprintf("%06d-%s", after.PlanSeq, cmd.Plan.Kind)
		}
	}
	// An operator's own action is news, not a warning.
	attrs := []any{"op", r.Op}
	for _, kv := range [][2]string{{"node", r.Node}, {"user", r.User}, {"alert", r.Alert}, {"plan", reply.Plan}, {"message", reply.Message}} {
		if kv[1] != "" {
			attrs = append(attrs, kv[0], kv[1])
		}
	}
	c.log.Info("operator_request", attrs...)
	c.wake()
	return reply, nil
}

func lookupError(user string, err error) error {
	if errors.Is(err, ErrNoSuchUser) {
		return opError(ErrNotFound, "no user %s in the routing table (or the filter excludes it)", user)
	}
	return fmt.Errorf("looking up %s: %w", user, err)
}

// ErrNoSuchUser: the Router has no such user; the agent wraps routing's.
var ErrNoSuchUser = errors.New("no such user")

func indexOf(view []NodeView, name string) int {
	for i, n := range view {
		if n.Name == name {
			return i
		}
	}
	return -1
}

func describeCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// spread lists the users on host and counts where each would go.
func (e *Executor) spread(ctx context.Context, host string, targets []placement.Target) (map[string]int, int, error) {
	counts := map[string]int{}
	total := 0
	err := e.Router.UsersOn(ctx, host, func(u string) error {
		t, _ := e.Choose(u, targets)
		counts[t.Node]++
		total++
		return nil
	})
	return counts, total, err
}

// unhealthy refuses users back onto a node that is not healthy: alive and
// passing by its own report, and failing in no peer's view (their probes
// lag its own report by a second or two, and the leader would fail it
// again at once, within the block period, moving nobody).
func unhealthy(n NodeView, view []NodeView) error {
	if n.Gossip != "alive" || n.Health != "passing" {
		return opError(ErrConflict, "%s is not healthy (gossip %s, health %s %s): its users stay away until it is", n.Name, n.Gossip, dashIfEmpty(n.Health), n.Reason)
	}
	if bad, why := failing(n, view); bad {
		return opError(ErrConflict, "%s is still failing in its peers' view (%s): its users stay away until it is not", n.Name, why)
	}
	return nil
}
