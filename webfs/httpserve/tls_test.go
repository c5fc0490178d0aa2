package httpserve_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"hastore/webfs/httpserve"
)

func testTLSCert(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestCapsHTTPAndHTTPS: an HTTPS port from TLSConfig and Caps.TLSListener
// serves HTTP/2 (and HTTP/1.1 to a client asking for it), and HTTP and
// HTTPS draw on one connection budget: while plain connections hold every
// place, an HTTPS client is closed before any handshake.
func TestCapsHTTPAndHTTPS(t *testing.T) {
	cert := testTLSCert(t, "site.test")
	caps := httpserve.NewCaps(2, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httpserve.NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" "+r.Host)
	}))
	defer srv.Close()
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	plain, secure := listen(), listen()
	go srv.Serve(caps.Listener(plain))
	go srv.Serve(caps.TLSListener(secure, httpserve.TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })))

	roots := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	roots.AddCert(leaf)
	get := func(h2 bool) (string, error) {
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: "site.test"},
			ForceAttemptHTTP2: h2,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, secure.Addr().String())
			},
		}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://site.test/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	for _, tc := range []struct {
		h2   bool
		want string
	}{{true, "HTTP/2.0 site.test"}, {false, "HTTP/1.1 site.test"}} {
		if got, err := get(tc.h2); err != nil || got != tc.want {
			t.Errorf("HTTPS (h2 %v): %q %v, want %q", tc.h2, got, err, tc.want)
		}
	}

	// Plain connections take both places (once the HTTPS ones above are
	// given back: until then a plain one is answered 503).
	hold := func() net.Conn {
		var pc net.Conn
		waitFor(t, func() bool {
			var err error
			if pc, err = net.Dial("tcp", plain.Addr().String()); err != nil {
				t.Fatal(err)
			}
			io.WriteString(pc, "GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
			buf := make([]byte, 12)
			if _, err := io.ReadFull(pc, buf); err == nil && string(buf) == "HTTP/1.1 200" {
				return true
			}
			pc.Close()
			return false
		})
		return pc
	}
	p1, p2 := hold(), hold()
	defer p2.Close()
	if _, err := get(true); err == nil {
		t.Error("HTTPS while HTTP holds every connection place: served, want refused")
	}
	p1.Close()
	waitFor(t, func() bool { _, err := get(true); return err == nil }) // the place is given back on close
}
