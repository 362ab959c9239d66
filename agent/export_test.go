package agent

import (
	"sync/atomic"
	"time"
)

// StallWatch makes the watch loop (the health loop) stop going round
// while stall is set; call it before starting agents, undo after.
func StallWatch(stall *atomic.Bool) (undo func()) {
	testHookWatch = func() {
		for stall.Load() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return func() { testHookWatch = nil }
}
