// Package certs loads the TLS material Roost's cluster port and API use,
// and makes a private CA and node certificates for those who have none.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/roost-mail/roost/secret"
)

// Files names the PEM files of one TLS identity and the CA that signs its
// peers. Keys are files, never inline, so systemd credentials and file
// permissions protect them.
type Files struct {
	// CAFile is the CA bundle that peers' certificates must chain to.
	CAFile string `yaml:"ca_file"`
	// CertFile is this node's certificate (PEM), with intermediates.
	CertFile string `yaml:"cert_file"`
	// KeyFile is this node's private key (PEM).
	KeyFile string `yaml:"key_file"`
	// ServerName, when set, is also checked against the peer certificate's
	// DNS names. Empty checks the chain to CAFile only, which is enough for a
	// CA that signs nothing but this cluster's nodes.
	ServerName string `yaml:"server_name"`
}

// Empty reports whether no file is named.
func (f Files) Empty() bool { return f.CAFile == "" && f.CertFile == "" && f.KeyFile == "" }

// ValidateMutual checks that all three files are named, for mutual TLS.
func (f Files) ValidateMutual() error {
	switch {
	case f.CAFile == "":
		return errors.New("ca_file is empty")
	case f.CertFile == "":
		return errors.New("cert_file is empty")
	case f.KeyFile == "":
		return errors.New("key_file is empty")
	}
	return nil
}

// MutualConfigs returns the server and client sides of mutual TLS: each end
// presents its certificate and requires the other's to chain to CAFile.
func (f Files) MutualConfigs() (server, client *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("loading %s and %s: %w", f.CertFile, f.KeyFile, err)
	}
	pool, err := LoadPool(f.CAFile)
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
	}
	// Both ends must hold a node certificate (Node: server and client
	// use): an API server's or a client's certificate from the same CA
	// cannot take part in raft.
	server.VerifyConnection = func(cs tls.ConnectionState) error { return verifyNode(cs, pool) }
	client.VerifyConnection = server.VerifyConnection
	if f.ServerName != "" {
		client.ServerName = f.ServerName
	} else {
		// Nodes dial each other by IP; verify the chain, not the name.
		client.InsecureSkipVerify = true
	}
	return server, client, nil
}

// ServerConfig returns a TLS server config presenting CertFile; when
// CAFile is set, clients must present a certificate chaining to it.
func (f Files) ServerConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading %s and %s: %w", f.CertFile, f.KeyFile, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if f.CAFile != "" {
		pool, err := LoadPool(f.CAFile)
		if err != nil {
			return nil, err
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// verifyNode checks that the peer's certificate chains to pool and is
// good for both server and client use.
func verifyNode(cs tls.ConnectionState, pool *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	for _, u := range Node.extKeyUsage() {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			return fmt.Errorf("peer certificate %q is no node certificate (roostd tls cert --for node): %w", leaf.Subject.CommonName, err)
		}
	}
	return nil
}

// LoadPool reads a PEM CA bundle.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := secret.Read("CA file", path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// CA is a certificate authority kept in two PEM files.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// CreateCA writes a new CA as dir/ca.pem and dir/ca-key.pem (mode 0600),
// valid for the given time. It refuses to overwrite an existing CA.
func CreateCA(dir, name string, valid time.Duration) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if _, err := os.Stat(certPath); err == nil {
		return nil, fmt.Errorf("%s exists: refusing to overwrite a CA", certPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(valid),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads dir/ca.pem and dir/ca-key.pem.
func LoadCA(dir string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("loading CA from %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("CA key in %s is not ECDSA", dir)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Usage is what a certificate is for.
type Usage string

const (
	// Node is a cluster port's certificate: server and client at once.
	// It may serve the TCP API too.
	Node Usage = "node"
	// Server serves the TCP API only; it cannot join the cluster port.
	Server Usage = "server"
	// Client presents itself to the TCP API (a Prometheus or Alertmanager
	// that must show a certificate); it cannot join the cluster port.
	Client Usage = "client"
)

// ParseUsage reads node, server or client.
func ParseUsage(s string) (Usage, error) {
	switch u := Usage(s); u {
	case Node, Server, Client:
		return u, nil
	}
	return "", fmt.Errorf("certificate use %q: want node, server or client", s)
}

func (u Usage) extKeyUsage() []x509.ExtKeyUsage {
	switch u {
	case Server:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case Client:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
}

// Issue writes dir/NAME.pem and dir/NAME-key.pem: a certificate for use
// u, with NAME and the given hosts (IPs or DNS names) as subject
// alternative names.
func (ca *CA) Issue(dir, name string, u Usage, hosts []string, valid time.Duration) (certPath, keyPath string, err error) {
	if _, err := ParseUsage(string(u)); err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(valid),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  u.extKeyUsage(),
		DNSNames:     []string{name},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != name {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	return certPath, keyPath, writePair(certPath, keyPath, der, key)
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
