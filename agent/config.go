package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/roost-mail/roost/alerting"
	"github.com/roost-mail/roost/api"
	"github.com/roost-mail/roost/certs"
	"github.com/roost-mail/roost/dovecot"
	"github.com/roost-mail/roost/failover"
	"github.com/roost-mail/roost/fsprobe"
	"github.com/roost-mail/roost/gossip"
	"github.com/roost-mail/roost/health"
	"github.com/roost-mail/roost/hooks"
	"github.com/roost-mail/roost/lbsignal"
	"github.com/roost-mail/roost/routing"

	"github.com/roost-mail/roost/secret"
)

// Config is roostd's configuration file, one section per stage.
type Config struct {
	Node     NodeConfig            `yaml:"node"`
	Log      LogConfig             `yaml:"log"`
	Gossip   gossip.Config         `yaml:"gossip"`
	Raft     failover.RaftConfig   `yaml:"raft"`
	API      APIConfig             `yaml:"api"`
	FSProbe  fsprobe.Config        `yaml:"fsprobe"`
	Health   health.Config         `yaml:"health"`
	Routing  routing.Config        `yaml:"routing"`
	Dovecot  dovecot.Config        `yaml:"dovecot"`
	Failover failover.PolicyConfig `yaml:"failover"`
	LB       lbsignal.Config       `yaml:"lb"`
	// Alertmanager is Prometheus' Alertmanager, both ways.
	Alertmanager alerting.Config `yaml:"alertmanager"`
	// Hooks are the operator's scripts around moves.
	Hooks hooks.Config `yaml:"hooks"`
}

// NodeConfig says who this node is.
type NodeConfig struct {
	// Name identifies the node in the cluster; unique, stable across
	// restarts. Defaults to the host name.
	Name string `yaml:"name"`
	// Role is "mail" for a node running Dovecot, or "witness" for a small
	// host that only votes, so two mail nodes keep a raft quorum.
	Role string `yaml:"role"`
	// ProxyHost is the value the SQL passdb's proxy_host column holds for
	// users served by this node (usually its IP). Required for mail nodes.
	ProxyHost string `yaml:"proxy_host"`
	// Weight is this mail node's share of users beside the others': a
	// node of weight 2 is given twice the users of one of weight 1 by
	// failovers, drains and nodectl rebalance.
	Weight float64 `yaml:"weight"`
	// MaxUsers is the most users any plan places on this mail node (0: no
	// bound): a failover or drain that finds every node full stops, saying
	// so, and leaves the rest where they are.
	MaxUsers int `yaml:"max_users"`
	// DataDir holds raft's log and snapshots.
	DataDir string `yaml:"data_dir"`
	// LeaveOnStop announces a graceful leave when the agent stops, so peers
	// forget it at once. Off by default: a restarting node keeps its place.
	LeaveOnStop bool `yaml:"leave_on_stop"`
}

// LogConfig is where and how roostd logs (always to stderr: journald).
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// APIConfig is the agent's HTTP API.
type APIConfig struct {
	// Socket is the unix socket for local clients (nodectl); its file mode
	// (0660) authorises them.
	Socket string `yaml:"socket"`
	// Listen is an optional host:port for remote clients: TLS and a bearer
	// token are then required.
	Listen string `yaml:"listen"`
	// TLS is the server certificate for Listen; with ca_file set, clients
	// must also present a certificate signed by it.
	TLS certs.Files `yaml:"tls"`
	// TokenFile holds the bearer token remote clients must send.
	TokenFile string `yaml:"token_file"`
}

// DefaultConfig is what a missing key means.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Node:         NodeConfig{Name: host, Role: RoleMail, Weight: 1, DataDir: "/var/lib/roost"},
		Log:          LogConfig{Level: "info", Format: "text"},
		Gossip:       gossip.DefaultConfig(),
		Raft:         failover.DefaultRaftConfig(),
		API:          APIConfig{Socket: api.DefaultSocket},
		FSProbe:      fsprobe.DefaultConfig(),
		Health:       health.DefaultConfig(),
		Routing:      routing.DefaultConfig(),
		Dovecot:      dovecot.DefaultConfig(),
		Failover:     failover.DefaultPolicyConfig(),
		Alertmanager: alerting.Config{ResendInterval: 30 * time.Second},
		Hooks:        hooks.Config{Timeout: 30 * time.Second},
	}
}

// Node roles.
const (
	RoleMail    = "mail"
	RoleWitness = "witness"
)

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate reports the first problem, naming the key by its full path.
func (c Config) Validate() error {
	n := c.Node
	switch {
	case !nodeName.MatchString(n.Name):
		return fmt.Errorf("node.name %q: want 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", n.Name)
	case n.Role != RoleMail && n.Role != RoleWitness:
		return fmt.Errorf("node.role %q: want %q or %q", n.Role, RoleMail, RoleWitness)
	case n.Role == RoleMail && n.ProxyHost == "":
		return errors.New("node.proxy_host is empty: a mail node needs the proxy_host value its users have in the passdb")
	case n.Role == RoleWitness && n.ProxyHost != "":
		return fmt.Errorf("node.proxy_host %q: a witness serves no users, leave it empty", n.ProxyHost)
	case n.DataDir == "":
		return errors.New("node.data_dir is empty")
	case !(n.Weight > 0 && n.Weight <= 1000):
		return fmt.Errorf("node.weight %v: want a share of users above 0, up to 1000 (1: like the others)", n.Weight)
	case n.MaxUsers < 0:
		return fmt.Errorf("node.max_users %d: want the most users this node may hold, or 0 for no bound", n.MaxUsers)
	}
	if _, err := logLevel(c.Log.Level); err != nil {
		return err
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format %q: want \"text\" or \"json\"", c.Log.Format)
	}
	if err := c.Gossip.Validate(); err != nil {
		return fmt.Errorf("gossip.%w", err)
	}
	if err := c.Raft.Validate(); err != nil {
		return fmt.Errorf("raft.%w", err)
	}
	if err := c.FSProbe.Validate(); err != nil {
		return fmt.Errorf("fsprobe.%w", err)
	}
	if err := c.Health.Validate(); err != nil {
		return fmt.Errorf("health.%w", err)
	}
	// routing.dsn_file empty: this node hands leadership over (it still
	// votes and reports); every node that may lead needs it.
	if c.Routing.DSNFile != "" {
		if err := c.Routing.Validate(); err != nil {
			return fmt.Errorf("routing.%w", err)
		}
	}
	if err := c.Dovecot.Validate(); err != nil {
		return fmt.Errorf("dovecot.%w", err)
	}
	if c.Dovecot.URL != "" && !strings.HasSuffix(c.Dovecot.URL, doveadmPath) {
		return fmt.Errorf("dovecot.url %q: want the API's address ending in %s", c.Dovecot.URL, doveadmPath)
	}
	if err := c.Failover.Validate(); err != nil {
		return fmt.Errorf("failover.%w", err)
	}
	if err := c.LB.Validate(); err != nil {
		return fmt.Errorf("lb.%w", err)
	}
	if err := c.Alertmanager.Validate(); err != nil {
		return fmt.Errorf("alertmanager.%w", err)
	}
	if err := c.Hooks.Validate(); err != nil {
		return fmt.Errorf("hooks.%w", err)
	}
	if c.Alertmanager.WebhookTokenFile != "" && c.API.Listen == "" {
		return errors.New("alertmanager.webhook_token_file is set but api.listen is empty: Alertmanager reaches the webhook on the TCP API")
	}
	a := c.API
	if a.Socket == "" && a.Listen == "" {
		return errors.New("api.socket and api.listen are both empty: nodectl could not reach the agent")
	}
	if a.Listen != "" {
		if _, _, err := net.SplitHostPort(a.Listen); err != nil {
			return fmt.Errorf("api.listen %q: %w", a.Listen, err)
		}
		if a.TLS.CertFile == "" || a.TLS.KeyFile == "" {
			return errors.New("api.tls.cert_file and api.tls.key_file are required with api.listen: the TCP API is TLS only")
		}
		if a.TokenFile == "" {
			return errors.New("api.token_file is required with api.listen: remote clients must send a bearer token")
		}
	}
	return nil
}

// CheckFiles reads every file the configuration names (keys, certificates,
// token), so a bad path or a broken key fails check-config, not a 3 a.m.
// restart.
func (c Config) CheckFiles() error {
	if c.Gossip.KeyFile != "" {
		if _, err := gossip.LoadKeyring(c.Gossip.KeyFile); err != nil {
			return fmt.Errorf("gossip.key_file: %w", err)
		}
	}
	if _, err := c.Health.Specs(); err != nil {
		return fmt.Errorf("health.%w", err)
	}
	if c.Routing.DSNFile != "" {
		if _, err := secret.Read("file", c.Routing.DSNFile); err != nil {
			return fmt.Errorf("routing.dsn_file: %w", err)
		}
	}
	if c.Dovecot.URL != "" {
		if _, err := dovecot.NewHTTP(c.Dovecot); err != nil {
			return fmt.Errorf("dovecot.%w", err)
		}
	}
	if !c.Raft.InsecurePlaintext {
		if _, _, err := c.Raft.TLS.MutualConfigs(); err != nil {
			return fmt.Errorf("raft.tls: %w", err)
		}
	}
	if c.API.Listen != "" {
		if _, err := c.API.TLS.ServerConfig(); err != nil {
			return fmt.Errorf("api.tls: %w", err)
		}
		if _, err := readToken(c.API.TokenFile); err != nil {
			return fmt.Errorf("api.token_file: %w", err)
		}
	}
	if err := c.Hooks.CheckFiles(); err != nil {
		return fmt.Errorf("hooks.%w", err)
	}
	if c.Alertmanager.WebhookTokenFile != "" {
		if _, err := readToken(c.Alertmanager.WebhookTokenFile); err != nil {
			return fmt.Errorf("alertmanager.webhook_token_file: %w", err)
		}
	}
	return nil
}

func readToken(path string) (string, error) {
	b, err := secret.Read("token file", path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("%s: token shorter than 16 characters", path)
	}
	return t, nil
}

// ParseLevel reads a log.level value.
func ParseLevel(s string) (slog.Level, error) { return logLevel(s) }

func logLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log.level %q: want debug, info, warn or error", s)
}

// NewLogger builds the slog logger the configuration asks for.
func NewLogger(c LogConfig, w io.Writer) (*slog.Logger, *slog.LevelVar, error) {
	lvl, err := logLevel(c.Level)
	if err != nil {
		return nil, nil, err
	}
	v := &slog.LevelVar{}
	v.Set(lvl)
	opts := &slog.HandlerOptions{Level: v}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), v, nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), v, nil
}

// LoadConfig reads and validates a configuration file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes YAML over the defaults, rejecting unknown keys and
// values of the wrong type with the key's full path, then validates.
func ParseConfig(b []byte) (Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, explainYAML(b, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("more than one YAML document: a config file holds one")
	}
	// yaml.v3 reads 2.5 into an integer as 2, and 5 into a duration as
	// 5ns: both are refused here, naming the key.
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err == nil && len(root.Content) == 1 {
		if err := checkNumbers(root.Content[0], reflect.TypeOf(c), ""); err != nil {
			return Config{}, err
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkNumbers walks the YAML beside the type it decodes into and refuses
// a fraction where a whole number is meant and a bare number where a
// duration is.
func checkNumbers(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.AliasNode && n.Alias != nil:
		return checkNumbers(n.Alias, t, path)
	case t == durationType:
		if n.Kind == yaml.ScalarNode && (n.Tag == "!!int" || n.Tag == "!!float") {
			return fmt.Errorf("%s: %s is not a duration: write it with a unit, such as %ss or %sms", path, clipValue(n.Value), clipValue(n.Value), clipValue(n.Value))
		}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!float" {
			return fmt.Errorf("%s: %s is not a whole number", path, clipValue(n.Value))
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if f, ok := yamlField(t, key); ok {
				if err := checkNumbers(n.Content[i+1], f.Type, joinPath(path, key)); err != nil {
					return err
				}
			}
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, e := range n.Content {
			if err := checkNumbers(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkNumbers(n.Content[i+1], t.Elem(), joinPath(path, n.Content[i].Value)); err != nil {
				return err
			}
		}
	}
	return nil
}

// yamlField is the field of struct t that YAML key sets, looking into
// inline structs too.
func yamlField(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case !f.IsExported():
		case opts == "inline" && f.Type.Kind() == reflect.Struct:
			if g, ok := yamlField(f.Type, key); ok {
				return g, true
			}
		case name == key:
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// clipValue quotes at most a short prefix of a bad value.
func clipValue(v string) string {
	if len(v) > 40 {
		return v[:40] + "…"
	}
	return v
}

var (
	reUnknown = regexp.MustCompile(`^line (\d+): field (\S+) not found in type`)
	reType    = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")
)

// explainYAML rewrites yaml.v3's errors ("line 7: field x not found in
// type gossip.Config") to name the key's full path.
func explainYAML(b []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	paths := keyPaths(b)
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := reUnknown.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			key := m[2]
			if p, ok := paths[line]; ok {
				key = p
			}
			msgs = append(msgs, fmt.Sprintf("unknown key %q (line %d)", key, line))
			continue
		}
		if m := reType.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			key := paths[line]
			if key == "" {
				key = "line " + m[1]
			}
			value := fmt.Sprintf("%q", m[3])
			if m[3] == "" {
				value = "(a " + yamlKind(m[2]) + ")"
			}
			msgs = append(msgs, fmt.Sprintf("%s: invalid value %s (line %d): want %s", key, value, line, typeHint(m[4])))
			continue
		}
		msgs = append(msgs, e)
	}
	return errors.New(strings.Join(msgs, "; "))
}

func yamlKind(tag string) string {
	switch tag {
	case "map":
		return "mapping"
	case "seq":
		return "list"
	}
	return tag
}

func typeHint(goType string) string {
	switch goType {
	case "time.Duration":
		return "a duration such as 500ms, 2s or 1h"
	case "bool":
		return "true or false"
	case "int", "uint64", "int64":
		return "a whole number"
	case "string":
		return "a string"
	case "[]string":
		return "a list of strings"
	}
	if strings.HasPrefix(goType, "[]") {
		return "a list"
	}
	return "a " + goType
}

// keyPaths maps each line of the document to the dotted path of the key
// (or list item) on it.
func keyPaths(b []byte) map[int]string {
	var root yaml.Node
	if yaml.Unmarshal(b, &root) != nil {
		return nil
	}
	out := map[int]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				out[k.Line] = p
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if _, ok := out[c.Line]; !ok || c.Kind == yaml.ScalarNode {
					out[c.Line] = p
				}
				walk(c, p)
			}
		case yaml.ScalarNode:
			if _, ok := out[n.Line]; !ok {
				out[n.Line] = path
			}
		}
	}
	walk(&root, "")
	return out
}
