package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"hastore/replica"
	"hastore/replica/transport"
)

// TestClusterCertReload: the cluster port's TLS configuration that prepare
// leaves serves the certificate in the files, and the new one after a
// reload, to a real TLS client that verifies it against the CA file.
func TestClusterCertReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func() []byte {
		c, k, err := transport.SelfSignedCert("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, k, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(certFile, c, 0o600); err != nil {
			t.Fatal(err)
		}
		return c
	}
	firstPEM := write()
	var cfg replica.NodeConfig
	var err error
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerTLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	f := &opsFlags{}
	if err := f.prepare(&cfg, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	if len(cfg.ServerTLS.Certificates) != 0 || cfg.ServerTLS.GetCertificate == nil {
		t.Fatal("the cluster TLS config does not serve through GetCertificate")
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg.ServerTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	served := func(caPEM []byte) (*x509.Certificate, error) {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(caPEM)
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0], nil
	}
	if _, err := served(firstPEM); err != nil {
		t.Fatalf("before the reload: %v", err)
	}
	secondPEM := write()
	f.reload(slog.New(slog.DiscardHandler))
	if _, err := served(secondPEM); err != nil {
		t.Fatalf("after the reload, the new certificate does not verify: %v", err)
	}
	if _, err := served(firstPEM); err == nil {
		t.Fatal("after the reload, the old certificate is still served")
	}
	// A broken file keeps the certificate in use.
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.reload(slog.New(slog.DiscardHandler))
	if _, err := served(secondPEM); err != nil {
		t.Fatalf("a failed reload changed the certificate: %v", err)
	}
}
