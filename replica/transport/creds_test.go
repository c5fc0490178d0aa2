package transport

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
)

// credNode is a TLS node serving the Node service plus stubs of the other
// services (answering UNIMPLEMENTED once a call got past authorisation),
// with a revocation list the test controls.
type credNode struct {
	*testNode
	ca      *CA
	mu      sync.Mutex
	revoked map[string]bool
}

type sitesStub struct{ pb.UnimplementedSitesServer }
type clusterStub struct{ pb.UnimplementedClusterServer }
type mailStub struct{ pb.UnimplementedMailServer }

func startCredNode(t testing.TB) *credNode {
	t.Helper()
	cn := &credNode{revoked: map[string]bool{}}
	cn.ca = testCA(t)
	dir := issue(t, cn.ca, CredRequest{Role: RoleNode, Hosts: []string{"127.0.0.1"}})
	server, client, err := LoadNodeTLS(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile), filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Key: testKey, ServerTLS: server, ClientTLS: client, Logger: quiet, Revoked: func(id string) (bool, error) {
		cn.mu.Lock()
		defer cn.mu.Unlock()
		return cn.revoked[id], nil
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(l, "", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewGRPCServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	NewNodeServer("n", newFakeStore()).Register(srv)
	pb.RegisterSitesServer(srv, sitesStub{})
	pb.RegisterClusterServer(srv, clusterStub{})
	pb.RegisterMailServer(srv, mailStub{})
	go srv.Serve(m.GRPC())
	t.Cleanup(func() { srv.Stop(); m.Close() })
	cn.testNode = &testNode{addr: l.Addr().String(), cfg: cfg, mux: m}
	return cn
}

// client returns a connection made with a fresh credential of req.
func (cn *credNode) client(t *testing.T, req CredRequest) (*grpc.ClientConn, Identity) {
	t.Helper()
	tc, id, err := LoadCredential(issue(t, cn.ca, req))
	if err != nil {
		t.Fatal(err)
	}
	return cn.dial(t, Config{ClientTLS: tc}), id
}

func (cn *credNode) dial(t testing.TB, cfg Config) *grpc.ClientConn {
	t.Helper()
	cc, err := newPool(t, cfg).Conn(cn.addr)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// call makes one unary call of method and returns its status code.
// UNIMPLEMENTED means the stub was reached: authorisation let it through.
func call(t *testing.T, cc *grpc.ClientConn, method string) codes.Code {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var in, out pb.Empty
	err := cc.Invoke(ctx, method, &in, &out)
	return status.Code(err)
}

// TestCredentialScopes: each role reaches what docs/security.md says and
// nothing else.
func TestCredentialScopes(t *testing.T) {
	cn := startCredNode(t)
	node, _ := cn.client(t, CredRequest{Role: RoleNode, Hosts: []string{"10.0.0.9"}})
	admin, _ := cn.client(t, CredRequest{Role: RoleAdmin})
	mount, _ := cn.client(t, CredRequest{Role: RoleMount, Sites: []string{"a.example"}})
	const passed = codes.Unimplemented
	for _, tc := range []struct {
		who    string
		cc     *grpc.ClientConn
		method string
		want   codes.Code
	}{
		{"node", node, pb.Node_Info_FullMethodName, codes.OK},
		{"node", node, pb.Cluster_Propose_FullMethodName, passed},
		{"node", node, pb.Mail_ShareCredentials_FullMethodName, passed},
		{"admin", admin, pb.Cluster_Status_FullMethodName, passed},
		{"admin", admin, pb.Mail_SetPassword_FullMethodName, passed},
		{"admin", admin, pb.Sites_AddSite_FullMethodName, passed},
		{"admin", admin, pb.Node_Info_FullMethodName, codes.PermissionDenied},
		{"admin", admin, pb.Node_DeleteShard_FullMethodName, codes.PermissionDenied},
		{"admin", admin, pb.Cluster_Propose_FullMethodName, codes.PermissionDenied},
		{"admin", admin, pb.Cluster_Join_FullMethodName, codes.PermissionDenied},
		{"admin", admin, pb.Mail_ShareCredentials_FullMethodName, codes.PermissionDenied},
		{"mount", mount, pb.Sites_Lookup_FullMethodName, passed},
		{"mount", mount, pb.Cluster_Status_FullMethodName, codes.PermissionDenied},
		{"mount", mount, pb.Cluster_GetObject_FullMethodName, codes.PermissionDenied},
		{"mount", mount, pb.Mail_SetPassword_FullMethodName, codes.PermissionDenied},
		{"mount", mount, pb.Node_Info_FullMethodName, codes.PermissionDenied},
	} {
		var got codes.Code
		if tc.method == pb.Node_Info_FullMethodName && tc.want == codes.OK {
			_, err := NewNodeClient(tc.cc, cn.addr).Info(ctxT(t))
			got = status.Code(err)
			if err != nil {
				t.Errorf("%s: Info: %v", tc.who, err)
				continue
			}
		} else {
			got = call(t, tc.cc, tc.method)
		}
		if got != tc.want {
			t.Errorf("%s calling %s: %v, want %v", tc.who, tc.method, got, tc.want)
		}
	}
}

// TestRevokedCredential: a revoked credential is refused on its next call,
// on a connection that was already open, and a new one is too.
func TestRevokedCredential(t *testing.T) {
	cn := startCredNode(t)
	admin, id := cn.client(t, CredRequest{Role: RoleAdmin})
	if got := call(t, admin, pb.Cluster_Status_FullMethodName); got != codes.Unimplemented {
		t.Fatalf("before revocation: %v", got)
	}
	cn.mu.Lock()
	cn.revoked[id.ID] = true
	cn.mu.Unlock()
	if got := call(t, admin, pb.Cluster_Status_FullMethodName); got != codes.Unauthenticated {
		t.Errorf("revoked credential on its open connection: %v, want Unauthenticated", got)
	}
	other, _ := cn.client(t, CredRequest{Role: RoleAdmin})
	if got := call(t, other, pb.Cluster_Status_FullMethodName); got != codes.Unimplemented {
		t.Errorf("another admin credential after the revocation: %v", got)
	}
}

// TestTLSRefusesUncertified: without a client certificate signed by the
// cluster CA nothing gets through, whatever the client sends — the
// cluster token included (what a sniffer of an old plaintext cluster
// would replay).
func TestTLSRefusesUncertified(t *testing.T) {
	cn := startCredNode(t)
	rootsOnly := &tls.Config{RootCAs: cn.testNode.cfg.ClientTLS.RootCAs, MinVersion: tls.VersionTLS13}
	stranger := tlsConfig(t) // a node credential of another CA
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"token, no TLS", Config{Key: testKey}},
		{"token, TLS without client certificate", Config{Key: testKey, ClientTLS: rootsOnly}},
		{"certificate of another CA", Config{Key: testKey, ClientTLS: stranger.ClientTLS}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cc := cn.dial(t, cfg)
			if tc.name == "token, TLS without client certificate" {
				// DialOptions sends no token with TLS; send it by hand.
				opts, err := DialOptions(Config{Key: testKey, ClientTLS: rootsOnly})
				if err != nil {
					t.Fatal(err)
				}
				opts = append(opts, grpc.WithPerRPCCredentials(keyCreds{token: grpcToken(testKey)}))
				if cc, err = grpc.NewClient("passthrough:///"+cn.addr, opts...); err != nil {
					t.Fatal(err)
				}
				defer cc.Close()
			}
			got := call(t, cc, pb.Cluster_Status_FullMethodName)
			if got == codes.Unimplemented || got == codes.OK {
				t.Errorf("call got through: %v", got)
			}
		})
	}
}

// TestRaftNeedsNodeCredential: admin and mount credentials are valid TLS
// clients but never reach Raft.
func TestRaftNeedsNodeCredential(t *testing.T) {
	cn := startCredNode(t)
	raftTransport(t, cn.testNode)
	for _, req := range []CredRequest{{Role: RoleAdmin}, {Role: RoleMount, Sites: []string{"a.example"}}, {Role: RoleNode, Hosts: []string{"127.0.0.1"}}} {
		tc, _, err := LoadCredential(issue(t, cn.ca, req))
		if err != nil {
			t.Fatal(err)
		}
		sl := &StreamLayer{subListener: newSubListener(tcpAddr("x:1")), key: testKey, clientTLS: tc, log: quiet}
		conn, err := sl.Dial(raft.ServerAddress(cn.addr), 3*time.Second)
		if req.Role == RoleNode {
			if err != nil {
				t.Errorf("node credential: raft Dial: %v", err)
			} else {
				conn.Close()
			}
			continue
		}
		if err == nil {
			conn.Close()
			t.Errorf("%s credential: raft Dial succeeded", req.Role)
		}
	}
}

func TestCheckSite(t *testing.T) {
	mount := Identity{ID: "m", Role: RoleMount, Sites: []string{"a.example"}}
	for _, tc := range []struct {
		ctx  context.Context
		site string
		ok   bool
	}{
		{context.Background(), "b.example", true},
		{context.WithValue(context.Background(), identityKey{}, Identity{ID: "x", Role: RoleAdmin}), "b.example", true},
		{context.WithValue(context.Background(), identityKey{}, mount), "a.example", true},
		{context.WithValue(context.Background(), identityKey{}, mount), "b.example", false},
		{context.WithValue(context.Background(), identityKey{}, mount), "A.example", false},
	} {
		err := CheckSite(tc.ctx, tc.site)
		if (err == nil) != tc.ok {
			t.Errorf("CheckSite(%v, %q) = %v", tc.ctx.Value(identityKey{}), tc.site, err)
		}
		if err != nil && status.Code(err) != codes.PermissionDenied {
			t.Errorf("CheckSite error %v, want PermissionDenied", err)
		}
	}
}

// TestCredentialFiles: key files others can read are refused; issue
// checks what each kind needs.
func TestCredentialFiles(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	ca, err := NewCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := issue(t, ca, CredRequest{Role: RoleAdmin})
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadCredential(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("LoadCredential with a 0644 key = %v, want a chmod 600 error", err)
	}
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, CAFile), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadCredential(dir); err == nil || !strings.Contains(err.Error(), "chmod 644") {
		t.Errorf("LoadCredential with a world-writable ca.pem = %v, want a chmod 644 error", err)
	}
	if err := os.Chmod(filepath.Join(dir, CAFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadCredential(dir); err != nil {
		t.Errorf("LoadCredential after the chmods: %v", err)
	}
	for _, bad := range []CredRequest{
		{Role: RoleMount},
		{Role: RoleNode},
		{Role: RoleAdmin, Sites: []string{"a.example"}},
		{Role: "root"},
	} {
		if _, err := ca.Issue(bad); err == nil {
			t.Errorf("Issue(%+v) succeeded", bad)
		}
	}
	if _, err := NewCA(caDir); err == nil {
		t.Error("NewCA over an existing CA succeeded")
	}
}

// BenchmarkCallAuth measures a small call (Node.Info) end to end over
// loopback: plaintext with the token, and mutual TLS with the revocation
// lookup (here a map; a node reads its metadata store).
func BenchmarkCallAuth(b *testing.B) {
	for _, mode := range []string{"insecure-token", "mtls"} {
		b.Run(mode, func(b *testing.B) {
			var cc *grpc.ClientConn
			var addr string
			if mode == "mtls" {
				cn := startCredNode(b)
				tc, _, err := LoadCredential(issue(b, cn.ca, CredRequest{Role: RoleNode, Hosts: []string{"127.0.0.1"}}))
				if err != nil {
					b.Fatal(err)
				}
				addr, cc = cn.addr, cn.dial(b, Config{ClientTLS: tc})
			} else {
				n := startNode(b, "n", Config{Key: testKey}, newFakeStore())
				var err error
				addr = n.addr
				if cc, err = newPool(b, Config{Key: testKey}).Conn(addr); err != nil {
					b.Fatal(err)
				}
			}
			c := NewNodeClient(cc, addr)
			ctx := context.Background()
			if _, err := c.Info(ctx); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Info(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
