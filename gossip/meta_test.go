package gossip

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// The largest metadata the agent gossips fits memberlist's 512 bytes: a
// 90-byte health reason (and its ellipsis), 10 unreachable peers with
// 12-byte names, full IPv6 addresses and a doveadm URL (agent: maxGossip*).
func TestLargestMetaFits(t *testing.T) {
	m := Meta{Role: "mail", ProxyHost: "2001:db8::1234:5678", Raft: "[2001:db8::1234:5678]:7947", API: "[2001:db8::1234:5678]:7948",
		Version: "v1.2.3-45-gabcdef012345", RaftState: true, Health: "critical", HealthReason: strings.Repeat("x", 90) + "…",
		PeerAddr: "[2001:db8::1234:5678]:143", FS: true, Doveadm: "https://[2001:db8::1234:5678]:8080"}
	for i := range 10 {
		m.Unreachable = append(m.Unreachable, fmt.Sprintf("mail-node-%02d", i))
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 512 {
		t.Fatalf("metadata is %d bytes, over memberlist's 512: %s", len(b), b)
	}
}
