// Package alerting connects Roost and Prometheus' Alertmanager both ways:
// Alertmanager's webhook drains nodes through the raft leader (Webhook),
// and the leader posts Roost's own alerts and silences drained nodes
// (Alerter).
package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/failover"
)

// Config connects Roost and Prometheus' Alertmanager both
// ways: Alertmanager's webhook can drain nodes, and Roost posts its own
// alerts.
type Config struct {
	// WebhookTokenFile holds the bearer token Alertmanager sends to
	// POST /v1/alertmanager on api.listen (http_config.authorization).
	// Empty: the webhook is served on the local socket only.
	WebhookTokenFile string `yaml:"webhook_token_file"`
	// DryRun logs and answers what the webhook would do, and does nothing.
	DryRun bool `yaml:"dry_run"`
	// Rules map alerts to actions; the first that matches wins.
	Rules []Rule `yaml:"rules"`
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

// Rule maps an alert to an action on the node one of its labels
// names.
type Rule struct {
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
func (c Config) Validate() error {
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

// Result is what the webhook did with one alert.
type Result struct {
	Alert       string `json:"alert"`
	Fingerprint string `json:"fingerprint"`
	Status      string `json:"status"`
	Node        string `json:"node,omitempty"`
	Action      string `json:"action"` // drain, undrain, maintenance-on, maintenance-off, none, duplicate, no-rule, no-node
	Result      string `json:"result"`
}

// Webhook carries out Alertmanager's alerts through the raft leader, as
// the configured rules say.
type Webhook struct {
	cfgMu   sync.RWMutex // cfg changes on a reload
	cfg     Config
	token   string // "" on the socket: its file mode authorises
	operate func(context.Context, failover.Request) (failover.Reply, error)
	logf    func(msg string, args ...any)

	mu   sync.Mutex
	seen map[string]seenAlert // fingerprint → last status handled
}

// NewWebhook serves Alertmanager's webhook with cfg's rules. token is the
// bearer token Alertmanager sends on TCP ("" on the local socket, where
// the file mode authorises); operate carries out a request on the leader.
func NewWebhook(cfg Config, token string, operate func(context.Context, failover.Request) (failover.Reply, error), logf func(msg string, args ...any)) *Webhook {
	return &Webhook{cfg: cfg, token: token, operate: operate, logf: logf}
}

type seenAlert struct {
	status string
	at     time.Time
}

// maxSeen bounds the fingerprints remembered for deduplication.
const maxSeen = 10000

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxWebhook+1))
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err)
		return
	}
	if len(b) > maxWebhook {
		api.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("payload over %d bytes", maxWebhook))
		return
	}
	p, err := parseWebhook(b)
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err)
		return
	}
	h.cfgMu.RLock()
	cfg := h.cfg
	h.cfgMu.RUnlock()
	alerts := append([]webhookAlert(nil), p.Alerts...)
	sort.SliceStable(alerts, func(i, j int) bool { return alerts[i].StartsAt.Before(alerts[j].StartsAt) })
	var out []Result
	for _, a := range alerts {
		res, retry := h.handle(r.Context(), cfg, a)
		if retry != nil {
			// No leader now: Alertmanager retries the whole group.
			api.WriteError(w, http.StatusServiceUnavailable, retry)
			return
		}
		h.logf("alert_handled", "alert", res.Alert, "status", res.Status, "node", res.Node, "action", res.Action, "result", res.Result, "dry_run", cfg.DryRun)
		out = append(out, res)
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// handle carries out one alert; retry is set when the whole payload
// should be retried later.
func (h *Webhook) handle(ctx context.Context, cfg Config, a webhookAlert) (res Result, retry error) {
	res = Result{Alert: a.Labels["alertname"], Fingerprint: a.Fingerprint, Status: a.Status}
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

// SetRules replaces the rules and dry run (a configuration reload).
func (h *Webhook) SetRules(c Config) {
	h.cfgMu.Lock()
	defer h.cfgMu.Unlock()
	h.cfg.Rules, h.cfg.DryRun = c.Rules, c.DryRun
}

func (c Config) rule(labels map[string]string) (Rule, bool) {
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
	return Rule{}, false
}

func (h *Webhook) duplicate(a webhookAlert) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.seen[a.Fingerprint]
	return ok && s.status == a.Status
}

func (h *Webhook) remember(a webhookAlert) {
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
func (h *Webhook) Authorized(r *http.Request) bool { return api.Bearer(r, h.token) }
