package tests

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// make deb rpm builds both packages; lintian finds no error in the .deb,
// the .rpm carries the right metadata, files and config flags, systemd
// accepts the unit, and building again gives the same bytes.
func TestPackages(t *testing.T) {
	for _, tool := range []string{"lintian", "rpm", "dpkg-deb", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/test-deps.sh as root", tool)
		}
	}
	dist := t.TempDir()
	build := func() (deb, rpm string) {
		t.Helper()
		os.RemoveAll(dist)
		cmd := exec.Command("make", "-s", "deb", "rpm", "DIST="+dist)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make deb rpm: %v\n%s", err, out)
		}
		debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
		rpms, _ := filepath.Glob(filepath.Join(dist, "*.rpm"))
		if len(debs) != 1 || len(rpms) != 1 {
			t.Fatalf("packages: %v %v", debs, rpms)
		}
		return debs[0], rpms[0]
	}
	deb, rpm := build()
	out := func(name string, args ...string) string {
		t.Helper()
		b, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
		}
		return string(b)
	}
	version := strings.TrimSpace(out("../scripts/pkgversion.sh"))

	out("lintian", "--fail-on", "error", deb)
	info := out("dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: roost", "Version: " + version + "-1", "Architecture: amd64", "Section: mail"} {
		if !strings.Contains(info, want) {
			t.Errorf("the .deb's control lacks %q:\n%s", want, info)
		}
	}
	if conf := out("dpkg-deb", "--ctrl-tarfile", deb); !strings.Contains(conf, "conffiles") {
		t.Error("the .deb has no conffiles")
	}
	files := out("dpkg-deb", "--contents", deb)
	for _, want := range []string{"./usr/bin/roostd", "./usr/bin/nodectl", "./usr/bin/faultfs", "./etc/roost/roost.yaml",
		"./lib/systemd/system/roostd.service", "./usr/share/man/man1/nodectl-drain.1.gz", "./usr/share/bash-completion/completions/nodectl",
		"./usr/share/zsh/vendor-completions/_roostd", "./usr/share/doc/roost/copyright", "./usr/share/roost/prometheus/roost-rules.yml"} {
		if !strings.Contains(files, want) {
			t.Errorf("the .deb lacks %s", want)
		}
	}
	root := t.TempDir()
	out("dpkg-deb", "-x", deb, root)
	if c, err := os.ReadFile(filepath.Join(root, "etc/roost/roost.yaml")); err != nil || !strings.Contains(string(c), "proxy_host") {
		t.Errorf("the packaged configuration: %v", err)
	}
	// The unit, with its commands pointing at the extracted binaries.
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/roostd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=", "CapabilityBoundingSet="} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	test := filepath.Join(root, "roostd.service")
	os.WriteFile(test, []byte(strings.ReplaceAll(string(unit), "/usr/bin/", root+"/usr/bin/")), 0o644)
	out("systemd-analyze", "verify", test)
	if v := out(filepath.Join(root, "usr/bin/nodectl"), "--version"); !strings.HasPrefix(v, "nodectl ") {
		t.Errorf("nodectl --version: %q", v)
	}

	rinfo := out("rpm", "-qpi", rpm)
	for _, want := range []string{"Name        : roost", "Version     : " + version, "Architecture: x86_64", "License     : Apache-2.0"} {
		if !strings.Contains(rinfo, want) {
			t.Errorf("rpm -qpi lacks %q:\n%s", want, rinfo)
		}
	}
	flags := out("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm)
	for _, want := range []string{"/etc/roost/roost.yaml cn", "/usr/bin/roostd \n", "/usr/lib/systemd/system/roostd.service"} {
		if !strings.Contains(flags, want) {
			t.Errorf("rpm files lack %q:\n%s", want, flags)
		}
	}

	sum := func(p string) string {
		b, _ := os.ReadFile(p)
		return fmt.Sprintf("%x", sha256.Sum256(b))
	}
	d1, r1 := sum(deb), sum(rpm)
	deb, rpm = build()
	if sum(deb) != d1 || sum(rpm) != r1 {
		t.Error("a second build of the same commit gave different packages")
	}
}
