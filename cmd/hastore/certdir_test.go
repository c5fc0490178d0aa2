package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTestCert writes a self-signed certificate for names, valid until
// notAfter, as certFile and keyFile; it returns the certificate's DER.
func writeTestCert(t *testing.T, certFile, keyFile string, notAfter time.Time, names ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return der
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestCertDirLookup: each name gets the certificate valid for it, whatever
// the files are called, in both layouts; wildcards cover one label; the
// longest-valid certificate wins a name two cover.
func TestCertDirLookup(t *testing.T) {
	dir := t.TempDir()
	year := time.Now().AddDate(1, 0, 0)
	pair := func(label string) (string, string) {
		return filepath.Join(dir, label+".crt"), filepath.Join(dir, label+".key")
	}
	certs := map[string][]byte{}
	c, k := pair("a")
	certs["a"] = writeTestCert(t, c, k, year, "www.a.test", "a.test")
	c, k = pair("misnamed-b") // the file name does not matter
	certs["b"] = writeTestCert(t, c, k, year, "*.b.test")
	c, k = pair("old-a") // also covers www.a.test, but expires sooner
	certs["old-a"] = writeTestCert(t, c, k, year.AddDate(0, -6, 0), "www.a.test", "only-old.a.test")
	live := filepath.Join(dir, "c.test") // certbot's live/NAME layout
	certs["c"] = writeTestCert(t, filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem"), year, "c.test")
	// Not pairs: a key alone, a README, a .crt without its key.
	os.WriteFile(filepath.Join(dir, "stray.key"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "nokey.crt"), []byte("x"), 0o600)

	d, err := watchCertDir("test", dir, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, want string }{
		{"www.a.test", "a"},
		{"WWW.A.TEST.", "a"},
		{"a.test", "a"},
		{"only-old.a.test", "old-a"},
		{"x.b.test", "b"},
		{"www.x.b.test", ""}, // a wildcard covers one label
		{"b.test", ""},
		{"c.test", "c"},
		{"unknown.test", ""},
		{"", ""},
	} {
		got := d.lookup(tc.name)
		switch {
		case tc.want == "" && got != nil:
			t.Errorf("%q: got %v, want none", tc.name, got.Leaf.DNSNames)
		case tc.want != "" && (got == nil || string(got.Certificate[0]) != string(certs[tc.want])):
			t.Errorf("%q: did not get certificate %s", tc.name, tc.want)
		}
	}
}

// TestCertDirReload: a reload picks up new, renewed and removed pairs; a
// pair broken since the last load keeps the certificate loaded before.
func TestCertDirReload(t *testing.T) {
	dir := t.TempDir()
	year := time.Now().AddDate(1, 0, 0)
	f := func(label, ext string) string { return filepath.Join(dir, label+ext) }
	a1 := writeTestCert(t, f("a", ".crt"), f("a", ".key"), year, "a.test")
	writeTestCert(t, f("gone", ".crt"), f("gone", ".key"), year, "gone.test")
	b1 := writeTestCert(t, f("b", ".crt"), f("b", ".key"), year, "b.test")
	d, err := watchCertDir("test", dir, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	a2 := writeTestCert(t, f("a", ".crt"), f("a", ".key"), year, "a.test") // renewed
	writeTestCert(t, f("new", ".crt"), f("new", ".key"), year, "new.test") // added
	os.Remove(f("gone", ".crt"))                                           // removed
	os.WriteFile(f("b", ".crt"), []byte("half-written"), 0o600)            // broken
	if n, err := d.reload(); err != nil || n != 3 {
		t.Fatalf("reload: %d certificates, %v; want 3", n, err)
	}
	if c := d.lookup("a.test"); c == nil || string(c.Certificate[0]) != string(a2) || string(a2) == string(a1) {
		t.Error("a.test: the renewed certificate is not served")
	}
	if d.lookup("new.test") == nil {
		t.Error("new.test: an added pair is not served")
	}
	if d.lookup("gone.test") != nil {
		t.Error("gone.test: a removed pair is still served")
	}
	if c := d.lookup("b.test"); c == nil || string(c.Certificate[0]) != string(b1) {
		t.Error("b.test: a broken renewal dropped the certificate in use")
	}
	// An unreadable directory keeps everything.
	os.RemoveAll(dir)
	if _, err := d.reload(); err == nil {
		t.Error("reload of a missing directory: no error")
	}
	if d.lookup("a.test") == nil {
		t.Error("a failed directory read dropped the certificates in use")
	}
}

// TestCertDirHandshake: over a real TLS connection, a client asking for a
// name gets that name's certificate; one asking for a name not in the
// directory gets the fallback, or without one the unrecognized_name alert.
func TestCertDirHandshake(t *testing.T) {
	dir := t.TempDir()
	year := time.Now().AddDate(1, 0, 0)
	site := writeTestCert(t, filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key"), year, "site.test")
	d, err := watchCertDir("test", dir, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: d.getCertificate})
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
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	dial := func(name string) (*tls.Conn, error) {
		return tls.Dial("tcp", l.Addr().String(), &tls.Config{ServerName: name, InsecureSkipVerify: true})
	}
	c, err := dial("site.test")
	if err != nil {
		t.Fatal(err)
	}
	if string(c.ConnectionState().PeerCertificates[0].Raw) != string(site) {
		t.Error("site.test: another certificate served")
	}
	c.Close()
	if c, err := dial("other.test"); err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		if c != nil {
			c.Close()
		}
		t.Errorf("unknown name without a fallback: %v, want the unrecognized name alert", err)
	}

	fbDir := t.TempDir()
	fb := writeTestCert(t, filepath.Join(fbDir, "fb.crt"), filepath.Join(fbDir, "fb.key"), year, "fallback.test")
	fbPair, err := tls.LoadX509KeyPair(filepath.Join(fbDir, "fb.crt"), filepath.Join(fbDir, "fb.key"))
	if err != nil {
		t.Fatal(err)
	}
	d.fallback = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &fbPair, nil }
	for _, name := range []string{"other.test", ""} {
		c, err := dial(name)
		if err != nil {
			t.Fatalf("SNI %q with a fallback: %v", name, err)
		}
		if string(c.ConnectionState().PeerCertificates[0].Raw) != string(fb) {
			t.Errorf("SNI %q with a fallback: the fallback certificate was not served", name)
		}
		c.Close()
	}
}

// TestMailCertDirDefault: --mail-tls-cert-dir alone takes --hostname's
// certificate as the default (clients sending no SNI get it) and refuses
// to start without one; beside --mail-tls-cert, that file is the default.
func TestMailCertDirDefault(t *testing.T) {
	dir := t.TempDir()
	year := time.Now().AddDate(1, 0, 0)
	mx := writeTestCert(t, filepath.Join(dir, "mx.crt"), filepath.Join(dir, "mx.key"), year, "mx.example.test")
	imapCert := writeTestCert(t, filepath.Join(dir, "imap.crt"), filepath.Join(dir, "imap.key"), year, "imap.customer.test")
	other := t.TempDir()
	single := writeTestCert(t, filepath.Join(other, "m.crt"), filepath.Join(other, "m.key"), year, "mail.example.test")

	for _, tc := range []struct {
		name       string
		f          mailFlags
		wantErr    string
		noSNI, sni []byte
	}{
		{"dir, hostname in it", mailFlags{certDir: dir, hostname: "mx.example.test", maxMessage: "1M"}, "", mx, imapCert},
		{"dir, hostname not in it", mailFlags{certDir: dir, hostname: "elsewhere.test", maxMessage: "1M"}, "no certificate for --hostname", nil, nil},
		{"dir beside a single certificate", mailFlags{certDir: dir, cert: filepath.Join(other, "m.crt"), key: filepath.Join(other, "m.key"), hostname: "elsewhere.test", maxMessage: "1M"}, "", single, imapCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.f.config(quietLog())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range []struct {
				server string
				want   []byte
			}{{"", tc.noSNI}, {"unknown.test", tc.noSNI}, {"imap.customer.test", tc.sni}} {
				c, err := cfg.TLS.GetCertificate(&tls.ClientHelloInfo{ServerName: h.server})
				if err != nil || c == nil || string(c.Certificate[0]) != string(h.want) {
					t.Errorf("SNI %q: %v, not the expected certificate", h.server, err)
				}
			}
		})
	}
}
