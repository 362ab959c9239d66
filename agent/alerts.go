package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/roost-mail/roost/failover"
)

// AlertmanagerConfig connects Roost and Prometheus' Alertmanager both
// ways: Alertmanager's webhook can drain nodes, and Roost posts its own
// alerts.
type AlertmanagerConfig struct {
	// WebhookTokenFile holds the bearer token Alertmanager sends to
	// POST /v1/alertmanager on api.listen (http_config.authorization).
	// Empty: the webhook is served on the local socket only.
	WebhookTokenFile string `yaml:"webhook_token_file"`
	// DryRun logs and answers what the webhook would do, and does nothing.
	DryRun bool `yaml:"dry_run"`
	// Rules map alerts to actions; the first that matches wins.
	Rules []AlertRule `yaml:"rules"`
	// URLs are Alertmanagers (http://host:9093) the leader posts Roost's
	// own alerts to (API v2) while they hold.
	URLs []string `yaml:"urls"`
	// ResendInterval is how often the leader posts alerts that hold.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// SilenceDrained: while a node is draining or in maintenance, the
	// leader keeps a silence in Alertmanager for alerts whose
	// SilenceLabel (default "node") names it, and expires it after.
	SilenceDrained bool   `yaml:"silence_drained"`
	SilenceLabel   string `yaml:"silence_label"`
}

// AlertRule maps an alert to an action on the node one of its labels
// names.
type AlertRule struct {
	// Alertname must equal the alert's alertname; Labels must all equal.
	Alertname string            `yaml:"alertname"`
	Labels    map[string]string `yaml:"labels"`
	// NodeLabel is the label holding the node's name (default "node").
	NodeLabel string `yaml:"node_label"`
	// Action is drain, maintenance or none (log only).
	Action string `yaml:"action"`
	// UndoOnResolve: when the alert resolves, undrain (or end the
	// maintenance).
	UndoOnResolve bool `yaml:"undo_on_resolve"`
}

// Validate reports the first problem, naming the key.
func (c AlertmanagerConfig) Validate() error {
	for i, r := range c.Rules {
		switch {
		case r.Alertname == "":
			return fmt.Errorf("rules[%d].alertname is empty", i)
		case r.Action != "drain" && r.Action != "maintenance" && r.Action != "none":
			return fmt.Errorf("rules[%d].action %q: want drain, maintenance or none", i, r.Action)
		}
	}
	for i, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("urls[%d] %q: want http(s)://host:port", i, u)
		}
	}
	if len(c.URLs) > 0 && c.ResendInterval < time.Second {
		return fmt.Errorf("resend_interval %s: want at least 1s", c.ResendInterval)
	}
	return nil
}

// webhook is Alertmanager's webhook payload, version 4.
type webhook struct {
	Version  string         `json:"version"`
	GroupKey string         `json:"groupKey"`
	Status   string         `json:"status"`
	Receiver string         `json:"receiver"`
	Alerts   []webhookAlert `json:"alerts"`
	// Known fields Roost does not use, accepted as they come.
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
}

type webhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// maxWebhook bounds a webhook body.
const maxWebhook = 1 << 20

// parseWebhook decodes and checks a payload strictly; an error names the
// problem and nothing may act on the payload.
func parseWebhook(b []byte) (webhook, error) {
	var w webhook
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return w, fmt.Errorf("not an Alertmanager webhook payload: %w", err)
	}
	if dec.More() {
		return w, errors.New("not an Alertmanager webhook payload: more than one JSON value")
	}
	switch {
	case w.Version != "4":
		return w, fmt.Errorf("version %q: want \"4\"", w.Version)
	case w.Status != "firing" && w.Status != "resolved":
		return w, fmt.Errorf("status %q: want firing or resolved", w.Status)
	case len(w.Alerts) == 0:
		return w, errors.New("no alerts")
	}
	for i, a := range w.Alerts {
		switch {
		case a.Status != "firing" && a.Status != "resolved":
			return w, fmt.Errorf("alerts[%d].status %q: want firing or resolved", i, a.Status)
		case a.Labels["alertname"] == "":
			return w, fmt.Errorf("alerts[%d] has no alertname label", i)
		case a.Fingerprint == "":
			return w, fmt.Errorf("alerts[%d] has no fingerprint", i)
		}
	}
	return w, nil
}

// AlertResult is what the webhook did with one alert.
type AlertResult struct {
	Alert       string `json:"alert"`
	Fingerprint string `json:"fingerprint"`
	Status      string `json:"status"`
	Node        string `json:"node,omitempty"`
	Action      string `json:"action"` // drain, undrain, maintenance-on, maintenance-off, none, duplicate, no-rule, no-node
	Result      string `json:"result"`
}

// webhookHandler carries out alerts through the raft leader.
type webhookHandler struct {
	cfgMu   sync.RWMutex // cfg changes on a reload
	cfg     AlertmanagerConfig
	token   string // "" on the socket: its file mode authorises
	operate func(context.Context, failover.Request) (failover.Reply, error)
	logf    func(msg string, args ...any)

	mu   sync.Mutex
	seen map[string]seenAlert // fingerprint → last status handled
}

type seenAlert struct {
	status string
	at     time.Time
}

// maxSeen bounds the fingerprints remembered for deduplication.
const maxSeen = 10000

func (h *webhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxWebhook+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if len(b) > maxWebhook {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("payload over %d bytes", maxWebhook))
		return
	}
	p, err := parseWebhook(b)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	h.cfgMu.RLock()
	cfg := h.cfg
	h.cfgMu.RUnlock()
	alerts := append([]webhookAlert(nil), p.Alerts...)
	sort.SliceStable(alerts, func(i, j int) bool { return alerts[i].StartsAt.Before(alerts[j].StartsAt) })
	var out []AlertResult
	for _, a := range alerts {
		res, retry := h.handle(r.Context(), cfg, a)
		if retry != nil {
			// No leader now: Alertmanager retries the whole group.
			writeError(w, http.StatusServiceUnavailable, retry)
			return
		}
		h.logf("alert_handled", "alert", res.Alert, "status", res.Status, "node", res.Node, "action", res.Action, "result", res.Result, "dry_run", cfg.DryRun)
		out = append(out, res)
	}
	writeJSON(w, http.StatusOK, out)
}

// handle carries out one alert; retry is set when the whole payload
// should be retried later.
func (h *webhookHandler) handle(ctx context.Context, cfg AlertmanagerConfig, a webhookAlert) (res AlertResult, retry error) {
	res = AlertResult{Alert: a.Labels["alertname"], Fingerprint: a.Fingerprint, Status: a.Status}
	rule, ok := cfg.rule(a.Labels)
	if !ok {
		res.Action, res.Result = "no-rule", "no rule matches"
		return res, nil
	}
	label := rule.NodeLabel
	if label == "" {
		label = "node"
	}
	if res.Node = a.Labels[label]; res.Node == "" {
		res.Action, res.Result = "no-node", fmt.Sprintf("the alert has no %q label", label)
		return res, nil
	}
	if h.duplicate(a) {
		res.Action, res.Result = "duplicate", "already handled"
		return res, nil
	}
	// The alert owns what it does: "alertname/fingerprint" (the
	// fingerprint names the alert's label set, e.g. one disk of a node).
	req := failover.Request{Node: res.Node, Reason: "alert " + res.Alert, Alert: res.Alert + "/" + a.Fingerprint}
	switch {
	case rule.Action == "none":
		res.Action, res.Result = "none", "logged"
		h.remember(a)
		return res, nil
	case a.Status == "firing" && rule.Action == "drain":
		req.Op = failover.OpDrain
	case a.Status == "firing":
		req.Op = failover.OpMaintenanceOn
	case !rule.UndoOnResolve:
		res.Action, res.Result = "none", "resolved; the rule does not undo"
		h.remember(a)
		return res, nil
	case rule.Action == "drain":
		req.Op = failover.OpUndrain
	default:
		req.Op = failover.OpMaintenanceOff
	}
	res.Action = req.Op
	if cfg.DryRun {
		res.Result = "dry run: would " + req.Op + " " + res.Node
		return res, nil
	}
	reply, err := h.operate(ctx, req)
	switch {
	case errors.Is(err, failover.ErrNoLeader):
		return res, err
	case err != nil:
		res.Result = "refused: " + err.Error()
	default:
		res.Result = reply.Message
	}
	h.remember(a)
	return res, nil
}

// setRules replaces the rules and dry run (a configuration reload).
func (h *webhookHandler) setRules(c AlertmanagerConfig) {
	h.cfgMu.Lock()
	defer h.cfgMu.Unlock()
	h.cfg.Rules, h.cfg.DryRun = c.Rules, c.DryRun
}

func (c AlertmanagerConfig) rule(labels map[string]string) (AlertRule, bool) {
	for _, r := range c.Rules {
		if labels["alertname"] != r.Alertname {
			continue
		}
		match := true
		for k, v := range r.Labels {
			match = match && labels[k] == v
		}
		if match {
			return r, true
		}
	}
	return AlertRule{}, false
}

func (h *webhookHandler) duplicate(a webhookAlert) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.seen[a.Fingerprint]
	return ok && s.status == a.Status
}

func (h *webhookHandler) remember(a webhookAlert) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen == nil {
		h.seen = map[string]seenAlert{}
	}
	if len(h.seen) >= maxSeen {
		var oldest string
		var at time.Time
		for fp, s := range h.seen {
			if oldest == "" || s.at.Before(at) {
				oldest, at = fp, s.at
			}
		}
		delete(h.seen, oldest)
	}
	h.seen[a.Fingerprint] = seenAlert{status: a.Status, at: time.Now()}
}

// authorized checks the webhook's bearer token (on TCP).
func (h *webhookHandler) authorized(r *http.Request) bool { return bearer(r, h.token) }

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

// alerter posts Roost's alerts to Alertmanager while this node leads.
type alerter struct {
	cfg    AlertmanagerConfig
	hc     *http.Client
	state  func() failover.State
	leader func() bool
	logf   func(msg string, args ...any)
	posted map[string]amAlert // what holds, as last posted
	// silences are this leader's silences of drained nodes, by node, per
	// Alertmanager URL.
	silences map[string]map[string]string
}

func (al *alerter) run(ctx context.Context) {
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
func (al *alerter) post(ctx context.Context, now time.Time) {
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
func (al *alerter) silence(ctx context.Context, now time.Time) {
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
func (al *alerter) call(ctx context.Context, method, u string, in, out any) error {
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
