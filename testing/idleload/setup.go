package idleload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// AdminFunc runs `hastore admin ARGS` with stdin fed, as the harnesses do.
type AdminFunc func(ctx context.Context, stdin string, args ...string) ([]byte, error)

// AddUsers creates domain (if need be) and the users with their passwords
// through admin, six calls at a time (each hashes a password), calling
// progress every 100 users.
func AddUsers(ctx context.Context, admin AdminFunc, domain string, users []User, progress func(done int)) error {
	if _, err := admin(ctx, "", "domain", "add", domain); err != nil && !strings.Contains(err.Error(), "exists") {
		return err
	}
	work := make(chan User)
	errs := make(chan error, 6)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for u := range work {
				var err error
				for try := 0; try < 5; try++ {
					if _, err = admin(ctx, u.Password+"\n", "user", "add", u.Addr); err == nil || strings.Contains(err.Error(), "exists") {
						err = nil
						break
					}
					time.Sleep(time.Second)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	var err error
feed:
	for i, u := range users {
		select {
		case work <- u:
		case err = <-errs:
			break feed
		}
		if progress != nil && (i+1)%100 == 0 {
			progress(i + 1)
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// Elections counts, over node logs, the Raft elections started and won
// (hashicorp/raft's "entering candidate state" and "election won" lines).
func Elections(logs ...string) (started, won int) {
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		started += strings.Count(string(b), "entering candidate state")
		won += strings.Count(string(b), "election won")
	}
	return started, won
}

// SelfSigned writes a self-signed certificate for 127.0.0.1 and its key
// (both readable by all: a harness may run nodes as other users) and
// returns the client configuration that trusts it.
func SelfSigned(certFile, keyFile string) (*tls.Config, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idlebench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o644); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(64)}, nil
}
