package placement

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestShowUser(t *testing.T) {
	for _, tc := range []struct{ name, shown string }{
		{"alice@example.com", "alice@example.com"},
		{"jürgen@exämple.de", "jürgen@exämple.de"},
		{"a*b?@example.com", "a*b?@example.com"},
		{`back\slash`, `back\slash`},
		{`o"brien`, `o"brien`},
		{"lat\xe9n", `"lat\xe9n"`},
		{"john doe", `"john doe"`},
		{"tab\there", `"tab\there"`},
		{`"quoted"`, `"\"quoted\""`},
	} {
		if got := ShowUser(tc.name); got != tc.shown {
			t.Errorf("ShowUser(%q) = %s, want %s", tc.name, got, tc.shown)
		}
		if back, err := ParseUser(tc.shown); err != nil || back != tc.name {
			t.Errorf("ParseUser(%s) = %q, %v; want %q", tc.shown, back, err, tc.name)
		}
	}
}

func TestParseUserRefuses(t *testing.T) {
	for s, want := range map[string]string{
		"":                        ErrEmptyUser.Error(),
		`""`:                      ErrEmptyUser.Error(),
		"a\x00b":                  "NUL",
		`"a\x00b"`:                "NUL",
		`"lat\xe9n`:               "not a quoted name",
		strings.Repeat("a", 1025): "over 1024",
		`"` + strings.Repeat("\\xff", 2000) + `"`: "over 1024",
	} {
		_, err := ParseUser(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseUser(%.20q): %v, want an error saying %q", s, err, want)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("ParseUser(%.20q): an error of %d bytes quotes too much", s, len(err.Error()))
		}
	}
	if _, err := ParseUser(""); !errors.Is(err, ErrEmptyUser) {
		t.Errorf("an empty name: %v, want ErrEmptyUser", err)
	}
}

// Every name Dovecot accepts survives being shown and read back, and is
// shown as UTF-8 text without a control character.
func FuzzShowUser(f *testing.F) {
	for _, s := range []string{"alice@example.com", "lat\xe9n", `"x"`, "a b", "\xff\xfe", "用户@例子.中国", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if name == "" || strings.IndexByte(name, 0) >= 0 || len(name) > MaxUser {
			return
		}
		shown := ShowUser(name)
		if !utf8.ValidString(shown) || strings.ContainsFunc(shown, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("ShowUser(%q) = %q: not printable UTF-8", name, shown)
		}
		back, err := ParseUser(shown)
		if err != nil || back != name {
			t.Fatalf("ParseUser(ShowUser(%q)) = %q, %v", name, back, err)
		}
	})
}
