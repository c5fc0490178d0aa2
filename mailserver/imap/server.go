package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"

	"hastore/connlimit"
	"hastore/mailserver/imap/wire"
	"hastore/mailserver/mailbox"
)

// Config says which IMAP listeners to run. An empty address leaves that
// listener off.
type Config struct {
	IMAP  string // STARTTLS (when TLS is set)
	IMAPS string // implicit TLS (TLS required)
	TLS   *tls.Config
	// AllowInsecureAuth allows LOGIN/AUTHENTICATE without TLS (development).
	AllowInsecureAuth bool
	// MaxMessageBytes bounds APPEND (default 50 MiB).
	MaxMessageBytes int64
	// MaxConnections bounds the connections of both listeners together
	// (default 20,000: 9,000 customers with a few devices each; negative:
	// no limit); MaxConnectionsPerIP bounds those from one IPv4 address or
	// IPv6 /64 (default 50, room for an office behind NAT; negative: no
	// limit). A connection over a limit gets "* BYE" and is closed.
	MaxConnections      int
	MaxConnectionsPerIP int
	// LoginTimeout is how long a connection may stay unauthenticated,
	// whatever it sends meanwhile (default 60 s).
	LoginTimeout time.Duration
	// IdleTimeout, when set, shortens the library's inactivity timeout of
	// authenticated sessions and of IDLE (35 minutes; RFC 3501 5.4 asks for
	// at least 30, RFC 2177 has clients re-IDLE every 29).
	IdleTimeout time.Duration
	// MaxAppendBuffer bounds the APPEND data held in memory by all
	// connections at once (default 256 MiB); past it an APPEND waits a
	// little for room, then answers NO [LIMIT].
	MaxAppendBuffer int64
	Logger          *slog.Logger
}

// Defaults of Config.
const (
	DefaultMaxConnections      = 20000
	DefaultMaxConnectionsPerIP = 200
	DefaultLoginTimeout        = time.Minute
	DefaultMaxAppendBuffer     = 256 << 20
)

// Server is one node's IMAP listeners.
type Server struct {
	store  *mailbox.Store
	cfg    Config
	log    *slog.Logger
	srv    *wire.Server
	limit  *connlimit.Limiter
	append *budget
	recent *recentBook
	// stopObserve ends the recentBook's view of every mailbox's events.
	stopObserve func()
	accts       accountWatches

	mu  sync.Mutex
	lns map[string]net.Listener
	wg  sync.WaitGroup
}

// Listen starts the configured IMAP listeners over store.
func Listen(store *mailbox.Store, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 50 << 20
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxConnectionsPerIP == 0 {
		cfg.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
	}
	if cfg.LoginTimeout <= 0 {
		cfg.LoginTimeout = DefaultLoginTimeout
	}
	if cfg.MaxAppendBuffer <= 0 {
		cfg.MaxAppendBuffer = DefaultMaxAppendBuffer
	}
	// One message of the largest size must fit.
	cfg.MaxAppendBuffer = max(cfg.MaxAppendBuffer, cfg.MaxMessageBytes)
	if cfg.IMAPS != "" && cfg.TLS == nil {
		return nil, errors.New("imap: implicit TLS needs a certificate")
	}
	s := &Server{store: store, cfg: cfg, log: cfg.Logger.With("component", "imap"), lns: map[string]net.Listener{},
		limit: connlimit.NewLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerIP), append: newBudget(cfg.MaxAppendBuffer),
		recent: newRecentBook(), stopObserve: func() {}}
	if stop, err := store.ObserveMailboxes(s.recent.observe); err != nil {
		// \Recent then falls back to the \Seen guess for mailboxes the
		// node did not see (recent.go).
		s.log.Warn("imap: no mailbox event stream for \\Recent; a mailbox not selected on this node since it started counts only the mail after its last \\Seen message as recent", "err", err)
	} else {
		s.stopObserve = stop
	}
	s.srv = wire.New(wire.Options{
		NewSession: s.newSession,
		Caps: []imap.Cap{
			imap.CapNamespace, imap.CapUIDPlus, imap.CapMove, imap.CapESearch, imap.CapSearchRes,
			imap.CapSpecialUse, imap.CapCreateSpecialUse, imap.CapListExtended, imap.CapListStatus,
			imap.CapStatusSize, imap.CapChildren, imap.CapBinary, imap.CapCondStore,
			imap.Cap(fmt.Sprintf("APPENDLIMIT=%d", min(cfg.MaxMessageBytes, 1<<32-1))),
		},
		TLS:          cfg.TLS,
		InsecureAuth: cfg.AllowInsecureAuth,
		MaxAppend:    cfg.MaxMessageBytes,
		Logger:       s.log,
	})
	for _, l := range []struct {
		name, addr string
		tls        bool
	}{{"imap", cfg.IMAP, false}, {"imaps", cfg.IMAPS, true}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("imap: %w", err)
		}
		ln = s.guard(ln, l.tls)
		if l.tls {
			// Handshakes a few at a time, so that a dead node's clients
			// arriving at once do not starve this node's Raft heartbeats.
			ln = connlimit.TLSListener(ln, cfg.TLS, connlimit.HandshakeLimits{Logger: s.log})
		}
		s.mu.Lock()
		s.lns[l.name] = ln
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.srv.Serve(ln, l.tls); err != nil {
				s.log.Warn("imap listener stopped", "addr", ln.Addr(), "err", err)
			}
		}()
	}
	return s, nil
}

// Addrs returns the listening addresses by name ("imap", "imaps").
func (s *Server) Addrs() map[string]net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]net.Addr{}
	for k, ln := range s.lns {
		out[k] = ln.Addr()
	}
	return out
}

// Connections returns the IMAP connections open now, both ports.
func (s *Server) Connections() int {
	n, _ := s.limit.Count(&net.TCPAddr{}) // no client: the total only
	return n
}

// Close stops the listeners and closes every IMAP connection (clients
// reconnect, to this node or another).
func (s *Server) Close() error {
	s.stopObserve()
	err := s.srv.Close()
	s.mu.Lock()
	for _, ln := range s.lns {
		ln.Close() // one whose Serve had not started yet
	}
	s.mu.Unlock()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// ShutdownText is the BYE a client gets when the server shuts down.
const ShutdownText = "[UNAVAILABLE] Server shutting down; reconnect"

// Shutdown stops the listeners and ends every IMAP connection with "* BYE
// [UNAVAILABLE]": at once if it waits for a command or idles, else once
// the command in progress is answered (so an APPEND being stored is
// acknowledged, or not started). Clients reconnect, to this node or
// another. Connections still busy when ctx ends are closed; it then
// returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopObserve()
	err := s.srv.Shutdown(ctx, ShutdownText)
	s.mu.Lock()
	for _, ln := range s.lns {
		ln.Close() // one whose Serve had not started yet
	}
	s.mu.Unlock()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// SetLimits changes the connection caps of the running listeners, as
// Config's MaxConnections and MaxConnectionsPerIP take them (0: the
// default, negative: no cap). Connections open now stay open, even above
// a lowered cap.
func (s *Server) SetLimits(total, perIP int) {
	if total == 0 {
		total = DefaultMaxConnections
	}
	if perIP == 0 {
		perIP = DefaultMaxConnectionsPerIP
	}
	s.limit.SetLimits(total, perIP)
}
