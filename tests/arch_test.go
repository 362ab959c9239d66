// Package tests holds Roost's cross-package tests: architecture rules,
// process-level cluster tests and, later, the end-to-end mail cluster.
package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/roost-mail/roost"

// allowed lists, for each package, the module's packages it may import.
// The stages are leaves that reach each other only through interfaces the
// consumer declares; only agent wires several together (DESIGN.md).
var allowed = map[string][]string{
	"version":              {},
	"secret":               {},
	"certs":                {"secret"},
	"api":                  {},
	"gossip":               {"secret"},
	"faultfs":              {},
	"faultfs/faultfstest":  {"faultfs"},
	"fsprobe":              {"faultfs", "faultfs/faultfstest"}, // its tests mount faultfs
	"health":               {"certs", "secret"},                // its tests make certificates
	"placement":            {},
	"routing":              {"placement", "secret"},
	"routing/routingtest":  {},
	"dovecot":              {"secret"},
	"lease":                {},
	"failover":             {"certs", "placement"},
	"alerting":             {"api", "failover"},
	"hooks":                {"failover"},
	"lbsignal":             {},
	"sweep":                {"dovecot"},
	"agent":                {"alerting", "api", "hooks", "lbsignal", "sweep", "certs", "failover", "gossip", "version", "fsprobe", "health", "placement", "routing", "dovecot", "lease", "secret"},
	"agent/agenttest":      {"agent", "api", "certs"},
	"cmd/roostd":           {"agent", "certs", "fsprobe", "health", "version", "cmd/internal/manpage"},
	"cmd/nodectl":          {"api", "certs", "placement", "version", "cmd/internal/manpage"},
	"cmd/faultfs":          {"faultfs", "version", "cmd/internal/manpage"},
	"cmd/internal/manpage": {"version"},
	"packaging/build":      {},
	"tests":                {"*"},
}

// owners: third-party packages that only one of our packages may import.
var owners = map[string]string{
	"github.com/hashicorp/memberlist":     "gossip",
	"github.com/hashicorp/raft":           "failover",
	"github.com/hashicorp/raft-wal":       "failover",
	"github.com/hashicorp/raft-autopilot": "failover",
	"github.com/hashicorp/go-hclog":       "failover",
	"github.com/hanwen/go-fuse/v2":        "faultfs",
}

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func TestImportRules(t *testing.T) {
	// The rule itself catches a forbidden import, and a third-party
	// package imported outside its owner.
	if got := violations(pkg{ImportPath: module + "/failover", Imports: []string{"fmt", module + "/placement", module + "/agent", "github.com/hashicorp/memberlist"}}); len(got) != 2 {
		t.Fatalf("failover importing placement, agent and memberlist: %q, want agent and memberlist refused", got)
	}
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		for _, v := range violations(p) {
			t.Error(v)
		}
	}
	if seen < 8 {
		t.Fatalf("go list found only %d packages", seen)
	}
}

// violations are the imports of p that the tables above forbid.
func violations(p pkg) []string {
	rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
	top := rel
	if strings.HasPrefix(rel, "tests") {
		top = "tests"
	}
	may, ok := allowed[top]
	if !ok {
		return []string{fmt.Sprintf("package %s is not in the import table of tests/arch_test.go: add it with the packages it may import", rel)}
	}
	var out []string
	imports := append(append(append([]string{}, p.Imports...), p.TestImports...), p.XTestImports...)
	for _, imp := range imports {
		for prefix, owner := range owners {
			if (imp == prefix || strings.HasPrefix(imp, prefix+"/")) && top != owner && top != "tests" {
				out = append(out, fmt.Sprintf("%s imports %s: only %s may (STYLE.md: its types stay inside %s)", rel, imp, owner, owner))
			}
		}
		if !strings.HasPrefix(imp, module+"/") || contains(may, "*") {
			continue
		}
		dep := strings.TrimPrefix(imp, module+"/")
		if dep == rel || (strings.HasPrefix(dep, rel+"/") && strings.HasSuffix(dep, "test")) {
			continue // a package and its own test helpers
		}
		if !contains(may, dep) {
			out = append(out, fmt.Sprintf("%s imports %s: not allowed (allowed: %v)", rel, dep, may))
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// linkRules: what a binary must never link (import paths, and everything
// under them). nodectl is the operator's client: no raft, gossip or SQL
// driver, whose code only the agent runs. No binary links the man-page
// generator (built only with the manpages tag, by make stage) or a test
// framework of ours.
var linkRules = map[string][]string{
	"cmd/nodectl": {"github.com/hashicorp/raft", "github.com/hashicorp/raft-wal", "github.com/hashicorp/raft-autopilot", "github.com/hashicorp/memberlist", "github.com/jackc/pgx", "github.com/go-sql-driver/mysql",
		"modernc.org/sqlite", "database/sql", "github.com/stretchr/testify", "testing", module + "/agent", module + "/failover", module + "/routing", manGenerator, mdToMan},
	"cmd/roostd":  {module + "/agent/agenttest", module + "/routing/routingtest", module + "/faultfs/faultfstest", manGenerator, mdToMan},
	"cmd/faultfs": {"testing", "github.com/stretchr/testify", manGenerator, mdToMan},
}

const (
	manGenerator = "github.com/spf13/cobra/doc"
	mdToMan      = "github.com/cpuguy83/go-md2man"
)

// testFrameworkVia: roostd links testify (and objx) only because
// raft-autopilot keeps its mocks in its package, not in test files; no
// other package may bring a test framework in.
var testFrameworkVia = map[string]bool{"github.com/hashicorp/raft-autopilot": true}

// forbiddenLinks returns the packages of deps that rules forbid.
func forbiddenLinks(deps []string, rules []string) []string {
	var out []string
	for _, d := range deps {
		for _, r := range rules {
			if d == r || strings.HasPrefix(d, r+"/") {
				out = append(out, d)
			}
		}
	}
	return out
}

// Each binary links only what its job needs (tailscale's deptest, in
// spirit); the rule itself catches a forbidden package.
func TestBinaryDependencies(t *testing.T) {
	if got := forbiddenLinks([]string{"fmt", "github.com/hashicorp/raft", "github.com/hashicorp/raftish", "database/sql/driver"}, linkRules["cmd/nodectl"]); len(got) != 2 {
		t.Fatalf("the rule found %v in a list holding raft, raftish and database/sql/driver, want raft and the driver", got)
	}
	for bin, rules := range linkRules {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "./"+bin)
		cmd.Dir = ".."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps ./%s: %v", bin, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 20 {
			t.Fatalf("go list -deps ./%s listed only %d packages", bin, len(deps))
		}
		if bad := forbiddenLinks(deps, rules); len(bad) > 0 {
			t.Errorf("%s links %v, which it must not", bin, bad)
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./cmd/roostd")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/roostd: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || testFrameworkVia[f[0]] || len(forbiddenLinks(f[:1], testFrameworks)) > 0 {
			continue
		}
		if bad := forbiddenLinks(f[1:], testFrameworks); len(bad) > 0 {
			t.Errorf("roostd links %v through %s: a test framework in the agent", bad, f[0])
		}
	}
}

// testFrameworks are what roostd links only through testFrameworkVia.
// (The standard library's testing it links through hashicorp/raft, whose
// package holds its own test helpers.)
var testFrameworks = []string{"github.com/stretchr/testify", "github.com/stretchr/objx"}
