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
	"slices"
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

// operate carries out a request on the leader. It holds decideMu, so the
// leader's own decisions see its effect.
func (c *Cluster) operate(ctx context.Context, r Request) (Reply, error) {
	w := c.leading
	if w == nil {
		return Reply{}, opError(ErrConflict, "the leader %s has no routing database (routing.dsn_file is empty): it cannot move users", c.id)
	}
	c.decideMu.Lock()
	defer c.decideMu.Unlock()
	reply, cmds, err := request(ctx, r, c.fsm.read(), w.View(), time.Now(), w.policy(), w.Executor)
	reply.Leader = c.id
	if err != nil {
		return reply, err
	}
	if len(cmds) > 0 {
		// One entry: the request's changes apply all together, or none.
		if err := c.apply(batch(cmds)); err != nil {
			if errors.Is(err, ErrNoLeader) {
				return reply, err
			}
			return reply, opError(ErrConflict, "%v", err)
		}
		for _, cmd := range cmds {
			if cmd.Op == opPlanStart { // the entry's last plan got the newest number
				reply.Plan = fmt.Sprintf("%06d-%s", c.fsm.read().PlanSeq, cmd.Plan.Kind)
			}
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

// request is what an operator's (or an alert's) request r does, the
// state being st and the cluster's view view: the reply, and the commands
// that carry it out, applied as one raft entry. It only reads (the
// routing table, through ex), so the model-based test drives it as the
// leader does.
func request(ctx context.Context, r Request, st State, view []NodeView, now time.Time, pol Policy, ex *Executor) (Reply, []command, error) {
	var reply Reply
	var node NodeView
	if r.Node != "" {
		i := indexOf(view, r.Node)
		if i < 0 {
			return reply, nil, opError(ErrNotFound, "no node %q in the cluster", r.Node)
		}
		node = view[i]
		if !node.Mail {
			return reply, nil, opError(ErrInvalid, "%s is a witness: it serves no users", r.Node)
		}
	}
	rec := st.Node(r.Node)
	running, hasPlan := st.Running(r.Node)
	if r.Alert != "" && pol.DryRun(ActionAlerts) && (r.Op == OpDrain || r.Op == OpMaintenanceOn) {
		// An alert's drain in a dry run (failover.mode) only says what it
		// would do; a resolved alert still undoes what it held before.
		r.DryRun = true
	}
	var cmds []command
	if r.At.After(now) {
		if r.At.After(now.Add(maxSchedule)) {
			return reply, nil, opError(ErrInvalid, "%s at %s: want a time within %v", r.Op, r.At.UTC().Format(time.DateTime), maxSchedule)
		}
		later := r
		later.At = time.Time{}
		reply.Message = fmt.Sprintf("%s of %s scheduled for %s UTC (nodectl %s cancels it)", r.Op, r.Node, r.At.UTC().Format(time.DateTime),
			map[string]string{OpDrain: "undrain " + r.Node, OpMaintenanceOn: "maintenance " + r.Node + " off"}[r.Op])
		return reply, []command{{Op: opSchedule, Schedule: &Scheduled{Request: later, At: r.At}, At: now}}, nil
	}
	// An undrain or maintenance off cancels what is scheduled for the node.
	var canceled []string
	if (r.Op == OpUndrain || r.Op == OpMaintenanceOff) && r.Alert == "" {
		for _, sc := range st.ScheduledFor(r.Node) {
			cmds = append(cmds, command{Op: opUnschedule, ScheduleID: sc.ID})
			canceled = append(canceled, sc.ID)
		}
		if len(canceled) > 0 && rec.State != Draining && rec.State != Maintenance {
			reply.Message = fmt.Sprintf("canceled what was scheduled for %s: %s", r.Node, strings.Join(canceled, ", "))
			return reply, cmds, nil
		}
	}
op:
	switch r.Op {
	case OpDrain, OpMaintenanceOn:
		state, kind := Draining, "drained"
		if r.Op == OpMaintenanceOn {
			state, kind = Maintenance, "in maintenance"
		}
		reason := r.Reason
		if reason == "" {
			reason = kind + " by an operator"
		}
		rate := r.Rate
		if rate == 0 {
			rate = pol.DrainRate
		}
		held := rec.State == Draining || rec.State == Maintenance
		// until is when an operator's drain or maintenance ends by itself.
		var until time.Time
		if r.For > 0 {
			until = now.Add(r.For)
		}
		// holds is what the node's record keeps: the alerts that hold it,
		// this one added; an operator's request takes it over (none).
		var holds []string
		if r.Alert != "" {
			if held && len(rec.Holds) == 0 {
				reply.Message = fmt.Sprintf("%s is %s by an operator: alert %s changes nothing (only an operator undoes it)", r.Node, rec.State, r.Alert)
				return reply, nil, nil
			}
			holds = rec.Holds
			if !slices.Contains(holds, r.Alert) {
				holds = append(slices.Clone(holds), r.Alert)
			}
			if held {
				state = rec.State // the first alert's action stands
			}
		}
		takeover := ""
		if r.Alert == "" && len(rec.Holds) > 0 {
			takeover = fmt.Sprintf(" (it was held by alert %s: an operator owns it now)", strings.Join(rec.Holds, ", "))
		}
		if held && hasPlan {
			reply.Message, reply.Plan = fmt.Sprintf("%s is already %s%s", r.Node, rec.State, takeover), running.ID
			if rec.State != state || !slices.Equal(rec.Holds, holds) || !rec.Until.Equal(until) {
				if !r.DryRun {
					cmds = append(cmds, command{Op: opSetNode, Node: r.Node, State: state, Reason: reason, Holds: holds, Until: until, At: now})
				}
				if rec.State != state {
					reply.Message = fmt.Sprintf("%s was %s and is %s now; its plan %s goes on%s", r.Node, rec.State, state, running.ID, takeover)
				} else if r.Alert != "" {
					reply.Message = fmt.Sprintf("%s is already %s; held by %d alerts now", r.Node, rec.State, len(holds))
				}
			}
			break
		}
		// Draining or in maintenance with no plan (the last was vetoed or
		// canceled): this starts it again, as below.
		if rec.State == Failed && !rec.DryRun {
			return reply, nil, opError(ErrConflict, "%s is failed over already: its users live elsewhere (nodectl failback brings them back)", r.Node)
		}
		targets := ex.targets(view, st, r.Node)
		if len(targets) == 0 {
			return reply, nil, opError(ErrConflict, "no other healthy active mail node could take %s's users", r.Node)
		}
		counts, total, err := ex.spread(ctx, node.ProxyHost, targets)
		if err != nil {
			return reply, nil, fmt.Errorf("listing %s's users: %w", r.Node, err)
		}
		reply.Users = total
		if rec.State == state && total == 0 {
			reply.Message = fmt.Sprintf("%s is already %s: no user is left on it%s", r.Node, rec.State, takeover)
			if !r.DryRun && (!slices.Equal(rec.Holds, holds) || !rec.Until.Equal(until)) {
				cmds = append(cmds, command{Op: opSetNode, Node: r.Node, State: state, Reason: reason, Holds: holds, Until: until, At: now})
				break
			}
			return reply, nil, nil
		}
		if r.DryRun {
			reply.Targets = counts
			reply.Message = fmt.Sprintf("would move %d users off %s at %d/s to %s", total, r.Node, rate, describeCounts(counts))
			if r.Alert != "" {
				reply.Message = fmt.Sprintf("dry run: alert %s %s", r.Alert, reply.Message)
			}
			return reply, nil, nil
		}
		if hasPlan && running.Kind == PlanFailback {
			cmds = append(cmds, command{Op: opPlanEnd, PlanID: running.ID, Status: PlanCanceled, Reason: "node " + kind, At: now})
		}
		cmds = append(cmds,
			command{Op: opSetNode, Node: r.Node, State: state, Reason: reason, Holds: holds, Until: until, At: now},
			command{Op: opPlanStart, Plan: &Plan{Kind: PlanDrain, Node: r.Node, Host: node.ProxyHost, Reason: reason, Rate: rate, Users: total}, At: now})
		reply.Message = fmt.Sprintf("%s is %s: moving its %d users at %d/s%s", r.Node, state, total, rate, takeover)
		if !until.IsZero() {
			reply.Message += fmt.Sprintf("; it ends by itself at %s UTC (its users come back)", until.UTC().Format(time.DateTime))
		}
	case OpUndrain, OpMaintenanceOff, OpFailback:
		if r.Op == OpFailback {
			if rec.State != Failed && rec.State != Recovering {
				return reply, nil, opError(ErrConflict, "%s is %s, not failed over: nothing to fail back", r.Node, rec.State)
			}
			if hasPlan && running.Kind == PlanFailback {
				reply.Plan, reply.Message = running.ID, fmt.Sprintf("%s is failing back already", r.Node)
				break
			}
		} else if rec.State != Draining && rec.State != Maintenance {
			if r.Alert != "" {
				reply.Message = fmt.Sprintf("%s is %s: nothing alert %s holds", r.Node, rec.State, r.Alert)
				return reply, nil, nil
			}
			return reply, nil, opError(ErrConflict, "%s is %s, not drained or in maintenance", r.Node, rec.State)
		}
		if r.Alert != "" {
			switch {
			case len(rec.Holds) == 0:
				reply.Message = fmt.Sprintf("%s is %s by an operator: alert %s does not undo it", r.Node, rec.State, r.Alert)
				return reply, nil, nil
			case !slices.Contains(rec.Holds, r.Alert):
				reply.Message = fmt.Sprintf("%s is %s, held by alert %s, not by alert %s: it stays", r.Node, rec.State, strings.Join(rec.Holds, ", "), r.Alert)
				return reply, nil, nil
			case len(rec.Holds) > 1:
				rest := slices.DeleteFunc(slices.Clone(rec.Holds), func(h string) bool { return h == r.Alert })
				cmds = append(cmds, command{Op: opSetNode, Node: r.Node, State: rec.State, Reason: rec.Reason, Holds: rest, At: now})
				reply.Message = fmt.Sprintf("%s stays %s: still held by alert %s", r.Node, rec.State, strings.Join(rest, ", "))
				break op
			}
		}
		if err := unhealthy(node, view); err != nil {
			return reply, nil, err
		}
		if hasPlan {
			cmds = append(cmds, command{Op: opPlanEnd, PlanID: running.ID, Status: PlanCanceled, Reason: "operator: " + r.Op, At: now})
		}
		reason := r.Reason
		if reason == "" {
			reason = "operator: " + r.Op
		}
		cmds = append(cmds,
			command{Op: opSetNode, Node: r.Node, State: Recovering, Reason: reason, At: now},
			command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailback, Node: r.Node, Host: node.ProxyHost, Reason: reason, Rate: pol.FailbackRate}, At: now})
		reply.Message = fmt.Sprintf("%s is recovering: its users come back at %d/s", r.Node, pol.FailbackRate)
	case OpMove:
		if rec.State != Active || node.Gossip != "alive" || node.Health != "passing" || node.ProxyHost == "" {
			return reply, nil, opError(ErrConflict, "%s cannot take users now (state %s, gossip %s, health %s)", r.Node, rec.State, node.Gossip, dashIfEmpty(node.Health))
		}
		if rec.Cordoned {
			return reply, nil, opError(ErrConflict, "%s is cordoned (%s): no user is placed on it until nodectl uncordon", r.Node, rec.CordonReason)
		}
		name, _ := placement.ParseUser(r.User) // Validate checked it
		user := placement.ShowUser(name)
		from, err := ex.Router.Lookup(ctx, name)
		if err != nil {
			return reply, nil, lookupError(user, err)
		}
		if from == node.ProxyHost {
			reply.Message = fmt.Sprintf("%s is on %s already", user, r.Node)
			return reply, nil, nil
		}
		if node.MaxUsers > 0 {
			counts, err := ex.Router.Counts(ctx)
			if err != nil {
				return reply, nil, fmt.Errorf("counting users: %w", err)
			}
			if k := counts[node.ProxyHost]; k >= node.MaxUsers {
				return reply, nil, opError(ErrConflict, "%s holds %d users, its node.max_users is %d: no room for %s", r.Node, k, node.MaxUsers, user)
			}
		}
		reason := r.Reason
		if reason == "" {
			reason = "moved by an operator"
		}
		cmds = append(cmds, command{Op: opPlanStart, Plan: &Plan{Kind: PlanMove, To: r.Node, User: user, Reason: reason, Users: 1}, At: now})
		reply.Message = fmt.Sprintf("moving %s from %s to %s", user, from, r.Node)
	case OpRebalance:
		if p, ok := st.runningRebalance(); ok {
			reply.Plan, reply.Users = p.ID, p.Users
			reply.Message = fmt.Sprintf("rebalance %s is running already: %d of %d users moved", p.ID, p.Moved, p.Users)
			break
		}
		targets := ex.targets(view, st, "")
		if len(targets) < 2 {
			return reply, nil, opError(ErrConflict, "%d active, healthy, uncordoned mail nodes: nothing to balance between", len(targets))
		}
		moves, err := ex.rebalanceBatch(ctx, targets, r.Max)
		if err != nil {
			return reply, nil, fmt.Errorf("counting users: %w", err)
		}
		to := map[string]int{}
		names := map[string]string{}
		for _, t := range targets {
			names[t.Host] = t.Node
		}
		for _, m := range moves {
			to[names[m.To]]++
		}
		reply.Users, reply.Targets = len(moves), to
		rate := r.Rate
		if rate == 0 {
			rate = pol.DrainRate
		}
		switch {
		case len(moves) == 0:
			reply.Message = "every active node holds its share already: nobody to move"
			return reply, nil, nil
		case r.DryRun:
			reply.Message = fmt.Sprintf("would move %d users at %d/s to %s", len(moves), rate, describeCounts(to))
			return reply, nil, nil
		}
		reason := r.Reason
		if reason == "" {
			reason = "rebalanced by an operator"
		}
		cmds = append(cmds, command{Op: opPlanStart, Plan: &Plan{Kind: PlanRebalance, Reason: reason, Rate: rate, Users: len(moves), Max: r.Max}, At: now})
		reply.Message = fmt.Sprintf("rebalancing: moving %d users at %d/s to %s", len(moves), rate, describeCounts(to))
	case OpPause:
		var until time.Time
		how := "until nodectl resume"
		if r.For > 0 {
			until = now.Add(r.For)
			how = "until " + until.UTC().Format(time.DateTime) + " UTC (or nodectl resume)"
		}
		reply.Message = "paused: no automatic failover or failback starts " + how + "; operators' drains and moves still work"
		if st.Paused != nil {
			reply.Message = "paused again (was: " + st.Paused.Reason + "): no automatic failover or failback starts " + how
		}
		var auto []string
		for _, p := range st.RunningPlans() {
			if p.Kind == PlanFailover || p.Kind == PlanFailback {
				auto = append(auto, fmt.Sprintf("%s (%s)", p.ID, p.Node))
			}
		}
		if len(auto) > 0 {
			reply.Message += "; running plans finish: " + strings.Join(auto, ", ")
		}
		cmds = append(cmds, command{Op: opPause, Reason: r.Reason, By: r.By, Until: until, At: now})
	case OpResume:
		if st.Paused == nil {
			reply.Message = "not paused: nothing to resume"
			return reply, nil, nil
		}
		reply.Message = fmt.Sprintf("resumed (paused since %s: %s): automatic failover and failback decide again", st.Paused.Since.UTC().Format(time.DateTime), st.Paused.Reason)
		cmds = append(cmds, command{Op: opResume, Reason: r.Reason, At: now})
	case OpCordon, OpUncordon:
		on := r.Op == OpCordon
		if rec.Cordoned == on {
			reply.Message = fmt.Sprintf("%s is %sed already", r.Node, r.Op)
			return reply, nil, nil
		}
		reason := r.Reason
		if reason == "" {
			reason = "cordoned by an operator"
		}
		reply.Message = fmt.Sprintf("%s is cordoned: it keeps and serves its users, and no plan places users on it", r.Node)
		if !on {
			reply.Message = fmt.Sprintf("%s is uncordoned: plans may place users on it again", r.Node)
		}
		cmds = append(cmds, command{Op: opCordon, Node: r.Node, On: on, Reason: reason, At: now})
	case OpAck:
		if r.Node == "" {
			if st.Frozen == nil {
				reply.Message = "the cluster is not frozen: nothing to acknowledge"
				return reply, nil, nil
			}
			reply.Message = "unfrozen (was: " + st.Frozen.Reason + "); automatic moves resume, and freeze again if the trouble persists"
			cmds = append(cmds, command{Op: opAck, At: now})
			break
		}
		reply.Message = fmt.Sprintf("%s's block period is reset: it may be failed over again", r.Node)
		cmds = append(cmds, command{Op: opAck, Node: r.Node, At: now})
		if bad, why := failing(node, view); bad && rec.State == Failed && !hasPlan {
			// Failed again within the block period: some users came home
			// before it did. The ack sends them away.
			reason := "acknowledged by an operator: " + why
			cmds = append(cmds, command{Op: opPlanStart, Plan: &Plan{Kind: PlanFailover, Node: r.Node, Host: node.ProxyHost, Reason: reason}, At: now})
			reply.Message += "; moving the users still routed to it"
		}
	}
	return reply, cmds, nil
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
