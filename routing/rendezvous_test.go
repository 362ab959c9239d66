package routing

import (
	"fmt"
	"math"
	"testing"

	"github.com/roost-mail/roost/placement"
)

func targets(names ...string) []placement.Target {
	var out []placement.Target
	for i, n := range names {
		out = append(out, placement.Target{Node: n, Host: fmt.Sprintf("10.0.0.%d", i+1), Weight: 1})
	}
	return out
}

func users(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("user%05d@example.com", i)
	}
	return out
}

func TestChooseIsStableAndBalanced(t *testing.T) {
	ts := targets("node2", "node3", "node4", "node5")
	counts := map[string]int{}
	for _, u := range users(50000) {
		a, ok := Choose(u, ts)
		b, _ := Choose(u, []placement.Target{ts[3], ts[1], ts[0], ts[2]}) // order does not matter
		if !ok || a != b {
			t.Fatalf("%s: %v then %v", u, a, b)
		}
		counts[a.Node]++
	}
	mean := 50000.0 / 4
	for n, c := range counts {
		if math.Abs(float64(c)-mean)/mean > 0.05 {
			t.Errorf("%s got %d users, more than 5%% from the mean %.0f (%v)", n, c, mean, counts)
		}
	}
}

func TestOnlyTheLeavingNodesUsersMove(t *testing.T) {
	all := targets("a", "b", "c", "d")
	moved, kept := 0, 0
	for _, u := range users(20000) {
		before, _ := Choose(u, all)
		after, _ := Choose(u, all[:3]) // d goes away
		switch {
		case before.Node == "d":
			moved++
		case before != after:
			t.Fatalf("%s moved from %s to %s though %s stayed", u, before.Node, after.Node, before.Node)
		default:
			kept++
		}
	}
	if moved == 0 || kept == 0 {
		t.Fatalf("moved %d kept %d", moved, kept)
	}
}

func TestWeights(t *testing.T) {
	ts := []placement.Target{{Node: "big", Weight: 3}, {Node: "small", Weight: 1}, {Node: "off", Weight: 0}}
	counts := map[string]int{}
	for _, u := range users(40000) {
		c, _ := Choose(u, ts)
		counts[c.Node]++
	}
	if counts["off"] != 0 {
		t.Fatalf("a weight-0 target got %d users", counts["off"])
	}
	if r := float64(counts["big"]) / float64(counts["small"]); r < 2.8 || r > 3.2 {
		t.Fatalf("weight 3:1 gave %v", counts)
	}
	if _, ok := Choose("x", nil); ok {
		t.Fatal("Choose with no targets reported a choice")
	}
}
