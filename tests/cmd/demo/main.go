// Command demo is make demo: the whole Roost mail cluster on loopback for
// a person to watch. It starts a users table (SQLite, or PostgreSQL with
// -db postgres), three Dovecot nodes on one shared faultfs filesystem,
// HAProxy and three roostd agents; logs every user in through HAProxy;
// kills node2's Dovecot and shows, as it happens, Roost noticing, moving
// node2's users and the cluster converging; then brings Dovecot back and
// the users home. It keeps running until Ctrl-C, then ends everything it
// started (only that). ROOST_DEMO_ONESHOT=1 exits after the show.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/roost-mail/roost/tests/dovecotlab"
	"github.com/roost-mail/roost/tests/mailcluster"
)

func main() {
	db := flag.String("db", "sqlite", "the users table's database: sqlite or postgres")
	bin := flag.String("bin", "bin", "the directory with roostd and nodectl (make build)")
	dovecot := flag.String("dovecot", "2.3", "the Dovecot the nodes run: 2.3 (this host's) or 2.4 (scripts/dovecot24-root.sh)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: run as root (sudo make demo): it mounts FUSE and runs Dovecot")
		os.Exit(2)
	}
	if *dovecot != "2.3" && *dovecot != "2.4" {
		fmt.Fprintf(os.Stderr, "demo: -dovecot %q: want 2.3 or 2.4\n", *dovecot)
		os.Exit(2)
	}
	// A reader that goes away (`make demo | tee log` and Ctrl-C, which
	// ends tee too) must not kill the demo before its cleanup: with
	// SIGPIPE ignored a write to it fails, and every write's error is
	// ignored.
	signal.Ignore(syscall.SIGPIPE)
	p := mailcluster.NewProg("demo", os.Stdout)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan error, 1)
	go func() { done <- p.Run(func() { show(p, *db, *bin, *dovecot) }) }()
	var err error
	select {
	case err = <-done:
		if err == nil && os.Getenv("ROOST_DEMO_ONESHOT") == "" {
			<-stop // the cluster keeps running for the person to try
			fmt.Println("\nstopping")
		}
		step("cleaning up: HAProxy, agents, Dovecot, mounts, database")
		p.Close()
	case <-stop:
		fmt.Println("\nstopping")
		step("cleaning up: HAProxy, agents, Dovecot, mounts, database")
		p.Close()
		// The show may still be starting things: each is ended as it
		// registers; wait for the show to give up.
		select {
		case <-done:
		case <-time.After(time.Minute):
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(s string) { fmt.Printf("\n\033[1m== %s\033[0m\n", s) }

func show(p *mailcluster.Prog, db, bin, dovecot string) {
	version, err := dovecotlab.Command(dovecot, "dovecot", "--version").Output()
	if err != nil {
		p.Fatalf("dovecot --version (Dovecot %s): %v", dovecot, err)
	}
	step(fmt.Sprintf("starting a mail cluster: %s users table, three Dovecot %s nodes on a shared FUSE filesystem, HAProxy, three roostd", db, strings.TrimSpace(string(version))))
	c := mailcluster.Start(p, mailcluster.Options{DB: db, Bin: bin, Dovecot: dovecot})
	n1 := c.Nodes[0]
	ctl := func(args ...string) {
		out, err := c.Ctl(n1, args...)
		fmt.Print(out)
		if err != nil {
			p.Fatalf("nodectl %s: %v", strings.Join(args, " "), err)
		}
	}
	step("nodectl status")
	ctl("status")

	step(fmt.Sprintf("%d users log in through HAProxy (%s) and stay logged in", len(c.Users), c.IMAP))
	held, err := c.LoginAll(c.Users)
	if err != nil {
		p.Fatal(err)
	}
	served := map[string]int{}
	for _, s := range held {
		served[s.Node]++
	}
	fmt.Printf("served by node a: %d, b: %d, c: %d (each user on the node its proxy_host names)\n", served["a"], served["b"], served["c"])

	b := c.Nodes[1]
	step(fmt.Sprintf("breaking node2: kill -9 of its Dovecot master (pid file %s)", b.Dovecot.PIDFile()))
	start := time.Now()
	b.Dovecot.Kill9()
	watch(c, b, held, start)
	step("nodectl status")
	ctl("status")
	step("nodectl history --node node2 --limit 3")
	ctl("history", "--node", b.Name, "--limit", "3")

	step("restarting node2's Dovecot, then: nodectl failback node2 --yes")
	b.Dovecot.Start()
	c.WaitFor(30*time.Second, "node2 passing again in every agent's view", func() bool { return c.Recovered(b) })
	ctl("failback", b.Name, "--yes")
	start = time.Now()
	c.WaitFor(60*time.Second, "node2's users home", func() bool {
		m, _ := c.Member(n1, b.Name)
		return c.UsersOn(b.Host) == len(c.UsersOf(b)) && m.State == "active"
	})
	fmt.Printf("node2's %d users are home and node2 is active again after %s\n", len(c.UsersOf(b)), since(start))
	step("nodectl status")
	ctl("status")

	if os.Getenv("ROOST_DEMO_ONESHOT") != "" {
		return
	}
	step("the cluster keeps running; try, in another shell:")
	nodectl := c.Nodectl + " --socket " + n1.Socket
	fmt.Printf("  %s status\n  %s drain node3 --reason test --wait\n  %s undrain node3 --yes\n  %s where %s\n",
		nodectl, nodectl, nodectl, nodectl, c.Users[2])
	fmt.Printf("  configs and logs: %s (node1.yaml, node1.log, …); HAProxy: %s\n", c.Dir, c.HAProxy.Config)
	fmt.Println("Ctrl-C stops everything the demo started.")
}

// watch prints, as they happen, what the cluster does about node b.
func watch(c *mailcluster.Cluster, b *mailcluster.Node, held []*mailcluster.Session, start time.Time) {
	mine := 0
	for _, s := range held {
		if s.Node == b.Short {
			mine++
		}
	}
	relogin := make(chan string, 1)
	go func() {
		user := c.UsersOf(b)[0]
		d, err := c.FirstLogin(user, b.Short, start, 60*time.Second)
		if err != nil {
			relogin <- err.Error()
			return
		}
		s, err := c.Login(user, 10*time.Second)
		node := "?"
		if err == nil {
			node = s.Node
			s.Close()
		}
		relogin <- fmt.Sprintf("+%.1fs  %s logs in through HAProxy again, now on node %s", d.Seconds(), user, node)
	}()
	seen := map[string]bool{}
	say := func(key, format string, args ...any) {
		if !seen[key] {
			seen[key] = true
			fmt.Printf("+%s  %s\n", since(start), fmt.Sprintf(format, args...))
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(seen) < 6 && time.Now().Before(deadline) {
		select {
		case line := <-relogin:
			fmt.Println(line)
			seen["relogin"] = true
		case <-time.After(100 * time.Millisecond):
		}
		if st, err := c.Status(c.Nodes[0]); err == nil {
			for _, m := range st.Members {
				if m.Name == b.Name && m.Health == "critical" {
					say("critical", "node2's agent reports it critical: %s", m.HealthReason)
				}
			}
			for _, pl := range st.Plans {
				if pl.Node != b.Name || pl.Kind != "failover" {
					continue
				}
				say("plan", "leader %s starts plan %s: %s", st.Leader, pl.ID, pl.Reason)
				if pl.Status == "done" {
					say("done", "plan %s done: %d users moved off node2 (proxy_host rewritten, journaled)", pl.ID, pl.Moved)
				}
			}
		}
		if strings.HasPrefix(c.HAProxy.Stat("imap")[b.Name].Status, "DOWN") {
			say("haproxy", "HAProxy marks node2 DOWN (roostd's agent-check says down)")
		}
		ended := 0
		for _, s := range held {
			if s.Node == b.Short && s.Ended(0) {
				ended++
			}
		}
		if ended == mine {
			say("ended", "all %d IMAP sessions of node2's users have ended; their clients reconnect to a healthy node", mine)
		}
	}
	a, cc := 0, 0
	for _, u := range c.UsersOf(b) {
		switch c.HostOf(u) {
		case c.Nodes[0].Host:
			a++
		case c.Nodes[2].Host:
			cc++
		}
	}
	fmt.Printf("node2's %d users now live on node1 (%d) and node3 (%d)\n", len(c.UsersOf(b)), a, cc)
}

func since(t time.Time) string { return fmt.Sprintf("%.1fs", time.Since(t).Seconds()) }
