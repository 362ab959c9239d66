package dovecot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	title, _, _ := bytes.Cut(b, []byte{0})
	var service []byte
	var ok bool
	if service, ok = bytes.CutPrefix(title, []byte(instance+"/")); !ok {
		if service, ok = bytes.CutPrefix(title, []byte("dovecot-"+instance+"/")); !ok {
			return false
		}
	}
	service, _, _ = bytes.Cut(service, []byte(" ")) // verbose_proctitle adds " [user ip]"
	for _, s := range MailServices {
		if string(service) == s {
			return true
		}
	}
	return false
}

// parentPID reads pid's parent from /proc/PID/stat (0 if it is gone).
func parentPID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	return ppid
}

// isMaster reports whether pid runs the dovecot master binary.
func isMaster(pid int) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil && filepath.Base(exe) == "dovecot"
}
