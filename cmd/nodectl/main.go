// Command nodectl is the operator's client for roostd: it shows the
// cluster, drains and undrains nodes, moves users, and acknowledges
// freezes, on any node (followers forward writes to the raft leader).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/certs"
	"github.com/roost-mail/roost/cmd/internal/manpage"
	"github.com/roost-mail/roost/version"
)

// Exit codes scripts can rely on.
const (
	exitOK          = 0
	exitError       = 1 // the request failed
	exitUsage       = 2 // not confirmed, or misused
	exitUnreachable = 3 // roostd could not be reached
)

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

type globals struct {
	socket    string
	addr      string
	tokenFile string
	caFile    string
	timeout   time.Duration
}

func execute(args []string, stdout, stderr io.Writer) int {
	var g globals
	code := exitOK
	root := &cobra.Command{
		Use:   "nodectl",
		Short: "Operate a Roost cluster",
		Long: `nodectl talks to roostd: by default to the local agent's unix socket, or with
--addr to any agent's TCP API (TLS and a bearer token).`,
		Example:       "  nodectl status\n  nodectl status --json\n  nodectl --addr 10.0.0.1:7948 --token-file ~/.roost-token --ca-file ca.pem status",
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		// Runnable, so that an unknown command is a misuse (markUsage),
		// not a help page with exit status 0.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("nodectl {{.Version}}\n")
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", envOr("ROOST_SOCKET", api.DefaultSocket), "roostd's unix socket (env ROOST_SOCKET)")
	pf.StringVar(&g.addr, "addr", os.Getenv("ROOST_ADDR"), "roostd's TCP API host:port instead of the socket (env ROOST_ADDR)")
	pf.StringVar(&g.tokenFile, "token-file", os.Getenv("ROOST_TOKEN_FILE"), "file holding the API token, with --addr (env ROOST_TOKEN_FILE)")
	pf.StringVar(&g.caFile, "ca-file", os.Getenv("ROOST_CA_FILE"), "CA that signed roostd's API certificate, with --addr (env ROOST_CA_FILE)")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "how long to wait for roostd; a write sent during a leader election waits this long for the new leader")

	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: nodes, their state and users, leader, freeze and plans",
		Long: `status prints every member the agent knows (name, role, proxy_host, failover
state, load-balancer signal, users routed to it, health, what its peers
reach, gossip state, raft role, address, version), the raft leader and
term, a freeze and why, the plans, and the answering node's own checks and
mail filesystem probes. --json prints the same as stable JSON for scripts.` + exitStatusHelp,
		Example: "  nodectl status\n  nodectl status --json | jq -r '.leader'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			st, err := c.Status(ctx)
			if err != nil {
				code = failCode(err)
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	root.AddCommand(status)
	root.AddCommand(operatorCommands(&g, &code)...)
	manpage.Add(root, "NODECTL")
	markUsage(root)

	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "nodectl:", err)
		var ue usageError
		switch {
		case errors.As(err, &ue):
			code = exitUsage
		case code == exitOK:
			code = exitError
		}
	}
	return code
}

// usageError is a command line that nodectl cannot run as given: an
// unknown command or flag, missing or extra arguments (exit status 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// markUsage makes every misuse of cmd's tree a usageError: bad flags,
// arguments its Args refuse, and an unknown command.
func markUsage(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error {
			if err := args(c, a); err != nil {
				return usageError{err}
			}
			return nil
		}
	} else if cmd.HasSubCommands() {
		cmd.Args = func(c *cobra.Command, a []string) error {
			if len(a) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q", a[0], c.CommandPath())}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		markUsage(sub)
	}
}

func (g globals) client() (*api.Client, error) {
	if g.addr == "" {
		return api.NewUnixClient(g.socket), nil
	}
	if g.tokenFile == "" {
		return nil, fmt.Errorf("--addr needs --token-file")
	}
	b, err := os.ReadFile(g.tokenFile)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if g.caFile != "" {
		pool, err := certs.LoadPool(g.caFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	return api.NewTCPClient(g.addr, tc, strings.TrimSpace(string(b))), nil
}

func printStatus(w io.Writer, st api.Status) {
	printMembers(w, st.Members)
	printCluster(w, st)
	printNodeNotes(w, st.Members)
	printPlans(w, st.Plans)
	printLocal(w, st)
}

// printMembers is status's table of nodes.
func printMembers(w io.Writer, members []api.Member) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tPROXY_HOST\tSTATE\tLB\tUSERS\tWEIGHT\tHEALTH\tPEERS_REACH\tGOSSIP\tRAFT\tADDRESS\tVERSION")
	for _, m := range members {
		name := m.Name
		if m.Self {
			name += " *"
		}
		peers := "-"
		if total := m.PeersReach + len(m.PeersCannot); total > 0 {
			peers = fmt.Sprintf("%d/%d", m.PeersReach, total)
		}
		users := "-"
		if m.Users >= 0 {
			users = fmt.Sprint(m.Users)
		}
		if m.MaxUsers > 0 {
			users += fmt.Sprintf("/%d", m.MaxUsers) // of node.max_users
		}
		state := dash(m.State)
		if m.Cordoned {
			state += ",cordoned"
		}
		if m.DryRun {
			state += ",dry-run"
		}
		weight := "-"
		if m.Weight > 0 {
			weight = strconv.FormatFloat(m.Weight, 'g', -1, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.Role, dash(m.ProxyHost), state, dash(m.LB), users, weight,
			dash(m.Health), peers, m.Gossip, m.Raft, m.Addr, m.Version)
	}
	tw.Flush()
}

// printCluster is the cluster's line, and what holds it: a freeze, a
// pause, a dry run, scheduled drains.
func printCluster(w io.Writer, st api.Status) {
	fmt.Fprintf(w, "\nleader: %s  term: %d  cluster: %s  (* = %s, which answered)\n", dash(st.Leader), st.Term, dash(st.ClusterID), st.Node)
	if st.Frozen != nil {
		fmt.Fprintf(w, "\nFROZEN since %s: %s\n  no automatic moves until `nodectl ack`\n", st.Frozen.Since.Format(time.DateTime), st.Frozen.Reason)
	}
	if p := st.Paused; p != nil {
		until := "until `nodectl resume`"
		if !p.Until.IsZero() {
			until = "until " + p.Until.Format(time.DateTime) + " (or `nodectl resume`)"
		}
		by := ""
		if p.By != "" {
			by = " by " + p.By
		}
		fmt.Fprintf(w, "\nPAUSED since %s%s: %s\n  no automatic failover or failback %s\n", p.Since.Format(time.DateTime), by, p.Reason, until)
	}
	if len(st.DryRun) > 0 {
		fmt.Fprintf(w, "\nDRY RUN (failover.mode): %s decided and reported, nobody moved or kicked\n", strings.Join(st.DryRun, ", "))
	}
	for _, s := range st.Scheduled {
		end := ""
		if s.For != "" {
			end = ", for " + s.For
		}
		fmt.Fprintf(w, "scheduled %s: %s of %s at %s%s: %s\n  `nodectl %s` cancels it\n", s.ID, s.Op, s.Node, s.At.Format(time.DateTime), end, s.Reason,
			map[string]string{"drain": "undrain " + s.Node, "maintenance-on": "maintenance " + s.Node + " off"}[s.Op])
	}
}

// printNodeNotes says why each node is not plainly active and healthy.
func printNodeNotes(w io.Writer, members []api.Member) {
	for _, m := range members {
		if m.Cordoned {
			fmt.Fprintf(w, "%s is cordoned: %s\n  it keeps its users; no plan places users on it until `nodectl uncordon %s`\n", m.Name, m.CordonReason, m.Name)
		}
	}
	for _, m := range members {
		if m.State != "" && m.State != "active" {
			dry := ""
			if m.DryRun {
				dry = " in a dry run (nobody moved, LB up)"
			}
			fmt.Fprintf(w, "%s is %s%s since %s: %s\n", m.Name, m.State, dry, m.StateSince.Format(time.DateTime), m.StateReason)
			if !m.StateUntil.IsZero() {
				fmt.Fprintf(w, "  until %s, then its users come back\n", m.StateUntil.Format(time.DateTime))
			}
			if len(m.HeldBy) > 0 {
				fmt.Fprintf(w, "  held by alert %s: undone when the last resolves (an operator's command takes it over)\n", strings.Join(m.HeldBy, ", "))
			}
		}
	}
	for _, m := range members {
		if m.HealthReason != "" {
			fmt.Fprintf(w, "%s is %s: %s\n", m.Name, m.Health, m.HealthReason)
		}
		if len(m.PeersCannot) > 0 {
			fmt.Fprintf(w, "%s's Dovecot is unreachable from %s\n", m.Name, strings.Join(m.PeersCannot, ", "))
		}
	}
}

// printPlans is status's table of plans.
func printPlans(w io.Writer, plans []api.Plan) {
	if len(plans) > 0 {
		fmt.Fprintln(w, "\nplans:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PLAN\tSTATUS\tNODE\tMOVED\tRATE\tCREATED\tREASON")
		for _, p := range plans {
			status, node, moved, rate := p.Status, p.Node, fmt.Sprint(p.Moved), "-"
			switch p.Kind {
			case "move":
				node = fmt.Sprintf("%q→%s", p.User, p.To)
			case "rebalance":
				node = "(all)"
			}
			if p.Users > 0 {
				moved += fmt.Sprintf("/%d", p.Users)
			}
			if p.Rate > 0 {
				rate = fmt.Sprintf("%d/s", p.Rate)
			}
			if p.DryRun {
				status, moved = "dry-run", fmt.Sprintf("0 (would %d)", p.Would)
			}
			reason := p.Reason
			if p.Error != "" {
				reason += " (" + p.Error + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, status, node, moved, rate, p.Created.Format(time.DateTime), reason)
		}
		tw.Flush()
	}
}

// printLocal is the answering node's own checks and mounts.
func printLocal(w io.Writer, st api.Status) {
	if len(st.Health.Checks) > 0 {
		fmt.Fprintf(w, "\nchecks on %s (%s):\n", st.Node, st.Health.Status)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CHECK\tSTATUS\tSEVERITY\tSINCE\tREASON")
		for _, c := range st.Health.Checks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Status, c.Severity, c.Since.Format(time.TimeOnly), dash(c.Reason))
		}
		tw.Flush()
	}
	if len(st.Mounts) > 0 {
		fmt.Fprintf(w, "\nmail filesystem on %s:\n", st.Node)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "MOUNT\tFSTYPE\tSTATE\tROUND\tREASON")
		for _, m := range st.Mounts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Path, dash(m.FSType), m.Class, m.Total.Round(100*time.Microsecond), dash(m.Reason))
		}
		tw.Flush()
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
