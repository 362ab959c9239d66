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
	for path, r := range map[string]struct {
		name  string
		build requestBuilder
	}{
		"/v1/nodes/{node}/drain":       {"drain", nodeRequest(failover.OpDrain)},
		"/v1/nodes/{node}/undrain":     {"undrain", nodeRequest(failover.OpUndrain)},
		"/v1/nodes/{node}/failback":    {"failback", nodeRequest(failover.OpFailback)},
		"/v1/nodes/{node}/ack":         {"ack", nodeRequest(failover.OpAck)},
		"/v1/nodes/{node}/cordon":      {"cordon", nodeRequest(failover.OpCordon)},
		"/v1/nodes/{node}/uncordon":    {"uncordon", nodeRequest(failover.OpUncordon)},
		"/v1/nodes/{node}/maintenance": {"maintenance", maintenanceRequest},
		"/v1/ack":                      {"ack", ackRequest},
		"/v1/pause":                    {"pause", pauseRequest},
		"/v1/resume":                   {"resume", resumeRequest},
		"/v1/rebalance":                {"rebalance", rebalanceRequest},
		"/v1/move":                     {"move", moveRequest},
	} {
		mux.HandleFunc("POST "+path, operation(b, r.name, r.build))
	}
	mux.HandleFunc("GET /v1/where", whereHandler(b))
	mux.HandleFunc("GET /v1/history", historyHandler(b))
	mux.HandleFunc("GET /v1/nodes/{node}/sessions", sessionsHandler(b))
}

// A requestBuilder reads an operator's request from its path and body,
// refusing a field the request does not take.
type requestBuilder func(r *http.Request, body api.OpRequest) (failover.Request, error)

// operation serves one operator request: the body, bounded and strict,
// built into a request the leader carries out.
func operation(b backend, name string, build requestBuilder) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := decodeBody(w, r)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			api.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", tooBig.Limit))
			return
		}
		if err != nil {
			api.WriteError(w, http.StatusBadRequest, err)
			return
		}
		req, err := build(r, body)
		if err == nil && body.Max != 0 && name != "rebalance" {
			err = fmt.Errorf("%s takes no max", name)
		}
		if err != nil {
			api.WriteError(w, http.StatusBadRequest, err)
			return
		}
		reply, err := b.Operate(r.Context(), req)
		if err != nil {
			api.WriteError(w, opStatus(err), err)
			return
		}
		api.WriteJSON(w, http.StatusOK, api.OpReply{Leader: reply.Leader, Message: reply.Message, Plan: reply.Plan, Users: reply.Users, Targets: reply.Targets})
	}
}

// nodeRequest builds a request on the path's node that takes a reason
// (a drain also a rate, a dry run, an end and a start).
func nodeRequest(kind string) requestBuilder {
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

// ackRequest builds POST /v1/ack, which takes no field.
func ackRequest(r *http.Request, body api.OpRequest) (failover.Request, error) {
	if body != (api.OpRequest{}) {
		return failover.Request{}, errors.New("ack takes no fields")
	}
	return failover.Request{Op: failover.OpAck}, nil
}

// pauseRequest builds POST /v1/pause: reason, for and by.
func pauseRequest(r *http.Request, body api.OpRequest) (failover.Request, error) {
	if body.User != "" || body.Node != "" || body.On != nil || body.Rate != 0 || body.DryRun || !body.At.IsZero() {
		return failover.Request{}, errors.New("pause takes only reason, for and by")
	}
	d, err := forDuration(body.For)
	if err != nil {
		return failover.Request{}, err
	}
	return failover.Request{Op: failover.OpPause, Reason: body.Reason, By: body.By, For: d}, nil
}

// resumeRequest builds POST /v1/resume: reason and by.
func resumeRequest(r *http.Request, body api.OpRequest) (failover.Request, error) {
	if body.User != "" || body.Node != "" || body.On != nil || body.Rate != 0 || body.DryRun || body.For != "" || !body.At.IsZero() {
		return failover.Request{}, errors.New("resume takes only reason and by")
	}
	return failover.Request{Op: failover.OpResume, Reason: body.Reason, By: body.By}, nil
}

// maintenanceRequest builds POST /v1/nodes/{node}/maintenance: on,
// reason, dry_run, and with on for and at.
func maintenanceRequest(r *http.Request, body api.OpRequest) (failover.Request, error) {
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
}

// rebalanceRequest builds POST /v1/rebalance: rate, max, dry_run, reason and by.
func rebalanceRequest(r *http.Request, body api.OpRequest) (failover.Request, error) {
	if body.User != "" || body.Node != "" || body.On != nil || body.For != "" || !body.At.IsZero() {
		return failover.Request{}, errors.New("rebalance takes only rate, max, dry_run, reason and by")
	}
	return failover.Request{Op: failover.OpRebalance, Rate: body.Rate, Max: body.Max, DryRun: body.DryRun, Reason: body.Reason, By: body.By}, nil
}

// moveRequest builds POST /v1/move: user, node and reason.
func moveRequest(r *http.Request, body api.OpRequest) (failover.Request, error) {
	if body.Rate != 0 || body.DryRun || body.On != nil || body.For != "" || !body.At.IsZero() {
		return failover.Request{}, errors.New("move takes only user, node and reason")
	}
	return failover.Request{Op: failover.OpMove, User: body.User, Node: body.Node, Reason: body.Reason}, nil
}

// whereHandler serves GET /v1/where?user=: where a user is routed.
func whereHandler(b backend) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user, err := placement.ParseUser(r.URL.Query().Get("user"))
		if err != nil {
			api.WriteError(w, http.StatusBadRequest, err)
			return
		}
		wh, err := b.Where(r.Context(), user)
		if err != nil {
			api.WriteError(w, opStatus(err), err)
			return
		}
		api.WriteJSON(w, http.StatusOK, wh)
	}
}

// historyHandler serves GET /v1/history: journaled moves, newest first.
func historyHandler(b backend) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var user string
		if q.Has("user") {
			// An empty name is no filter: refused, not a list of everyone.
			var err error
			if user, err = placement.ParseUser(q.Get("user")); err != nil {
				api.WriteError(w, http.StatusBadRequest, err)
				return
			}
		}
		limit := 100
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 100000 {
				api.WriteError(w, http.StatusBadRequest, fmt.Errorf("limit %q: want 1..100000", s))
				return
			}
			limit = n
		}
		var since time.Time
		if v := q.Get("since"); v != "" {
			var err error
			if since, err = parseSince(v, time.Now()); err != nil {
				api.WriteError(w, http.StatusBadRequest, err)
				return
			}
		}
		h, err := b.History(r.Context(), user, q.Get("node"), since, limit)
		if err != nil {
			api.WriteError(w, opStatus(err), err)
			return
		}
		api.WriteJSON(w, http.StatusOK, h)
	}
}

// sessionsHandler serves GET /v1/nodes/{node}/sessions: a node's sessions.
func sessionsHandler(b backend) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := b.Sessions(r.Context(), r.PathValue("node"))
		if err != nil {
			api.WriteError(w, opStatus(err), err)
			return
		}
		api.WriteJSON(w, http.StatusOK, s)
	}
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
