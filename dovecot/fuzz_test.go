package dovecot

import (
	"strings"
	"testing"
)

// Real answers of Dovecot 2.3.19's doveadm HTTP API (recorded in the
// lab), with the bugs Roost works around.
var replySeeds = []string{
	`[["doveadmResponse",[{"username":"bob@example.test","service":"imap","pids":"(19835)","ips":"(127.0.0.1)","connections":"1"}],"c0"]]`,
	// who closes the payload after its first row (2.3)
	`[["doveadmResponse",[{"username":"a","service":"imap","pids":"(1)","ips":"(::1)","connections":"1"}],{"username":"b","service":"pop3","pids":"(2)","ips":"(::1)","connections":"1"},"c0"]]`,
	// an unknown command drops the comma after its reply (2.3)
	`[["error",{"type":"unknownMethod", "exitCode":0},"c0"]["error",{"type":"exitCode", "exitCode":68},"c1"]]`,
	`[["doveadmResponse",[{"count":"3"}],"c0"],["doveadmResponse",[],"c1"]]`,
	`[["doveadmResponse",[{"username":"q\"]["}],"c0"]]`,
	`[]`, `[[]]`, `{"x":1}`, ``,
}

// The API's answer is outside input: whatever it is, decoding ends with
// replies for exactly the commands sent, or an error of bounded length.
func FuzzDecodeReplies(f *testing.F) {
	for _, s := range replySeeds {
		f.Add([]byte(s), 1)
		f.Add([]byte(s), 2)
	}
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		n = 1 + (n&0x7fffffff)%4
		cmds := make([]Command, n)
		for i := range cmds {
			cmds[i] = Command{Name: "who"}
		}
		out, err := decodeReplies(b, cmds, "http://127.0.0.1:8080/doveadm/v1")
		if err != nil {
			if len(err.Error()) > 2048 {
				t.Fatalf("an error of %d bytes quotes too much of the answer", len(err.Error()))
			}
			return
		}
		if len(out) != n {
			t.Fatalf("%d replies to %d commands", len(out), n)
		}
	})
}

// doveadm -f tab output (who, proxy list), as 2.3 prints it: a header,
// sometimes repeated, then rows.
func FuzzParseTable(f *testing.F) {
	f.Add("username\t#\tservice\tpids\tips\nbob@example.test\t1\timap\t(19835)\t(127.0.0.1)\n", 5)
	f.Add("username\t#\tservice\tpids\tips\nusername\t#\tservice\tpids\tips\nlat\xe9n\t1\timap\t(1)\t(::1)\n", 5)
	f.Add("username\tservice\tsrc-ip\tdest-ip\tdest-port\n", 5)
	f.Add("", 1)
	f.Fuzz(func(t *testing.T, out string, cols int) {
		cols = 1 + (cols&0x7fffffff)%8
		rows, err := parseTable(out, cols)
		if err != nil {
			if len(err.Error()) > 1024 {
				t.Fatalf("an error of %d bytes", len(err.Error()))
			}
			return
		}
		for _, r := range rows {
			if len(r) < cols {
				t.Fatalf("row %q has fewer than %d fields", r, cols)
			}
		}
	})
}

// Process titles from /proc/PID/cmdline: Dovecot's own, with
// verbose_proctitle, another instance's, and anything else a pid may run.
func FuzzInstanceService(f *testing.F) {
	for _, s := range []string{"dovecot/imap", "dovecot/imap [bob@example.test 127.0.0.1]", "dovecot-node2/pop3", "node2/imap-login",
		"dovecot/auth [0 wait, 0 passdb, 0 userdb]", "/usr/sbin/dovecot -F", "bash", ""} {
		f.Add(s, "dovecot")
		f.Add(s, "node2")
	}
	f.Fuzz(func(t *testing.T, title, instance string) {
		service, ok := instanceService(title, instance)
		if !ok {
			return
		}
		if !strings.HasPrefix(title, instance+"/") && !strings.HasPrefix(title, "dovecot-"+instance+"/") {
			t.Fatalf("%q is not a title of instance %q, yet named service %q", title, instance, service)
		}
		if strings.Contains(service, " ") {
			t.Fatalf("service %q keeps the proctitle's suffix", service)
		}
	})
}
