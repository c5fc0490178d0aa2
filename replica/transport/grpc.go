package transport

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
)

const (
	// chunkSize bounds the data in one streamed message.
	chunkSize = 1 << 20
	// maxMsgSize leaves room for the first GetShard message: a record
	// header (up to 4 MiB of block checksums for a 4 GiB payload in 4 KiB
	// blocks) plus one chunk.
	maxMsgSize = 16 << 20
	// maxRecvMsgSize bounds what a server accepts in one message from a
	// caller holding the key. The largest any client sends is a 1 MiB
	// data chunk (shards, objects, site files) or a Raft command of at
	// most 1 MiB (meta.MaxCommandSize), plus framing; the 16 MiB messages
	// only ever travel from server to client (GetShard).
	maxRecvMsgSize = 4 << 20

	// A silent peer is declared dead keepaliveTime+keepaliveTimeout after
	// its last frame; gRPC will not ping more often than every 10 s. Calls
	// in flight notice sooner: gRPC sets TCP_USER_TIMEOUT to
	// keepaliveTimeout, so unacknowledged writes fail after 3 s.
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 3 * time.Second

	// maxStreams caps the calls one connection may have open at once. A
	// node's Pool sends all its calls to a peer over one connection, and
	// a gRPC client queues calls beyond the cap rather than failing them,
	// so this costs a busy peer some waiting, never an error; it bounds
	// what one connection can make the node hold (each call may buffer a
	// message of up to maxRecvMsgSize).
	maxStreams = 256
	// maxHeaderList caps a call's metadata (gRPC's default is 16 MiB, all
	// of which a stranger could make the node read before the key check).
	// Ours carries a token and a few short fields.
	maxHeaderList = 64 << 10
	// connTimeout bounds the HTTP/2 handshake of a new gRPC connection
	// (gRPC's default is 120 s); the mux has already bounded the TLS
	// handshake and the protocol sniff by sniffTimeout.
	connTimeout = 10 * time.Second
)

// newDialer returns a dialer whose connections the kernel probes after 2 s
// of silence, declaring the peer dead after 3 unanswered probes a second
// apart: a powered-off or partitioned peer is noticed in about 5 s even on
// an idle connection, sooner than gRPC's pings (10 s at the least) would.
// A peer whose kernel still answers but whose process hangs is left to
// the gRPC pings and the callers' deadlines.
func newDialer() *net.Dialer {
	return &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 2 * time.Second, Interval: time.Second, Count: 3}}
}

// NewGRPCServer returns a gRPC server that refuses calls without the
// cluster key, pings its clients and sends GetShard-sized messages. Serve
// it on [Mux.GRPC]; it speaks plaintext HTTP/2 because the mux has already
// unwrapped TLS. opts are added after hastore's own, so interceptors in
// them run after the key check.
//
// The caller (its client certificate under TLS, the cluster token
// without) is checked in gRPC's InTapHandle, on a call's headers, before
// the call exists: a call that may not be made is refused before a byte of
// its request is read or buffered (an interceptor runs only after a unary
// call's whole request, up to maxRecvMsgSize, has been read into memory).
// The interceptors check any call the tap did not mark as checked, which
// keeps the rule if the tap is ever dropped, and put the caller's
// [Identity] in the handler's context ([CallerIdentity], [CheckSite]).
func NewGRPCServer(cfg Config, opts ...grpc.ServerOption) (*grpc.Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	a := authChecker{token: []byte(grpcToken(cfg.Key)), tls: cfg.ServerTLS != nil, revoked: cfg.Revoked}
	base := []grpc.ServerOption{
		grpc.Creds(muxCreds{}),
		grpc.InTapHandle(a.tap),
		grpc.MaxConcurrentStreams(maxStreams),
		grpc.MaxHeaderListSize(maxHeaderList),
		grpc.ConnectionTimeout(connTimeout),
		grpc.ChainUnaryInterceptor(a.unary),
		grpc.ChainStreamInterceptor(a.stream),
		// Clients ping every keepaliveTime even when idle; the default
		// policy (5 min, not without streams) would answer with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveTime / 2, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
		experimental.BufferPool(bufferPool),
	}
	return grpc.NewServer(append(base, opts...)...), nil
}

// DialOptions returns the options to reach a hastore node with grpc.NewClient:
// TLS if configured, the cluster key on every call, keepalive, quick
// reconnects and the fault hook. Use target "passthrough:///host:port" so
// that the address reaches the dialer (and Faults) as written. Most code
// wants a [Pool] instead.
func DialOptions(cfg Config) ([]grpc.DialOption, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	// With TLS the client certificate authenticates; the cluster token
	// is sent only to clusters running without TLS.
	auth := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(keyCreds{token: grpcToken(cfg.Key)})}
	if cfg.ClientTLS != nil {
		auth = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg.ClientTLS.Clone()))}
	}
	faults := cfg.Faults
	return append(auth,
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return faults.dial(ctx, newDialer(), addr)
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		// gRPC's default back-off grows to 2 minutes: a restarted peer
		// would stay "unavailable" long after it is back.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
		experimental.WithBufferPool(bufferPool),
	), nil
}

// ErrPoolClosed is returned by a closed Pool.
var ErrPoolClosed = errors.New("transport: pool closed")

// Pool keeps one gRPC connection per peer address, made on first use.
// gRPC multiplexes concurrent calls over it and reconnects it as needed, so
// callers never close what they get. Safe for concurrent use.
type Pool struct {
	opts      []grpc.DialOption
	stopHeals func()

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// NewPool returns a pool dialing with cfg; extra options follow
// [DialOptions]'s.
func NewPool(cfg Config, extra ...grpc.DialOption) (*Pool, error) {
	opts, err := DialOptions(cfg)
	if err != nil {
		return nil, err
	}
	p := &Pool{opts: append(opts, extra...), conns: make(map[string]*grpc.ClientConn)}
	p.stopHeals = cfg.Faults.onHeal(p.resetBackoff)
	return p, nil
}

// Conn returns the connection to addr (host:port). It does not wait for
// the connection to be up: a call on it fails fast with Unavailable if the
// peer cannot be reached.
func (p *Pool) Conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrPoolClosed
	}
	if cc, ok := p.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, p.opts...)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = cc
	return cc, nil
}

// Node returns a Node service client for the peer at addr.
func (p *Pool) Node(addr string) (*NodeClient, error) {
	cc, err := p.Conn(addr)
	if err != nil {
		return nil, err
	}
	return NewNodeClient(cc, addr), nil
}

// Drop closes the connection to addr, for a peer that left the cluster.
// Calls in flight on it fail.
func (p *Pool) Drop(addr string) {
	p.mu.Lock()
	cc := p.conns[addr]
	delete(p.conns, addr)
	p.mu.Unlock()
	if cc != nil {
		cc.Close()
	}
}

// Close closes every connection.
func (p *Pool) Close() error {
	p.mu.Lock()
	conns := p.conns
	p.conns, p.closed = nil, true
	p.mu.Unlock()
	p.stopHeals()
	var errs []error
	for _, cc := range conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

func (p *Pool) resetBackoff() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cc := range p.conns {
		cc.ResetConnectBackoff()
	}
}
