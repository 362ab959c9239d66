package alerting

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/failover"
)

const goodPayload = `{"version":"4","groupKey":"{}:{alertname=\"MailDiskFailing\"}","status":"firing","receiver":"roost",
"groupLabels":{"alertname":"MailDiskFailing"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am:9093","truncatedAlerts":0,
"alerts":[{"status":"firing","labels":{"alertname":"MailDiskFailing","node":"mail2"},"annotations":{},"startsAt":"2026-11-28T12:00:00Z",
"endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"c6eadffa33fcdf37"}]}`

func TestParseWebhookNamesTheProblem(t *testing.T) {
	if _, err := parseWebhook([]byte(goodPayload)); err != nil {
		t.Fatal(err)
	}
	for want, body := range map[string]string{
		"not an Alertmanager webhook payload":          `{"version":`,
		`unknown field "surprise"`:                     strings.Replace(goodPayload, `"receiver"`, `"surprise":1,"receiver"`, 1),
		`version "3": want "4"`:                        strings.Replace(goodPayload, `"version":"4"`, `"version":"3"`, 1),
		`status "burning"`:                             strings.Replace(goodPayload, `"status":"firing","receiver"`, `"status":"burning","receiver"`, 1),
		"no alerts":                                    `{"version":"4","status":"firing","alerts":[]}`,
		`alerts[0].status "maybe"`:                     strings.Replace(goodPayload, `[{"status":"firing"`, `[{"status":"maybe"`, 1),
		"alerts[0] has no alertname label":             strings.Replace(goodPayload, `"alertname":"MailDiskFailing","node"`, `"node"`, 1),
		"alerts[0] has no fingerprint":                 strings.Replace(goodPayload, `"fingerprint":"c6eadffa33fcdf37"`, `"fingerprint":""`, 1),
		"more than one JSON value":                     goodPayload + ` {}`,
		"cannot unmarshal number into Go struct field": strings.Replace(goodPayload, `"receiver":"roost"`, `"receiver":7`, 1),
	} {
		if _, err := parseWebhook([]byte(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error containing %q", err, want)
		}
	}
}

// FuzzParseWebhook: no payload panics the parser, and whatever it accepts
// carries what the handler relies on.
func FuzzParseWebhook(f *testing.F) {
	f.Add([]byte(goodPayload))
	f.Add([]byte(`{"version":"4","status":"resolved","alerts":[{"status":"resolved","labels":{"alertname":"x"},"fingerprint":"f"}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := parseWebhook(b)
		if err != nil {
			return
		}
		if w.Version != "4" || len(w.Alerts) == 0 {
			t.Fatalf("accepted %q", b)
		}
		for _, a := range w.Alerts {
			if a.Labels["alertname"] == "" || a.Fingerprint == "" || (a.Status != "firing" && a.Status != "resolved") {
				t.Fatalf("accepted an alert without what the handler needs: %+v", a)
			}
		}
	})
}

type recordedOps struct{ reqs []failover.Request }

func (r *recordedOps) operate(_ context.Context, req failover.Request) (failover.Reply, error) {
	r.reqs = append(r.reqs, req)
	return failover.Reply{Message: "ok: " + req.Op}, nil
}

func post(t *testing.T, h http.Handler, body string) (int, []Result) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/alertmanager", strings.NewReader(body)))
	var out []Result
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out
}

// Firing drains once (repeats of the same fingerprint are duplicates),
// resolved undrains, an unmatched alert does nothing, a malformed payload
// gets 400 and changes nothing, and dry run only says what it would do.
func TestWebhookActsOncePerAlertState(t *testing.T) {
	ops := &recordedOps{}
	h := &Webhook{cfg: Config{Rules: []Rule{{Alertname: "MailDiskFailing", Action: "drain", UndoOnResolve: true}}},
		operate: ops.operate, logf: func(string, ...any) {}}
	for range 2 {
		if code, res := post(t, h, goodPayload); code != 200 || len(res) != 1 {
			t.Fatalf("firing: %d %+v", code, res)
		}
	}
	if len(ops.reqs) != 1 || ops.reqs[0].Op != failover.OpDrain || ops.reqs[0].Node != "mail2" || ops.reqs[0].Reason != "alert MailDiskFailing" {
		t.Fatalf("requests after a repeated firing: %+v", ops.reqs)
	}
	resolved := strings.ReplaceAll(goodPayload, `"firing"`, `"resolved"`)
	if code, res := post(t, h, resolved); code != 200 || res[0].Action != failover.OpUndrain {
		t.Fatalf("resolved: %d %+v", code, res)
	}
	other := strings.Replace(goodPayload, `"alertname":"MailDiskFailing","node"`, `"alertname":"Other","node"`, 1)
	if _, res := post(t, h, other); res[0].Action != "no-rule" {
		t.Fatalf("an unmatched alert: %+v", res)
	}
	if code, _ := post(t, h, `{"version":"4"`); code != http.StatusBadRequest {
		t.Fatalf("a malformed payload: %d", code)
	}
	if len(ops.reqs) != 2 {
		t.Fatalf("requests: %+v", ops.reqs)
	}

	dry := &Webhook{cfg: Config{DryRun: true, Rules: h.cfg.Rules}, operate: ops.operate, logf: func(string, ...any) {}}
	if _, res := post(t, dry, strings.Replace(goodPayload, "c6eadffa33fcdf37", "0000000000000001", 1)); res[0].Result != "dry run: would drain mail2" {
		t.Fatalf("dry run: %+v", res)
	}
	if len(ops.reqs) != 2 {
		t.Fatal("the dry run acted")
	}
}

func TestRoostAlerts(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	s := failover.State{ClusterID: "c1",
		Nodes: map[string]failover.NodeRecord{"a": {State: failover.Failed, Reason: "mount hung", Since: now.Add(-time.Minute)}, "b": {State: failover.Maintenance},
			"c": {State: failover.Active}, "d": {State: failover.Draining}},
		Frozen: &failover.Freeze{Reason: "2 of 3 failed", Since: now},
		Paused: &failover.Pause{Reason: "switch firmware", By: "ops@mail1", Since: now, Until: now.Add(time.Hour)},
		Plans: map[string]failover.Plan{"000001-failover": {ID: "000001-failover", Kind: failover.PlanFailover, Node: "a", Status: failover.PlanRunning, Created: now.Add(-20 * time.Minute)},
			// c's drain ran out of room, then c was undrained: over.
			"000002-drain": {ID: "000002-drain", Kind: failover.PlanDrain, Node: "c", Status: failover.PlanCanceled, Stranded: 5},
			"000003-drain": {ID: "000003-drain", Kind: failover.PlanDrain, Node: "d", Status: failover.PlanCanceled, Stranded: 7, Error: "no room"}},
	}
	var got []string
	var paused string
	for _, a := range roostAlerts(s, now) {
		got = append(got, a.Labels["alertname"]+"/"+a.Labels["node"])
		if a.Labels["alertname"] == "RoostPaused" {
			paused = a.Annotations["summary"]
		}
	}
	if strings.Join(got, " ") != "RoostNodeFailedOver/a RoostUsersStranded/d RoostClusterFrozen/ RoostPaused/ RoostPlanStuck/a" {
		t.Fatalf("alerts: %v", got)
	}
	if want := "automatic failover and failback are paused by ops@mail1 until 2026-11-28 13:00:00 UTC: switch firmware"; paused != want {
		t.Fatalf("the pause's alert says %q, want %q", paused, want)
	}
}

// A dry run alerts once per plan it ran, for an hour, naming it; its
// node is not failed over, so that alert stays quiet.
func TestRoostAlertsInADryRun(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	s := failover.State{ClusterID: "c1",
		Nodes: map[string]failover.NodeRecord{"a": {State: failover.Failed, Reason: "mount hung", DryRun: true, Since: now.Add(-time.Minute)}},
		Plans: map[string]failover.Plan{
			"000001-failover": {ID: "000001-failover", Kind: failover.PlanFailover, Node: "b", Status: failover.PlanDone, DryRun: true, Would: 7, Reason: "x", Finished: now.Add(-2 * time.Hour)},
			"000002-failover": {ID: "000002-failover", Kind: failover.PlanFailover, Node: "a", Status: failover.PlanDone, DryRun: true, Would: 100, Reason: "reports itself critical: mount hung", Finished: now.Add(-time.Minute)},
			"000003-drain":    {ID: "000003-drain", Kind: failover.PlanDrain, Node: "c", Status: failover.PlanDone, Finished: now.Add(-time.Minute)},
		},
	}
	var got []string
	for _, a := range roostAlerts(s, now) {
		got = append(got, a.Labels["alertname"]+"/"+a.Labels["plan"]+": "+a.Annotations["summary"])
	}
	want := "RoostDryRunPlan/000002-failover: dry run: plan 000002-failover (failover of a) would have moved 100 users: reports itself critical: mount hung"
	if strings.Join(got, "; ") != want {
		t.Fatalf("alerts in a dry run: %q, want %q", got, want)
	}
}
