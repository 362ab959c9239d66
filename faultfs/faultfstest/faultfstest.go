// Package faultfstest mounts a faultfs for a test, as httptest starts a
// server: a backing directory and a mountpoint in a temporary directory,
// unmounted when the test ends.
package faultfstest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/roost-mail/roost/faultfs"
)

// Mount mounts a fresh faultfs and returns it with its backing directory
// and mountpoint. It fails the test when it cannot mount (FUSE needs
// root: make test runs as root).
func Mount(tb testing.TB) (fs *faultfs.FS, backing, mountpoint string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("mounting FUSE needs root (make test runs as root)")
	}
	dir := tb.TempDir()
	backing, mountpoint = filepath.Join(dir, "back"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mountpoint} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	fs, err := faultfs.Mount(backing, mountpoint, faultfs.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = fs.Unmount() })
	return fs, backing, mountpoint
}

// MountOn mounts another faultfs over an existing backing directory, as
// a second node mounts the same shared filesystem; each mount's faults
// are its own.
func MountOn(tb testing.TB, backing string) (fs *faultfs.FS, mountpoint string) {
	tb.Helper()
	mountpoint = filepath.Join(tb.TempDir(), "mnt")
	if err := os.Mkdir(mountpoint, 0o755); err != nil {
		tb.Fatal(err)
	}
	fs, err := faultfs.Mount(backing, mountpoint, faultfs.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = fs.Unmount() })
	return fs, mountpoint
}
