package health

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Doveadm checks that the doveadm HTTP API answers an authenticated
// request (GET /doveadm/v1 lists the commands). baseURL is like
// http://10.0.0.1:8080; apiKey is doveadm_api_key.
func Doveadm(baseURL, apiKey string, tlsConfig *tls.Config) Check {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}}
	url := strings.TrimRight(baseURL, "/") + "/doveadm/v1"
	auth := "X-Dovecot-API " + base64.StdEncoding.EncodeToString([]byte(apiKey))
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", auth)
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("doveadm API: %w", ctxErr(ctx, err))
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		switch {
		case resp.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("doveadm API refused the key (%s): check doveadm_api_key", resp.Status)
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("doveadm API: %s: %s", resp.Status, clip(string(body)))
		case !strings.Contains(string(body), "kick"):
			return fmt.Errorf("doveadm API answered without its command list: %q", clip(string(body)))
		}
		return nil
	}
}

// Command runs a site-specific check through /bin/sh; exit status 0 is
// healthy. The command is killed when ctx ends.
func Command(command string) Check {
	return func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
		// Kill the whole process group: a child of the shell (sleep, curl)
		// would otherwise outlive it and hold the output open.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 100 * time.Millisecond
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", command, ctxErr(ctx, err), clip(strings.TrimSpace(string(out))))
		}
		return nil
	}
}
