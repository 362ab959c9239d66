package agent_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every agent a test starts must leave no goroutine behind once stopped.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
