package agent_test

import (
	"testing"

	"context"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/roost-mail/roost/agent/agenttest"
)

func unixHTTP(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

func bodyCopy(w io.Writer, resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	return io.Copy(w, resp.Body)
}

func urlQuery(s string) string { return url.QueryEscape(s) }

// scrape reads an agent's /metrics through its unix socket.
func scrape(t *testing.T, n *agenttest.Node) string {
	t.Helper()
	resp, err := unixHTTP(n.Config.API.Socket).Get("http://roostd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
