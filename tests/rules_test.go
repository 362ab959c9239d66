package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The alert rules pass promtool's check and unit tests, and every metric
// they name is one roostd exports.
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: run scripts/test-deps.sh as root (Debian's prometheus package)")
	}
	dir := filepath.Join("..", "packaging", "prometheus")
	for _, args := range [][]string{{"check", "rules", "roost-rules.yml"}, {"test", "rules", "roost-rules.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	checkMetricNames(t, filepath.Join(dir, "roost-rules.yml"))
}

// The Grafana dashboard is JSON Grafana can import, and every metric its
// panels query is one roostd exports.
func TestGrafanaDashboard(t *testing.T) {
	path := filepath.Join("..", "packaging", "grafana", "roost-dashboard.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: %v (title %q, %d panels)", path, err, d.Title, len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 || p.Targets[0].Expr == "" {
			t.Errorf("panel %q queries nothing", p.Title)
		}
	}
	checkMetricNames(t, path)
}

// checkMetricNames: every roost_ metric a file names is one roostd
// exports (named in a non-test source file).
func checkMetricNames(t *testing.T, path string) {
	t.Helper()
	rules, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var src strings.Builder
	for _, d := range []string{"agent", "failover", "fsprobe", "health", "gossip"} {
		files, _ := filepath.Glob(filepath.Join("..", d, "*.go"))
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				b, _ := os.ReadFile(f)
				src.Write(b)
			}
		}
	}
	for _, m := range regexp.MustCompile(`roost_[a-z_]+`).FindAllString(string(rules), -1) {
		name := regexp.MustCompile(`_(bucket|count|sum)$`).ReplaceAllString(m, "")
		if !strings.Contains(src.String(), `"`+name+`"`) {
			t.Errorf("%s uses %s, which no roostd metric is called", filepath.Base(path), m)
		}
	}
}
