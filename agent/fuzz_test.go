package agent

import (
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// The configuration file: whatever it holds, ParseConfig returns a config
// that validates, or an error that names the problem in bounded length
// (a bad value is quoted by a short prefix, not whole).
func FuzzParseConfig(f *testing.F) {
	example, err := os.ReadFile("../packaging/roost.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("node:\n  name: node1\n  proxy_host: 10.0.0.1\n"))
	f.Add([]byte("node:\n  name: node1\n  proxy_host: 10.0.0.1\nfailover:\n  max_failed_fraction: .nan\n  drain_rate: 2.5\n"))
	f.Add([]byte("node: {name: [1, 2]}\n---\nnode: {}\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			if n := len(err.Error()); n > 4096 {
				t.Fatalf("an error of %d bytes for %d bytes of config", n, len(b))
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted a config that does not validate: %v", err)
		}
	})
}

// An operator request's body: any bytes give a request or an error, never
// a panic or more than the body limit read.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{`{}`, `{"reason":"disk swap"}`, `{"reason":"x","rate":50}`, `{"user":"lat\u00e9n","to":"node2"}`,
		`{"reason":"a"}{"reason":"b"}`, `{"unknown":1}`, `[`, ``, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := httptest.NewRequest("POST", "/v1/nodes/node2/drain", strings.NewReader(string(b)))
		w := httptest.NewRecorder()
		if _, err := decodeBody(w, r); err != nil && len(err.Error()) > 4096 {
			t.Fatalf("an error of %d bytes", len(err.Error()))
		}
	})
}

// ?since= of nodectl history: a time, a duration back, or an error.
func FuzzParseSince(f *testing.F) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"24h", "90m", "2026-11-28T12:00:00Z", "-1h", "0s", "", "9999999999h", "2026-13-01T00:00:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		at, err := parseSince(v, now)
		if err != nil {
			return
		}
		if d, derr := time.ParseDuration(v); derr == nil && !at.Before(now) {
			t.Fatalf("since %q (%v) is not in the past: %v", v, d, at)
		}
	})
}
