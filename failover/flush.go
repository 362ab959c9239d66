package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The auth cache flush channel: Dovecot 2.4 cannot flush its auth cache
// over the doveadm HTTP API, so the leader asks each 2.4 node's own agent,
// over the cluster port (mutual TLS with node certificates), to flush it
// with the local doveadm. Dropping cache entries changes no state, so
// being a node of this cluster is authority enough.

// flushLimit bounds a flush request: a batch of users (failover.batch_size
// names, each at most a few hundred bytes).
const flushLimit = 16 << 20

// flushTimeout bounds one flush, the local doveadm included.
const flushTimeout = 30 * time.Second

// flushRequest carries user names as bytes (base64 in JSON), so that a
// name that is not UTF-8 arrives exactly.
type flushRequest struct {
	Users [][]byte `json:"users"`
}

type flushReply struct {
	Entries int    `json:"entries"`
	Error   string `json:"error,omitempty"`
}

// SetFlusher makes this node flush its own Dovecot's auth cache with fn
// when another node asks it to (FlushAuthCache). Call it before Run.
func (c *Cluster) SetFlusher(fn func(ctx context.Context, users []string) (int, error)) {
	c.stream.handle(chanFlush, func(conn net.Conn) { serveFlush(conn, fn) })
}

func serveFlush(conn net.Conn, fn func(ctx context.Context, users []string) (int, error)) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(flushTimeout))
	var r flushRequest
	var w flushReply
	dec := json.NewDecoder(io.LimitReader(conn, flushLimit))
	dec.DisallowUnknownFields()
	err := dec.Decode(&r)
	switch {
	case err != nil:
		err = fmt.Errorf("auth cache flush request: %w", err)
	case len(r.Users) == 0:
		err = errors.New("auth cache flush request names no user")
	default:
		users := make([]string, len(r.Users))
		for i, u := range r.Users {
			users[i] = string(u)
		}
		ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		w.Entries, err = fn(ctx, users)
		cancel()
	}
	if err != nil {
		w.Error = err.Error()
	}
	_ = json.NewEncoder(conn).Encode(w)
}

// FlushAuthCache asks the node whose cluster port is addr to flush users
// from its own Dovecot's auth cache, and returns how many entries it
// dropped.
func (c *Cluster) FlushAuthCache(ctx context.Context, addr string, users []string) (int, error) {
	if len(users) == 0 {
		return 0, nil
	}
	conn, err := c.stream.dial(addr, chanFlush, 5*time.Second)
	if err != nil {
		return 0, fmt.Errorf("asking %s to flush its auth cache: %w", addr, err)
	}
	defer conn.Close()
	dl := time.Now().Add(flushTimeout + 5*time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	r := flushRequest{Users: make([][]byte, len(users))}
	for i, u := range users {
		r.Users[i] = []byte(u)
	}
	if err := json.NewEncoder(conn).Encode(r); err != nil {
		return 0, fmt.Errorf("asking %s to flush its auth cache: %w", addr, err)
	}
	var w flushReply
	if err := json.NewDecoder(io.LimitReader(conn, 1<<20)).Decode(&w); err != nil {
		return 0, fmt.Errorf("%s did not answer the auth cache flush: %w", addr, err)
	}
	if w.Error != "" {
		return w.Entries, fmt.Errorf("auth cache flush on %s: %s", addr, w.Error)
	}
	return w.Entries, nil
}
