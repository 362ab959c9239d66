package failover

import (
	"fmt"
	"testing"
)

// A log line names what a command is about, and nothing empty.
func TestCommandLogAttrs(t *testing.T) {
	for _, tc := range []struct {
		cmd  command
		want string
	}{
		{command{Op: opPlanStart, Plan: &Plan{Kind: "failover", Node: "node2", Reason: "critical"}}, "[op plan-start kind failover node node2 reason critical]"},
		{command{Op: opSetNode, Node: "node2", State: Failed, Reason: "dead"}, "[op set-node node node2 state failed reason dead]"},
		{command{Op: opPlanEnd, PlanID: "000001-drain"}, "[op plan-end plan 000001-drain]"},
	} {
		if got := fmt.Sprint(tc.cmd.attrs()); got != tc.want {
			t.Errorf("attrs %s, want %s", got, tc.want)
		}
	}
}
