package tests

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/roost-mail/roost/dovecot"
	"github.com/roost-mail/roost/tests/dovecotlab"
	"golang.org/x/sync/errgroup"
)

// BenchmarkKick ends the sessions of 1,000 users whose backend is node d
// of a 4-node proxy_maybe cluster:
//   - proxy: the sessions enter through a, b and c (a third each), which
//     proxy them to d; proxyKick with the user list on the three at once;
//   - backend-batched: the sessions are on d; kick on d through the HTTP
//     API, batch_size kick commands per request, parallel requests;
//   - backend-signal: what roostd on d does: one who request, then SIGTERM
//     to the users' mail processes (SignalKick);
//   - backend-per-user: one kick request per user, one at a time.
//
// Timed from the first request until every client has seen its
// connection end (s-in-requests/op: until the requests returned).
// Opening the sessions again is not timed. On Dovecot 2.3 and 2.4 (whose
// proxy kick is a kick per user with destHost).
//
//	go test -run '^$' -bench Kick -benchtime 1x -timeout 30m ./tests/
func BenchmarkKick(b *testing.B) {
	for _, version := range dovecotlab.Versions {
		b.Run(version, func(b *testing.B) { benchKick(b, version) })
	}
}

func benchKick(b *testing.B, version string) {
	n := 1000
	if v := os.Getenv("ROOST_KICK_USERS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("kick%04d@example.test", i)
	}
	path, _ := usersDB(b, users, "127.0.1.4")
	nodes := cluster(b, version, 4, path, false)
	http := func(d *dovecotlab.Instance, batch, parallel int) dovecot.Admin {
		c := dovecot.DefaultConfig()
		c.URL, c.APIKeyFile, c.BatchSize, c.Parallel = d.HTTP+"/doveadm/v1", d.APIKeyFile, batch, parallel
		h, err := dovecot.NewHTTP(c)
		if err != nil {
			b.Fatal(err)
		}
		return h
	}
	d := nodes[3]
	b.Run("proxy-3-nodes", func(b *testing.B) {
		proxies := []dovecot.Admin{http(nodes[0], 100, 4), http(nodes[1], 100, 4), http(nodes[2], 100, 4)}
		kickTimed(b, users, func(i int) string { return nodes[i%3].IMAP }, func(ctx context.Context) error {
			var g errgroup.Group
			for _, p := range proxies {
				g.Go(func() error { _, err := p.ProxyKick(ctx, users, "127.0.1.4"); return err })
			}
			return g.Wait()
		})
	})
	b.Run("backend-batched", func(b *testing.B) {
		a := http(d, 100, 4)
		kickTimed(b, users, func(int) string { return d.IMAP }, func(ctx context.Context) error { _, err := a.Kick(ctx, users); return err })
	})
	b.Run("backend-signal", func(b *testing.B) {
		a := http(d, 100, 4)
		kickTimed(b, users, func(int) string { return d.IMAP }, func(ctx context.Context) error {
			_, err := dovecot.SignalKick(ctx, a, d.Name, users)
			return err
		})
	})
	b.Run("backend-per-user", func(b *testing.B) {
		a := http(d, 1, 1)
		kickTimed(b, users, func(int) string { return d.IMAP }, func(ctx context.Context) error { _, err := a.Kick(ctx, users); return err })
	})
}

// kickTimed opens a session per user at entry(i), then times kick until
// every session has ended.
func kickTimed(b *testing.B, users []string, entry func(i int) string, kick func(context.Context) error) {
	ctx := context.Background()
	var calls time.Duration
	for range b.N {
		b.StopTimer()
		sessions := make([]*imapSession, len(users))
		var g errgroup.Group
		g.SetLimit(16)
		for i, u := range users {
			g.Go(func() (err error) {
				sessions[i], err = imapLogin(entry(i), u, mailPass)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var wg sync.WaitGroup
		errs := make(chan error, len(users))
		for _, s := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.closed(60 * time.Second); err != nil {
					errs <- err
				}
			}()
		}
		start := time.Now()
		if err := kick(ctx); err != nil {
			b.Fatal(err)
		}
		calls += time.Since(start)
		wg.Wait()
		b.StopTimer()
		close(errs)
		for err := range errs {
			b.Fatalf("a session did not end: %v", err)
		}
		for _, s := range sessions {
			s.Close()
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(len(users))*float64(b.N)/b.Elapsed().Seconds(), "users/s")
	b.ReportMetric(calls.Seconds()/float64(b.N), "s-in-requests/op")
}
