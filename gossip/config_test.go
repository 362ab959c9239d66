package gossip

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKeyring(t *testing.T) {
	k1 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	k2 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 16))
	kr, err := LoadKeyring(writeFile(t, "# rotation: new first\n"+k1+"\n\n  "+k2+"  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := kr.GetKeys(); len(got) != 2 || !bytes.Equal(kr.GetPrimaryKey(), bytes.Repeat([]byte{1}, 32)) {
		t.Fatalf("got %d keys, primary %x; want 2 keys, the first primary", len(got), kr.GetPrimaryKey())
	}
	for name, tc := range map[string]struct{ content, want string }{
		"empty":      {"# nothing\n", "holds no key"},
		"not base64": {"not-base64!\n", "line 1: not base64"},
		"wrong size": {k1 + "\n" + base64.StdEncoding.EncodeToString([]byte("short")) + "\n", "line 2: key size must be 16, 24 or 32 bytes"},
	} {
		if _, err := LoadKeyring(writeFile(t, tc.content)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
	if _, err := LoadKeyring(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file: got no error")
	}
}

func TestMemberlistLogLevels(t *testing.T) {
	var buf bytes.Buffer
	l := newStdLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Print("[WARN] memberlist: Refuting a suspect message (from: node2)")
	l.Print("[DEBUG] memberlist: Stream connection from=127.0.0.1:1")
	l.Print("[ERR] memberlist: Failed to send ping")
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="Refuting a suspect message (from: node2)" component=memberlist`,
		`level=DEBUG msg="Stream connection from=127.0.0.1:1"`,
		`level=ERROR msg="Failed to send ping"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
