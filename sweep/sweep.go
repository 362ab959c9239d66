// Package sweep ends this node's sessions of users whose proxy_host names
// another node (DESIGN.md, invariant 8): it covers a kick that failed, a
// node that was partitioned while the majority moved its users, and users
// an operator moved by hand. A node whose users nobody moved kicks no one.
// LMTP deliveries are left to finish.
package sweep

import (
	"context"
	"log/slog"
	"time"

	"github.com/roost-mail/roost/dovecot"
)

// Sweeper sweeps one node's Dovecot.
type Sweeper struct {
	// Admin is this node's Dovecot, and Instance its instance name (the
	// signal kick finds its processes by it).
	Admin    dovecot.Admin
	Instance string
	// Self is this node's proxy_host.
	Self string
	// Hosts looks up the users' proxy_hosts in the routing database; a
	// user it does not name is left alone (nil, nil: the database is not
	// open yet).
	Hosts func(ctx context.Context, users []string) (map[string]string, error)
	Log   *slog.Logger
}

// Run sweeps every interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.Once(ctx)
	}
}

// Once sweeps once, and says how many users' sessions it ended.
func (s *Sweeper) Once(ctx context.Context) int {
	users, err := dovecot.UsersWithSessions(ctx, s.Admin)
	if err != nil {
		s.Log.Debug("sweep_who_failed", "err", err)
		return 0
	}
	if len(users) == 0 {
		return 0
	}
	hosts, err := s.Hosts(ctx, users)
	if err != nil {
		s.Log.Warn("sweep_lookup_failed", "err", err)
		return 0
	}
	away := Stray(users, hosts, s.Self)
	if len(away) == 0 {
		return 0
	}
	n, err := dovecot.SignalKick(ctx, s.Admin, s.Instance, away)
	s.Log.Warn("sweep_kicked", "users", n, "of", len(away), "first", away[0], "err", err)
	return n
}

// Stray are the users, of those with sessions here, whose proxy_host is
// known and is not self: their sessions belong to another node.
func Stray(users []string, hosts map[string]string, self string) []string {
	var out []string
	for _, u := range users {
		if h, ok := hosts[u]; ok && h != self {
			out = append(out, u)
		}
	}
	return out
}
