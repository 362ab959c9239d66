package dovecot

import (
	"context"
	"errors"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// MasterPID finds the running master of the Dovecot with this
// instance_name: the parent of its processes (anvil, log, config are
// always there) that runs the dovecot binary. 0 when none runs.
func MasterPID(instance string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !isInstanceProcess(pid, instance) {
			continue
		}
		if ppid := parentPID(pid); ppid > 0 && isMaster(ppid) {
			return ppid
		}
	}
	return 0
}

// WatchMaster calls exited the moment the Dovecot master of this
// instance_name exits (a pidfd becomes readable then: no polling of the
// process table on the hot path), and looks for a master again every
// retry while none runs. It returns when ctx ends. exited must not block.
func WatchMaster(ctx context.Context, instance string, retry time.Duration, exited func(pid int)) {
	for ctx.Err() == nil {
		pid := MasterPID(instance)
		if pid == 0 {
			sleep(ctx, retry)
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			if !errors.Is(err, unix.ESRCH) {
				sleep(ctx, retry) // no pidfd (a kernel before 5.3): nothing to watch
			}
			continue
		}
		if waitExit(ctx, fd) {
			exited(pid)
		}
		unix.Close(fd)
	}
}

// waitExit waits for a pidfd to turn readable (its process exited) and
// reports whether it did before ctx ended. Each poll is short, so ctx is
// honoured within pollSlice.
func waitExit(ctx context.Context, fd int) bool {
	const pollSlice = 200 // ms
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, pollSlice)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
		if n > 0 {
			return true
		}
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
