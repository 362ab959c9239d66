package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/placement"
)

// failCode is the exit status for an error talking to roostd: 3 when it
// could not be reached, 1 when it answered with an error.
func failCode(err error) int {
	var se *api.StatusError
	if errors.As(err, &se) {
		return exitError
	}
	if errors.Is(err, api.ErrUnreachable) {
		return exitUnreachable
	}
	return exitError
}

// postThroughElection posts an operator's write and rides out a leader
// change: while roostd answers 503 (no leader, or the leader it forwarded
// to stepped down), it says once on warn that it waits, and tries again
// with a growing pause until ctx (--timeout) ends. A write that failed
// with 503 was not carried out, so sending it again is safe.
func postThroughElection(ctx context.Context, c *api.Client, warn io.Writer, path string, req api.OpRequest) (api.OpReply, error) {
	pause := 200 * time.Millisecond
	for waited := false; ; {
		r, err := c.Post(ctx, path, req)
		var se *api.StatusError
		if err == nil || !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
			return r, err
		}
		if !waited {
			fmt.Fprintf(warn, "nodectl: %s; waiting for a leader\n", se.Message)
			waited = true
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("no leader took the request before --timeout ran out: %w", err)
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// userHelp is how a user name that is not plain text is given.
const userHelp = `

A USER that is not printable UTF-8 without spaces is printed quoted, as Go
quotes strings, and is given the same way: nodectl where '"lat\xe9n@example.com"'.
A name given as raw bytes is quoted for you.`

// userArg is a user name as the API takes it: raw bytes a shell passed
// are quoted, anything else goes as typed (roostd reads quoted names).
func userArg(s string) string {
	if !utf8.ValidString(s) {
		return placement.ShowUser(s)
	}
	return s
}

const exitStatusHelp = `

Exit status: 0 on success, 1 on an error (roostd's answer says which),
2 when not confirmed or misused, 3 when roostd cannot be reached.`

// opCmds builds the writes (carried out by the raft leader, from any node)
// and the routing lookups, one method per verb. The flags live here: one
// command runs per process.
type opCmds struct {
	g    *globals
	code *int
	// warn is where a write says that it waits for a leader (stderr).
	warn io.Writer
	// writeJSON: the writes print roostd's answer as JSON.
	writeJSON bool

	reason             string
	rate, most         int
	wait, dryRun, yes  bool
	waitTimeout, lasts time.Duration
	until, at          string
	asJSON             bool
}

// operatorCommands are the writes and the routing lookups.
func operatorCommands(g *globals, code *int) []*cobra.Command {
	o := &opCmds{g: g, code: code, warn: io.Discard}
	drain, undrain, maintenance, failback := o.drainCmd(), o.undrainCmd(), o.maintenanceCmd(), o.failbackCmd()
	rebalance, move, ack := o.rebalanceCmd(), o.moveCmd(), o.ackCmd()
	pause, resume, cordon, uncordon := o.pauseCmd(), o.resumeCmd(), o.cordonCmd(), o.uncordonCmd()
	for _, cmd := range []*cobra.Command{drain, undrain, maintenance, failback, rebalance, move, ack, pause, resume, cordon, uncordon} {
		cmd.Flags().BoolVar(&o.writeJSON, "json", false, "print roostd's answer as JSON")
	}
	return []*cobra.Command{drain, undrain, maintenance, failback, rebalance, move, o.whereCmd(), o.historyCmd(), ack, pause, resume, cordon, uncordon}
}

// nodePath is the API path of a verb on a node.
func nodePath(node, verb string) string { return "/v1/nodes/" + url.PathEscape(node) + "/" + verb }

// run calls fn with a client and a context bounded by --timeout.
func (o *opCmds) run(fn func(ctx context.Context, c *api.Client, out io.Writer) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		c, err := o.g.client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), o.g.timeout)
		defer cancel()
		o.warn = cmd.ErrOrStderr()
		if err := fn(ctx, c, cmd.OutOrStdout()); err != nil {
			*o.code = failCode(err)
			return err
		}
		return nil
	}
}

// post posts a write and prints roostd's answer.
func (o *opCmds) post(ctx context.Context, c *api.Client, out io.Writer, path string, req api.OpRequest) (api.OpReply, error) {
	r, err := postThroughElection(ctx, c, o.warn, path, req)
	if err != nil {
		return r, err
	}
	if o.writeJSON {
		return r, printJSON(out, r)
	}
	fmt.Fprintln(out, r.Message)
	if r.Plan != "" {
		fmt.Fprintf(out, "plan %s (leader %s)\n", r.Plan, r.Leader)
	}
	return r, nil
}

// planWith posts a request that may start a plan (a drain, maintenance
// or rebalance), after asking what, and shows a dry run's targets or,
// with --wait, the plan's progress (and node's sessions, if any).
func (o *opCmds) planWith(cmd *cobra.Command, node, path string, req api.OpRequest, what string) error {
	if !req.DryRun && (req.On == nil || *req.On) {
		if err := confirm(cmd, what, o.yes, o.reason); err != nil {
			*o.code = exitUsage
			return err
		}
	}
	c, err := o.g.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.g.timeout)
	defer cancel()
	out := cmd.OutOrStdout()
	o.warn = cmd.ErrOrStderr()
	r, err := o.post(ctx, c, out, path, req)
	if err != nil {
		*o.code = failCode(err)
		return err
	}
	if req.DryRun && !o.writeJSON {
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TARGET\tUSERS")
		for _, t := range slices.Sorted(maps.Keys(r.Targets)) {
			fmt.Fprintf(tw, "%s\t%d\n", t, r.Targets[t])
		}
		tw.Flush()
		return nil
	}
	if !o.wait || req.DryRun {
		return nil
	}
	wctx, wcancel := context.WithTimeout(cmd.Context(), o.waitTimeout)
	defer wcancel()
	progress := out
	if o.writeJSON {
		progress = cmd.ErrOrStderr() // stdout holds the JSON answer
	}
	if err := waitEmpty(wctx, c, progress, node, r.Plan); err != nil {
		*o.code = failCode(err)
		return err
	}
	return nil
}

// drainWith is a drain's or a maintenance's planWith.
func (o *opCmds) drainWith(cmd *cobra.Command, node string, req api.OpRequest, verb string) error {
	return o.planWith(cmd, node, nodePath(node, verb), req, fmt.Sprintf("%s %s: its users move to the other nodes and their sessions are kicked", verb, node))
}

// forField is a drain's or maintenance's end, from --for or --until.
func (o *opCmds) forField() (string, error) {
	switch {
	case o.lasts != 0 && o.until != "":
		return "", errors.New("give --for or --until, not both")
	case o.lasts < 0:
		return "", fmt.Errorf("--for %v: want a positive duration", o.lasts)
	case o.lasts > 0:
		return o.lasts.String(), nil
	case o.until != "":
		t, err := parseUntil(o.until, time.Now())
		if err != nil {
			return "", fmt.Errorf("--until: %w", err)
		}
		start := time.Now()
		if o.at != "" {
			if start, err = parseUntil(o.at, start); err != nil {
				return "", fmt.Errorf("--at: %w", err)
			}
		}
		if !t.After(start) {
			return "", errors.New("--until lies before --at")
		}
		return t.Sub(start).Round(time.Second).String(), nil
	}
	return "", nil
}

// atField is when a scheduled drain or maintenance starts (--at).
func (o *opCmds) atField() (time.Time, error) {
	if o.at == "" {
		return time.Time{}, nil
	}
	if o.wait || o.dryRun {
		return time.Time{}, errors.New("--at schedules: --wait and --dry-run do not go with it")
	}
	t, err := parseUntil(o.at, time.Now())
	if err != nil {
		return time.Time{}, fmt.Errorf("--at: %w", err)
	}
	return t, nil
}

// window is a drain's or maintenance's end (--for, --until) and start
// (--at), as the API takes them.
func (o *opCmds) window() (string, time.Time, error) {
	d, err := o.forField()
	if err != nil {
		return "", time.Time{}, err
	}
	when, err := o.atField()
	return d, when, err
}

func (o *opCmds) addDrainFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.at, "at", "", "start then, not now (2026-12-24T02:00:00Z, or 2026-12-24 02:00 local time): the leader starts it; undrain or maintenance off cancels it")
	cmd.Flags().DurationVar(&o.lasts, "for", 0, "end by itself after this long: the users come back (default: until undone)")
	cmd.Flags().StringVar(&o.until, "until", "", "end by itself at this time (2026-12-24T18:00:00Z, or 2026-12-24 18:00 local time)")
	cmd.Flags().StringVar(&o.reason, "reason", "", "why, for the log, the journal and status (confirms, as --yes does)")
	cmd.Flags().BoolVar(&o.wait, "wait", false, "wait until every user is moved and the node holds no sessions (doveadm who)")
	cmd.Flags().DurationVar(&o.waitTimeout, "wait-timeout", 30*time.Minute, "give up waiting after this long (the drain goes on)")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "say how many users would go to which node, and change nothing")
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "do it without asking (or give --reason)")
}

// drainCmd is nodectl drain NODE.
func (o *opCmds) drainCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Move a node's users to the other nodes, at a rate, and kick their sessions",
		Long: `drain marks NODE draining (the load balancer signal says "drain"), moves
its users to the healthy active nodes at --rate users per second (default:
failover.drain_rate), and kicks their sessions so they reconnect there.
With --wait it waits until every user is moved and the node's Dovecot holds
no sessions. undrain brings the users back, or --for/--until does by itself
(held while the cluster is paused or frozen). --at schedules the drain: the
raft leader starts it then, and undrain cancels it. It asks before it acts, unless
--yes or --reason says so (without a terminal it refuses, exit status 2).` + exitStatusHelp,
		Example: "  nodectl drain mail2 --reason 'kernel update' --wait\n  nodectl drain mail2 --dry-run\n  nodectl drain mail2 --yes --rate 50\n  nodectl drain mail2 --reason 'kernel update' --for 2h\n  nodectl drain mail2 --reason 'kernel update' --at '2026-12-24 02:00' --for 1h",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, when, err := o.window()
			if err != nil {
				*o.code = exitUsage
				return err
			}
			return o.drainWith(cmd, args[0], api.OpRequest{Reason: o.reason, Rate: o.rate, DryRun: o.dryRun, For: d, At: when}, "drain")
		},
	}
	o.addDrainFlags(cmd)
	cmd.Flags().IntVar(&o.rate, "rate", 0, "users per second (0: the cluster's failover.drain_rate)")
	return cmd
}

// maintenanceCmd is nodectl maintenance NODE on|off.
func (o *opCmds) maintenanceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "maintenance NODE on|off",
		Short: "Drain a node and mark it expected down (on), or bring it back (off)",
		Long: `maintenance NODE on drains NODE like drain and marks it expected down: its
load balancer signal says "down" and no alert fires while it is away.
maintenance NODE off makes it recovering: its users come back at the
failback rate, and it is active once they are home. With --for or --until
maintenance ends by itself, as off would (held while the cluster is paused
or frozen; a node still failing then stays failed over until healthy).` + exitStatusHelp,
		Example: "  nodectl maintenance mail2 on --reason 'disk swap' --wait\n  nodectl maintenance mail2 on --reason 'disk swap' --until '2026-12-24 18:00'\n  nodectl maintenance mail2 off",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 || (args[1] != "on" && args[1] != "off") {
				return errors.New("want NODE on|off")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			on := args[1] == "on"
			if !on && (o.wait || o.dryRun || o.lasts != 0 || o.until != "" || o.at != "") {
				*o.code = exitUsage
				return errors.New("--wait, --dry-run, --for, --until and --at go with maintenance on")
			}
			d, when, err := o.window()
			if err != nil {
				*o.code = exitUsage
				return err
			}
			return o.drainWith(cmd, args[0], api.OpRequest{Reason: o.reason, On: &on, DryRun: o.dryRun, For: d, At: when}, "maintenance")
		},
	}
	o.addDrainFlags(cmd)
	return cmd
}

// rebalanceCmd is nodectl rebalance.
func (o *opCmds) rebalanceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rebalance",
		Short: "Move the fewest users that give every active node its weighted share",
		Long: `rebalance moves users off the active nodes that hold more than their share
(node.weight: 1 for nodes alike) onto those that hold less, at --rate users
per second (default: failover.drain_rate), and kicks their sessions so they
reconnect there: after a node was added, or after a manual failback left
users away. It moves the fewest users it takes, chosen by the rendezvous
hashing a failover uses, so a second rebalance moves nobody. Draining,
failed, cordoned or unhealthy nodes neither give nor take users. --max
bounds how many move; --dry-run says how many would go to which node. It
asks before it acts, unless --yes or --reason says so.` + exitStatusHelp,
		Example: "  nodectl rebalance --dry-run\n  nodectl rebalance --reason 'node4 added' --rate 100 --wait\n  nodectl rebalance --yes --max 500",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.most < 0 {
				*o.code = exitUsage
				return fmt.Errorf("--max %d: want a number of users, or 0 for all it takes", o.most)
			}
			return o.planWith(cmd, "", "/v1/rebalance", api.OpRequest{Reason: o.reason, Rate: o.rate, Max: o.most, DryRun: o.dryRun, By: whoAsks()},
				"rebalance: users move between the active nodes and their sessions are kicked")
		},
	}
	cmd.Flags().IntVar(&o.rate, "rate", 0, "users per second (0: the cluster's failover.drain_rate)")
	cmd.Flags().IntVar(&o.most, "max", 0, "move at most this many users (0: all it takes)")
	cmd.Flags().StringVar(&o.reason, "reason", "", "why, for the log, the journal and status (confirms, as --yes does)")
	cmd.Flags().BoolVar(&o.wait, "wait", false, "wait until the rebalance is done")
	cmd.Flags().DurationVar(&o.waitTimeout, "wait-timeout", 30*time.Minute, "give up waiting after this long (the rebalance goes on)")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "say how many users would go to which node, and change nothing")
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "do it without asking (or give --reason)")
	return cmd
}

// ackCmd is nodectl ack [NODE].
func (o *opCmds) ackCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ack [NODE]",
		Short: "Acknowledge a freeze (no NODE) or reset a node's block period",
		Long: `ack without NODE ends a freeze: automatic moves resume (and the cluster
freezes again if the mass failure goes on). ack NODE resets NODE's block
period, so it may be failed over again before the period ends; when NODE
failed again within it, ack NODE moves the users still routed to it.` + exitStatusHelp,
		Example: "  nodectl ack\n  nodectl ack mail2",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(func(ctx context.Context, c *api.Client, out io.Writer) error {
				path := "/v1/ack"
				if len(args) == 1 {
					path = nodePath(args[0], "ack")
				}
				_, err := o.post(ctx, c, out, path, api.OpRequest{})
				return err
			})(cmd, args)
		},
	}
	return cmd
}

// moveCmd is nodectl move USER NODE.
func (o *opCmds) moveCmd() *cobra.Command {
	var moveReason string
	cmd := &cobra.Command{
		Use:   "move USER NODE",
		Short: "Route one user to a node and kick their sessions",
		Long: `move rewrites USER's proxy_host to NODE's (fenced and journaled like every
move) and kicks the user's sessions so they reconnect there. NODE must be
active and healthy.` + userHelp + exitStatusHelp,
		Example: "  nodectl move alice@example.com mail3 --reason 'closer to her office'",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, fmt.Sprintf("move %s to %s: their sessions are kicked", placement.ShowUser(args[0]), args[1]), o.yes, moveReason); err != nil {
				*o.code = exitUsage
				return err
			}
			return o.run(func(ctx context.Context, c *api.Client, out io.Writer) error {
				_, err := o.post(ctx, c, out, "/v1/move", api.OpRequest{User: userArg(args[0]), Node: args[1], Reason: moveReason})
				return err
			})(cmd, args)
		},
	}
	cmd.Flags().StringVar(&moveReason, "reason", "", "why, for the journal (confirms, as --yes does)")
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "do it without asking (or give --reason)")
	return cmd
}

// whereCmd is nodectl where USER.
func (o *opCmds) whereCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "where USER",
		Short: "Show which proxy_host (and node) a user is routed to",
		Long: `where reads USER's proxy_host from the routing database and says which
node has it, the user's home (where they lived before Roost first moved
them) and Roost's latest move of them, with its reason.` + userHelp + exitStatusHelp,
		Example: "  nodectl where alice@example.com",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(func(ctx context.Context, c *api.Client, out io.Writer) error {
				var w api.Where
				if err := c.Get(ctx, "/v1/where?user="+url.QueryEscape(userArg(args[0])), &w); err != nil {
					return err
				}
				if o.asJSON {
					return printJSON(out, w)
				}
				printWhere(out, w)
				return nil
			})(cmd, args)
		},
	}
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "print JSON")
	return cmd
}

// historyCmd is nodectl history.
func (o *opCmds) historyCmd() *cobra.Command {
	var hUser, hNode, hSince string
	var hLimit int
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Show journaled moves, newest first",
		Long: `history lists the moves Roost made (from the routing database's journal),
newest first: every move, a user's (--user) or a node's (--node, moves
from or to it).` + userHelp + exitStatusHelp,
		Example: "  nodectl history --node mail2 --limit 20\n  nodectl history --user alice@example.com\n  nodectl history --since 24h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(func(ctx context.Context, c *api.Client, out io.Writer) error {
				q := url.Values{}
				q.Set("limit", fmt.Sprint(hLimit))
				if cmd.Flags().Changed("user") {
					q.Set("user", userArg(hUser)) // even empty: roostd refuses that, not lists everyone
				}
				if hNode != "" {
					q.Set("node", hNode)
				}
				if hSince != "" {
					q.Set("since", hSince)
				}
				var ms []api.Move
				if err := c.Get(ctx, "/v1/history?"+q.Encode(), &ms); err != nil {
					return err
				}
				if o.asJSON {
					return printJSON(out, ms)
				}
				tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "AT\tUSER\tFROM\tTO\tHOME\tPLAN\tTERM\tREASON")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.At.Local().Format(time.DateTime), m.User, m.From, m.To, m.Home, m.Plan, m.Term, m.Reason)
				}
				return tw.Flush()
			})(cmd, args)
		},
	}
	cmd.Flags().StringVar(&hUser, "user", "", "only this user's moves")
	cmd.Flags().StringVar(&hNode, "node", "", "only moves from or to this node")
	cmd.Flags().IntVar(&hLimit, "limit", 100, "at most this many moves")
	cmd.Flags().StringVar(&hSince, "since", "", "only moves since a time (2026-11-28T12:00:00Z) or for a duration back from now (24h)")
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "print JSON")
	return cmd
}

// pauseCmd is nodectl pause.
func (o *opCmds) pauseCmd() *cobra.Command {
	var pauseReason string
	var pauseFor time.Duration
	cmd := &cobra.Command{
		Use:   "pause --reason TEXT [--for DURATION]",
		Short: "Hold every automatic failover and failback (operators' moves still work)",
		Long: `pause holds Roost's own decisions: while paused, no automatic failover or
failback starts, and plans already running finish. Probes, status, metrics
and alerts go on (Roost's alert RoostPaused fires while paused), and
operators' drains, maintenance and moves still work. Status shows PAUSED
with the reason, who paused and until when. With --for the pause ends by
itself; nodectl resume ends it at once. A pause is not the freeze: both
are shown, and each is ended by its own verb.` + exitStatusHelp,
		Example: "  nodectl pause --reason 'core switch firmware, ticket 4711' --for 2h\n  nodectl resume",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(pauseReason) == "" {
				*o.code = exitUsage
				return errors.New("pause needs --reason: status shows it to everyone")
			}
			if pauseFor < 0 {
				*o.code = exitUsage
				return fmt.Errorf("--for %v: want a positive duration", pauseFor)
			}
			req := api.OpRequest{Reason: pauseReason, By: whoAsks()}
			if pauseFor > 0 {
				req.For = pauseFor.String()
			}
			return o.run(func(ctx context.Context, c *api.Client, out io.Writer) error {
				_, err := o.post(ctx, c, out, "/v1/pause", req)
				return err
			})(cmd, args)
		},
	}
	cmd.Flags().StringVar(&pauseReason, "reason", "", "why (required): status and the alert show it")
	cmd.Flags().DurationVar(&pauseFor, "for", 0, "resume by itself after this long (default: until nodectl resume)")
	return cmd
}

// resumeCmd is nodectl resume.
func (o *opCmds) resumeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "resume",
		Short:   "End a pause: automatic failover and failback decide again",
		Long:    `resume ends a pause (nodectl pause) at once.` + exitStatusHelp,
		Example: "  nodectl resume",
		Args:    cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, c *api.Client, out io.Writer) error {
			_, err := o.post(ctx, c, out, "/v1/resume", api.OpRequest{By: whoAsks()})
			return err
		}),
	}
	return cmd
}

// cordonCmd is nodectl cordon NODE.
func (o *opCmds) cordonCmd() *cobra.Command {
	var cordonReason string
	cmd := &cobra.Command{
		Use:   "cordon NODE",
		Short: "Keep NODE's users on it, but let no plan place users on it",
		Long: `cordon NODE keeps NODE serving the users it has, with its load balancer
signal up, while no plan (a failover, a drain, another node's failback) and
no move places users on it. nodectl uncordon ends it.` + exitStatusHelp,
		Example: "  nodectl cordon mail3 --reason 'disk replacement on Monday'\n  nodectl uncordon mail3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(func(ctx context.Context, c *api.Client, out io.Writer) error {
				_, err := o.post(ctx, c, out, nodePath(args[0], "cordon"), api.OpRequest{Reason: cordonReason, By: whoAsks()})
				return err
			})(cmd, args)
		},
	}
	cmd.Flags().StringVar(&cordonReason, "reason", "", "why, for status")
	return cmd
}

// uncordonCmd is nodectl uncordon NODE.
func (o *opCmds) uncordonCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "uncordon NODE",
		Short:   "Let plans place users on NODE again",
		Long:    `uncordon NODE ends nodectl cordon NODE.` + exitStatusHelp,
		Example: "  nodectl uncordon mail3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(func(ctx context.Context, c *api.Client, out io.Writer) error {
				_, err := o.post(ctx, c, out, nodePath(args[0], "uncordon"), api.OpRequest{By: whoAsks()})
				return err
			})(cmd, args)
		},
	}
	return cmd
}

// simple is a write on a node that takes no flag but --yes.
func (o *opCmds) simple(use, short, long, example, verb, what string) *cobra.Command {
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long + exitStatusHelp, Example: example, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, fmt.Sprintf("%s %s: %s", verb, args[0], what), o.yes, ""); err != nil {
				*o.code = exitUsage
				return err
			}
			return o.run(func(ctx context.Context, c *api.Client, out io.Writer) error {
				_, err := o.post(ctx, c, out, nodePath(args[0], verb), api.OpRequest{})
				return err
			})(cmd, args)
		},
	}
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "do it without asking")
	return cmd
}

// undrainCmd is nodectl undrain NODE.
func (o *opCmds) undrainCmd() *cobra.Command {
	return o.simple("undrain NODE", "End a drain: the node's users come back at the failback rate",
		`undrain stops a drain (or a maintenance) of NODE and makes it recovering: its
users come back at failover.failback_rate, and it is active once they are
home. NODE must be healthy: passing, and reachable by its peers.`, "  nodectl undrain mail2 --yes", "undrain", "its users come back at the failback rate")
}

// failbackCmd is nodectl failback NODE.
func (o *opCmds) failbackCmd() *cobra.Command {
	return o.simple("failback NODE", "Bring a failed-over node's users home now",
		`failback starts the failback of a failed-over NODE now, without waiting for
the hold-down (and also with failover.failback: manual). NODE must be
healthy: passing, and reachable by its peers (their probes may lag its own
report by a few seconds; the refusal says so).`, "  nodectl failback mail2 --yes", "failback", "its users come back at the failback rate")
}

// parseUntil reads --until and --at: RFC 3339, or "2006-01-02 15:04" in local
// time; it must lie ahead of now.
func parseUntil(s string, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		if t, err = time.ParseInLocation("2006-01-02 15:04", s, time.Local); err != nil {
			return time.Time{}, fmt.Errorf("%.40q: want 2026-12-24T18:00:00Z or 2026-12-24 18:00 (local time)", s)
		}
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("%s is not ahead of now", s)
	}
	return t, nil
}

// whoAsks names the operator for status: the user (behind sudo, if so)
// at this host.
func whoAsks() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// waitEmpty follows a drain's or rebalance's plan to its end, then (for
// a drain) the node's sessions until there are none. On a terminal one line shows progress (users
// moved of all, rate, time left, sessions); otherwise a line per change.
func waitEmpty(ctx context.Context, c *api.Client, out io.Writer, node, plan string) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	pause := func() error {
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting (--wait-timeout); the plan goes on: %w", ctx.Err())
		case <-tick.C:
			return nil
		}
	}
	p := progressLine{out: out}
	if f, ok := out.(*os.File); ok {
		p.tty = isTerminal(f)
	}
	defer p.end()
	last := -1
	start := time.Now()
	// The answering node may apply the plan a moment after the leader.
	unseenUntil := time.Now().Add(10 * time.Second)
	for plan != "" {
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		var pl *api.Plan
		for i := range st.Plans {
			if st.Plans[i].ID == plan {
				pl = &st.Plans[i]
			}
		}
		if pl == nil {
			if time.Now().After(unseenUntil) {
				break // pruned: long finished
			}
			if err := pause(); err != nil {
				return err
			}
			continue
		}
		if pl.Moved != last {
			last = pl.Moved
			p.show(movedText(pl, time.Since(start)))
		}
		switch pl.Status {
		case "done":
			plan = ""
			continue
		case "canceled":
			return fmt.Errorf("plan %s was canceled: %s", pl.ID, pl.Error)
		}
		if err := pause(); err != nil {
			return err
		}
	}
	p.end()
	if node == "" {
		return nil // a rebalance: no one node to watch empty
	}
	lastN := -1
	for {
		var s api.Sessions
		if err := c.Get(ctx, "/v1/nodes/"+url.PathEscape(node)+"/sessions", &s); err != nil {
			return err
		}
		if s.Sessions == 0 {
			p.end()
			fmt.Fprintf(out, "%s holds no sessions\n", node)
			return nil
		}
		if s.Sessions != lastN {
			lastN = s.Sessions
			p.show(fmt.Sprintf("%s still holds %d sessions (%s)", node, s.Sessions, strings.Join(s.Users[:min(len(s.Users), 5)], ", ")))
		}
		if err := pause(); err != nil {
			return err
		}
	}
}

// movedText says how far a plan is: users moved (of all, when known),
// the rate so far and the time left.
func movedText(p *api.Plan, elapsed time.Duration) string {
	if p.Users <= 0 {
		return fmt.Sprintf("moved %d users", p.Moved)
	}
	s := fmt.Sprintf("moved %d of %d users", p.Moved, p.Users)
	if rate := float64(p.Moved) / elapsed.Seconds(); p.Moved > 0 && rate > 0 && p.Moved < p.Users {
		left := time.Duration(float64(p.Users-p.Moved) / rate * float64(time.Second))
		s += fmt.Sprintf(", %.0f/s, about %s left", rate, left.Round(time.Second))
	}
	return s
}

// progressLine rewrites one line on a terminal and prints lines elsewhere.
type progressLine struct {
	out  io.Writer
	tty  bool
	open bool
}

func (p *progressLine) show(s string) {
	if !p.tty {
		fmt.Fprintln(p.out, s)
		return
	}
	fmt.Fprintf(p.out, "\r\033[K%s", s)
	p.open = true
}

func (p *progressLine) end() {
	if p.open {
		fmt.Fprintln(p.out)
		p.open = false
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printWhere prints where a user is routed, their home and last move.
func printWhere(w io.Writer, wh api.Where) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "user:\t%s\n", wh.User)
	fmt.Fprintf(tw, "routed to:\t%s (%s)\n", wh.ProxyHost, dash(wh.Node))
	fmt.Fprintf(tw, "home:\t%s\n", wh.Home)
	if m := wh.LastMove; m != nil {
		fmt.Fprintf(tw, "last move:\t%s %s → %s, plan %s, term %d: %s\n", m.At.Local().Format(time.DateTime), m.From, m.To, m.Plan, m.Term, m.Reason)
	} else {
		fmt.Fprintf(tw, "last move:\tnone (Roost never moved this user)\n")
	}
	tw.Flush()
}

// confirm: a verb that moves users needs --yes or a reason. On a terminal
// nodectl asks; otherwise it refuses and changes nothing.
func confirm(cmd *cobra.Command, what string, yes bool, reason string) error {
	if yes || reason != "" {
		return nil
	}
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !isTerminal(f) {
		return fmt.Errorf("%s; confirm with --yes or give --reason (nothing changed)", what)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s.\nProceed? [y/N] ", what)
	line, _ := bufio.NewReader(f).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed: nothing changed")
}

// isTerminal: f is a terminal, not a pipe, a file or /dev/null.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
