package connlimit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testTLSConfig(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// countingConfig counts handshakes in progress through GetCertificate,
// which runs inside every server handshake, holding each a moment.
func countingConfig(t *testing.T, inFlight, peak *atomic.Int64) *tls.Config {
	base := testTLSConfig(t)
	cert := base.Certificates[0]
	return &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		return &cert, nil
	}}
}

func TestTLSListener(t *testing.T) {
	cases := []struct {
		name       string
		concurrent int
		clients    int
		silent     int // connections that never send a ClientHello
	}{
		{"one at a time", 1, 8, 0},
		{"three at a time", 3, 24, 0},
		{"silent clients do not block others", 2, 6, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var inFlight, peak atomic.Int64
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := TLSListener(raw, countingConfig(t, &inFlight, &peak), HandshakeLimits{Concurrent: tc.concurrent, Timeout: 2 * time.Second})
			defer ln.Close()
			for range tc.silent {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			accepted := make(chan error, tc.clients)
			go func() {
				for range tc.clients {
					c, err := ln.Accept()
					if err != nil {
						accepted <- err
						return
					}
					tlsc, ok := c.(*tls.Conn)
					switch {
					case !ok:
						accepted <- errors.New("accepted a connection that is not *tls.Conn")
					case !tlsc.ConnectionState().HandshakeComplete:
						accepted <- errors.New("accepted a connection before its handshake completed")
					default:
						_, err = tlsc.Write([]byte("hi"))
						accepted <- err
					}
					c.Close()
				}
			}()
			var wg sync.WaitGroup
			for range tc.clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
					if err != nil {
						t.Error(err)
						return
					}
					defer c.Close()
					buf := make([]byte, 2)
					if _, err := c.Read(buf); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			for range tc.clients {
				if err := <-accepted; err != nil {
					t.Fatal(err)
				}
			}
			if p := peak.Load(); p > int64(tc.concurrent) {
				t.Fatalf("%d handshakes ran at once, limit %d", p, tc.concurrent)
			}
		})
	}
}

func TestTLSListenerClose(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := TLSListener(raw, testTLSConfig(t), HandshakeLimits{})
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	ln.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
}

// flakyListener fails its first Accepts with an error that is not a
// closed listener (say, out of file descriptors).
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, errors.New("accept: too many open files")
	}
	return l.Listener.Accept()
}

// An accept error that is not the listener closing (EMFILE, say) is
// retried: the listener goes on serving once it passes.
func TestTLSListenerSurvivesAcceptErrors(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: raw}
	fl.fails.Store(3)
	ln := TLSListener(fl, testTLSConfig(t), HandshakeLimits{})
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
		t.Fatalf("after accept errors: read %q, %v; want the listener still serving", buf, err)
	}
}
