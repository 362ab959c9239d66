package fsprobe

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Config is the fsprobe part of the agent's configuration.
type Config struct {
	// Mounts are the shared mail filesystems to probe.
	Mounts []MountConfig `yaml:"mounts"`
	// Interval between probe rounds of each mount.
	Interval time.Duration `yaml:"interval"`
	// Timeout for a whole round: a syscall still running then makes the
	// mount hung at once. Keep it well under what Dovecot would tolerate.
	Timeout time.Duration `yaml:"timeout"`
	// SlowThreshold: a round that succeeds but takes longer is "slow".
	SlowThreshold time.Duration `yaml:"slow_threshold"`
	// LockDir holds a lock file per mount, held by the process that runs
	// the mount's probe calls for as long as it lives. A restarted roostd
	// finds it still held while a call of the earlier one is stuck in the
	// mount, and reports the mount hung at once instead of adding a second
	// stuck call. It must be on a local filesystem and outlive roostd
	// (the systemd unit keeps /run/roost across restarts). Empty means
	// the default, /run/roost.
	LockDir string `yaml:"lock_dir"`
}

// MountConfig is one mount to probe.
type MountConfig struct {
	// Path is the mountpoint, as in /proc/self/mountinfo.
	Path string `yaml:"path"`
	// FSType is a glob the mount's type must match, e.g. "fuse.objectivefs"
	// or "fuse*" (the default); "nfs*" or "ceph" for those.
	FSType string `yaml:"fstype"`
	// ProbeDir is the directory, relative to Path, that holds the per-node
	// canary files. Roost creates it.
	ProbeDir string `yaml:"probe_dir"`
}

const defaultLockDir = "/run/roost"

// DefaultConfig probes every second with a two-second timeout, so a hung
// FUSE mount is known in about three seconds.
func DefaultConfig() Config {
	return Config{Interval: time.Second, Timeout: 2 * time.Second, SlowThreshold: 500 * time.Millisecond, LockDir: defaultLockDir}
}

// DefaultMount fills a mount's optional fields.
func (m MountConfig) withDefaults() MountConfig {
	if m.FSType == "" {
		m.FSType = "fuse*"
	}
	if m.ProbeDir == "" {
		m.ProbeDir = ".roost-probe"
	}
	return m
}

// maxTimeout bounds fsprobe.timeout: a hung mount is called hung only
// after it, and its users wait that long.
const maxTimeout = time.Minute

// Validate reports the first problem, naming the key (relative to the
// fsprobe section) and its value.
func (c Config) Validate() error {
	if c.Interval < 10*time.Millisecond {
		return fmt.Errorf("interval %v: must be at least 10ms", c.Interval)
	}
	if c.Timeout < 10*time.Millisecond || c.Timeout > maxTimeout {
		return fmt.Errorf("timeout %v: must be from 10ms to %v (a hung mount is known only after it)", c.Timeout, maxTimeout)
	}
	if c.SlowThreshold <= 0 || c.SlowThreshold >= c.Timeout {
		return fmt.Errorf("slow_threshold %v: must be positive and below timeout (%v)", c.SlowThreshold, c.Timeout)
	}
	if c.LockDir != "" && !filepath.IsAbs(c.LockDir) {
		return fmt.Errorf("lock_dir %q: want an absolute path on a local filesystem", c.LockDir)
	}
	seen := map[string]bool{}
	for i, m := range c.Mounts {
		if err := m.validate(); err != nil {
			return fmt.Errorf("mounts[%d].%w", i, err)
		}
		if seen[m.Path] {
			return fmt.Errorf("mounts[%d].path %q: listed twice", i, m.Path)
		}
		seen[m.Path] = true
	}
	return nil
}

func (m MountConfig) validate() error {
	if m.Path == "" {
		return errors.New("path is empty")
	}
	if !filepath.IsAbs(m.Path) || filepath.Clean(m.Path) != m.Path {
		return fmt.Errorf("path %q: want an absolute, clean path", m.Path)
	}
	if m.Path == "/" {
		return errors.New(`path "/": not a mail filesystem`)
	}
	if m.FSType != "" {
		if _, err := path.Match(m.FSType, "x"); err != nil {
			return fmt.Errorf("fstype %q: bad glob: %w", m.FSType, err)
		}
	}
	if m.ProbeDir != "" && (filepath.IsAbs(m.ProbeDir) || strings.HasPrefix(filepath.Clean(m.ProbeDir), "..")) {
		return fmt.Errorf("probe_dir %q: want a path inside the mount, relative to it", m.ProbeDir)
	}
	return nil
}
