package transport

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
)

// Config is what both ends of the transport need: the server side ([NewMux],
// [NewGRPCServer]) and the client side ([Pool], [DialOptions],
// [StreamLayer.Dial]). Only Key is required.
type Config struct {
	// Key is the cluster key ([LoadKey]), at least MinKeyLen bytes. A
	// client with ClientTLS needs none: its certificate authenticates it.
	Key []byte
	// ServerTLS, if set, puts the whole cluster port under TLS. It must
	// hold a certificate and should require client certificates; see
	// [LoadNodeTLS]. Calls are then authorised by the client
	// certificate's role (see [Role]), not by the cluster key.
	ServerTLS *tls.Config
	// ClientTLS, if set, is used to dial peers, gRPC and Raft alike. A
	// cluster sets both or neither: the two sides must agree.
	ClientTLS *tls.Config
	// Revoked, if set, reports whether the credential with this ID has
	// been revoked; every gRPC call under TLS asks it (it is called only
	// once the gRPC server serves). An error refuses
	// the call (UNAVAILABLE) unless the caller is a node.
	Revoked func(id string) (bool, error)
	// Faults, if set, is consulted by every dial; for tests.
	Faults *Faults
	// Logger receives refused connections; nil means slog.Default().
	Logger *slog.Logger
	// MaxConns caps the connections open at once on the cluster port
	// (gRPC and Raft together, counted before the key is proved); 0 means
	// DefaultMaxConns, negative no cap.
	MaxConns int
	// MaxConnsPerIP caps one client address's (IPv6: /64's) connections;
	// 0 means DefaultMaxConnsPerIP, negative no cap.
	MaxConnsPerIP int
}

// The default caps of the cluster port. A node keeps one gRPC connection
// to each peer and a few Raft ones (raft's pool of 3 plus a pipeline), an
// admin tool one per node, and a web host one per node for every site it
// mounts (a mount is a process): a web host with hundreds of sites needs
// hundreds of connections from one address. A connection that has not
// proved the key costs the node only its buffers (some tens of KiB), so the
// caps are there to keep a stranger from taking every file descriptor,
// not to ration peers.
const (
	DefaultMaxConns      = 4096
	DefaultMaxConnsPerIP = 1024
)

func (c *Config) connLimits() (total, perIP int) {
	total, perIP = c.MaxConns, c.MaxConnsPerIP
	if total == 0 {
		total = DefaultMaxConns
	}
	if perIP == 0 {
		perIP = DefaultMaxConnsPerIP
	}
	return total, perIP
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c *Config) check() error {
	if c.ClientTLS == nil || c.ServerTLS != nil || len(c.Key) > 0 {
		if err := checkKey(c.Key); err != nil {
			return fmt.Errorf("transport: %w", err)
		}
	}
	if c.ServerTLS != nil && len(c.ServerTLS.Certificates) == 0 && c.ServerTLS.GetCertificate == nil && c.ServerTLS.GetConfigForClient == nil {
		return fmt.Errorf("transport: server TLS configured without a certificate")
	}
	return nil
}

// serverTLS returns cfg with HTTP/2 offered by ALPN: gRPC clients refuse a
// TLS server that does not negotiate "h2".
func serverTLS(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	if !slices.Contains(cfg.NextProtos, "h2") {
		cfg.NextProtos = append(cfg.NextProtos, "h2")
	}
	return cfg
}
