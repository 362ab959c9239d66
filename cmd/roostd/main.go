// Command roostd is the Roost agent that runs on every mail node (and on a
// witness): it watches the node, gossips, votes, and moves users off bad
// nodes.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/roost-mail/roost/agent"
	"github.com/roost-mail/roost/certs"
	"github.com/roost-mail/roost/cmd/internal/manpage"
	"github.com/roost-mail/roost/fsprobe"
	"github.com/roost-mail/roost/health"
	"github.com/roost-mail/roost/version"
)

const defaultConfig = "/etc/roost/roost.yaml"

// errUnhealthy makes a probe exit 1 after printing its verdict.
var errUnhealthy = errors.New("unhealthy")

func main() {
	fsprobe.MaybeHelper() // when started as a mount's probe helper, serves and exits
	if err := newRoot().Execute(); err != nil {
		if !errors.Is(err, errUnhealthy) {
			fmt.Fprintln(os.Stderr, "roostd:", err)
		}
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	var configPath string
	runE := func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), configPath) }
	root := &cobra.Command{
		Use:   "roostd",
		Short: "The Roost agent: keeps a Dovecot cluster serving through node failures",
		Long: `roostd runs on every Dovecot node (and on an optional witness host). The agents
gossip, elect a raft leader, and move users off nodes that fail.

With no verb, roostd runs the agent ("run").`,
		Example:       "  roostd --config /etc/roost/roost.yaml\n  roostd check-config --config /etc/roost/roost.yaml",
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          runE,
	}
	root.Flags().StringVar(&configPath, "config", defaultConfig, "configuration file")

	runCmd := &cobra.Command{
		Use:     "run",
		Short:   "Run the agent (the default verb)",
		Example: "  roostd run --config /etc/roost/roost.yaml",
		Args:    cobra.NoArgs,
		RunE:    runE,
	}
	runCmd.Flags().StringVar(&configPath, "config", defaultConfig, "configuration file")

	check := checkConfigCmd(&configPath)
	versionCmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version",
		Example: "  roostd version",
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), version.Long("roostd"))
		},
	}

	keygen := keygenCmd()

	root.AddCommand(runCmd, check, versionCmd, keygen, newTLSCmd(), newProbeCmd())
	manpage.Add(root, "ROOSTD")
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	return root
}

// checkConfigCmd is roostd check-config; configPath is shared with the
// other verbs' --config.
func checkConfigCmd(configPath *string) *cobra.Command {
	check := &cobra.Command{
		Use:   "check-config",
		Short: "Validate the configuration and the files it names, then exit",
		Long: `check-config reads the configuration, rejects unknown keys, bad values and bad
combinations with a message naming the key, reads every key, certificate and
token file it names, and exits 0 only when all is well.`,
		Example: "  roostd check-config --config /etc/roost/roost.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := agent.LoadConfig(*configPath)
			if err != nil {
				return err
			}
			if err := cfg.CheckFiles(); err != nil {
				return fmt.Errorf("%s: %w", *configPath, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: OK (node %s, role %s)\n", *configPath, cfg.Node.Name, cfg.Node.Role)
			if cfg.Routing.DSNFile == "" {
				fmt.Fprintf(cmd.OutOrStdout(), "note: routing.dsn_file is empty: this node cannot fail anyone over; it hands raft leadership to a voter that has the routing database\n")
			}
			return nil
		},
	}
	check.Flags().StringVar(configPath, "config", defaultConfig, "configuration file")
	return check
}

// keygenCmd is roostd keygen.
func keygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new gossip encryption key (for gossip.key_file)",
		Long: `keygen prints a random 32-byte key, base64-encoded. Put the same key in
gossip.key_file on every node. To rotate, list the new key first and the old
one after it on every node, restart them one by one, then drop the old key.`,
		Example: "  roostd keygen > /etc/roost/gossip.key && chmod 0640 /etc/roost/gossip.key",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k := make([]byte, 32)
			if _, err := rand.Read(k); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(k))
			return nil
		},
	}
}

func run(ctx context.Context, configPath string) error {
	cfg, err := agent.LoadConfig(configPath)
	if err != nil {
		return err
	}
	log, level, err := agent.NewLogger(cfg.Log, os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(cfg, log, level.Level())
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reload(configPath, a, level, log)
			}
		}
	}()
	return a.Run(ctx)
}

// reload re-reads the configuration on SIGHUP: the log level and what
// Agent.Reload applies change now; the rest is named for a restart.
func reload(path string, a *agent.Agent, level *slog.LevelVar, log *slog.Logger) {
	next, err := agent.LoadConfig(path)
	if err != nil {
		log.Error("reload_failed", "err", err, "hint", "nothing changed")
		return
	}
	applied, restart, err := a.Reload(next)
	if err != nil {
		log.Error("reload_failed", "err", err, "hint", "nothing changed")
		return
	}
	if l, err := agent.ParseLevel(next.Log.Level); err == nil && l != level.Level() {
		level.Set(l)
		applied = append(applied, "log.level")
	}
	log.Warn("reloaded", "applied", applied, "need_restart", restart)
}

func newTLSCmd() *cobra.Command {
	tlsCmd := &cobra.Command{
		Use:   "tls",
		Short: "Make a private CA and node certificates for the cluster port and API",
	}
	var dir string
	var valid time.Duration
	ca := &cobra.Command{
		Use:     "ca",
		Short:   "Create a CA (ca.pem, ca-key.pem) in --dir",
		Example: "  roostd tls ca --dir /etc/roost/tls",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			if _, err := certs.CreateCA(dir, "Roost CA", valid); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s/ca.pem and %s/ca-key.pem (keep ca-key.pem off the nodes)\n", dir, dir)
			return nil
		},
	}
	ca.Flags().StringVar(&dir, "dir", ".", "directory for the CA files")
	ca.Flags().DurationVar(&valid, "valid", 10*365*24*time.Hour, "validity")

	var name, usage string
	var hosts []string
	cert := &cobra.Command{
		Use:   "cert",
		Short: "Issue a certificate (NAME.pem, NAME-key.pem) signed by the CA in --dir",
		Long: `cert issues a certificate signed by the CA in --dir, for one use (--for):

  node    a node's cluster port (raft, forwarded requests): TLS server and
          client at once; it may serve the TCP API (api.tls) as well
  server  the TCP API only (api.tls); refused on the cluster port
  client  a client of the TCP API that must present a certificate (when
          api.tls.ca_file is set); refused on the cluster port

--host adds IP addresses or DNS names.`,
		Example: `  roostd tls cert --dir /etc/roost/tls --name node1 --host 10.0.0.1
  roostd tls cert --dir /etc/roost/tls --name prometheus --for client`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return errors.New("--name is required")
			}
			u, err := certs.ParseUsage(usage)
			if err != nil {
				return fmt.Errorf("--for: %w", err)
			}
			c, err := certs.LoadCA(dir)
			if err != nil {
				return err
			}
			cp, kp, err := c.Issue(dir, name, u, hosts, valid)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s\n", cp, kp)
			return nil
		},
	}
	cert.Flags().StringVar(&dir, "dir", ".", "directory holding ca.pem and ca-key.pem, and for the new files")
	cert.Flags().StringVar(&name, "name", "", "node name (the certificate's common name)")
	cert.Flags().StringVar(&usage, "for", string(certs.Node), "what it is for: node, server or client")
	cert.Flags().StringSliceVar(&hosts, "host", nil, "IP address or DNS name to include (repeatable)")
	cert.Flags().DurationVar(&valid, "valid", 2*365*24*time.Hour, "validity")
	tlsCmd.AddCommand(ca, cert)
	return tlsCmd
}

func newProbeCmd() *cobra.Command {
	probe := &cobra.Command{
		Use:   "probe",
		Short: "Run one check and exit 0 only when healthy",
	}
	def := fsprobe.DefaultConfig()
	var asJSON bool
	var mc fsprobe.MountConfig
	var timeout, slow time.Duration
	var node string
	fs := &cobra.Command{
		Use:   "fs PATH",
		Short: "Probe a mail filesystem mount once: mounted, writable, readable, in time",
		Long: `fs checks that PATH is a mount of the expected type (from /proc/self/mountinfo,
so a bare directory is never mistaken for the mount), then writes, fsyncs,
reads back and removes a canary file in --probe-dir, each step timed, and
reads the FUSE queue from fusectl. It prints the verdict: ok, slow, hung,
disconnected, not-mounted, read-only, full, io-error or mismatch, with the
step and the error. It never waits longer than --timeout, even on a hung
FUSE daemon. Exit status: 0 only for ok.`,
		Example: "  roostd probe fs /srv/mail --fstype fuse.objectivefs\n  roostd probe fs /srv/mail --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mc.Path = args[0]
			cfg := fsprobe.Config{Mounts: []fsprobe.MountConfig{mc}, Interval: time.Second, Timeout: timeout, SlowThreshold: slow}
			if err := cfg.Validate(); err != nil {
				return err
			}
			// The round's calls run in a helper process: on a hung mount
			// the helper stays stuck, and this command still answers in
			// time and exits.
			r := fsprobe.NewMount(mc, node, timeout, slow).Round()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), r.String())
			}
			if !r.OK() {
				return errUnhealthy
			}
			return nil
		},
	}
	host, _ := os.Hostname()
	fs.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	fs.Flags().StringVar(&mc.FSType, "fstype", "fuse*", "glob the mount's type must match (fuse.objectivefs, fuse*, nfs*, ...)")
	fs.Flags().StringVar(&mc.ProbeDir, "probe-dir", ".roost-probe", "directory inside the mount for the canary file")
	fs.Flags().DurationVar(&timeout, "timeout", def.Timeout, "give up and report hung after this long")
	fs.Flags().DurationVar(&slow, "slow", def.SlowThreshold, "report slow when the round takes longer")
	fs.Flags().StringVar(&node, "node", host, "names the canary file (<node>.canary)")
	probe.AddCommand(fs)
	for _, proto := range []string{"imap", "pop3", "lmtp", "submission", "sieve", "doveadm"} {
		probe.AddCommand(newServiceProbe(proto))
	}
	return probe
}

// newServiceProbe is `roostd probe PROTO ADDR`: one check of a Dovecot
// service, exit 0 only when healthy.
func newServiceProbe(proto string) *cobra.Command {
	var useTLS, startTLS, proxyHeader, insecure bool
	var user, passwordFile, caFile, apiKeyFile string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   proto + " ADDR",
		Short: "Check a Dovecot " + proto + " service once; exit 0 only when healthy",
		Example: map[string]string{
			"imap":       "  roostd probe imap 10.0.0.1:143\n  roostd probe imap 10.0.0.1:993 --tls --ca-file /etc/ssl/certs/ca.pem\n  roostd probe imap 10.0.0.1:143 --starttls --login probe@example.com --password-file /etc/roost/probe.pw",
			"pop3":       "  roostd probe pop3 10.0.0.1:110 --login probe@example.com --password-file /etc/roost/probe.pw",
			"lmtp":       "  roostd probe lmtp 10.0.0.1:24",
			"submission": "  roostd probe submission 10.0.0.1:587 --starttls",
			"sieve":      "  roostd probe sieve 10.0.0.1:4190",
			"doveadm":    "  roostd probe doveadm http://10.0.0.1:8080 --api-key-file /etc/roost/doveadm.key",
		}[proto],
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout %v: want a positive duration", timeout)
			}
			// The check the agent runs for a health.checks entry like this.
			cc := health.CheckConfig{Protocol: proto, Addr: args[0], CAFile: caFile, InsecureSkipVerify: insecure, ProxyHeader: proxyHeader,
				Login: user, PasswordFile: passwordFile, APIKeyFile: apiKeyFile, Timeout: timeout}
			switch {
			case useTLS && startTLS:
				return errors.New("--tls and --starttls: choose one")
			case useTLS:
				cc.TLS = "tls"
			case startTLS:
				cc.TLS = "starttls"
			}
			if user != "" && passwordFile == "" {
				return errors.New("--login needs --password-file")
			}
			check, err := cc.Build()
			if err != nil {
				return err
			}
			start := time.Now()
			err = health.WithTimeout(check, timeout)(cmd.Context())
			took := time.Since(start).Round(100 * time.Microsecond)
			if err != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s: critical after %s: %v\n", proto, args[0], took, err)
				return errUnhealthy
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s: passing (%s)\n", proto, args[0], took)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&timeout, "timeout", time.Second, "give up after this long")
	f.StringVar(&caFile, "ca-file", "", "CA bundle for the server's certificate (default: the system's)")
	f.BoolVar(&insecure, "insecure-skip-verify", false, "do not check the server's certificate")
	if proto == "doveadm" {
		f.StringVar(&apiKeyFile, "api-key-file", "", "file holding doveadm_api_key (required)")
		_ = cmd.MarkFlagRequired("api-key-file")
		return cmd
	}
	f.BoolVar(&useTLS, "tls", false, "TLS from the first byte (imaps, pop3s)")
	f.BoolVar(&startTLS, "starttls", false, "upgrade with STARTTLS")
	f.BoolVar(&proxyHeader, "proxy-header", false, "send a PROXY protocol v2 header first (Dovecot listener with haproxy = yes)")
	if proto == "imap" || proto == "pop3" {
		f.StringVar(&user, "login", "", "log in as this test account")
		f.StringVar(&passwordFile, "password-file", "", "file holding the test account's password")
	}
	return cmd
}
