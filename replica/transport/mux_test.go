package transport

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/storage"
)

// TestOnePort runs gRPC and Raft between two nodes over one port each, in
// plaintext and under TLS.
func TestOnePort(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*testing.T) Config
	}{
		{"plain", func(*testing.T) Config { return Config{Key: testKey} }},
		{"tls", tlsConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(t)
			a := startNode(t, "a", cfg, newFakeStore())
			b := startNode(t, "b", cfg, newFakeStore())
			ctx := ctxT(t)
			pool := newPool(t, cfg)

			for id, n := range map[string]*testNode{"a": a, "b": b} {
				nc, err := pool.Node(n.addr)
				if err != nil {
					t.Fatal(err)
				}
				info, err := nc.Info(ctx)
				if err != nil {
					t.Fatalf("Info %s: %v", n.addr, err)
				}
				if info.ID != id {
					t.Errorf("Info %s: ID %q, want %q", n.addr, info.ID, id)
				}
			}

			ta, tb := raftTransport(t, a), raftTransport(t, b)
			if got := string(ta.LocalAddr()); got != a.addr {
				t.Errorf("raft LocalAddr %q, want %q", got, a.addr)
			}
			for i, dir := range []struct {
				from *raft.NetworkTransport
				to   *testNode
			}{{ta, b}, {tb, a}} {
				// Twice: the second call reuses the pooled connection.
				for j := range 2 {
					term := uint64(10*i + j + 1)
					resp, err := appendEntries(dir.from, dir.to, term)
					if err != nil {
						t.Fatalf("AppendEntries to %s: %v", dir.to.addr, err)
					}
					if resp.Term != term+1 || !resp.Success {
						t.Errorf("AppendEntries to %s: got %+v", dir.to.addr, resp)
					}
				}
			}
		})
	}
}

// TestGRPCAuth checks that calls without the key, or with another
// cluster's, are refused with Unauthenticated.
func TestGRPCAuth(t *testing.T) {
	n := startNode(t, "n", Config{Key: testKey}, newFakeStore())
	noKey := func(t *testing.T) *NodeClient {
		cc, err := grpc.NewClient("passthrough:///"+n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return NewNodeClient(cc, n.addr)
	}
	withKey := func(key []byte) func(t *testing.T) *NodeClient {
		return func(t *testing.T) *NodeClient {
			c, err := newPool(t, Config{Key: key}).Node(n.addr)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	for _, tc := range []struct {
		name     string
		client   func(*testing.T) *NodeClient
		wantCode codes.Code
		wantMsg  string
	}{
		{"no key", noKey, codes.Unauthenticated, "carries no cluster key"},
		{"wrong key", withKey(otherKey), codes.Unauthenticated, "wrong cluster key"},
		{"right key", withKey(testKey), codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.client(t)
			ctx := ctxT(t)
			// A unary and a streaming call: each has its own interceptor.
			_, err := c.Info(ctx)
			errList := c.ListShards(ctx, func(storage.Header) error { return nil })
			for _, err := range []error{err, errList} {
				if got := status.Code(err); got != tc.wantCode {
					t.Fatalf("code %v (%v), want %v", got, err, tc.wantCode)
				}
				if tc.wantCode == codes.OK {
					continue
				}
				if !errors.Is(err, ErrUnauthenticated) {
					t.Errorf("errors.Is(%v, ErrUnauthenticated) = false", err)
				}
				if !bytes.Contains([]byte(err.Error()), []byte(tc.wantMsg)) {
					t.Errorf("error %q does not say %q", err, tc.wantMsg)
				}
			}
		})
	}
}

// TestRaftAuth checks that Raft connections must prove the cluster key,
// both ways, and that strangers on the port are closed.
func TestRaftAuth(t *testing.T) {
	n := startNode(t, "n", Config{Key: testKey}, newFakeStore())
	raftTransport(t, n)

	t.Run("dialer with wrong key", func(t *testing.T) {
		other := startNode(t, "other", Config{Key: otherKey}, newFakeStore())
		_, err := other.mux.Raft().Dial(raft.ServerAddress(n.addr), 5*time.Second)
		if !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("Dial = %v, want ErrUnauthenticated", err)
		}
	})

	// Raw connections play a dialer that gets the protocol wrong.
	for _, tc := range []struct {
		name string
		talk func(c net.Conn) error
	}{
		{"wrong proof", func(c net.Conn) error {
			hello := append([]byte(raftPrefix), make([]byte, nonceLen)...)
			if _, err := c.Write(hello); err != nil {
				return err
			}
			reply := make([]byte, nonceLen+macLen)
			if _, err := io.ReadFull(c, reply); err != nil {
				return err
			}
			bad := make([]byte, macLen)
			rand.Read(bad)
			_, err := c.Write(bad)
			return err
		}},
		{"blind replay", func(c net.Conn) error {
			// A recorded exchange replayed without reading the fresh nonce.
			junk := make([]byte, nonceLen+macLen)
			rand.Read(junk)
			_, err := c.Write(append([]byte(raftPrefix), junk...))
			return err
		}},
		{"http/1", func(c net.Conn) error {
			_, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", n.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := tc.talk(c); err != nil {
				t.Fatal(err)
			}
			// The server must close the connection, long before the
			// handshake timeout, without sending Raft anything.
			c.SetReadDeadline(time.Now().Add(handshakeTimeout / 2))
			buf := make([]byte, 1)
			for {
				_, err = c.Read(buf)
				if err != nil {
					break
				}
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %v", handshakeTimeout/2)
			}
		})
	}

	// The port still works for an honest dialer.
	good := startNode(t, "good", Config{Key: testKey}, newFakeStore())
	resp, err := appendEntries(raftTransport(t, good), n, 41)
	if err != nil || resp.Term != 42 {
		t.Fatalf("AppendEntries after refusals = %+v, %v", resp, err)
	}
}

// TestTLSRequired checks that a TLS port refuses plaintext and
// certificates it does not trust.
func TestTLSRequired(t *testing.T) {
	cfg := tlsConfig(t)
	n := startNode(t, "n", cfg, newFakeStore())
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"plaintext client", Config{Key: testKey}},
		{"other CA", func() Config { c := tlsConfig(t); c.ServerTLS = nil; return c }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newPool(t, tc.cfg).Node(n.addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Info(ctxT(t)); !errors.Is(err, ErrUnavailable) {
				t.Errorf("gRPC Info = %v, want ErrUnavailable", err)
			}
			sl := &StreamLayer{subListener: newSubListener(tcpAddr("x:1")), key: testKey, clientTLS: tc.cfg.ClientTLS, log: quiet}
			if conn, err := sl.Dial(raft.ServerAddress(n.addr), 3*time.Second); err == nil {
				conn.Close()
				t.Errorf("raft Dial succeeded")
			}
		})
	}
}

func TestNewMuxNeedsAdvertisableAddr(t *testing.T) {
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := NewMux(l, "", Config{Key: testKey}); err == nil {
		t.Fatal("NewMux on a wildcard address without advertise succeeded")
	}
	m, err := NewMux(l, "node1.example:7000", Config{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.Raft().Addr().String(); got != "node1.example:7000" {
		t.Errorf("Raft().Addr() = %q", got)
	}
}

// Keep the generated package linked into this test binary's API check.
var _ pb.NodeServer = (*NodeServer)(nil)
