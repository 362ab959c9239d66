package tests

import (
	"os"
	"testing"

	"github.com/roost-mail/roost/routing/routingtest"
)

// TestMain stops the database servers the tests started.
func TestMain(m *testing.M) { os.Exit(routingtest.Main(m)) }
