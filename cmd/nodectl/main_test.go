package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/roost-mail/roost/api"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares got with testdata/name (go test -update rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

var at = time.Date(2026, 11, 28, 12, 0, 0, 0, time.Local)

func TestStatusOutput(t *testing.T) {
	st := api.Status{Node: "mail1", Version: "1.0.0", Leader: "mail2", Term: 7, ClusterID: "2f1c9a", UsersKnown: true,
		Frozen:    &api.Freeze{Reason: "shared filesystem trouble on 2 of 3 mail nodes", Since: at},
		Paused:    &api.Pause{Reason: "core switch firmware", By: "ops@admin1", Since: at, Until: at.Add(2 * time.Hour)},
		Scheduled: []api.Scheduled{{ID: "000003-maintenance-on-mail3", Op: "maintenance-on", Node: "mail3", Reason: "disk swap", For: "2h0m0s", By: "ops@admin1", At: at.Add(24 * time.Hour)}},
		Members: []api.Member{
			{Name: "mail1", Role: "mail", ProxyHost: "10.0.0.1", Gossip: "alive", Addr: "10.0.0.1:7946", Raft: "voter", Version: "1.0.0", Self: true,
				Health: "passing", PeersReach: 2, State: "active", LB: "up", Users: 10512, Weight: 2, Cordoned: true, CordonReason: "disk swap on Monday"},
			{Name: "mail2", Role: "mail", ProxyHost: "10.0.0.2", Gossip: "alive", Addr: "10.0.0.2:7946", Raft: "leader", Version: "1.0.0",
				Health: "passing", PeersReach: 2, State: "draining", StateReason: "kernel update", StateSince: at, StateUntil: at.Add(2 * time.Hour), LB: "drain", Users: 0, Weight: 1},
			{Name: "mail3", Role: "mail", ProxyHost: "10.0.0.3", Gossip: "alive", Addr: "10.0.0.3:7946", Raft: "voter", Version: "1.0.0",
				Health: "critical", HealthReason: "mount /srv/mail: hung", PeersReach: 1, PeersCannot: []string{"mail1"}, State: "failed",
				StateReason: "reports itself critical", StateSince: at, LB: "down", Users: -1, Weight: 1},
			{Name: "witness", Role: "witness", Gossip: "alive", Addr: "10.0.0.9:7946", Raft: "voter", Version: "1.0.0", Health: "passing", Users: -1},
		},
		Plans: []api.Plan{
			{ID: "000040-rebalance", Kind: "rebalance", Reason: "mail3 added", Rate: 200, Users: 1200, Moved: 1200, Status: "done", Created: at},
			{ID: "000041-drain", Kind: "drain", Node: "mail2", Reason: "kernel update", Rate: 200, Users: 9870, Moved: 9870, Status: "done", Created: at},
			{ID: "000042-move", Kind: "move", User: "o'brien@example.com", To: "mail1", Reason: "closer", Moved: 0, Status: "running", Created: at},
		},
		Health: api.Health{Status: "passing", Checks: []api.Check{{Name: "imap", Status: "passing", Severity: "critical", Since: at}}},
		Mounts: []api.Mount{{Path: "/srv/mail", FSType: "fuse.objectivefs", Class: "ok", Total: 3200 * time.Microsecond}},
	}
	var b bytes.Buffer
	printStatus(&b, st)
	golden(t, "status.golden", b.String())
}

func TestWhereOutput(t *testing.T) {
	var b bytes.Buffer
	printWhere(&b, api.Where{User: "jürgen@exämple.de", ProxyHost: "10.0.0.3", Node: "mail3", Home: "10.0.0.2",
		LastMove: &api.Move{User: "jürgen@exämple.de", From: "10.0.0.2", To: "10.0.0.3", Home: "10.0.0.2", Reason: "reports itself critical: mount hung", Plan: "000040-failover", Term: 7, At: at}})
	printWhere(&b, api.Where{User: "never@example.com", ProxyHost: "10.0.0.1", Node: "mail1", Home: "10.0.0.1"})
	golden(t, "where.golden", b.String())
}

func TestMovedText(t *testing.T) {
	for _, tc := range []struct {
		p    api.Plan
		el   time.Duration
		want string
	}{
		{api.Plan{Moved: 3}, time.Second, "moved 3 users"},
		{api.Plan{Moved: 2000, Users: 10000}, 10 * time.Second, "moved 2000 of 10000 users, 200/s, about 40s left"},
		{api.Plan{Moved: 10000, Users: 10000}, 50 * time.Second, "moved 10000 of 10000 users"},
	} {
		if got := movedText(&tc.p, tc.el); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

// Verbs that move users refuse without --yes or --reason when nobody can
// be asked, before they reach roostd; exit status 2.
func TestMovingVerbsNeedConfirmation(t *testing.T) {
	for _, args := range [][]string{
		{"drain", "mail2"}, {"maintenance", "mail2", "on"}, {"undrain", "mail2"}, {"failback", "mail2"}, {"move", "alice", "mail3"},
	} {
		var out, errb bytes.Buffer
		code := execute(append([]string{"--socket", "/nonexistent/roost.sock"}, args...), &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), "confirm with --yes") {
			t.Errorf("%v: exit %d, %q", args, code, errb.String())
		}
	}
	// Confirmed, it goes on to roostd (here: unreachable, exit 3).
	var out, errb bytes.Buffer
	if code := execute([]string{"--socket", "/nonexistent/roost.sock", "drain", "mail2", "--yes"}, &out, &errb); code != exitUnreachable {
		t.Errorf("drain --yes: exit %d, %q", code, errb.String())
	}
}

// Misuse exits 2, as the help says, for every verb: an unknown command or
// flag, missing, extra or wrong arguments. An unreachable roostd is 3.
func TestMisuseExitsTwo(t *testing.T) {
	sock := []string{"--socket", filepath.Join(t.TempDir(), "none.sock")}
	for _, args := range [][]string{
		{"bogus"},
		{"status", "extra"},
		{"status", "--bogus"},
		{"drain"},
		{"drain", "a", "b"},
		{"drain", "a", "--rate", "x"},
		{"undrain"},
		{"maintenance", "node3", "sideways"},
		{"maintenance", "node3"},
		{"failback"},
		{"move", "alice@example.com"},
		{"where"},
		{"history", "--limit", "x"},
		{"history", "extra"},
		{"ack", "a", "b"},
		{"pause"},
		{"pause", "--reason", " "},
		{"pause", "--reason", "x", "--for", "soon"},
		{"pause", "--reason", "x", "--for", "-1h"},
		{"resume", "now"},
		{"cordon"},
		{"uncordon", "a", "b"},
		{"drain", "a", "--for", "soon"},
		{"drain", "a", "--for", "-2h"},
		{"drain", "a", "--for", "1h", "--until", "2099-01-01 00:00"},
		{"drain", "a", "--until", "yesterday"},
		{"drain", "a", "--until", "2001-01-01 00:00"},
		{"maintenance", "a", "off", "--for", "1h"},
		{"maintenance", "a", "off", "--at", "2099-01-01 00:00"},
		{"drain", "a", "--at", "2001-01-01 00:00"},
		{"drain", "a", "--at", "2099-01-01 00:00", "--wait"},
		{"drain", "a", "--at", "2099-01-02 00:00", "--until", "2099-01-01 00:00"},
	} {
		var out, errOut bytes.Buffer
		if code := execute(append(sock, args...), &out, &errOut); code != exitUsage {
			t.Errorf("nodectl %v: exit %d, want %d (misuse); stderr %q", args, code, exitUsage, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := execute(append(sock, "status"), &out, &errOut); code != exitUnreachable {
		t.Errorf("status with no roostd: exit %d, want %d", code, exitUnreachable)
	}
}

// The exit status follows the error's kind, never its text: exit 3 only
// when roostd could not be reached at all.
func TestFailCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("status: %w", fmt.Errorf("%w: dial unix: no such file", api.ErrUnreachable)), exitUnreachable},
		{&api.StatusError{Code: 409, Message: "reaching roostd is not the point"}, exitError},
		{errors.New("reaching roostd, says a message"), exitError},
	} {
		if got := failCode(tc.err); got != tc.want {
			t.Errorf("failCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// A user name given as raw bytes (a shell's $'lat\xe9n') reaches roostd
// quoted, as the API takes names that are not UTF-8; a quoted name goes as
// typed; and what roostd answers is printed as it wrote it.
func TestUserNamesReachRoostdExactly(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "roost.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/move":
			var body api.OpRequest
			json.NewDecoder(r.Body).Decode(&body)
			got = append(got, body.User)
			json.NewEncoder(w).Encode(api.OpReply{Leader: "mail1", Message: "moving " + body.User})
		case "/v1/where":
			got = append(got, r.URL.Query().Get("user"))
			json.NewEncoder(w).Encode(api.Where{User: r.URL.Query().Get("user"), ProxyHost: "10.0.0.3", Node: "mail3", Home: "10.0.0.1"})
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"move", "lat\xe9n@example.com", "mail3", "--yes"}, `"lat\xe9n@example.com"`},
		{[]string{"move", `"lat\xe9n@example.com"`, "mail3", "--yes"}, `"lat\xe9n@example.com"`},
		{[]string{"move", "jürgen@example.com", "mail3", "--yes"}, "jürgen@example.com"},
		{[]string{"where", "lat\xe9n@example.com"}, `"lat\xe9n@example.com"`},
	} {
		got = nil
		var out, errb bytes.Buffer
		if code := execute(append([]string{"--socket", sock}, tc.args...), &out, &errb); code != 0 || len(got) != 1 || got[0] != tc.want {
			t.Fatalf("nodectl %q: exit %d, roostd got %q, want %q; %s", tc.args, code, got, tc.want, errb.String())
		}
		if !strings.Contains(out.String(), tc.want) || !utf8.Valid(out.Bytes()) {
			t.Fatalf("nodectl %q printed %q, want the name as %s", tc.args, out.String(), tc.want)
		}
	}
}
