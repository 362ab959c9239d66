package agent_test

import (
	"testing"

	"github.com/roost-mail/roost/fsprobe"

	"go.uber.org/goleak"
)

// Every agent a test starts must leave no goroutine behind once stopped.
func TestMain(m *testing.M) {
	fsprobe.MaybeHelper() // this binary is also the probe helper of the agents it runs
	goleak.VerifyTestMain(m)
}
