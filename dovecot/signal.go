package dovecot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// SignalKick ends users' sessions on this node the way doveadm kick does:
// SIGTERM to their mail processes, which say "* BYE Server shutting
// down." to the client. It lists the sessions once through a (HTTP or
// local), and signals only processes whose title names instance
// (Dovecot's instance_name), so a recycled pid of another program, or
// another Dovecot's process, is never hit. It returns how many users had a process
// signalled; users without sessions are not an error.
func SignalKick(ctx context.Context, a Admin, instance string, users []string) (int, error) {
	want := make(map[string]bool, len(users))
	for _, u := range users {
		want[u] = true
	}
	sessions, err := a.Who(ctx)
	if err != nil {
		return 0, err
	}
	kicked := map[string]bool{}
	var errs []error
	for _, s := range sessions {
		if !want[s.User] {
			continue
		}
		for _, pid := range s.PIDs {
			if !isInstanceProcess(pid, instance) {
				continue // gone already, or not this Dovecot's
			}
			switch err := syscall.Kill(pid, syscall.SIGTERM); {
			case err == nil:
				kicked[s.User] = true
			case errors.Is(err, syscall.ESRCH): // exited meanwhile
			default:
				errs = append(errs, fmt.Errorf("kicking %q: signalling pid %d: %w", s.User, pid, err))
			}
		}
	}
	return len(kicked), errors.Join(errs...)
}

// isInstanceProcess reports whether pid's title is that of a process of
// the Dovecot with this instance_name: "dovecot/imap" for the default
// instance, "dovecot-NAME/imap" for another (Dovecot 2.3), or "NAME/imap".
func isInstanceProcess(pid int, instance string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && (bytes.HasPrefix(b, []byte(instance+"/")) || bytes.HasPrefix(b, []byte("dovecot-"+instance+"/")))
}
