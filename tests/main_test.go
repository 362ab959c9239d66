package tests

import (
	"github.com/roost-mail/roost/fsprobe"
	"os"
	"testing"

	"github.com/roost-mail/roost/routing/routingtest"
)

// TestMain stops the database servers the tests started and removes the
// binaries they built.
func TestMain(m *testing.M) {
	fsprobe.MaybeHelper() // this binary is also the probe helper of the agents it runs
	code := routingtest.Main(m)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
