package sweep

import (
	"slices"
	"testing"
)

// Only users the routing table places on another node are stray: not a
// user at home, nor one the table does not name (a filter excludes it, or
// the lookup missed it), and a name is matched exactly, bytes and case.
func TestStrayAreTheUsersRoutedElsewhere(t *testing.T) {
	users := []string{"home", "moved", "unknown", "Moved", "lat\xe9n"}
	hosts := map[string]string{"home": "10.0.0.1", "moved": "10.0.0.2", "Moved": "10.0.0.1", "lat\xe9n": "10.0.0.3"}
	got := Stray(users, hosts, "10.0.0.1")
	if want := []string{"moved", "lat\xe9n"}; !slices.Equal(got, want) {
		t.Fatalf("stray %q, want %q", got, want)
	}
	if got := Stray(users, nil, "10.0.0.1"); got != nil {
		t.Fatalf("with no routing answer, stray %q, want none", got)
	}
}
