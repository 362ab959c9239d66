package tests

import (
	"os"
	"testing"

	"github.com/roost-mail/roost/routing/routingtest"
)

// TestMain stops the database servers the tests started and removes the
// binaries they built.
func TestMain(m *testing.M) {
	code := routingtest.Main(m)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
