package failover

import (
	"context"
	"errors"
	"sort"

	"github.com/roost-mail/roost/placement"
)

// shares splits total users among targets in proportion to their
// weights, by largest remainder (ties to the first name): the shares sum
// to total.
func shares(total int, targets []placement.Target) map[string]int {
	sum := 0.0
	for _, t := range targets {
		sum += t.Weight
	}
	out := make(map[string]int, len(targets))
	if sum <= 0 {
		return out
	}
	type rest struct {
		node string
		frac float64
	}
	var rests []rest
	given := 0
	for _, t := range targets {
		exact := float64(total) * t.Weight / sum
		out[t.Node] = int(exact)
		given += int(exact)
		rests = append(rests, rest{t.Node, exact - float64(int(exact))})
	}
	sort.Slice(rests, func(i, j int) bool {
		if rests[i].frac != rests[j].frac {
			return rests[i].frac > rests[j].frac
		}
		return rests[i].node < rests[j].node
	})
	for i := 0; given < total; i++ {
		out[rests[i%len(rests)].node]++
		given++
	}
	return out
}

// rebalanceBatch lists up to size moves (0: every one) that bring each
// target to its weighted share of the users on the targets. Users leave
// only a node over its share and land only on a node under it, so the
// fewest users move. First go those whom rendezvous hashing over every
// target places on a node under its share: a node that was added takes
// exactly the users a failover would give it. Then, while some node is
// still over, users go by hashing among the nodes under their share.
func (e *Executor) rebalanceBatch(ctx context.Context, targets []placement.Target, size int) ([]placement.Move, error) {
	counts, err := e.Router.Counts(ctx)
	if err != nil {
		return nil, err
	}
	targets = sortedTargets(targets)
	total := 0
	for _, t := range targets {
		total += counts[t.Host]
	}
	want := capped(total, targets)
	over, room := map[string]int{}, map[string]int{}
	for _, t := range targets {
		if d := counts[t.Host] - want[t.Node]; d > 0 {
			over[t.Node] = d
		} else if d < 0 {
			room[t.Node] = -d
		}
	}
	var moves []placement.Move
	picked := map[string]bool{}
	for pass := range 2 {
		for _, src := range targets {
			if over[src.Node] == 0 || (size > 0 && len(moves) >= size) {
				continue
			}
			err := e.Router.UsersOn(ctx, src.Host, func(u string) error {
				if picked[u] {
					return nil
				}
				among := targets
				if pass == 1 {
					among = withRoom(targets, room)
				}
				t, ok := e.Choose(u, among)
				if !ok {
					return errStop // no room anywhere
				}
				if room[t.Node] == 0 {
					return nil
				}
				picked[u] = true
				moves = append(moves, placement.Move{User: u, From: src.Host, To: t.Host})
				room[t.Node]--
				over[src.Node]--
				if over[src.Node] == 0 || (size > 0 && len(moves) >= size) {
					return errStop
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStop) {
				return nil, err
			}
		}
	}
	return moves, nil
}

// capped is shares with node.max_users: a node's share is at most its
// bound, and what it cannot hold is shared among the others (when every
// node is at its bound, the users left over stay where they are).
func capped(total int, targets []placement.Target) map[string]int {
	want := map[string]int{}
	free := targets
	for len(free) > 0 {
		s := shares(total, free)
		var next []placement.Target
		for _, t := range free {
			if t.Max > 0 && s[t.Node] > t.Max {
				want[t.Node] = t.Max
				total -= t.Max
			} else {
				next = append(next, t)
			}
		}
		if len(next) == len(free) {
			for _, t := range free {
				want[t.Node] = s[t.Node]
			}
			break
		}
		free = next
	}
	return want
}

func sortedTargets(ts []placement.Target) []placement.Target {
	out := append([]placement.Target(nil), ts...)
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

func withRoom(ts []placement.Target, room map[string]int) []placement.Target {
	var out []placement.Target
	for _, t := range ts {
		if room[t.Node] > 0 {
			out = append(out, t)
		}
	}
	return out
}
