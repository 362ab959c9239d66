package mailcluster

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

// Session is an IMAP session logged in through HAProxy (emersion/go-imap).
type Session struct {
	User string
	// Node is the short name of the Dovecot that serves it (its IMAP ID
	// says environment "node=b").
	Node string
	*imapclient.Client
}

// Login logs user in through HAProxy and asks which node serves them. It
// gives up after timeout.
func (c *Cluster) Login(user string, timeout time.Duration) (*Session, error) {
	return LoginAt(c.IMAP, user, Password, timeout)
}

// LoginRetry logs user in as a mail client does: a connection that ends
// before the login is answered (a node going out of service, a proxy being
// kicked a moment before) is tried again, up to tries times a second
// apart, each failure logged.
func (c *Cluster) LoginRetry(user string, tries int, timeout time.Duration) (*Session, error) {
	var err error
	for i := range tries {
		var s *Session
		if s, err = c.Login(user, timeout); err == nil {
			return s, nil
		}
		c.t.Logf("login %d of %d for %s failed: %v", i+1, tries, user, err)
		time.Sleep(time.Second)
	}
	return nil, err
}

// LoginAt logs user in at addr.
func LoginAt(addr, user, pass string, timeout time.Duration) (*Session, error) {
	cl, err := imapclient.DialInsecure(addr, &imapclient.Options{Dialer: &net.Dialer{Timeout: timeout}})
	if err != nil {
		return nil, err
	}
	s := &Session{User: user, Client: cl}
	// go-imap has no deadlines: a hung server is given up by closing.
	timer := time.AfterFunc(timeout, func() { cl.Close() })
	defer timer.Stop()
	if err := cl.Login(user, pass).Wait(); err != nil {
		cl.Close()
		return nil, fmt.Errorf("login %s: %w", user, err)
	}
	id, err := cl.ID(&imap.IDData{Name: "roost-mailcluster"}).Wait()
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("ID for %s: %w", user, err)
	}
	s.Node = strings.TrimPrefix(id.Environment, "node=")
	if !timer.Stop() {
		return nil, fmt.Errorf("login %s: timed out after %s", user, timeout)
	}
	return s, nil
}

// Ended waits up to timeout for the server to end the session, and says
// whether it did.
func (s *Session) Ended(timeout time.Duration) bool {
	select {
	case <-s.Closed():
		return true
	default:
	}
	select {
	case <-s.Closed():
		return true
	case <-time.After(timeout):
		return false
	}
}

// Alive says whether the session still answers a NOOP within timeout.
func (s *Session) Alive(timeout time.Duration) bool {
	done := make(chan error, 1)
	go func() { done <- s.Noop().Wait() }()
	select {
	case err := <-done:
		return err == nil
	case <-time.After(timeout):
		return false
	}
}

// LoginAll logs every user in through HAProxy, 16 at a time.
func (c *Cluster) LoginAll(users []string) ([]*Session, error) {
	out := make([]*Session, len(users))
	errs := make([]error, len(users))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = c.Login(u, 15*time.Second)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, s := range out {
			if s != nil {
				s.Close()
			}
		}
		return nil, err
	}
	return out, nil
}

// Deliver sends one message to rcpt over LMTP through HAProxy, the way an
// MTA's queue does: it returns nil only when the server accepted the
// message for rcpt, and the error says whether a retry may help.
func (c *Cluster) Deliver(rcpt, messageID string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", c.LMTP, timeout)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	cl := smtp.NewClientLMTP(conn)
	defer cl.Close()
	if err := cl.Hello("mailcluster.test"); err != nil {
		return err
	}
	if err := cl.Mail("sender@example.org", nil); err != nil {
		return err
	}
	if err := cl.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := cl.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: sender@example.org\r\nTo: %s\r\nMessage-ID: <%s>\r\nSubject: %s\r\n\r\nDelivered through HAProxy during a failover.\r\n", rcpt, messageID, messageID)
	resp, err := w.CloseWithLMTPResponse()
	if err != nil {
		return err
	}
	if r, ok := resp[rcpt]; !ok || r == nil {
		return fmt.Errorf("no LMTP status for %s", rcpt)
	}
	_ = conn.SetDeadline(time.Now().Add(timeout)) // go-smtp cleared it after DATA
	_ = cl.Quit()
	return nil
}

// FirstLogin measures how long after since user first logs in through
// HAProxy on a node other than bad: it starts a login every 50 ms (a
// user's phone, laptop and webmail all retrying), each with its own
// timeout, and returns when one lands; a login still waiting on the bad
// node does not hold up the next.
func (c *Cluster) FirstLogin(user, bad string, since time.Time, timeout time.Duration) (time.Duration, error) {
	won := make(chan time.Duration, 1)
	stop := make(chan struct{})
	defer close(stop)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		go func() {
			s, err := c.Login(user, 10*time.Second)
			if err != nil {
				return
			}
			at := time.Since(since)
			s.Close()
			if s.Node != bad {
				select {
				case won <- at:
				default:
				}
			}
		}()
		select {
		case d := <-won:
			return d, nil
		case <-deadline:
			return 0, fmt.Errorf("%s did not log in on a node other than %s within %s", user, bad, timeout)
		case <-tick.C:
		}
	}
}
