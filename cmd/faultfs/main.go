// Command faultfs mounts a pass-through FUSE filesystem that injects the
// failures of a shared mail filesystem on command, for Roost's tests and
// for game days in staging.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/roost-mail/roost/cmd/internal/manpage"
	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/version"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "faultfs:", err)
		os.Exit(1)
	}
}

// listen opens the control endpoint: a unix socket for a path, else TCP.
func listen(addr string) (net.Listener, error) {
	if strings.Contains(addr, "/") {
		_ = os.Remove(addr)
		return net.Listen("unix", addr)
	}
	return net.Listen("tcp", addr)
}

func client(addr string) (*http.Client, string) {
	if !strings.Contains(addr, "/") {
		return &http.Client{Timeout: 10 * time.Second}, "http://" + addr
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", addr)
	}}}, "http://faultfs"
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "faultfs",
		Short: "A FUSE pass-through filesystem that injects latency, hangs, errors and crashes",
		Long: `faultfs mounts a directory through FUSE and, on command, slows, hangs or fails
its requests, corrupts reads, or dies leaving "Transport endpoint is not
connected", the failures of a shared mail filesystem such as ObjectiveFS.
Mount several faultfs on one backing directory to model nodes that share it.`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(mountCmd(), ctlCmd())
	manpage.Add(root, "FAULTFS")
	return root
}

// mountCmd is faultfs mount.
func mountCmd() *cobra.Command {
	var backing, mountpoint, control, name string
	var allowOther bool
	mount := &cobra.Command{
		Use:   "mount",
		Short: "Mount --backing at --mountpoint and serve the control API until SIGTERM",
		Example: `  faultfs mount --backing /srv/objstore --mountpoint /srv/mail --control /run/faultfs.sock --allow-other
  faultfs ctl --control /run/faultfs.sock set --hang --ops Write,Fsync`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fsys, err := faultfs.Mount(backing, mountpoint, faultfs.Options{Name: name, AllowOther: allowOther})
			if err != nil {
				return err
			}
			ln, err := listen(control)
			if err != nil {
				_ = fsys.Unmount()
				return fmt.Errorf("control %s: %w", control, err)
			}
			mux := http.NewServeMux()
			mux.Handle("/", fsys.Handler())
			mux.HandleFunc("POST /crash", func(w http.ResponseWriter, r *http.Request) {
				// Die as a crashed FUSE daemon does: no unmount, so every
				// access to the mount fails with ENOTCONN.
				w.WriteHeader(http.StatusAccepted)
				if f, ok := w.(http.Flusher); ok {
					f.Flush()
				}
				os.Exit(3)
			})
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(ln)
			fmt.Fprintf(cmd.OutOrStdout(), "faultfs: %s mounted on %s, control on %s\n", backing, mountpoint, control)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			_ = srv.Close()
			return fsys.Unmount()
		},
	}
	mount.Flags().StringVar(&backing, "backing", "", "directory to pass through (required)")
	mount.Flags().StringVar(&mountpoint, "mountpoint", "", "where to mount (required)")
	mount.Flags().StringVar(&control, "control", "127.0.0.1:7070", "control API: host:port, or a unix socket path")
	mount.Flags().StringVar(&name, "name", "faultfs", `fstype suffix in /proc/mounts ("fuse.<name>")`)
	mount.Flags().BoolVar(&allowOther, "allow-other", false, "let other users (Dovecot's mail user) use the mount")
	_ = mount.MarkFlagRequired("backing")
	_ = mount.MarkFlagRequired("mountpoint")
	return mount
}

// ctlCmd is faultfs ctl and its verbs.
func ctlCmd() *cobra.Command {
	var ctlAddr string
	ctl := &cobra.Command{
		Use:   "ctl",
		Short: "Change a running faultfs: status, set, clear, release, crash",
		Example: `  faultfs ctl --control 127.0.0.1:7070 set --delay 300ms --jitter 100ms
  faultfs ctl --control 127.0.0.1:7070 set --errno EIO --ops Write
  faultfs ctl --control 127.0.0.1:7070 set --hang
  faultfs ctl --control 127.0.0.1:7070 release
  faultfs ctl --control 127.0.0.1:7070 crash`,
	}
	ctl.PersistentFlags().StringVar(&ctlAddr, "control", "127.0.0.1:7070", "the faultfs control API")
	call := func(method, path string, body any) func(cmd *cobra.Command, _ []string) error {
		return func(cmd *cobra.Command, _ []string) error { return control(cmd, ctlAddr, method, path, body) }
	}
	var flt faultfs.Fault
	var delay, jitter time.Duration
	var ops []string
	set := &cobra.Command{
		Use:   "set",
		Short: "Replace the fault",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			flt.Delay, flt.Jitter, flt.Ops = faultfs.Duration(delay), faultfs.Duration(jitter), ops
			if err := flt.Validate(); err != nil {
				return err
			}
			return call(http.MethodPut, "/fault", flt)(cmd, args)
		},
	}
	set.Flags().DurationVar(&delay, "delay", 0, "added latency per request")
	set.Flags().DurationVar(&jitter, "jitter", 0, "further random latency in [0, jitter)")
	set.Flags().BoolVar(&flt.Hang, "hang", false, "block requests until release or clear")
	set.Flags().StringVar(&flt.Errno, "errno", "", "fail requests: EIO, ENOSPC, EROFS, ENOTCONN, EDQUOT, ...")
	set.Flags().BoolVar(&flt.Corrupt, "corrupt", false, "flip the bytes of every read")
	set.Flags().StringSliceVar(&ops, "ops", nil, "only these FUSE operations (Write, Fsync, Create, Lookup, GetAttr, ...)")
	ctl.AddCommand(
		&cobra.Command{Use: "status", Short: "Show the fault and hung requests", Args: cobra.NoArgs, RunE: call(http.MethodGet, "/status", nil)},
		set,
		&cobra.Command{Use: "clear", Short: "Remove the fault and free hung requests", Args: cobra.NoArgs, RunE: call(http.MethodPost, "/clear", nil)},
		&cobra.Command{Use: "release", Short: "Free hung requests, keep the fault", Args: cobra.NoArgs, RunE: call(http.MethodPost, "/release", nil)},
		&cobra.Command{Use: "crash", Short: "Make the daemon exit without unmounting (ENOTCONN)", Args: cobra.NoArgs, RunE: call(http.MethodPost, "/crash", nil)},
	)
	return ctl
}

// control sends one request to a running faultfs's control API and
// prints its answer.
func control(cmd *cobra.Command, ctlAddr, method, path string, body any) error {
	hc, base := client(ctlAddr)
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(cmd.Context(), method, base+path, rd)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		if path == "/crash" && errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	fmt.Fprint(cmd.OutOrStdout(), string(out))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}
