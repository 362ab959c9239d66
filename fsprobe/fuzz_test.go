package fsprobe

import (
	"os"
	"testing"
)

// /proc/self/mountinfo as the kernel writes it, with the lines that broke
// the hand-written parser (an empty source under shared propagation).
func FuzzParseMountinfo(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		f.Add(string(b), "/")
	}
	f.Add("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n", "/mnt2")
	f.Add("812 30 0:95 / /tmp/x rw,relatime shared:400 - tmpfs  rw,inode64\n", "/tmp/x")
	f.Add("812 30 0:95 / /tmp/x rw,relatime - tmpfs  rw,inode64\n", "/tmp/x")
	f.Add("70 25 0:54 / /srv/mail rw,nosuid,nodev,relatime shared:33 - fuse.objectivefs objectivefs rw,user_id=0,group_id=0\n", "/srv/mail")
	f.Add("70 25 0:54 / /srv/mail\\040x rw - fuse.x x ro\n", "/srv/mail x")
	f.Add("", "/")
	f.Fuzz(func(t *testing.T, text, path string) {
		m, err := parseMountinfo(text, path)
		if err != nil || m == nil {
			return
		}
		if m.dev != uint64(m.major)<<20|uint64(m.minor) {
			t.Fatalf("device %d is not major %d, minor %d", m.dev, m.major, m.minor)
		}
	})
}

// fusectl's waiting file: a count and a newline, as the kernel writes it;
// anything else is an error, never a panic or a negative count.
func FuzzParseWaiting(f *testing.F) {
	for _, s := range []string{"0\n", "3\n", "", "-1\n", "12345678901234567890123\n", "x", "  7  \n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseWaiting(b)
		if err == nil && n < 0 {
			t.Fatalf("parseWaiting(%q) = %d", b, n)
		}
		if err != nil && (n != -1 || len(err.Error()) > 100) {
			t.Fatalf("parseWaiting(%q): %d, %v", b, n, err)
		}
	})
}

func TestParseWaiting(t *testing.T) {
	for in, want := range map[string]int{"0\n": 0, "17\n": 17, "-1\n": -1, "": -1, "x\n": -1, "1" + string(make([]byte, 40)): -1} {
		if got, _ := parseWaiting([]byte(in)); got != want {
			t.Errorf("parseWaiting(%q) = %d, want %d", in, got, want)
		}
	}
}
