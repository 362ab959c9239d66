package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/hooks"
)

// The operator's scripts: pre_move vetoes node2's failover (nobody moves,
// the plan says why), post_move and node_state report what happened, and
// a plan the hook allows moves everyone.
func TestHooksVetoAndReport(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "hooks.log")
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pre := script("pre-move", `echo "pre $ROOST_KIND $ROOST_NODE" >> `+logFile+`
if [ "$ROOST_NODE" = node2 ]; then echo "checking mailboxes"; echo "node2 belongs to the storage team today"; exit 3; fi
`)
	post := script("post-move", `echo "post $ROOST_KIND $ROOST_NODE $ROOST_STATUS $ROOST_USERS_MOVED" >> `+logFile+"\n")
	state := script("node-state", `echo "state $ROOST_NODE $ROOST_PREVIOUS_STATE $ROOST_STATE" >> `+logFile+"\n")
	c, db, flag := sqliteCluster(t, nil, func(i int, cfg *agent.Config) {
		cfg.Hooks = hooks.Config{PreMove: pre, PostMove: post, NodeState: state, Timeout: 5 * time.Second}
	})
	log := func() string { b, _ := os.ReadFile(logFile); return string(b) }

	if err := os.WriteFile(flag(1), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(30*time.Second, "node2's failover vetoed", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		for _, p := range l.Agent.FailoverState().Plans {
			if p.Node == "node2" && p.Status == failover.PlanCanceled {
				return strings.Contains(p.Error, "vetoed by the pre_move hook") && strings.Contains(p.Error, "exited 3: node2 belongs to the storage team today")
			}
		}
		return false
	})
	c.WaitFor(10*time.Second, "the hooks' reports", func() bool {
		return strings.Contains(log(), "post failover node2 canceled 0") && strings.Contains(log(), "state node2 active failed")
	})
	if n := usersOn(t, db)["127.0.1.2"]; n != 100 {
		t.Fatalf("a vetoed plan moved users: %d left on node2", n)
	}

	if _, err := c.Leader().Client().Post(t.Context(), "/v1/nodes/node3/drain", api.OpRequest{Reason: "kernel"}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(30*time.Second, "node3 drained, reported by the hooks", func() bool {
		return strings.Contains(log(), "post drain node3 done 100") && strings.Contains(log(), "state node3 active draining")
	})
	if !strings.Contains(log(), "pre drain node3") {
		t.Fatalf("pre_move did not run for the drain:\n%s", log())
	}
}

// A vetoed drain leaves the node draining, saying why nobody moved, and
// nodectl drain tries it again: no node is stuck draining with no plan.
func TestVetoedDrainStaysDrainingAndRetries(t *testing.T) {
	dir := t.TempDir()
	veto := filepath.Join(dir, "veto")
	pre := filepath.Join(dir, "pre-move")
	if err := os.WriteFile(pre, []byte("#!/bin/sh\nif [ -e "+veto+" ]; then echo 'change freeze until noon'; exit 1; fi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(veto, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c, db, _ := sqliteCluster(t, nil, func(i int, cfg *agent.Config) {
		cfg.Hooks = hooks.Config{PreMove: pre, Timeout: 5 * time.Second}
	})
	drain := func() api.OpReply {
		t.Helper()
		r, err := c.Leader().Client().Post(t.Context(), "/v1/nodes/node3/drain", api.OpRequest{Reason: "disk swap"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := drain()
	c.WaitFor(30*time.Second, "the drain vetoed, node3 still draining and saying why", func() bool {
		st := c.Leader().Agent.FailoverState()
		p, ok := st.Plans[first.Plan]
		r := st.Node("node3")
		return ok && p.Status == failover.PlanCanceled && r.State == failover.Draining && strings.Contains(r.Reason, "change freeze until noon")
	})
	if n := usersOn(t, db)["127.0.1.3"]; n != 100 {
		t.Fatalf("a vetoed drain moved users: %d left on node3", n)
	}
	if err := os.Remove(veto); err != nil {
		t.Fatal(err)
	}
	second := drain()
	if second.Plan == "" || second.Plan == first.Plan {
		t.Fatalf("drain of a node whose drain was vetoed: %+v, want a new plan", second)
	}
	c.WaitFor(30*time.Second, "node3 drained on the second try", func() bool { return usersOn(t, db)["127.0.1.3"] == 0 })
}
