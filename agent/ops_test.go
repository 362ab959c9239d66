package agent_test

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/agent/agenttest"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/placement"
)

func member(st api.Status, name string) api.Member {
	for _, m := range st.Members {
		if m.Name == name {
			return m
		}
	}
	return api.Member{}
}

func wantCode(t *testing.T, what string, err error, code int, text string) {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != code || !strings.Contains(se.Message, text) {
		t.Fatalf("%s: got %v, want %d with %q", what, err, code, text)
	}
}

// Every operator request goes to a follower, which forwards it to the
// leader: a dry run, a rate-limited drain, a move of an oddly named user,
// refusals that name the problem, undrain, and ack.
func TestOperatorRequestsThroughAFollower(t *testing.T) {
	odd := `o'brien "ü" \ ; --` + "\u00e9\u4e2d@example.test"
	long := strings.Repeat("x", 255-len("@example.test")) + "@example.test"
	latin1 := "lat\xe9n@example.test" // not UTF-8: Dovecot takes any bytes but NUL
	c, db, _ := sqliteCluster(t, []string{odd, long, latin1}, func(i int, cfg *agent.Config) {
		cfg.Failover.FailbackHoldDown = time.Hour // failback only when asked
	})
	var f *agenttest.Node
	c.WaitFor(20*time.Second, "a follower whose leader knows all three", func() bool {
		l := c.Leader()
		if l == nil || len(l.Status().Members) != 3 {
			return false
		}
		for _, n := range c.Running() {
			if n != l {
				f = n
			}
		}
		return f != nil
	})
	cl := f.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A dry run moves nobody and says where the 100 would go.
	r, err := cl.Post(ctx, "/v1/nodes/node2/drain", api.OpRequest{DryRun: true})
	if err != nil || r.Users != 100 || r.Targets["node1"]+r.Targets["node3"] != 100 || r.Targets["node1"] < 30 || r.Plan != "" {
		t.Fatalf("dry run: %+v %v", r, err)
	}
	if n := usersOn(t, db)["127.0.1.2"]; n != 100 {
		t.Fatalf("the dry run moved users: %d left on node2", n)
	}

	// A drain at 50 users/s: two batches of 50.
	r, err = cl.Post(ctx, "/v1/nodes/node2/drain", api.OpRequest{Reason: "kernel update", Rate: 50})
	if err != nil || r.Plan == "" || r.Users != 100 || r.Leader != c.Leader().Name {
		t.Fatalf("drain: %+v %v", r, err)
	}
	c.WaitFor(30*time.Second, "node2 drained", func() bool {
		st := f.Status()
		for _, p := range st.Plans {
			if p.ID == r.Plan {
				return p.Status == "done" && usersOn(t, db)["127.0.1.2"] == 0
			}
		}
		return false
	})
	st := f.Status()
	m := member(st, "node2")
	if m.State != "draining" || m.LB != "drain" || m.Users != 0 || m.StateReason != "kernel update" || !st.UsersKnown {
		t.Fatalf("node2 after the drain, as the follower sees it: %+v", m)
	}
	for _, p := range st.Plans {
		if p.ID == r.Plan && (p.Moved != 100 || p.Batches != 2 || p.Kind != "drain" || p.Rate != 50) {
			t.Fatalf("drain plan %+v: want 100 moved in 2 batches", p)
		}
	}
	if r2, err := cl.Post(ctx, "/v1/nodes/node2/drain", api.OpRequest{}); err != nil || !strings.Contains(r2.Message, "already draining") {
		t.Fatalf("a second drain: %+v %v", r2, err)
	}

	// Refusals name the problem and change nothing.
	_, err = cl.Post(ctx, "/v1/move", api.OpRequest{User: odd, Node: "node2"})
	wantCode(t, "move to a draining node", err, http.StatusConflict, "cannot take users")
	_, err = cl.Post(ctx, "/v1/move", api.OpRequest{User: "nobody@example.test", Node: "node3"})
	wantCode(t, "move of a missing user", err, http.StatusNotFound, `no user nobody@example.test`)
	_, err = cl.Post(ctx, "/v1/nodes/node9/drain", api.OpRequest{})
	wantCode(t, "drain of a missing node", err, http.StatusNotFound, `no node "node9"`)
	_, err = cl.Post(ctx, "/v1/nodes/node1/failback", api.OpRequest{})
	wantCode(t, "failback of an active node", err, http.StatusConflict, "not failed over")
	_, err = cl.Post(ctx, "/v1/nodes/node1/maintenance", api.OpRequest{})
	wantCode(t, "maintenance without on", err, http.StatusBadRequest, `"on": true or false`)
	_, err = cl.Post(ctx, "/v1/nodes/node1/undrain", api.OpRequest{Rate: 5})
	wantCode(t, "undrain with a rate", err, http.StatusBadRequest, "takes only reason")
	var bad api.OpReply
	err = cl.Get(ctx, "/v1/history?limit=0", &bad)
	wantCode(t, "history limit 0", err, http.StatusBadRequest, "limit")
	// A body past the limit is refused as too large, naming the limit,
	// whatever it holds.
	huge := api.OpRequest{Reason: strings.Repeat("x", 1<<20)}
	_, err = cl.Post(ctx, "/v1/nodes/node1/drain", huge)
	wantCode(t, "a 1 MiB drain request", err, http.StatusRequestEntityTooLarge, "over 65536 bytes")
	// An empty user name is refused everywhere with the same words, and
	// never read as "every user".
	err = cl.Get(ctx, "/v1/where?user=", &bad)
	wantCode(t, "where of an empty name", err, http.StatusBadRequest, "the user name is empty")
	var all []api.Move
	err = cl.Get(ctx, "/v1/history?user=", &all)
	wantCode(t, "history of an empty name", err, http.StatusBadRequest, "the user name is empty")
	_, err = cl.Post(ctx, "/v1/move", api.OpRequest{User: "", Node: "node3"})
	wantCode(t, "move of an empty name", err, http.StatusBadRequest, "the user name is empty")

	_, err = cl.Post(ctx, "/v1/move", api.OpRequest{User: `"lat\xe9n`, Node: "node3"})
	wantCode(t, "move of a badly quoted name", err, http.StatusBadRequest, "not a quoted name")
	_, err = cl.Post(ctx, "/v1/move", api.OpRequest{User: `"lat\xe9n"`, Node: "node3"}) // latin1 is @example.test
	wantCode(t, "move of a look-alike", err, http.StatusNotFound, `no user "lat\xe9n"`)

	// The odd users move, and where and history say so, naming them as
	// the API writes user names (quoted when not plain text).
	for _, u := range []string{odd, long, latin1} {
		shown := placement.ShowUser(u)
		if r, err := cl.Post(ctx, "/v1/move", api.OpRequest{User: shown, Node: "node3", Reason: "closer to the user"}); err != nil || r.Plan == "" || !strings.Contains(r.Message, shown) {
			t.Fatalf("move %s: %+v %v", shown, r, err)
		}
		c.WaitFor(20*time.Second, "the move", func() bool {
			var w api.Where
			return cl.Get(ctx, "/v1/where?user="+urlQuery(shown), &w) == nil && w.ProxyHost == "127.0.1.3" && w.Node == "node3" && w.User == shown
		})
		var h []api.Move
		if err := cl.Get(ctx, "/v1/history?user="+urlQuery(shown), &h); err != nil || len(h) != 1 || h[0].User != shown || h[0].From != "127.0.1.1" || h[0].Reason != "closer to the user" {
			t.Fatalf("history of %s: %+v %v", shown, h, err)
		}
		if host := usersHost(t, db, u); host != "127.0.1.3" {
			t.Fatalf("the users table has %q on %s", u, host)
		}
	}
	var h []api.Move
	if err := cl.Get(ctx, "/v1/history?node=node2&limit=500", &h); err != nil || len(h) != 100 {
		t.Fatalf("node2's history: %d moves, %v", len(h), err)
	}

	// Undrain: the users come home and node2 is active again.
	if r, err := cl.Post(ctx, "/v1/nodes/node2/undrain", api.OpRequest{}); err != nil || r.Plan == "" {
		t.Fatalf("undrain: %+v %v", r, err)
	}
	c.WaitFor(30*time.Second, "node2's users home", func() bool {
		m := member(f.Status(), "node2")
		return m.State == "active" && m.LB == "up" && usersOn(t, db)["127.0.1.2"] == 100
	})

	// Maintenance is a drain that says "down".
	if r, err := cl.Post(ctx, "/v1/nodes/node2/maintenance", api.OpRequest{On: ptr(true)}); err != nil || r.Plan == "" {
		t.Fatalf("maintenance on: %+v %v", r, err)
	}
	c.WaitFor(30*time.Second, "node2 in maintenance and empty", func() bool {
		m := member(f.Status(), "node2")
		return m.State == "maintenance" && m.LB == "down" && m.Users == 0
	})

	// Nothing is frozen: ack says so; ack of a node resets its block period.
	if r, err := cl.Post(ctx, "/v1/ack", api.OpRequest{}); err != nil || !strings.Contains(r.Message, "not frozen") {
		t.Fatalf("ack: %+v %v", r, err)
	}
	if _, err := cl.Post(ctx, "/v1/nodes/node1/ack", api.OpRequest{}); err != nil {
		t.Fatalf("ack node1: %v", err)
	}
	if l := c.Leader(); l == nil || l.Agent.FailoverState().Node("node2").State != failover.Maintenance {
		t.Fatal("the leader's state lost the maintenance")
	}
}

func ptr[T any](v T) *T { return &v }

// Who started an action owns it: a resolved alert undoes only what it
// holds, once every alert holding the node has resolved, and never an
// operator's drain or maintenance; an operator takes an alert's hold over.
func TestAlertsUndoOnlyWhatTheyHold(t *testing.T) {
	c, _, _ := sqliteCluster(t, nil, func(i int, cfg *agent.Config) {
		cfg.Failover.FailbackHoldDown = time.Hour
	})
	c.WaitFor(20*time.Second, "a leader that knows all three", func() bool {
		l := c.Leader()
		return l != nil && len(l.Status().Members) == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	do := func(r failover.Request) failover.Reply {
		t.Helper()
		l := c.Leader()
		if l == nil {
			t.Fatal("no leader")
		}
		reply, err := l.Agent.Operate(ctx, r)
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		return reply
	}
	state := func(node string) failover.NodeRecord { return c.Leader().Agent.FailoverState().Node(node) }
	drained := func(node string) {
		t.Helper()
		c.WaitFor(30*time.Second, node+"'s drain plan done", func() bool {
			_, running := c.Leader().Agent.FailoverState().Running(node)
			return !running
		})
	}
	alert := func(op, node, id string) failover.Reply {
		return do(failover.Request{Op: op, Node: node, Reason: "alert DiskFailing", Alert: "DiskFailing/" + id})
	}

	// An operator's drain: an alert that resolves without having fired,
	// and one that fired on the drained node, undo nothing.
	do(failover.Request{Op: failover.OpDrain, Node: "node3", Reason: "disk swap"})
	drained("node3")
	if r := alert(failover.OpUndrain, "node3", "never-fired"); !strings.Contains(r.Message, "by an operator") {
		t.Fatalf("a resolution never seen firing: %s", r.Message)
	}
	alert(failover.OpDrain, "node3", "sdb")
	alert(failover.OpUndrain, "node3", "sdb")
	if s := state("node3"); s.State != failover.Draining || len(s.Holds) != 0 {
		t.Fatalf("node3 after an alert fired and resolved on an operator's drain: %+v", s)
	}

	// Two alerts hold node2: it comes back only when the last resolves.
	alert(failover.OpDrain, "node2", "sda")
	alert(failover.OpDrain, "node2", "sdb")
	drained("node2")
	if s := state("node2"); s.State != failover.Draining || len(s.Holds) != 2 {
		t.Fatalf("node2 held by two alerts: %+v", s)
	}
	if r := alert(failover.OpUndrain, "node2", "sdb"); state("node2").State != failover.Draining {
		t.Fatalf("node2 undrained while sda still fires: %s", r.Message)
	}
	alert(failover.OpUndrain, "node2", "sda")
	if s := state("node2"); s.State != failover.Recovering {
		t.Fatalf("node2 after its last alert resolved: %+v", s)
	}

	// An operator's maintenance takes over an alert's drain: the alert's
	// resolution leaves it.
	c.WaitFor(60*time.Second, "node2 active again", func() bool { return state("node2").State == failover.Active })
	alert(failover.OpDrain, "node2", "sdc")
	drained("node2")
	if r := do(failover.Request{Op: failover.OpMaintenanceOn, Node: "node2", Reason: "kernel upgrade"}); !strings.Contains(r.Message, "an operator owns it now") {
		t.Fatalf("an operator's maintenance on an alert's drain: %s", r.Message)
	}
	alert(failover.OpUndrain, "node2", "sdc")
	if s := state("node2"); s.State != failover.Maintenance || len(s.Holds) != 0 {
		t.Fatalf("node2 after the alert resolved under an operator's maintenance: %+v", s)
	}
}

// A pause holds the failover of a failing node, and shows in status and
// metrics; resumed, the node is failed over, onto the nodes not cordoned
// only; a pause --for ends by itself.
func TestPauseAndCordon(t *testing.T) {
	c, db, flag := sqliteCluster(t, nil, func(i int, cfg *agent.Config) {
		cfg.Failover.FailbackHoldDown = time.Hour                                              // failback only when asked
		cfg.Health.Checks[0].Interval, cfg.Health.Checks[0].Timeout = time.Second, time.Second // a loaded machine fails no other node
	})
	cl := c.Running()[0].Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	r, err := cl.Post(ctx, "/v1/pause", api.OpRequest{Reason: "core switch firmware", By: "ops@admin1"})
	if err != nil || !strings.Contains(r.Message, "paused") {
		t.Fatalf("pause: %+v %v", r, err)
	}
	_, err = cl.Post(ctx, "/v1/pause", api.OpRequest{Reason: "x", For: "soon"})
	wantCode(t, "pause for soon", err, http.StatusBadRequest, "want a positive duration")
	_, err = cl.Post(ctx, "/v1/pause", api.OpRequest{})
	wantCode(t, "pause without a reason", err, http.StatusBadRequest, "say why")
	if _, err := cl.Post(ctx, "/v1/nodes/node3/cordon", api.OpRequest{Reason: "disk swap on Monday"}); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(flag(1), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(20*time.Second, "node2 seen critical by the leader", func() bool {
		l := c.Leader()
		return l != nil && member(l.Status(), "node2").Health == "critical"
	})
	time.Sleep(2 * time.Second) // twenty decision rounds: none may act
	l := c.Leader()
	st := l.Status()
	if m := member(st, "node2"); m.State != "active" || usersOn(t, db)["127.0.1.2"] != 100 || len(st.Plans) != 0 {
		t.Fatalf("paused, yet node2 is %s with %d users, plans %+v", m.State, usersOn(t, db)["127.0.1.2"], st.Plans)
	}
	if p := st.Paused; p == nil || p.Reason != "core switch firmware" || p.By != "ops@admin1" || !p.Until.IsZero() {
		t.Fatalf("status while paused: %+v", p)
	}
	if m := member(st, "node3"); !m.Cordoned || m.CordonReason != "disk swap on Monday" || m.LB != "up" {
		t.Fatalf("cordoned node3 in status: %+v", m)
	}
	m := scrape(t, l)
	for _, want := range []string{`roost_failover_paused 1`, `roost_failover_node_cordoned{node="node3"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("the leader's metrics lack %s", want)
		}
	}

	if r, err := cl.Post(ctx, "/v1/resume", api.OpRequest{}); err != nil || !strings.Contains(r.Message, "resumed") {
		t.Fatalf("resume: %+v %v", r, err)
	}
	c.WaitFor(30*time.Second, "node2 failed over once resumed", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		s := l.Agent.FailoverState()
		_, running := s.Running("node2")
		return s.Node("node2").State == failover.Failed && !running && usersOn(t, db)["127.0.1.2"] == 0
	})
	if on := usersOn(t, db); on["127.0.1.1"] != 200 || on["127.0.1.3"] != 100 {
		t.Fatalf("after the failover with node3 cordoned: %v, want node2's 100 on node1 and node3's 100 alone", on)
	}

	if _, err := cl.Post(ctx, "/v1/pause", api.OpRequest{Reason: "brief", For: "1s"}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(20*time.Second, "the pause over by itself", func() bool {
		l := c.Leader()
		return l != nil && l.Status().Paused == nil
	})
}

// A drain given an end ends by itself, its users coming home, even when
// the leader that started it is stopped in between: the end lives in the
// raft state.
func TestDrainForEndsByItself(t *testing.T) {
	c, db, l, f := drainCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := f.Client().Post(ctx, "/v1/nodes/node2/drain", api.OpRequest{Reason: "kernel update", For: "24h", Rate: 1000})
	if err != nil || !strings.Contains(r.Message, "ends by itself") {
		t.Fatalf("drain for 24h: %+v %v", r, err)
	}
	c.WaitFor(10*time.Second, "node2 draining for 24h, as the follower sees it", func() bool {
		m := member(f.Status(), "node2")
		return m.State == "draining" && m.StateUntil.After(time.Now().Add(23*time.Hour))
	})
	// Drained again with a short end, which replaces the first.
	if _, err := f.Client().Post(ctx, "/v1/nodes/node2/drain", api.OpRequest{Reason: "kernel update", For: "3s", Rate: 1000}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(30*time.Second, "node2 drained", func() bool { return usersOn(t, db)["127.0.1.2"] == 0 })
	if l.Name != "node2" {
		if err := l.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitFor(60*time.Second, "node2's drain over by itself, its users home", func() bool {
		m := member(f.Status(), "node2")
		return m.State == "active" && m.StateUntil.IsZero() && usersOn(t, db)["127.0.1.2"] == 100
	})
}

// A drain scheduled --at a time starts then, even when the leader that
// took it is stopped in between, and ends by itself --for a while; a
// scheduled maintenance is canceled by maintenance off.
func TestScheduledDrain(t *testing.T) {
	c, db, l, f := drainCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := f.Client()
	r, err := cl.Post(ctx, "/v1/nodes/node3/maintenance", api.OpRequest{On: ptr(true), Reason: "disk swap", At: time.Now().Add(time.Hour)})
	if err != nil || !strings.Contains(r.Message, "scheduled") || r.Plan != "" {
		t.Fatalf("maintenance at +1h: %+v %v", r, err)
	}
	if r, err := cl.Post(ctx, "/v1/nodes/node3/maintenance", api.OpRequest{On: ptr(false)}); err != nil || !strings.Contains(r.Message, "canceled") {
		t.Fatalf("maintenance off of a scheduled one: %+v %v", r, err)
	}
	_, err = cl.Post(ctx, "/v1/nodes/node2/drain", api.OpRequest{Reason: "x", At: time.Now().Add(time.Hour), DryRun: true})
	wantCode(t, "a scheduled dry run", err, http.StatusBadRequest, "never a dry run")

	start := time.Now().Add(3 * time.Second)
	if _, err := cl.Post(ctx, "/v1/nodes/node2/drain", api.OpRequest{Reason: "kernel update", At: start, For: "2s", Rate: 1000}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(10*time.Second, "the drain in the follower's schedule", func() bool {
		st := f.Status()
		return len(st.Scheduled) == 1 && st.Scheduled[0].Node == "node2" && st.Scheduled[0].For == "2s"
	})
	if n := usersOn(t, db)["127.0.1.2"]; n != 100 || member(f.Status(), "node2").State != "active" {
		t.Fatalf("before its time the scheduled drain moved users: %d on node2", n)
	}
	if l.Name != "node2" {
		if err := l.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitFor(60*time.Second, "node2 drained at its time", func() bool {
		return member(f.Status(), "node2").State == "draining" && usersOn(t, db)["127.0.1.2"] == 0
	})
	if time.Now().Before(start) {
		t.Fatal("drained before its time")
	}
	c.WaitFor(60*time.Second, "node2's drain over by itself", func() bool {
		st := f.Status()
		return member(st, "node2").State == "active" && len(st.Scheduled) == 0 && usersOn(t, db)["127.0.1.2"] == 100
	})
}

// drainCluster is sqliteCluster with slow checks (a loaded machine fails
// no node), its leader, and a follower that is not node2.
func drainCluster(t *testing.T) (c *agenttest.Cluster, db *sql.DB, l, f *agenttest.Node) {
	c, db, _ = sqliteCluster(t, nil, func(i int, cfg *agent.Config) {
		cfg.Health.Checks[0].Interval, cfg.Health.Checks[0].Timeout = time.Second, time.Second
	})
	l = c.Leader()
	for _, n := range c.Running() {
		if n != l && n.Name != "node2" {
			f = n
		}
	}
	return c, db, l, f
}
