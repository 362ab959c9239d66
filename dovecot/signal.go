package dovecot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/procfs"
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
// the Dovecot with this instance_name.
func isInstanceProcess(pid int, instance string) bool {
	_, ok := instanceService(title(pid), instance)
	return ok
}

// title is pid's process title ("" if it is gone): Dovecot writes it over
// its argv, so it is the command line's first field.
func title(pid int) string {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return ""
	}
	args, err := p.CmdLine()
	if err != nil || len(args) == 0 {
		return ""
	}
	return args[0]
}

// instanceService is the service a process title names if the title is
// that of the Dovecot with this instance_name: "dovecot/imap" for the
// default instance, "dovecot-NAME/imap" for another (Dovecot 2.3), or
// "NAME/imap"; verbose_proctitle's " [user ip]" is not part of it.
func instanceService(title, instance string) (string, bool) {
	service, ok := strings.CutPrefix(title, instance+"/")
	if !ok {
		if service, ok = strings.CutPrefix(title, "dovecot-"+instance+"/"); !ok {
			return "", false
		}
	}
	service, _, _ = strings.Cut(service, " ")
	return service, true
}

// MailServices are the services whose processes serve a user's mailbox
// and end with their sessions; LMTP deliveries are left to finish.
var MailServices = []string{"imap", "pop3", "managesieve", "submission"}

// EndOrphans sends SIGTERM to the mail processes (MailServices) of the
// Dovecot with this instance_name whose master is gone: after a master
// dies, they keep serving their sessions for a while, on maildirs that
// another node serves once the users are moved. A process is an orphan
// when its parent is not a running dovecot master. It returns the pids it
// signalled.
func EndOrphans(instance string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var ended []int
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !isMailProcess(pid, instance) {
			continue
		}
		if ppid := parentPID(pid); ppid > 0 && isMaster(ppid) {
			continue
		}
		switch err := syscall.Kill(pid, syscall.SIGTERM); {
		case err == nil:
			ended = append(ended, pid)
		case errors.Is(err, syscall.ESRCH):
		default:
			errs = append(errs, fmt.Errorf("signalling orphan pid %d: %w", pid, err))
		}
	}
	return ended, errors.Join(errs...)
}

// isMailProcess reports whether pid is a mail process (not a login,
// auth or other helper) of the Dovecot with this instance_name.
func isMailProcess(pid int, instance string) bool {
	service, ok := instanceService(title(pid), instance)
	return ok && slices.Contains(MailServices, service)
}

// parentPID is pid's parent (0 if it is gone).
func parentPID(pid int) int {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	return st.PPID
}

// isMaster reports whether pid runs the dovecot master binary.
func isMaster(pid int) bool {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	exe, err := p.Executable()
	return err == nil && filepath.Base(exe) == "dovecot"
}
