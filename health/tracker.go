package health

import (
	"fmt"
	"sort"
	"time"
)

// Status of a check or of the node.
type Status string

// Statuses, from good to bad.
const (
	Passing  Status = "passing"
	Warning  Status = "warning"
	Critical Status = "critical"
)

// Severity is what a failing check makes the node: critical checks (the
// mail ports, the mount) fail the node; warning checks only warn.
type Severity string

// Severities.
const (
	SeverityCritical Severity = "critical"
	SeverityWarning  Severity = "warning"
)

// CheckState is one check's state after hysteresis.
type CheckState struct {
	Name     string    `json:"name"`
	Status   Status    `json:"status"`
	Severity Severity  `json:"severity"`
	Reason   string    `json:"reason,omitempty"` // the last error while not passing
	Since    time.Time `json:"since"`
	okRun    int
	failRun  int
}

// Tracker applies fall/rise hysteresis, as HAProxy does: a passing check
// turns failing after fall consecutive failures, a failing one passes
// again after rise consecutive successes. A check seen for the first time
// starts passing. Immediate failures (a vanished mount) skip the fall
// count. Tracker is not safe for concurrent use.
type Tracker struct {
	fall, rise int
	checks     map[string]*CheckState
}

// NewTracker makes a tracker with the given fall and rise counts.
func NewTracker(fall, rise int) *Tracker {
	return &Tracker{fall: fall, rise: rise, checks: map[string]*CheckState{}}
}

// Observe records one result and reports whether the check's status
// changed.
func (t *Tracker) Observe(name string, sev Severity, err error, immediate bool, now time.Time) bool {
	c, ok := t.checks[name]
	if !ok {
		c = &CheckState{Name: name, Status: Passing, Severity: sev, Since: now}
		t.checks[name] = c
	}
	c.Severity = sev
	failing := Status(sev)
	if err == nil {
		c.failRun, c.okRun = 0, c.okRun+1
		if c.Status != Passing && c.okRun >= t.rise {
			c.Status, c.Reason, c.Since = Passing, "", now
			return true
		}
		return false
	}
	c.okRun, c.failRun = 0, c.failRun+1
	if c.Status == failing {
		c.Reason = err.Error() // keep the reason current while failing
		return false
	}
	// A passing check fails after fall rounds (or at once when immediate);
	// one already failing at the other severity (slow, then hung) switches
	// at once.
	if c.failRun >= t.fall || immediate || c.Status != Passing {
		c.Status, c.Reason, c.Since = failing, err.Error(), now
		return true
	}
	return false
}

// Settling reports whether a check's latest results disagree with its
// status: a passing check that failed lately, or a failing one that passed
// lately. HAProxy re-checks such a server at fastinter, so the change is
// confirmed (or not) in a fraction of the interval.
func (t *Tracker) Settling(name string) bool {
	c, ok := t.checks[name]
	return ok && ((c.Status == Passing && c.failRun > 0) || (c.Status != Passing && c.okRun > 0))
}

// Failing reports whether a check is failing now (after hysteresis).
func (t *Tracker) Failing(name string) bool {
	c, ok := t.checks[name]
	return ok && c.Status != Passing
}

// Checks returns every check's state, sorted by name.
func (t *Tracker) Checks() []CheckState {
	out := make([]CheckState, 0, len(t.checks))
	for _, c := range t.checks {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Node derives the node's status: critical if any critical check fails,
// warning if only warning checks fail, passing otherwise; with the reasons.
func (t *Tracker) Node() (Status, []string) {
	status := Passing
	var critical, warning []string
	for _, c := range t.Checks() {
		switch c.Status {
		case Critical:
			status = Critical
			critical = append(critical, fmt.Sprintf("%s: %s", c.Name, c.Reason))
		case Warning:
			if status == Passing {
				status = Warning
			}
			warning = append(warning, fmt.Sprintf("%s: %s", c.Name, c.Reason))
		}
	}
	// What makes the node critical comes first: status lines and plan
	// reasons are cut short.
	return status, append(critical, warning...)
}
