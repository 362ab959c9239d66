package failover

import "context"

// Hooks are the operator's scripts around moves, as operators know them
// from Dovemon's update script and orchestrator. The leader runs them.
type Hooks interface {
	// PreMove runs before a plan's first batch; an error vetoes the plan,
	// which ends canceled with the error as its reason.
	PreMove(ctx context.Context, p Plan) error
	// PostMove runs after a plan ends (done or canceled).
	PostMove(ctx context.Context, p Plan)
	// NodeState runs after a node's failover state changed.
	NodeState(ctx context.Context, node string, from, to NodeRecord)
}
