package transport

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
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

// keyCreds attaches the cluster token to every call.
type keyCreds struct{ token string }

func (c keyCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{authMetadata: c.token}, nil
}

// RequireTransportSecurity is false because clusters without TLS are
// allowed; the token then authenticates but anyone on the path can replay
// it. TLS is the answer to that, not refusing to start.
func (keyCreds) RequireTransportSecurity() bool { return false }

// authChecker holds the token the server expects.
type authChecker struct{ token []byte }

func (a authChecker) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	return a.checkMD(md)
}

func (a authChecker) checkMD(md metadata.MD) error {
	got := md.Get(authMetadata)
	if len(got) == 0 {
		return status.Error(codes.Unauthenticated, "hastore: call carries no cluster key; the client must be given the cluster's key file")
	}
	if len(got) > 1 || subtle.ConstantTimeCompare([]byte(got[0]), a.token) != 1 {
		return status.Error(codes.Unauthenticated, "hastore: wrong cluster key; client and server were given different key files")
	}
	return nil
}

// tap runs on a call's headers before gRPC creates the call or reads its
// request; an error refuses the call with its status.
func (a authChecker) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	return ctx, a.checkMD(info.Header)
}

func (a authChecker) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a authChecker) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}
