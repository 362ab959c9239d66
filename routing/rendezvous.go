// Package routing owns the operator's users table as Roost touches it:
// who lives on which node (proxy_host), fenced and journaled batch moves,
// and where a user should go (weighted rendezvous hashing).
package routing

import (
	"hash/fnv"
	"math"

	"github.com/roost-mail/roost/placement"
)

// Choose picks the target for user by weighted rendezvous hashing: every
// target scores the user and the highest score wins. The same user always
// goes to the same target; users spread in proportion to the weights; and
// when a target comes or goes, only the users it should gain or had move.
func Choose(user string, targets []placement.Target) (placement.Target, bool) {
	best, bestScore := placement.Target{}, math.Inf(-1)
	for _, t := range targets {
		if t.Weight <= 0 {
			continue
		}
		// -w / ln(u) with u uniform in (0,1): the weighted HRW score.
		score := -t.Weight / math.Log(unit(t.Node, user))
		if score > bestScore || (score == bestScore && t.Node < best.Node) {
			best, bestScore = t, score
		}
	}
	return best, !math.IsInf(bestScore, -1)
}

// unit hashes (node, user) to a number strictly between 0 and 1.
func unit(node, user string) float64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	h.Write([]byte{0})
	h.Write([]byte(user))
	x := h.Sum64()
	// fnv's low bits are weak for short keys: mix (splitmix64 finaliser).
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return (float64(x>>11) + 0.5) / (1 << 53)
}
