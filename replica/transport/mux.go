package transport

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/soheilhy/cmux"

	"hastore/connlimit"
)

const (
	// raftPrefix opens every Raft connection. It cannot be confused with
	// the HTTP/2 preface ("PRI * HTTP/2.0…"), so one read of 8 bytes tells
	// the two apart.
	raftPrefix = "HSRAFT1\n"
	nonceLen   = 32
	macLen     = sha256.Size

	// sniffTimeout bounds how long a new connection may take to show what
	// it speaks (including the TLS handshake), so idle sockets do not pile up.
	sniffTimeout = 10 * time.Second
	// handshakeTimeout bounds the Raft key proof on the accepting side.
	handshakeTimeout = 10 * time.Second
	// defaultDialTimeout applies when raft passes no timeout.
	defaultDialTimeout = 10 * time.Second
)

// Mux serves gRPC and Raft on one listener. It starts serving in
// [NewMux]; [Mux.GRPC] is the listener to hand to grpc.Server.Serve and
// [Mux.Raft] the stream layer for raft.NewNetworkTransport.
type Mux struct {
	root   net.Listener
	cm     cmux.CMux
	grpc   *subListener
	raft   *StreamLayer
	log    *slog.Logger
	closed chan struct{}
	once   sync.Once
}

// NewMux takes over l (a plain TCP listener: TLS, if configured, is added
// here so that both protocols get it) and starts serving it. advertise is
// the host:port peers dial to reach this node, which Raft records as the
// node's address; empty means l's address, which must not be a wildcard.
func NewMux(l net.Listener, advertise string, cfg Config) (*Mux, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if advertise == "" {
		ta, ok := l.Addr().(*net.TCPAddr)
		if ok && ta.IP.IsUnspecified() {
			return nil, fmt.Errorf("transport: listening on %v, a wildcard address: give the address peers should dial", ta)
		}
		advertise = l.Addr().String()
	} else if _, _, err := net.SplitHostPort(advertise); err != nil {
		return nil, fmt.Errorf("transport: advertised address %q: %w", advertise, err)
	}
	log := cfg.logger()
	// The cap goes under TLS: a refused connection costs no handshake.
	total, perIP := cfg.connLimits()
	l = connlimit.Listener(l, connlimit.Limits{Total: total, PerIP: perIP, Name: "cluster", Logger: log})
	if cfg.ServerTLS != nil {
		l = tls.NewListener(l, serverTLS(cfg.ServerTLS))
	} else {
		log.Warn("INSECURE: cluster port without TLS: traffic (objects, mail, password hashes) crosses the network in clear, and the cluster token in it lets whoever sees it make any cluster call; give every node --tls-cert/--tls-key/--tls-ca (see docs/security.md)", "addr", l.Addr())
	}
	m := &Mux{
		root:   l,
		cm:     cmux.New(l),
		log:    log,
		closed: make(chan struct{}),
	}
	m.grpc = newSubListener(l.Addr())
	m.raft = &StreamLayer{
		subListener: newSubListener(tcpAddr(advertise)),
		key:         cfg.Key,
		clientTLS:   cfg.ClientTLS,
		serverTLS:   cfg.ServerTLS != nil,
		faults:      cfg.Faults,
		log:         m.log,
	}
	m.cm.SetReadTimeout(sniffTimeout)
	m.cm.HandleError(m.handleErr)
	// Raft first: its matcher reads 8 bytes, fewer than any HTTP/2 client
	// sends unprompted, so it never stalls a gRPC connection.
	raftL := m.cm.Match(matchRaft)
	grpcL := m.cm.Match(cmux.HTTP2())
	go m.pump(grpcL, m.grpc.deliver)
	go m.pump(raftL, m.raft.accept)
	go func() {
		err := m.cm.Serve()
		select {
		case <-m.closed:
		default:
			m.log.Error("cluster port stopped serving", "addr", l.Addr(), "err", err)
		}
	}()
	return m, nil
}

// GRPC returns the listener of the port's gRPC connections. Closing it
// stops only the gRPC side.
func (m *Mux) GRPC() net.Listener { return m.grpc }

// Raft returns the port's Raft stream layer. Closing it (as
// NetworkTransport.Close does) stops only the Raft side.
func (m *Mux) Raft() *StreamLayer { return m.raft }

// Addr returns the address the mux listens on.
func (m *Mux) Addr() net.Addr { return m.root.Addr() }

// Close stops accepting connections on the port. Connections already
// handed out stay open; their servers close them.
func (m *Mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.closed)
		m.grpc.Close()
		m.raft.Close()
		m.cm.Close()
		err = m.root.Close()
	})
	return err
}

func (m *Mux) handleErr(err error) bool {
	var nm cmux.ErrNotMatched
	if errors.As(err, &nm) {
		// Port scanners and health checkers: not worth more than debug.
		m.log.Debug("closed connection speaking neither gRPC nor Raft", "err", err)
		return true
	}
	select {
	case <-m.closed:
		return false
	default:
	}
	// cmux retries temporary accept errors (EMFILE…) at once; a pause
	// keeps that from spinning.
	m.log.Warn("accepting on cluster port", "err", err)
	time.Sleep(50 * time.Millisecond)
	return true
}

// pump moves matched connections from a cmux listener to one of ours, so
// that closing ours (grpc.Server.Stop, raft's transport Close) does not
// close the shared root listener as cmux's own listeners would.
func (m *Mux) pump(l net.Listener, deliver func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		deliver(c)
	}
}

func matchRaft(r io.Reader) bool {
	buf := make([]byte, len(raftPrefix))
	if _, err := io.ReadFull(r, buf); err != nil {
		return false
	}
	return string(buf) == raftPrefix
}

// subListener is a net.Listener fed by the mux.
type subListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newSubListener(addr net.Addr) *subListener {
	return &subListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next connection.
func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops this side of the port only.
func (l *subListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr returns the listener's address.
func (l *subListener) Addr() net.Addr { return l.addr }

func (l *subListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// tcpAddr is an advertised address, kept as the operator wrote it (a host
// name stays a host name).
type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

// StreamLayer is the Raft side of a [Mux], a raft.StreamLayer: Accept
// returns only connections whose dialer proved the cluster key, and Dial
// proves it to the peer (and makes the peer prove it back) before
// returning. Build the Raft transport with
//
//	raft.NewNetworkTransport(mux.Raft(), maxPool, timeout, logOutput)
type StreamLayer struct {
	*subListener
	key       []byte
	clientTLS *tls.Config
	serverTLS bool
	faults    *Faults
	log       *slog.Logger
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// Addr returns the advertised address of this node.
func (s *StreamLayer) Addr() net.Addr { return s.subListener.Addr() }

// accept runs the key proof off the mux's goroutine, so a slow or hostile
// dialer holds up nobody else.
func (s *StreamLayer) accept(c net.Conn) {
	go func() {
		c.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := s.checkPeer(c); err != nil {
			s.log.Warn("refused Raft connection", "remote", c.RemoteAddr(), "err", err)
			c.Close()
			return
		}
		if err := serverHandshake(c, s.key); err != nil {
			s.log.Warn("refused Raft connection", "remote", c.RemoteAddr(), "err", err)
			c.Close()
			return
		}
		c.SetDeadline(time.Time{})
		s.deliver(c)
	}()
}

// checkPeer admits, under TLS, only Raft connections whose client
// certificate is a node credential: admin and mount credentials never
// reach Raft. (Revocation is not checked here: the revocation list lives
// in the metadata Raft carries, and the dialer must also prove the
// cluster key, which a node keeps apart from its certificate.)
func (s *StreamLayer) checkPeer(c net.Conn) error {
	if !s.serverTLS {
		return nil
	}
	tc := tlsConn(c)
	if tc == nil {
		return errors.New("no TLS connection under a TLS port")
	}
	cs := tc.ConnectionState()
	id, err := identityFromState(&cs)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if id.Role != RoleNode {
		return fmt.Errorf("%w: a %s credential (%s) may not speak Raft", ErrUnauthenticated, id.Role, id.ID)
	}
	return nil
}

// Dial connects to a peer's cluster port and runs the key proof, all
// within timeout.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = defaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	addr := string(address)
	c, err := s.faults.dial(ctx, newDialer(), addr)
	if err != nil {
		return nil, err
	}
	if s.clientTLS != nil {
		cfg := s.clientTLS.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("transport: raft dial %s: %w", addr, err)
		}
		c = tc
	}
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if err := clientHandshake(c, s.key); err != nil {
		c.Close()
		return nil, fmt.Errorf("transport: raft dial %s: %w", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// The key proof. The dialer sends the prefix and a nonce; the acceptor
// answers with its own nonce and an HMAC over both; the dialer checks it
// and answers with its HMAC. Fresh nonces on both sides mean a recorded
// exchange cannot be replayed to either, and distinct labels mean one
// side's answer is never a valid answer for the other.
func raftMAC(key []byte, side string, nc, ns []byte) []byte {
	return derive(key, "hastore raft v1 "+side, nc, ns)
}

func clientHandshake(c net.Conn, key []byte) error {
	hello := make([]byte, len(raftPrefix)+nonceLen)
	copy(hello, raftPrefix)
	nc := hello[len(raftPrefix):]
	if _, err := rand.Read(nc); err != nil {
		return err
	}
	if _, err := c.Write(hello); err != nil {
		return err
	}
	reply := make([]byte, nonceLen+macLen)
	if _, err := io.ReadFull(c, reply); err != nil {
		// A peer that rejects us closes without a word; so does one with
		// a different key before we even get here: say both.
		return fmt.Errorf("reading peer's key proof (is it a hastore node with the same cluster key?): %w", err)
	}
	ns, mac := reply[:nonceLen], reply[nonceLen:]
	if !hmac.Equal(mac, raftMAC(key, "server", nc, ns)) {
		return fmt.Errorf("%w: peer does not hold this cluster's key", ErrUnauthenticated)
	}
	_, err := c.Write(raftMAC(key, "client", nc, ns))
	return err
}

func serverHandshake(c net.Conn, key []byte) error {
	hello := make([]byte, len(raftPrefix)+nonceLen)
	if _, err := io.ReadFull(c, hello); err != nil {
		return fmt.Errorf("reading hello: %w", err)
	}
	if string(hello[:len(raftPrefix)]) != raftPrefix {
		return errors.New("bad prefix")
	}
	nc := hello[len(raftPrefix):]
	reply := make([]byte, nonceLen, nonceLen+macLen)
	if _, err := rand.Read(reply); err != nil {
		return err
	}
	ns := reply[:nonceLen]
	reply = append(reply, raftMAC(key, "server", nc, ns)...)
	if _, err := c.Write(reply); err != nil {
		return err
	}
	mac := make([]byte, macLen)
	if _, err := io.ReadFull(c, mac); err != nil {
		return fmt.Errorf("reading key proof: %w", err)
	}
	if !hmac.Equal(mac, raftMAC(key, "client", nc, ns)) {
		return fmt.Errorf("%w: dialer does not hold this cluster's key", ErrUnauthenticated)
	}
	return nil
}
