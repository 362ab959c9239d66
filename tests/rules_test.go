package tests

import (
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
	rules, err := os.ReadFile(filepath.Join(dir, "roost-rules.yml"))
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
			t.Errorf("the rules use %s, which no roostd metric is called", m)
		}
	}
}
