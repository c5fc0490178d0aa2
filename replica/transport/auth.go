package transport

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/soheilhy/cmux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	pb "hastore/proto/hastorepb"
)

// MinKeyLen is the shortest cluster key accepted: 16 bytes (128 bits) if
// random, which is what GenerateKey's output carries many times over.
const MinKeyLen = 16

// authMetadata is the gRPC metadata key that carries the call's token.
const authMetadata = "hastore-auth"

// LoadKey reads the cluster key from a file. Surrounding white space is
// dropped so that a key written by an editor (with a final newline) works.
// A file that group or others may read or write is refused: whoever reads
// the key may act as a node (read every object, change every password).
func LoadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("transport: reading cluster key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("transport: reading cluster key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("transport: cluster key file %s has mode %#o, so users other than its owner can read or change it; "+
			"anyone holding the key can act as a cluster node: run chmod 600 %s (and consider a new key if others had access)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("transport: reading cluster key: %w", err)
	}
	key := []byte(strings.TrimSpace(string(b)))
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("transport: cluster key file %s: %w", path, err)
	}
	return key, nil
}

func checkKey(key []byte) error {
	if len(key) < MinKeyLen {
		return fmt.Errorf("cluster key is %d bytes, need at least %d (make one with `hastore admin keygen`)", len(key), MinKeyLen)
	}
	return nil
}

// GenerateKey returns a new random cluster key: 32 random bytes in
// unpadded URL-safe base64, so that it can be stored in a text file and
// pasted into configuration.
func GenerateKey() ([]byte, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("transport: generating cluster key: %w", err)
	}
	return []byte(base64.RawURLEncoding.EncodeToString(raw)), nil
}

// derive returns HMAC-SHA256(key, label). Each use of the key gets its own
// label, so a token seen on one channel (say, gRPC metadata without TLS) is
// useless on another (the Raft handshake) and never reveals the key itself.
func derive(key []byte, label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func grpcToken(key []byte) string {
	return hex.EncodeToString(derive(key, "hastore grpc v1"))
}

// keyCreds attaches the cluster token to every call. Only clusters
// running without TLS (--insecure) use it: with TLS the client's
// certificate authenticates the connection and no token is sent.
type keyCreds struct{ token string }

func (c keyCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{authMetadata: c.token}, nil
}

// RequireTransportSecurity is false: the token is only ever sent on
// clusters an operator started with --insecure.
func (keyCreds) RequireTransportSecurity() bool { return false }

// authChecker decides who may make a call. With TLS the caller is the
// identity of the client certificate the handshake verified (see
// credsAuthInfo) and the token is ignored; without TLS (an --insecure
// cluster) the caller must present the cluster token and is then a node.
type authChecker struct {
	token   []byte // without TLS
	tls     bool
	revoked func(id string) (bool, error)
}

// Services and calls a credential's role does not reach. Names come from
// the generated code so that a renamed service cannot slip through.
var (
	nodeService  = "/" + pb.Node_ServiceDesc.ServiceName + "/"
	sitesService = "/" + pb.Sites_ServiceDesc.ServiceName + "/"
	// nodeOnly are the Cluster and Mail calls nodes make to each other.
	nodeOnly = map[string]bool{
		pb.Cluster_Join_FullMethodName:          true,
		pb.Cluster_Propose_FullMethodName:       true,
		pb.Cluster_ReadIndex_FullMethodName:     true,
		pb.Cluster_LeaderSlow_FullMethodName:    true,
		pb.Mail_ShareCredentials_FullMethodName: true,
	}
)

// allowed reports whether role may call method (a full gRPC method name).
// A mount credential is also limited to its sites, which the Sites service
// checks per request ([CheckSite]).
func allowed(role Role, method string) bool {
	switch role {
	case RoleNode:
		return true
	case RoleAdmin:
		return !strings.HasPrefix(method, nodeService) && !nodeOnly[method]
	case RoleMount:
		return strings.HasPrefix(method, sitesService)
	}
	return false
}

type identityKey struct{}

// CallerIdentity returns the identity a call was authorised as; ok is
// false outside a call checked by [NewGRPCServer]'s interceptors.
func CallerIdentity(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// CheckSite returns a PERMISSION_DENIED status unless the call's
// credential reaches site: a mount credential reaches the sites it names,
// node and admin credentials every site. A context that carries no
// identity (a call from inside the node) is allowed.
func CheckSite(ctx context.Context, site string) error {
	id, ok := CallerIdentity(ctx)
	if !ok || id.MaySite(site) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "hastore: credential %s reaches sites %s, not %q", id.ID, strings.Join(id.Sites, ","), site)
}

// RequireUnscoped returns PERMISSION_DENIED for a mount credential: the
// Sites calls that are not about one site (add, delete, list) are for
// admins.
func RequireUnscoped(ctx context.Context, op string) error {
	if id, ok := CallerIdentity(ctx); ok && id.Role == RoleMount {
		return status.Errorf(codes.PermissionDenied, "hastore: %s needs an admin credential; %s is a mount credential for %s", op, id.ID, strings.Join(id.Sites, ","))
	}
	return nil
}

// authorize returns the caller of method or the status refusing it.
func (a authChecker) authorize(ctx context.Context, method string, md metadata.MD) (Identity, error) {
	if !a.tls {
		if err := a.checkToken(md); err != nil {
			return Identity{}, err
		}
		return keyIdentity, nil
	}
	p, _ := peer.FromContext(ctx)
	var ai credsAuthInfo
	if p != nil {
		ai, _ = p.AuthInfo.(credsAuthInfo)
	}
	if ai.err != nil || ai.id.Role == "" {
		why := "no client certificate"
		if ai.err != nil {
			why = ai.err.Error()
		}
		return Identity{}, status.Errorf(codes.Unauthenticated, "hastore: %s; the client needs a credential from `hastore admin cred issue`", why)
	}
	id := ai.id
	if !allowed(id.Role, method) {
		return Identity{}, status.Errorf(codes.PermissionDenied, "hastore: a %s credential (%s) may not call %s", id.Role, id.ID, method)
	}
	if a.revoked != nil {
		r, err := a.revoked(id.ID)
		if err != nil && id.Role != RoleNode {
			// Nodes go on talking while the metadata is rebuilt; others
			// wait until this node can tell.
			return Identity{}, status.Errorf(codes.Unavailable, "hastore: cannot check whether credential %s is revoked: %v", id.ID, err)
		}
		if r {
			return Identity{}, status.Errorf(codes.Unauthenticated, "hastore: credential %s has been revoked", id.ID)
		}
	}
	return id, nil
}

func (a authChecker) checkToken(md metadata.MD) error {
	got := md.Get(authMetadata)
	if len(got) == 0 {
		return status.Error(codes.Unauthenticated, "hastore: call carries no cluster key; the client must be given the cluster's key file")
	}
	if len(got) > 1 || subtle.ConstantTimeCompare([]byte(got[0]), a.token) != 1 {
		return status.Error(codes.Unauthenticated, "hastore: wrong cluster key; client and server were given different key files")
	}
	return nil
}

func (a authChecker) check(ctx context.Context, method string) (context.Context, error) {
	if _, ok := ctx.Value(tappedKey{}).(Identity); ok {
		return ctx, nil // the tap authorised this very call
	}
	md, _ := metadata.FromIncomingContext(ctx)
	id, err := a.authorize(ctx, method, md)
	if err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

// tap runs on a call's headers before gRPC creates the call or reads its
// request; an error refuses the call with its status.
//
// The identity it finds goes into the call's context, so that the
// interceptors need not look up the revocation list a second time.
func (a authChecker) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	id, err := a.authorize(ctx, info.FullMethodName, info.Header)
	if err != nil {
		return ctx, err
	}
	ctx = context.WithValue(ctx, identityKey{}, id)
	return context.WithValue(ctx, tappedKey{}, id), nil
}

// tappedKey marks a call the tap authorised.
type tappedKey struct{}

func (a authChecker) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.check(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a authChecker) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.check(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, ctxStream{ss, ctx})
}

// credsAuthInfo is what muxCreds learnt of a connection's client
// certificate; gRPC puts it in every call's peer.
type credsAuthInfo struct {
	credentials.CommonAuthInfo
	id  Identity
	err error
}

func (credsAuthInfo) AuthType() string { return "hastore-mtls" }

// muxCreds are the server-side transport credentials of a gRPC server
// behind the Mux. The mux has already run the TLS handshake (it had to,
// to tell gRPC from Raft), so there is nothing to do but read which
// verified client certificate the connection carries.
type muxCreds struct{}

func (muxCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ai := credsAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}
	if tc := tlsConn(c); tc != nil {
		cs := tc.ConnectionState()
		ai.SecurityLevel = credentials.PrivacyAndIntegrity
		ai.id, ai.err = identityFromState(&cs)
	}
	return c, ai, nil
}

func (muxCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("transport: muxCreds are for servers")
}
func (muxCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "hastore-mux"}
}
func (c muxCreds) Clone() credentials.TransportCredentials { return c }
func (muxCreds) OverrideServerName(string) error           { return nil }

// tlsConn finds the TLS connection under a connection the mux handed out.
func tlsConn(c net.Conn) *tls.Conn {
	for {
		switch v := c.(type) {
		case *tls.Conn:
			return v
		case *cmux.MuxConn:
			c = v.Conn
		default:
			return nil
		}
	}
}
