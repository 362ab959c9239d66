package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/roost-mail/roost/failover"
)

// amAlert is an alert as Alertmanager's API v2 takes it.
type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations,omitempty"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
}

func (a amAlert) key() string {
	keys := make([]string, 0, len(a.Labels))
	for k, v := range a.Labels {
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

// stuckAfter is how long a plan may run before it is called stuck.
const stuckAfter = 15 * time.Minute

// A dry-run plan (failover.mode) alerts for dryRunAlertFor after it ran;
// the latest keepDryRunAlerts plans are looked at.
const (
	dryRunAlertFor   = time.Hour
	keepDryRunAlerts = 20
)

// roostAlerts are Roost's own alerts that hold in state s now: a node
// failed over, users left on a node for want of room, the cluster frozen
// or paused, a plan stuck, a dry-run plan that would have moved users. A node in maintenance is
// expected down and alerts nobody.
func roostAlerts(s failover.State, now time.Time) []amAlert {
	var out []amAlert
	add := func(name, severity, summary string, since time.Time, labels ...string) {
		a := amAlert{Labels: map[string]string{"alertname": name, "severity": severity, "service": "roost"},
			Annotations: map[string]string{"summary": summary}, StartsAt: since}
		if s.ClusterID != "" {
			a.Labels["roost_cluster"] = s.ClusterID
		}
		for i := 0; i+1 < len(labels); i += 2 {
			a.Labels[labels[i]] = labels[i+1]
		}
		out = append(out, a)
	}
	names := make([]string, 0, len(s.Nodes))
	for n := range s.Nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := s.Nodes[n]
		if r.State == failover.Failed && !r.DryRun {
			add("RoostNodeFailedOver", "critical", fmt.Sprintf("%s was failed over: %s", n, r.Reason), r.Since, "node", n)
		}
		// Users left on a node that should be empty, for want of room,
		// until a plan of the node runs again.
		if p, ok := s.LastPlan(n); ok && p.Stranded > 0 && p.Status == failover.PlanCanceled && r.State != failover.Active && r.State != failover.Recovering {
			add("RoostUsersStranded", "critical", fmt.Sprintf("plan %s (%s of %s) stopped with %d users left on %s: %s", p.ID, p.Kind, n, p.Stranded, n, p.Error), p.Finished, "node", n, "plan", p.ID)
		}
	}
	if s.Frozen != nil {
		add("RoostClusterFrozen", "critical", "automatic moves are frozen until nodectl ack: "+s.Frozen.Reason, s.Frozen.Since)
	}
	if p := s.Paused; p != nil {
		until := "until nodectl resume"
		if !p.Until.IsZero() {
			until = "until " + p.Until.UTC().Format(time.DateTime) + " UTC"
		}
		by := ""
		if p.By != "" {
			by = " by " + p.By
		}
		add("RoostPaused", "warning", fmt.Sprintf("automatic failover and failback are paused%s %s: %s", by, until, p.Reason), p.Since)
	}
	for _, p := range s.RecentPlans(keepDryRunAlerts) {
		if p.DryRun && p.Status == failover.PlanDone && now.Sub(p.Finished) < dryRunAlertFor {
			add("RoostDryRunPlan", "warning", fmt.Sprintf("dry run: plan %s (%s of %s) would have moved %d users: %s", p.ID, p.Kind, p.Node, p.Would, p.Reason), p.Finished, "plan", p.ID, "node", p.Node)
		}
	}
	for _, p := range s.RunningPlans() {
		if now.Sub(p.Created) > stuckAfter {
			what := fmt.Sprintf("%s of %s", p.Kind, p.Node)
			if p.Node == "" {
				what = string(p.Kind) // a move or rebalance
			}
			add("RoostPlanStuck", "warning", fmt.Sprintf("plan %s (%s) has run for %s, %d users moved", p.ID, what, now.Sub(p.Created).Round(time.Minute), p.Moved), p.Created, "plan", p.ID, "node", p.Node)
		}
	}
	return out
}

// Alerter posts Roost's alerts to Alertmanager while this node leads.
type Alerter struct {
	cfg    Config
	hc     *http.Client
	state  func() failover.State
	leader func() bool
	logf   func(msg string, args ...any)
	posted map[string]amAlert // what holds, as last posted
	// silences are this leader's silences of drained nodes, by node, per
	// Alertmanager URL.
	silences map[string]map[string]string
}

// NewAlerter posts Roost's alerts, read from state, to cfg's
// Alertmanagers while leader says this node leads.
func NewAlerter(cfg Config, state func() failover.State, leader func() bool, logf func(msg string, args ...any)) *Alerter {
	return &Alerter{cfg: cfg, hc: &http.Client{Timeout: 10 * time.Second}, state: state, leader: leader, logf: logf}
}

// Run posts until ctx ends.
func (al *Alerter) Run(ctx context.Context) {
	t := time.NewTicker(al.cfg.ResendInterval)
	defer t.Stop()
	for {
		if al.leader() {
			al.post(ctx, time.Now())
			if al.cfg.SilenceDrained {
				al.silence(ctx, time.Now())
			}
		} else {
			al.posted, al.silences = nil, nil // the next leader posts them
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// post sends what holds (ending three intervals from now, so alerts of a
// leader that vanished expire) and resolves what held last time but not
// now.
func (al *Alerter) post(ctx context.Context, now time.Time) {
	current := map[string]amAlert{}
	var batch []amAlert
	for _, a := range roostAlerts(al.state(), now) {
		a.EndsAt = now.Add(3 * al.cfg.ResendInterval)
		current[a.key()] = a
		batch = append(batch, a)
	}
	for k, a := range al.posted {
		if _, ok := current[k]; !ok {
			a.EndsAt = now
			batch = append(batch, a)
		}
	}
	al.posted = current
	if len(batch) == 0 {
		return
	}
	for _, u := range al.cfg.URLs {
		if err := al.call(ctx, http.MethodPost, strings.TrimSuffix(u, "/")+"/api/v2/alerts", batch, nil); err != nil {
			al.logf("alertmanager_post_failed", "url", u, "alerts", len(batch), "err", err)
		}
	}
}

// silence keeps a silence for each draining node (created, then extended
// every round) and expires those of nodes that are drained no more.
func (al *Alerter) silence(ctx context.Context, now time.Time) {
	label := al.cfg.SilenceLabel
	if label == "" {
		label = "node"
	}
	drained := map[string]bool{}
	for name, r := range al.state().Nodes {
		if r.State == failover.Draining || r.State == failover.Maintenance {
			drained[name] = true
		}
	}
	if al.silences == nil {
		al.silences = map[string]map[string]string{}
	}
	for _, u := range al.cfg.URLs {
		base := strings.TrimSuffix(u, "/")
		ids := al.silences[u]
		if ids == nil {
			ids = map[string]string{}
			al.silences[u] = ids
		}
		for node := range drained {
			matchers := []map[string]any{{"name": label, "value": node, "isRegex": false, "isEqual": true}}
			if len(al.cfg.Rules) > 0 {
				// Never the alerts that drive the webhook: their resolved
				// notification must still undo the drain.
				var names []string
				for _, r := range al.cfg.Rules {
					names = append(names, regexp.QuoteMeta(r.Alertname))
				}
				matchers = append(matchers, map[string]any{"name": "alertname", "value": strings.Join(names, "|"), "isRegex": true, "isEqual": false})
			}
			body := map[string]any{
				"matchers":  matchers,
				"startsAt":  now.Add(-time.Minute),
				"endsAt":    now.Add(3 * al.cfg.ResendInterval),
				"createdBy": "roost",
				"comment":   "roost: " + node + " is drained; the silence ends with the drain",
			}
			if id := ids[node]; id != "" {
				body["id"] = id // extend it
			}
			var out struct {
				SilenceID string `json:"silenceID"`
			}
			if err := al.call(ctx, http.MethodPost, base+"/api/v2/silences", body, &out); err != nil {
				al.logf("alertmanager_silence_failed", "url", u, "node", node, "err", err)
				continue
			}
			ids[node] = out.SilenceID
		}
		for node, id := range ids {
			if drained[node] {
				continue
			}
			if err := al.call(ctx, http.MethodDelete, base+"/api/v2/silence/"+url.PathEscape(id), nil, nil); err != nil {
				al.logf("alertmanager_unsilence_failed", "url", u, "node", node, "err", err)
				continue
			}
			delete(ids, node)
		}
	}
}

// call sends one request to Alertmanager's API and decodes its answer.
func (al *Alerter) call(ctx context.Context, method, u string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := al.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
