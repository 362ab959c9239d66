package placement

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A user name is any bytes Dovecot accepts: anything but NUL. Where only
// text can go (JSON, the raft log, a terminal, a command line), Roost
// writes it as ShowUser does and reads it back with ParseUser.

// ErrEmptyUser is every refusal of an empty user name.
var ErrEmptyUser = errors.New("the user name is empty")

// MaxUser bounds a user name, in bytes.
const MaxUser = 1024

// ShowUser writes a user name as text: the name itself when it is
// printable UTF-8 without spaces and does not start with a double quote,
// else the name quoted as Go quotes it ("lat\xe9n", "john doe").
// ParseUser(ShowUser(n)) is n for every name.
func ShowUser(name string) string {
	if name != "" && !strings.HasPrefix(name, `"`) && utf8.ValidString(name) &&
		strings.IndexFunc(name, func(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) }) < 0 {
		return name
	}
	return strconv.Quote(name)
}

// ParseUser reads a user name as ShowUser writes it, or as typed: a name
// that starts with a double quote is read as a Go quoted string, any
// other is taken as it is. Empty names, NUL bytes and names over MaxUser
// bytes are refused.
func ParseUser(s string) (string, error) {
	name := s
	if strings.HasPrefix(s, `"`) {
		var err error
		if name, err = strconv.Unquote(s); err != nil {
			return "", fmt.Errorf("user name %.64q…: starts with a double quote but is not a quoted name (\"lat\\xe9n\")", s)
		}
	}
	switch {
	case name == "":
		return "", ErrEmptyUser
	case strings.IndexByte(name, 0) >= 0:
		return "", fmt.Errorf("user name %.64q holds a NUL byte, which no Dovecot user name does", s)
	case len(name) > MaxUser:
		return "", fmt.Errorf("user name %.64q… is %d bytes long, over %d", s, len(name), MaxUser)
	}
	return name, nil
}
