package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/gossip"
	"github.com/roost-mail/roost/placement"
	"github.com/roost-mail/roost/routing"
)

// backend is what the HTTP API serves; the Agent implements it.
type backend interface {
	Status() api.Status
	Operate(ctx context.Context, r failover.Request) (failover.Reply, error)
	Where(ctx context.Context, user string) (api.Where, error)
	History(ctx context.Context, user, node string, since time.Time, limit int) ([]api.Move, error)
	Sessions(ctx context.Context, node string) (api.Sessions, error)
}

// maxBody bounds an operator request's body.
const maxBody = 64 << 10

// routes adds the operator's endpoints to mux.
func routes(mux *http.ServeMux, b backend) {
	op := func(name string, build func(r *http.Request, body api.OpRequest) (failover.Request, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, err := decodeBody(w, r)
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", tooBig.Limit))
				return
			}
			if err != nil {
				writeError(w, http.StatusBadRequest, err)
				return
			}
			req, err := build(r, body)
			if err == nil && body.Max != 0 && name != "rebalance" {
				err = fmt.Errorf("%s takes no max", name)
			}
			if err != nil {
				writeError(w, http.StatusBadRequest, err)
				return
			}
			reply, err := b.Operate(r.Context(), req)
			if err != nil {
				writeError(w, opStatus(err), err)
				return
			}
			writeJSON(w, http.StatusOK, api.OpReply{Leader: reply.Leader, Message: reply.Message, Plan: reply.Plan, Users: reply.Users, Targets: reply.Targets})
		}
	}
	nodeOp := func(kind string) func(r *http.Request, body api.OpRequest) (failover.Request, error) {
		return func(r *http.Request, body api.OpRequest) (failover.Request, error) {
			if body.User != "" || body.Node != "" || body.On != nil || (kind != failover.OpDrain && (body.Rate != 0 || body.DryRun || body.For != "")) {
				return failover.Request{}, fmt.Errorf("%s takes only reason%s", kind, map[bool]string{true: ", rate, dry_run and for"}[kind == failover.OpDrain])
			}
			d, err := forDuration(body.For)
			if err != nil {
				return failover.Request{}, err
			}
			if !body.At.IsZero() && kind != failover.OpDrain {
				return failover.Request{}, fmt.Errorf("%s takes no at", kind)
			}
			return failover.Request{Op: kind, Node: r.PathValue("node"), Reason: body.Reason, Rate: body.Rate, DryRun: body.DryRun, By: body.By, For: d, At: body.At}, nil
		}
	}
	mux.HandleFunc("POST /v1/nodes/{node}/drain", op("drain", nodeOp(failover.OpDrain)))
	mux.HandleFunc("POST /v1/nodes/{node}/undrain", op("undrain", nodeOp(failover.OpUndrain)))
	mux.HandleFunc("POST /v1/nodes/{node}/failback", op("failback", nodeOp(failover.OpFailback)))
	mux.HandleFunc("POST /v1/nodes/{node}/ack", op("ack", nodeOp(failover.OpAck)))
	mux.HandleFunc("POST /v1/ack", op("ack", func(r *http.Request, body api.OpRequest) (failover.Request, error) {
		if body != (api.OpRequest{}) {
			return failover.Request{}, errors.New("ack takes no fields")
		}
		return failover.Request{Op: failover.OpAck}, nil
	}))
	mux.HandleFunc("POST /v1/nodes/{node}/cordon", op("cordon", nodeOp(failover.OpCordon)))
	mux.HandleFunc("POST /v1/nodes/{node}/uncordon", op("uncordon", nodeOp(failover.OpUncordon)))
	mux.HandleFunc("POST /v1/pause", op("pause", func(r *http.Request, body api.OpRequest) (failover.Request, error) {
		if body.User != "" || body.Node != "" || body.On != nil || body.Rate != 0 || body.DryRun || !body.At.IsZero() {
			return failover.Request{}, errors.New("pause takes only reason, for and by")
		}
		d, err := forDuration(body.For)
		if err != nil {
			return failover.Request{}, err
		}
		return failover.Request{Op: failover.OpPause, Reason: body.Reason, By: body.By, For: d}, nil
	}))
	mux.HandleFunc("POST /v1/resume", op("resume", func(r *http.Request, body api.OpRequest) (failover.Request, error) {
		if body.User != "" || body.Node != "" || body.On != nil || body.Rate != 0 || body.DryRun || body.For != "" || !body.At.IsZero() {
			return failover.Request{}, errors.New("resume takes only reason and by")
		}
		return failover.Request{Op: failover.OpResume, Reason: body.Reason, By: body.By}, nil
	}))
	mux.HandleFunc("POST /v1/nodes/{node}/maintenance", op("maintenance", func(r *http.Request, body api.OpRequest) (failover.Request, error) {
		if body.On == nil {
			return failover.Request{}, errors.New(`maintenance needs "on": true or false`)
		}
		if body.User != "" || body.Node != "" || body.Rate != 0 || (!*body.On && (body.For != "" || !body.At.IsZero())) {
			return failover.Request{}, errors.New("maintenance takes only on, reason, dry_run and (with on) for and at")
		}
		kind := failover.OpMaintenanceOff
		if *body.On {
			kind = failover.OpMaintenanceOn
		}
		d, err := forDuration(body.For)
		if err != nil {
			return failover.Request{}, err
		}
		return failover.Request{Op: kind, Node: r.PathValue("node"), Reason: body.Reason, DryRun: body.DryRun, By: body.By, For: d, At: body.At}, nil
	}))
	mux.HandleFunc("POST /v1/rebalance", op("rebalance", func(r *http.Request, body api.OpRequest) (failover.Request, error) {
		if body.User != "" || body.Node != "" || body.On != nil || body.For != "" || !body.At.IsZero() {
			return failover.Request{}, errors.New("rebalance takes only rate, max, dry_run, reason and by")
		}
		return failover.Request{Op: failover.OpRebalance, Rate: body.Rate, Max: body.Max, DryRun: body.DryRun, Reason: body.Reason, By: body.By}, nil
	}))
	mux.HandleFunc("POST /v1/move", op("move", func(r *http.Request, body api.OpRequest) (failover.Request, error) {
		if body.Rate != 0 || body.DryRun || body.On != nil || body.For != "" || !body.At.IsZero() {
			return failover.Request{}, errors.New("move takes only user, node and reason")
		}
		return failover.Request{Op: failover.OpMove, User: body.User, Node: body.Node, Reason: body.Reason}, nil
	}))
	mux.HandleFunc("GET /v1/where", func(w http.ResponseWriter, r *http.Request) {
		user, err := placement.ParseUser(r.URL.Query().Get("user"))
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		wh, err := b.Where(r.Context(), user)
		if err != nil {
			writeError(w, opStatus(err), err)
			return
		}
		writeJSON(w, http.StatusOK, wh)
	})
	mux.HandleFunc("GET /v1/history", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var user string
		if q.Has("user") {
			// An empty name is no filter: refused, not a list of everyone.
			var err error
			if user, err = placement.ParseUser(q.Get("user")); err != nil {
				writeError(w, http.StatusBadRequest, err)
				return
			}
		}
		limit := 100
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 100000 {
				writeError(w, http.StatusBadRequest, fmt.Errorf("limit %q: want 1..100000", s))
				return
			}
			limit = n
		}
		var since time.Time
		if v := q.Get("since"); v != "" {
			var err error
			if since, err = parseSince(v, time.Now()); err != nil {
				writeError(w, http.StatusBadRequest, err)
				return
			}
		}
		h, err := b.History(r.Context(), user, q.Get("node"), since, limit)
		if err != nil {
			writeError(w, opStatus(err), err)
			return
		}
		writeJSON(w, http.StatusOK, h)
	})
	mux.HandleFunc("GET /v1/nodes/{node}/sessions", func(w http.ResponseWriter, r *http.Request) {
		s, err := b.Sessions(r.Context(), r.PathValue("node"))
		if err != nil {
			writeError(w, opStatus(err), err)
			return
		}
		writeJSON(w, http.StatusOK, s)
	})
}

// forDuration reads a request's "for": a Go duration, or none.
func forDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("for %.40q: want a positive duration, such as 30m or 2h", s)
	}
	return d, nil
}

// decodeBody reads an optional JSON body, strictly, of at most maxBody
// bytes (an *http.MaxBytesError past that).
func decodeBody(w http.ResponseWriter, r *http.Request) (api.OpRequest, error) {
	var body api.OpRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		return body, fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return body, errors.New("request body: more than one JSON object")
	}
	return body, nil
}

func opStatus(err error) int {
	switch {
	case errors.Is(err, failover.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, failover.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, failover.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, failover.ErrNoLeader), errors.Is(err, errRoutingNotOpen):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, api.Error{Error: err.Error()})
}

// Operate carries out an operator's request through the raft leader.
func (a *Agent) Operate(ctx context.Context, r failover.Request) (failover.Reply, error) {
	return a.cluster.Operate(ctx, r)
}

// Where says where a user is routed, from this node's routing database.
func (a *Agent) Where(ctx context.Context, user string) (api.Where, error) {
	h, err := a.routing.Lookup(ctx, user)
	if errors.Is(err, failover.ErrNoSuchUser) {
		return api.Where{}, fmt.Errorf("%w: no user %s in the routing table (or the filter excludes it)", failover.ErrNotFound, placement.ShowUser(user))
	}
	if err != nil {
		return api.Where{}, err
	}
	wh := api.Where{User: placement.ShowUser(user), ProxyHost: h, Home: h}
	for _, m := range a.gossip.Members() {
		if m.Meta.ProxyHost == h && m.Meta.Role == RoleMail {
			wh.Node = m.Name
		}
	}
	if s, err := a.routing.store(); err == nil {
		if es, err := s.History(ctx, user, "", time.Time{}, 1); err == nil && len(es) == 1 {
			m := apiMove(es[0])
			wh.Home, wh.LastMove = m.Home, &m
		}
	}
	return wh, nil
}

// History lists journaled moves, newest first.
func (a *Agent) History(ctx context.Context, user, node string, since time.Time, limit int) ([]api.Move, error) {
	s, err := a.routing.store()
	if err != nil {
		return nil, err
	}
	host := ""
	if node != "" {
		m, ok := a.member(node)
		if !ok || m.Meta.ProxyHost == "" {
			return nil, fmt.Errorf("%w: no mail node %q in the cluster", failover.ErrNotFound, node)
		}
		host = m.Meta.ProxyHost
	}
	es, err := s.History(ctx, user, host, since, limit)
	if err != nil {
		return nil, err
	}
	out := make([]api.Move, len(es))
	for i, e := range es {
		out[i] = apiMove(e)
	}
	return out, nil
}

func apiMove(e routing.Entry) api.Move {
	return api.Move{User: placement.ShowUser(e.User), From: e.From, To: e.To, Home: e.Home, Reason: e.Reason, Plan: e.Plan, Term: e.Term, At: e.At}
}

// parseSince reads ?since=: an RFC 3339 time or a duration back from now
// (24h, 90m).
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("since %q: want an RFC 3339 time (2026-11-28T12:00:00Z) or a duration back from now (24h)", v)
}

// Sessions asks a node's Dovecot (through its gossiped doveadm API) who
// it serves.
func (a *Agent) Sessions(ctx context.Context, node string) (api.Sessions, error) {
	m, ok := a.member(node)
	if !ok {
		return api.Sessions{}, fmt.Errorf("%w: no node %q in the cluster", failover.ErrNotFound, node)
	}
	if m.Meta.Doveadm == "" {
		return api.Sessions{}, fmt.Errorf("%w: %s gossips no doveadm API (dovecot.url)", failover.ErrConflict, node)
	}
	c, err := a.kicker.client(m.Meta.Doveadm)
	if err != nil {
		return api.Sessions{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ss, err := c.Who(ctx)
	if err != nil {
		return api.Sessions{}, fmt.Errorf("doveadm who on %s: %w", node, err)
	}
	out := api.Sessions{Node: node}
	for _, s := range ss {
		if s.Service == "lmtp" {
			continue
		}
		out.Sessions += max(s.Connections, 1)
		if len(out.Users) < 100 {
			out.Users = append(out.Users, placement.ShowUser(s.User))
		}
	}
	return out, nil
}

func (a *Agent) member(name string) (gossip.Member, bool) {
	for _, m := range a.gossip.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return gossip.Member{}, false
}
