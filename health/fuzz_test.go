package health

import (
	"bufio"
	"bytes"
	"testing"
)

// What a server (or anything on the path) answers to a check: real
// greetings and replies of Dovecot 2.3 and 2.4, and floods. expect reads
// at most maxLines lines of maxLine bytes and never quotes more than a
// clipped line in its error.
func FuzzExpect(f *testing.F) {
	for _, s := range []string{
		"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n",
		"* OK Dovecot ready.\r\n",
		"+OK Dovecot (Debian) ready.\r\n",
		"220 node1 Dovecot (Debian) LMTP ready\r\n",
		"\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n\"SIEVE\" \"fileinto reject\"\r\nOK \"Dovecot ready.\"\r\n",
		"* BYE Too many invalid IMAP commands.\r\n",
		"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
		"-ERR [SYS/TEMP] Temporary authentication failure.\r\n",
		"",
		"no newline at all",
	} {
		f.Add([]byte(s))
	}
	ok, fail := imapTagged("a1")
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(b), maxLine)
		for _, s := range []Step{{Expect: ok, Fail: fail}, {Expect: ok}} {
			err := expect(r, s)
			if err != nil && len(err.Error()) > 1024 {
				t.Fatalf("an error of %d bytes quotes too much", len(err.Error()))
			}
		}
	})
}
