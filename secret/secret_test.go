package secret

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := file("big", "")
	if err := os.Truncate(big, MaxSize+1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{file("token", "s3cret-token-of-some-length\n"), ""},
		{file("empty", ""), "api.token_file " + filepath.Join(dir, "empty") + " is empty"},
		{file("blank", " \n\t\n"), "is empty"},
		{"/dev/zero", "not a regular file"},
		{"/dev/urandom", "not a regular file"},
		{fifo, "not a regular file"},
		{big, "over the limit of 1048576"},
		{filepath.Join(dir, "missing"), "api.token_file: open"},
	} {
		start := time.Now()
		b, err := Read("api.token_file", tc.path)
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: took %v", tc.path, took)
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.path, err)
		case tc.want == "" && !strings.HasPrefix(string(b), "s3cret"):
			t.Errorf("%s: read %q", tc.path, b)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error containing %q", tc.path, err, tc.want)
		}
	}
}
