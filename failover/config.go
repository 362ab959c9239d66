package failover

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/roost-mail/roost/certs"
)

// RaftConfig is the raft part of the agent's configuration.
type RaftConfig struct {
	// Bind is the host:port of the cluster port (raft and its RPCs).
	Bind string `yaml:"bind"`
	// Advertise is the host:port peers dial; empty means the bind address,
	// which must then not be a wildcard.
	Advertise string `yaml:"advertise"`
	// BootstrapExpect is how many servers must find each other through
	// gossip before the first raft cluster is bootstrapped, as in Consul.
	// Nodes that join later (or restart) never bootstrap.
	BootstrapExpect int `yaml:"bootstrap_expect"`
	// MaxVoters caps the voting servers; further servers join as non-voters
	// and are promoted when a voter is removed.
	MaxVoters int `yaml:"max_voters"`
	// TLS is the mutual TLS identity of the cluster port.
	TLS certs.Files `yaml:"tls"`
	// InsecurePlaintext runs the cluster port without TLS. Only for tests
	// and demos on loopback; it must be set explicitly.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`

	// HeartbeatTimeout and ElectionTimeout: how long without a leader before
	// a follower stands for election. 1 s is Consul's production timing.
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout  time.Duration `yaml:"election_timeout"`
	// LeaderLeaseTimeout is how long a leader stays leader without reaching
	// a quorum; at most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration `yaml:"leader_lease_timeout"`

	// SnapshotInterval and SnapshotThreshold: check every interval, snapshot
	// when at least threshold entries were written since the last one.
	SnapshotInterval  time.Duration `yaml:"snapshot_interval"`
	SnapshotThreshold uint64        `yaml:"snapshot_threshold"`
	// SnapshotRetain is how many snapshots to keep on disk.
	SnapshotRetain int `yaml:"snapshot_retain"`
	// TrailingLogs is how many entries stay in the log after a snapshot, so
	// a slightly behind follower catches up without a full snapshot.
	TrailingLogs uint64 `yaml:"trailing_logs"`

	// ServerStabilizationTime is how long a new server must be healthy
	// before it is promoted to voter.
	ServerStabilizationTime time.Duration `yaml:"server_stabilization_time"`
	// CleanupDeadServers removes servers gossip reports dead or left from
	// the raft configuration, never below MinQuorum voters.
	CleanupDeadServers bool `yaml:"cleanup_dead_servers"`
	// MinQuorum is the voter count below which dead servers are not
	// removed; 0 means BootstrapExpect. With the default a dead server is
	// removed only once a replacement has joined.
	MinQuorum int `yaml:"min_quorum"`
}

// DefaultRaftConfig returns Consul's production timing, three expected
// servers and at most five voters.
func DefaultRaftConfig() RaftConfig {
	return RaftConfig{
		Bind:                    "0.0.0.0:7947",
		BootstrapExpect:         3,
		MaxVoters:               5,
		HeartbeatTimeout:        1 * time.Second,
		ElectionTimeout:         1 * time.Second,
		LeaderLeaseTimeout:      500 * time.Millisecond,
		SnapshotInterval:        2 * time.Minute,
		SnapshotThreshold:       8192,
		SnapshotRetain:          2,
		TrailingLogs:            10240,
		ServerStabilizationTime: 10 * time.Second,
		CleanupDeadServers:      true,
	}
}

// Validate reports the first problem, naming the key (relative to the raft
// section) and its value.
func (c RaftConfig) Validate() error {
	if _, _, err := net.SplitHostPort(c.Bind); err != nil {
		return fmt.Errorf("bind %q: %w", c.Bind, err)
	}
	if c.Advertise != "" {
		host, _, err := net.SplitHostPort(c.Advertise)
		if err != nil {
			return fmt.Errorf("advertise %q: %w", c.Advertise, err)
		}
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			return fmt.Errorf("advertise %q: want an IP address peers can reach", c.Advertise)
		}
	} else if host, _, _ := net.SplitHostPort(c.Bind); host == "" || net.ParseIP(host) == nil || net.ParseIP(host).IsUnspecified() {
		return fmt.Errorf("advertise is empty and bind %q is not a specific IP: set advertise", c.Bind)
	}
	if c.MaxVoters < 1 {
		return fmt.Errorf("max_voters %d: must be at least 1", c.MaxVoters)
	}
	if c.BootstrapExpect < 1 || c.BootstrapExpect > c.MaxVoters {
		return fmt.Errorf("bootstrap_expect %d: must be between 1 and max_voters (%d)", c.BootstrapExpect, c.MaxVoters)
	}
	if c.BootstrapExpect == 2 {
		return errors.New("bootstrap_expect 2: two voters cannot lose either one; use 3 (add a witness) or 1")
	}
	if c.InsecurePlaintext {
		if !c.TLS.Empty() {
			return errors.New("tls and insecure_plaintext: true are both set: choose one")
		}
	} else if err := c.TLS.ValidateMutual(); err != nil {
		return fmt.Errorf("tls.%w (the cluster port needs mutual TLS unless insecure_plaintext: true)", err)
	}
	if c.HeartbeatTimeout < 5*time.Millisecond {
		return fmt.Errorf("heartbeat_timeout %v: must be at least 5ms", c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		return fmt.Errorf("election_timeout %v: must be at least heartbeat_timeout (%v)", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout < 5*time.Millisecond || c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return fmt.Errorf("leader_lease_timeout %v: must be between 5ms and heartbeat_timeout (%v)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.SnapshotInterval < 5*time.Millisecond {
		return fmt.Errorf("snapshot_interval %v: must be at least 5ms", c.SnapshotInterval)
	}
	if c.SnapshotThreshold < 1 {
		return fmt.Errorf("snapshot_threshold %d: must be at least 1", c.SnapshotThreshold)
	}
	if c.SnapshotRetain < 1 {
		return fmt.Errorf("snapshot_retain %d: must be at least 1", c.SnapshotRetain)
	}
	if c.ServerStabilizationTime < 0 {
		return fmt.Errorf("server_stabilization_time %v: must not be negative", c.ServerStabilizationTime)
	}
	if c.MinQuorum < 0 || c.MinQuorum > c.MaxVoters {
		return fmt.Errorf("min_quorum %d: must be between 0 and max_voters (%d)", c.MinQuorum, c.MaxVoters)
	}
	return nil
}

func (c RaftConfig) minQuorum() uint {
	if c.MinQuorum > 0 {
		return uint(c.MinQuorum)
	}
	return uint(c.BootstrapExpect)
}

// PolicyConfig is the failover section of the configuration: the
// decision's Policy and how the leader and the nodes carry it out.
type PolicyConfig struct {
	Policy `yaml:",inline"`
	// BatchSize is the users per routing transaction.
	BatchSize int `yaml:"batch_size"`
	// Interval is how often the leader decides.
	Interval time.Duration `yaml:"interval"`
	// SweepInterval is how often each mail node ends its own sessions of
	// users routed elsewhere (0: never).
	SweepInterval time.Duration `yaml:"sweep_interval"`
}

// DefaultPolicyConfig is DESIGN.md's defaults.
func DefaultPolicyConfig() PolicyConfig {
	return PolicyConfig{Policy: DefaultPolicy(), BatchSize: 1000, Interval: time.Second, SweepInterval: 10 * time.Second}
}

// Validate reports the first problem, naming the key.
func (c PolicyConfig) Validate() error {
	switch {
	case c.BlockPeriod < 0:
		return fmt.Errorf("block_period %s: want >= 0", c.BlockPeriod)
	case c.Failback != "auto" && c.Failback != "manual":
		return fmt.Errorf("failback %q: want auto or manual", c.Failback)
	case c.FailbackHoldDown < 0:
		return fmt.Errorf("failback_hold_down %s: want >= 0", c.FailbackHoldDown)
	case c.FailbackRate < 0:
		return fmt.Errorf("failback_rate %d: want >= 0 (0: no limit)", c.FailbackRate)
	case c.DrainRate < 1:
		return fmt.Errorf("drain_rate %d: want users per second, >= 1", c.DrainRate)
	case !(c.MaxFailedFraction > 0 && c.MaxFailedFraction <= 1): // NaN too
		return fmt.Errorf("max_failed_fraction %v: want more than 0, at most 1", c.MaxFailedFraction)
	case c.BatchSize < 1 || c.BatchSize > 100000:
		return fmt.Errorf("batch_size %d: want 1..100000", c.BatchSize)
	case c.SweepInterval < 0:
		return fmt.Errorf("sweep_interval %s: want >= 0 (0: off)", c.SweepInterval)
	case c.Settle < 0:
		return fmt.Errorf("settle %s: want >= 0", c.Settle)
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("interval %s: want >= 10ms", c.Interval)
	case c.FenceAfter < 100*time.Millisecond:
		return fmt.Errorf("fence_after %s: want >= 100ms", c.FenceAfter)
	case c.Mode != "" && c.Mode != ModeEnforce && c.Mode != ModeDryRun:
		return fmt.Errorf("mode %q: want enforce or dryrun", c.Mode)
	}
	for action, mode := range c.Actions {
		if action != ActionFailover && action != ActionFailback && action != ActionAlerts {
			return fmt.Errorf("actions: %q: want failover, failback or alerts", action)
		}
		if mode != ModeEnforce && mode != ModeDryRun {
			return fmt.Errorf("actions: %s: %q: want enforce or dryrun", action, mode)
		}
	}
	return nil
}
