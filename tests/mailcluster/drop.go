package mailcluster

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
)

var dropSeq atomic.Int64

// DropHost silently drops every packet to or from host (both ways, on
// loopback too), as a powered-off or cut-off machine looks to the others:
// connections to it time out rather than being refused. It uses an
// nftables table of its own, removed at cleanup.
func (c *Cluster) DropHost(host string) {
	c.t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		c.t.Fatal("no nft command: install nftables (scripts/test-deps.sh does)")
	}
	table := fmt.Sprintf("roost_drop_%d_%d", os.Getpid(), dropSeq.Add(1))
	script := strings.Join([]string{
		"add table inet " + table,
		"add chain inet " + table + " out { type filter hook output priority -10 ; }",
		"add rule inet " + table + " out ip daddr " + host + " drop",
		"add rule inet " + table + " out ip saddr " + host + " drop",
	}, "\n")
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("nft: %v: %s", err, out)
	}
	c.t.Cleanup(func() { exec.Command("nft", "delete", "table", "inet", table).Run() })
}
