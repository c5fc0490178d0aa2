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
	// Key is the cluster key ([LoadKey]), at least MinKeyLen bytes.
	Key []byte
	// ServerTLS, if set, puts the whole cluster port under TLS. It must
	// hold a certificate; see [LoadTLS].
	ServerTLS *tls.Config
	// ClientTLS, if set, is used to dial peers, gRPC and Raft alike. A
	// cluster sets both or neither: the two sides must agree.
	ClientTLS *tls.Config
	// Faults, if set, is consulted by every dial; for tests.
	Faults *Faults
	// Logger receives refused connections; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c *Config) check() error {
	if err := checkKey(c.Key); err != nil {
		return fmt.Errorf("transport: %w", err)
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
