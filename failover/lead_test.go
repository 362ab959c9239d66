package failover

import (
	"testing"
	"time"
)

// The leader decides again when a failing node's lease runs out: the
// earliest such expiry still ahead, nothing for nodes that are not failing
// or whose lease has run out already.
func TestNextExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	soon, later := now.Add(300*time.Millisecond), now.Add(time.Second)
	for _, tc := range []struct {
		name string
		view []NodeView
		want time.Time
	}{
		{"nobody failing", []NodeView{{Name: "a", LeaseExpiry: soon}}, time.Time{}},
		{"one failing", []NodeView{{Name: "a", FailingSince: now, LeaseExpiry: later}}, later},
		{"the earliest of two", []NodeView{{Name: "a", FailingSince: now, LeaseExpiry: later}, {Name: "b", FailingSince: now, LeaseExpiry: soon}}, soon},
		{"expired already", []NodeView{{Name: "a", FailingSince: now, LeaseExpiry: now.Add(-time.Millisecond)}}, time.Time{}},
		{"a healthy node's expiry does not count", []NodeView{{Name: "a", LeaseExpiry: soon}, {Name: "b", FailingSince: now, LeaseExpiry: later}}, later},
	} {
		if got := nextExpiry(tc.view, now); !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
