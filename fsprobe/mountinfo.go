package fsprobe

import (
	"fmt"
	"os"
	"strconv"
	"strings"
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
// on a stuck FUSE daemon.
func findMount(path string) (*mountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return parseMountinfo(string(b), path)
}

func parseMountinfo(text, path string) (*mountEntry, error) {
	var found *mountEntry
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		if len(f) < 10 || unescape(f[4]) != path {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 > len(f) {
			return nil, fmt.Errorf("malformed mountinfo line %q", line)
		}
		majmin := strings.SplitN(f[2], ":", 2)
		if len(majmin) != 2 {
			return nil, fmt.Errorf("malformed device %q in mountinfo", f[2])
		}
		major, err1 := strconv.ParseUint(majmin[0], 10, 32)
		minor, err2 := strconv.ParseUint(majmin[1], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("malformed device %q in mountinfo", f[2])
		}
		e := &mountEntry{dev: major<<20 | minor, major: uint32(major), minor: uint32(minor), fstype: f[sep+1], source: unescape(f[sep+2])}
		e.readOnly = hasOption(f[5], "ro") || hasOption(f[sep+3], "ro")
		found = e // later lines are mounted on top of earlier ones
	}
	return found, nil
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// unescape decodes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
