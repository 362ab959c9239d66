package failover

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// newHclog bridges raft's and autopilot's hclog output into slog: an
// intercept logger that writes nowhere itself and hands each entry to a
// sink that logs it through slog with the same level and fields.
func newHclog(l *slog.Logger, name string, level slog.Level) hclog.Logger {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   name,
		Output: io.Discard,
		Level:  hclogLevel(level), // so IsDebug and friends answer truly
	})
	il.RegisterSink(slogSink{l})
	return il
}

type slogSink struct{ l *slog.Logger }

func (s slogSink) Accept(name string, level hclog.Level, msg string, args ...interface{}) {
	var sl slog.Level
	switch level {
	case hclog.Trace, hclog.Debug:
		sl = slog.LevelDebug
	case hclog.Info:
		sl = slog.LevelInfo
	case hclog.Warn:
		sl = slog.LevelWarn
	default:
		sl = slog.LevelError
	}
	if !s.l.Enabled(context.Background(), sl) {
		return
	}
	attrs := make([]any, 0, len(args)+2)
	attrs = append(attrs, "component", name)
	for i := 0; i+1 < len(args); i += 2 {
		v := args[i+1]
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				v = fmt.Sprintf(format, f[1:]...)
			}
		}
		attrs = append(attrs, fmt.Sprint(args[i]), v)
	}
	s.l.Log(context.Background(), sl, msg, attrs...)
}

func hclogLevel(l slog.Level) hclog.Level {
	switch {
	case l <= slog.LevelDebug:
		return hclog.Debug
	case l <= slog.LevelInfo:
		return hclog.Info
	case l <= slog.LevelWarn:
		return hclog.Warn
	}
	return hclog.Error
}

// attrs are the key/value pairs that describe cmd in a log line, its
// empty fields left out: a plan-start names its plan, not an empty node.
func (cmd command) attrs() []any {
	out := []any{"op", cmd.Op}
	add := func(k, v string) {
		if v != "" {
			out = append(out, k, v)
		}
	}
	if p := cmd.Plan; p != nil {
		add("kind", string(p.Kind))
		add("node", p.Node)
		add("user", p.User)
		add("to", p.To)
		add("reason", p.Reason)
		return out
	}
	add("node", cmd.Node)
	add("state", string(cmd.State))
	add("plan", cmd.PlanID)
	add("reason", cmd.Reason)
	return out
}
