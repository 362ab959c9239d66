package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mail/roost/agent/agenttest"
)

// debootstrapCache keeps Debian's minimal base between runs: the first
// run downloads it (about 45 MB) from Debian's archive.
const debootstrapCache = "/var/cache/roost-test/bookworm-minbase.tgz"

// The .deb in a throwaway Debian root, as the README's install section
// says: it installs without starting anything, its binaries run, an
// upgrade keeps the operator's configuration, and purge removes the state
// and the roost user.
func TestPackageInstallUpgradePurge(t *testing.T) {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatal("debootstrap is not installed: run scripts/test-deps.sh as root")
	}
	if _, err := os.Stat(debootstrapCache); err != nil {
		os.MkdirAll(filepath.Dir(debootstrapCache), 0o755)
		work := t.TempDir()
		if out, err := exec.Command("debootstrap", "--variant=minbase", "--make-tarball="+debootstrapCache, "bookworm", work, "http://deb.debian.org/debian").CombinedOutput(); err != nil {
			os.Remove(debootstrapCache)
			t.Fatalf("debootstrap --make-tarball: %v\n%s", err, tail(out))
		}
	}
	root, err := os.MkdirTemp("/var/tmp", "roost-chroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if out, err := exec.Command("debootstrap", "--variant=minbase", "--unpack-tarball="+debootstrapCache, "bookworm", root, "http://deb.debian.org/debian").CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, tail(out))
	}

	// Two builds of this commit, the second a newer version.
	v1 := strings.TrimSpace(mustRun(t, "", "../scripts/pkgversion.sh"))
	debs := map[string]string{}
	for _, v := range []string{v1, v1 + "+1"} {
		dist := t.TempDir()
		mustRun(t, "..", "make", "-s", "deb", "DIST="+dist, "PKGVERSION="+v)
		m, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
		if len(m) != 1 {
			t.Fatalf("make deb built %v", m)
		}
		b, _ := os.ReadFile(m[0])
		name := "/tmp/" + filepath.Base(m[0])
		if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		debs[v] = name
	}
	in := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("chroot", append([]string{root}, args...)...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"}
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("in the Debian root, %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return string(b)
	}

	if out := in("dpkg", "-i", debs[v1]); !strings.Contains(out, "installed, not started") {
		t.Fatalf("dpkg -i says no word of the service:\n%s", out)
	}
	in("getent", "group", "roost")
	in("test", "-d", "/var/lib/roost")
	if out := in("nodectl", "--version"); !strings.HasPrefix(out, "nodectl ") {
		t.Fatalf("nodectl --version: %q", out)
	}
	// The operator's configuration, made with the installed tools.
	in("sh", "-c", "roostd keygen > /etc/roost/gossip.key && roostd tls ca --dir /etc/roost/tls >/dev/null && roostd tls cert --dir /etc/roost/tls --name mail1 --host 10.0.0.1 >/dev/null")
	config := `# edited by the operator
node:
  name: mail1
  proxy_host: 10.0.0.1
gossip:
  advertise: 10.0.0.1:7946
  key_file: /etc/roost/gossip.key
raft:
  advertise: 10.0.0.1:7947
  tls:
    ca_file: /etc/roost/tls/ca.pem
    cert_file: /etc/roost/tls/mail1.pem
    key_file: /etc/roost/tls/mail1-key.pem
`
	if err := os.WriteFile(filepath.Join(root, "etc/roost/roost.yaml"), []byte(config), 0o640); err != nil {
		t.Fatal(err)
	}
	if out := in("roostd", "check-config", "--config", "/etc/roost/roost.yaml"); !strings.Contains(out, "OK") {
		t.Fatalf("check-config: %q", out)
	}

	// The agent runs from the package; its socket belongs to the roost group.
	ports := agenttest.FreePorts(t, 2)
	run := fmt.Sprintf(`node:
  name: mail1
  proxy_host: 10.0.0.1
gossip:
  bind: 127.0.0.1:%d
  key_file: /etc/roost/gossip.key
raft:
  bind: 127.0.0.1:%d
  bootstrap_expect: 1
  tls:
    ca_file: /etc/roost/tls/ca.pem
    cert_file: /etc/roost/tls/mail1.pem
    key_file: /etc/roost/tls/mail1-key.pem
`, ports[0], ports[1])
	if err := os.WriteFile(filepath.Join(root, "etc/roost/run.yaml"), []byte(run), 0o640); err != nil {
		t.Fatal(err)
	}
	out := in("sh", "-c", `mkdir -p /run/roost; roostd run --config /etc/roost/run.yaml 2>/tmp/roostd.log & pid=$!
for i in $(seq 100); do nodectl status --json 2>/dev/null | grep -q '"leader": "mail1"' && break; sleep 0.1; done
stat -c 'group=%G mode=%a' /run/roost/roost.sock; nodectl status | grep '^leader:'; kill $pid; wait $pid; echo exit=$?`)
	if !strings.Contains(out, "group=roost mode=660") || !strings.Contains(out, "leader: mail1") || !strings.Contains(out, "exit=0") {
		b, _ := os.ReadFile(filepath.Join(root, "tmp/roostd.log"))
		t.Fatalf("roostd from the package:\n%s\nits log:\n%s", out, tail(b))
	}

	in("dpkg", "-i", debs[v1+"+1"])
	if v := in("dpkg-query", "-W", "-f", "${Version}", "roost"); v != v1+"+1-1" {
		t.Fatalf("after the upgrade: version %q", v)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/roost/roost.yaml")); string(b) != config {
		t.Fatalf("the upgrade overwrote the operator's configuration:\n%s", b)
	}

	in("dpkg", "--purge", "roost")
	for _, p := range []string{"var/lib/roost", "usr/bin/roostd", "etc/roost/roost.yaml"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("/%s is left after purge", p)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/passwd")); strings.Contains(string(b), "roost:") {
		t.Error("the roost user is left after purge")
	}
}

func mustRun(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(b))
	}
	return string(b)
}

func tail(b []byte) string {
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
