package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NOTICE must name every third-party module the binaries link, at the
// version they link.
func TestNoticeListsShippedModules(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}}{{end}}{{end}}", "./cmd/roostd", "./cmd/nodectl", "./cmd/faultfs")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	notice, err := os.ReadFile("../NOTICE")
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if mod != "" && !strings.Contains(string(notice), mod+" ") {
			t.Errorf("NOTICE lacks %q: run scripts/notice.sh", mod)
		}
	}
}

// make demo's script runs end to end: a cluster forms, survives the
// leader's kill -9 and takes the old leader back.
func TestDemoScript(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is not installed")
	}
	dir, err := os.MkdirTemp("", "roostdemo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command("scripts/demo.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "ROOST_DEMO_ONESHOT=1", "ROOST_DEMO_DIR="+filepath.Join(dir, "d"), "ROOST_BIN="+filepath.Join(dir, "bin"), "ROOST_DEMO_PORT=27940")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{"cluster formed, leader node", "new leader node", "dead", "rejoins as a follower"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(string(out), "alive"); n < 6 {
		t.Fatalf("demo output shows %d alive members, want the full cluster twice:\n%s", n, out)
	}
}
