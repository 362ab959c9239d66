package fsprobe

import (
	"strings"

	"github.com/moby/sys/mountinfo"
)

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	dev          uint64 // the kernel's device number, major<<20 | minor: fusectl's name for it
	major, minor uint32
	fstype       string
	source       string
	readOnly     bool
}

// findMount returns the top-most mount at path, or nil when none is.
// Reading mountinfo never touches the filesystem itself, so it cannot hang
// on a stuck FUSE daemon. moby/sys/mountinfo parses it (an empty source,
// as `mount -t tmpfs "" DIR` makes, is a field of its own).
func findMount(path string) (*mountEntry, error) {
	ms, err := mountinfo.GetMounts(at(path))
	if err != nil {
		return nil, err
	}
	return top(ms), nil
}

func parseMountinfo(text, path string) (*mountEntry, error) {
	ms, err := mountinfo.GetMountsFromReader(strings.NewReader(text), at(path))
	if err != nil {
		return nil, err
	}
	return top(ms), nil
}

// at keeps the mounts whose mountpoint is path.
func at(path string) mountinfo.FilterFunc {
	return func(i *mountinfo.Info) (skip, stop bool) { return i.Mountpoint != path, false }
}

// top is the last of the mounts at one path: later lines are mounted on
// top of earlier ones.
func top(ms []*mountinfo.Info) *mountEntry {
	if len(ms) == 0 {
		return nil
	}
	i := ms[len(ms)-1]
	major, minor := uint32(i.Major), uint32(i.Minor)
	return &mountEntry{dev: uint64(major)<<20 | uint64(minor), major: major, minor: minor, fstype: i.FSType, source: i.Source,
		readOnly: hasOption(i.Options, "ro") || hasOption(i.VFSOptions, "ro")}
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}
