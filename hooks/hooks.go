// Package hooks runs the operator's scripts around moves: before a plan
// moves anyone (it may veto), after a plan ends, and after a node's state
// changes. It implements failover.Hooks.
package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/roost-mail/roost/failover"
)

// Config names the operator's scripts around moves. Each gets the
// facts in ROOST_* environment variables; its output is logged.
type Config struct {
	// PreMove runs on the leader before a plan moves anyone; a non-zero
	// exit (or running past Timeout) vetoes the plan. ROOST_PLAN,
	// ROOST_KIND, ROOST_NODE, ROOST_HOST, ROOST_USER, ROOST_TO, ROOST_REASON.
	PreMove string `yaml:"pre_move"`
	// PostMove runs after a plan ends; also ROOST_STATUS (done, canceled),
	// ROOST_USERS_MOVED and ROOST_ERROR.
	PostMove string `yaml:"post_move"`
	// NodeState runs after a node's state changes: ROOST_NODE,
	// ROOST_STATE, ROOST_PREVIOUS_STATE, ROOST_REASON.
	NodeState string `yaml:"node_state"`
	// Timeout bounds each run.
	Timeout time.Duration `yaml:"timeout"`
}

// Validate reports the first problem, naming the key.
func (c Config) Validate() error {
	for key, p := range map[string]string{"pre_move": c.PreMove, "post_move": c.PostMove, "node_state": c.NodeState} {
		if p != "" && !strings.HasPrefix(p, "/") {
			return fmt.Errorf("%s %q: want an absolute path", key, p)
		}
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("timeout %s: want > 0", c.Timeout)
	}
	return nil
}

// CheckFiles: every hook is an executable file.
func (c Config) CheckFiles() error {
	for key, p := range map[string]string{"pre_move": c.PreMove, "post_move": c.PostMove, "node_state": c.NodeState} {
		if p == "" {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s %s: not an executable file", key, p)
		}
	}
	return nil
}

// Scripts runs the configured scripts.
type Scripts struct {
	cfg Config
	log *slog.Logger
}

// New runs cfg's scripts and logs each run on log.
func New(cfg Config, log *slog.Logger) *Scripts { return &Scripts{cfg: cfg, log: log} }

func planEnv(p failover.Plan) []string {
	return []string{"ROOST_PLAN=" + p.ID, "ROOST_KIND=" + string(p.Kind), "ROOST_NODE=" + p.Node, "ROOST_HOST=" + p.Host,
		"ROOST_USER=" + p.User, "ROOST_TO=" + p.To, "ROOST_REASON=" + p.Reason}
}

// PreMove runs the pre_move script; its error vetoes the plan.
func (h *Scripts) PreMove(ctx context.Context, p failover.Plan) error {
	return h.run(ctx, "pre_move", h.cfg.PreMove, planEnv(p))
}

// PostMove runs the post_move script.
func (h *Scripts) PostMove(ctx context.Context, p failover.Plan) {
	env := append(planEnv(p), "ROOST_STATUS="+string(p.Status), "ROOST_USERS_MOVED="+strconv.Itoa(p.Moved), "ROOST_ERROR="+p.Error)
	_ = h.run(ctx, "post_move", h.cfg.PostMove, env)
}

// NodeState runs the node_state script.
func (h *Scripts) NodeState(ctx context.Context, node string, from, to failover.NodeRecord) {
	env := []string{"ROOST_NODE=" + node, "ROOST_STATE=" + string(to.State), "ROOST_PREVIOUS_STATE=" + string(from.State), "ROOST_REASON=" + to.Reason}
	_ = h.run(ctx, "node_state", h.cfg.NodeState, env)
}

// run runs one hook (nothing when it is not configured) and logs what it
// printed; an error says why it failed, with its last line of output.
func (h *Scripts) run(ctx context.Context, name, path string, env []string) error {
	if path == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if len(text) > 4000 {
		text = text[len(text)-4000:]
	}
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		err = fmt.Errorf("%s ran past its %s timeout", path, h.cfg.Timeout)
	case err != nil:
		last := text
		if i := strings.LastIndexByte(last, '\n'); i >= 0 {
			last = last[i+1:]
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && last != "" {
			err = fmt.Errorf("%s exited %d: %s", path, ee.ExitCode(), last)
		} else {
			err = fmt.Errorf("%s: %w", path, err)
		}
	}
	h.log.Info("hook_ran", "hook", name, "env", env, "took", time.Since(start).Round(time.Millisecond), "output", text, "err", err)
	return err
}
