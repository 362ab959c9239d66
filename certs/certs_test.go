package certs

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

// handshake runs one TLS handshake between server and client configs over
// loopback TCP and returns the client's and the server's errors.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		s := tls.Server(c, server)
		err = s.Handshake()
		if err == nil {
			// TLS 1.3: the client's certificate is checked here, after
			// the client's handshake returned; read to see the verdict.
			s.Write([]byte("ok"))
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, client)
	if clientErr = tc.Handshake(); clientErr == nil {
		_, clientErr = tc.Read(make([]byte, 2))
	}
	return clientErr, <-done
}

// Only node certificates (server and client use at once) take part in
// the cluster port, on either end; a certificate issued for the API's
// server or for an API client, by the same CA, is refused there.
func TestClusterPortTakesNodeCertificatesOnly(t *testing.T) {
	dir := t.TempDir()
	ca, err := CreateCA(dir, "test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mutual := func(name string, u Usage) (server, client *tls.Config) {
		t.Helper()
		cp, kp, err := ca.Issue(dir, name, u, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		server, client, err = Files{CAFile: dir + "/ca.pem", CertFile: cp, KeyFile: kp}.MutualConfigs()
		if err != nil {
			t.Fatal(err)
		}
		return server, client
	}
	node1s, _ := mutual("node1", Node)
	_, node2c := mutual("node2", Node)
	apiS, apiC := mutual("api", Server)
	_, promC := mutual("prometheus", Client)

	if cErr, sErr := handshake(t, node1s, node2c); cErr != nil || sErr != nil {
		t.Fatalf("node2 to node1: client %v, server %v", cErr, sErr)
	}
	if _, sErr := handshake(t, node1s, promC); sErr == nil || !strings.Contains(sErr.Error(), "no node certificate") {
		t.Fatalf("a client certificate on node1's cluster port: %v, want refused as no node certificate", sErr)
	}
	if _, sErr := handshake(t, node1s, apiC); sErr == nil {
		t.Fatal("a server-only certificate was accepted as a cluster client")
	}
	if cErr, _ := handshake(t, apiS, node2c); cErr == nil || !strings.Contains(cErr.Error(), "no node certificate") {
		t.Fatalf("node2 dialing a server with an API certificate: %v, want refused as no node certificate", cErr)
	}
}

// The TCP API serves with a server certificate and, with ca_file, takes
// client certificates, but not a certificate that is for serving only.
func TestAPICertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := CreateCA(dir, "test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, u Usage) tls.Certificate {
		t.Helper()
		cp, kp, err := ca.Issue(dir, name, u, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.LoadX509KeyPair(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	issue("api", Server)
	server, err := Files{CAFile: dir + "/ca.pem", CertFile: dir + "/api.pem", KeyFile: dir + "/api-key.pem"}.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := LoadPool(dir + "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	client := func(c tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{c}}
	}
	for _, tc := range []struct {
		name string
		u    Usage
		ok   bool
	}{{"prometheus", Client, true}, {"node1", Node, true}, {"other-api", Server, false}} {
		cErr, sErr := handshake(t, server, client(issue(tc.name, tc.u)))
		if ok := cErr == nil && sErr == nil; ok != tc.ok {
			t.Errorf("a %s certificate as the API's client: accepted %v, want %v (client %v, server %v)", tc.u, ok, tc.ok, cErr, sErr)
		}
	}
	if _, _, err := ca.Issue(dir, "x", Usage("both"), nil, time.Hour); err == nil || !strings.Contains(err.Error(), "want node, server or client") {
		t.Fatalf("issue for %q: %v", "both", err)
	}
}
