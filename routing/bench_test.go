package routing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/roost-mail/roost/placement"
	"github.com/roost-mail/roost/routing/routingtest"
)

// BenchmarkReroute moves one host's users to the other four: 10,000 of a
// 50,000-user table in MoveBatch calls of 1,000 users; the same one user
// per call (per-user: a transaction per user, as a script updating
// user by user does); the same with one UPDATE and one journal INSERT per
// user inside a single transaction (per-user-one-tx, the cheapest
// statement-per-user form); and 200,000 of a 1,000,000-user table in
// calls of 5,000. Each iteration puts the users back untimed.
//
//	go test -run '^$' -bench Reroute -benchtime 5x ./routing/
func BenchmarkReroute(b *testing.B) {
	for _, driver := range routingtest.Drivers {
		b.Run(driver, func(b *testing.B) {
			s, db := benchStore(b, driver, 50000)
			b.Run("10k-batched", func(b *testing.B) { reroute(b, s, db, 10000, 1000, s.MoveBatch) })
			b.Run("10k-per-user", func(b *testing.B) { reroute(b, s, db, 10000, 1, s.MoveBatch) })
			b.Run("10k-per-user-one-tx", func(b *testing.B) { reroute(b, s, db, 10000, 10000, s.movePerUser) })
		})
	}
	for _, driver := range routingtest.Drivers {
		b.Run(driver+"/200k-of-1M", func(b *testing.B) {
			s, db := benchStore(b, driver, 1000000)
			reroute(b, s, db, 200000, 5000, s.MoveBatch)
		})
	}
}

func benchStore(b *testing.B, driver string, n int) (*Store, *routingtest.DB) {
	db := routingtest.Open(b, driver)
	db.CreateUsers(b, n, 5)
	return openStore(b, db, ""), db
}

// term is the benchmarks' raft term, newer for every run.
var term uint64

type mover func(ctx context.Context, f placement.Fence, plan, reason string, moves []placement.Move) (int, error)

func reroute(b *testing.B, s *Store, db *routingtest.DB, want, batch int, move mover) {
	ctx := context.Background()
	moves := movesOff(b, s, "10.0.0.1", fourTargets)
	if len(moves) != want {
		b.Fatalf("%d users on 10.0.0.1, want %d", len(moves), want)
	}
	b.ResetTimer()
	for range b.N {
		term++
		total := 0
		for j := 0; j < len(moves); j += batch {
			n, err := move(ctx, placement.Fence{Term: term, Leader: "bench"}, "bench", "bench", moves[j:min(j+batch, len(moves))])
			if err != nil {
				b.Fatal(err)
			}
			total += n
		}
		b.StopTimer()
		if total != want {
			b.Fatalf("moved %d of %d", total, want)
		}
		db.Exec(b, `UPDATE users SET proxy_host = '10.0.0.1' WHERE username IN (SELECT username FROM roost_journal)`)
		db.Exec(b, `DELETE FROM roost_journal`)
		b.StartTimer()
	}
	b.ReportMetric(float64(want)*float64(b.N)/b.Elapsed().Seconds(), "users/s")
}

// movePerUser is what MoveBatch does, with a statement per user in one
// transaction.
func (s *Store) movePerUser(ctx context.Context, f placement.Fence, plan, reason string, moves []placement.Move) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	now := time.Now().UTC()
	q := s.d.query(`UPDATE roost_fence SET term = `).arg(int64(f.Term)).w(` WHERE id = 1 AND term <= `).arg(int64(f.Term))
	if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
		return 0, err
	}
	moved := 0
	for _, m := range moves {
		q := s.d.query(`UPDATE `, s.table, ` SET `, s.host, ` = `).arg(m.To).w(` WHERE `, s.user, ` = `).arg(m.User).w(` AND `, s.host, ` = `).arg(m.From)
		res, err := tx.ExecContext(ctx, q.String(), q.args...)
		if err != nil {
			return 0, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue
		}
		q = s.d.query(`INSERT INTO roost_journal (username, from_host, to_host, home, reason, plan, term, at) VALUES (`).arg(m.User).w(", ").arg(m.From).
			w(", ").arg(m.To).w(", ").arg(m.From).w(", ").arg(reason).w(", ").arg(plan).w(", ").arg(int64(f.Term)).w(", ").arg(now).w(")")
		if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
			return 0, fmt.Errorf("journal: %w", err)
		}
		moved++
	}
	return moved, tx.Commit()
}
