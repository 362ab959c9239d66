package agent

import (
	"fmt"
	"reflect"
)

// Reload applies what of a new configuration can change while the agent
// runs: the failover policy (block period, failback, rates, thresholds,
// settle) and the Alertmanager webhook's rules and dry run. It returns
// what it applied and the keys that differ but need a restart; the log
// level is the caller's (it owns the logger). An invalid configuration
// changes nothing.
func (a *Agent) Reload(next Config) (applied, restart []string, err error) {
	if err := next.Validate(); err != nil {
		return nil, nil, err
	}
	if err := next.CheckFiles(); err != nil {
		return nil, nil, err
	}
	cur := a.cfg
	if !reflect.DeepEqual(cur.Failover.Policy, next.Failover.Policy) {
		if a.leading != nil {
			a.leading.SetPolicy(next.Failover.Policy)
		}
		applied = append(applied, "failover policy")
	}
	if !reflect.DeepEqual(cur.Alertmanager.Rules, next.Alertmanager.Rules) || cur.Alertmanager.DryRun != next.Alertmanager.DryRun {
		a.hook.SetRules(next.Alertmanager)
		applied = append(applied, "alertmanager.rules and dry_run")
	}
	// Everything else, section by section (the log level aside).
	cur.Failover.Policy = next.Failover.Policy
	cur.Alertmanager.Rules, cur.Alertmanager.DryRun = next.Alertmanager.Rules, next.Alertmanager.DryRun
	cur.Log.Level = next.Log.Level
	cv, nv := reflect.ValueOf(cur), reflect.ValueOf(next)
	for i := range cv.NumField() {
		if !reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
			restart = append(restart, yamlKey(cv.Type().Field(i)))
		}
	}
	// Later reloads compare against what is in force.
	a.cfg.Failover.Policy = next.Failover.Policy
	a.cfg.Alertmanager.Rules, a.cfg.Alertmanager.DryRun = next.Alertmanager.Rules, next.Alertmanager.DryRun
	return applied, restart, nil
}

func yamlKey(f reflect.StructField) string {
	if k := f.Tag.Get("yaml"); k != "" {
		return k
	}
	return fmt.Sprint(f.Name)
}
