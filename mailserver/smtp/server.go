// Package smtp serves hastore's mailboxes over SMTP (MX), submission and
// LMTP, with github.com/emersion/go-smtp, as a thin adapter over
// mailserver/mailbox.
//
// Every mode answers 250 only after the body and the mailbox entries are
// durable (mailbox.Delivery's two phases), refuses relaying, limits
// message size, recipients, line length and connections (in total and per
// client address), and adds a Received: header. Submission requires AUTH
// PLAIN or LOGIN, over TLS unless AllowInsecureAuth; failed logins are
// throttled by the mailbox.Store.
package smtp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver/mailbox"
)

// Mode is what a listener serves.
type Mode int

// Modes.
const (
	// MX receives mail for local users from anyone, without AUTH.
	MX Mode = iota
	// Submission takes mail from authenticated users (AUTH required).
	Submission
	// LMTP receives mail from a trusted MTA in front, with a status per
	// recipient.
	LMTP
)

func (m Mode) String() string {
	switch m {
	case MX:
		return "smtp"
	case Submission:
		return "submission"
	case LMTP:
		return "lmtp"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Config configures one listener. Zero values take the defaults.
type Config struct {
	Mode     Mode
	Hostname string      // announced in the greeting and Received: (default: os.Hostname)
	TLS      *tls.Config // enables STARTTLS
	// AllowInsecureAuth lets submission clients authenticate without TLS
	// (development only).
	AllowInsecureAuth bool
	MaxMessageBytes   int64 // default 50 MiB
	MaxRecipients     int   // per message; default 100 (LMTP: 1000)
	MaxLineLength     int   // default 2000 (RFC 5321's 1000, doubled)
	MaxConnections    int   // default 1000
	// MaxConnectionsPerIP bounds one client address's connections; default
	// 20, negative: no limit (LMTP defaults to none: its client is the MTA).
	MaxConnectionsPerIP int
	ReadTimeout         time.Duration // default 5 minutes
	WriteTimeout        time.Duration // default 1 minute
	// CommitTimeout bounds storing one message (default 2 minutes).
	CommitTimeout time.Duration
	// MaxConcurrentData bounds the messages being received and stored at
	// once (each is held in memory up to MaxMessageBytes); others wait
	// (default 64).
	MaxConcurrentData int
	Logger            *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 50 << 20
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = 100
		if c.Mode == LMTP {
			c.MaxRecipients = 1000
		}
	}
	if c.MaxLineLength == 0 {
		c.MaxLineLength = 2000
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 1000
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = 20
		if c.Mode == LMTP {
			c.MaxConnectionsPerIP = -1
		}
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 5 * time.Minute
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = time.Minute
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = 2 * time.Minute
	}
	if c.MaxConcurrentData == 0 {
		c.MaxConcurrentData = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server is one listening endpoint.
type Server struct {
	cfg   Config
	store *mailbox.Store
	log   *slog.Logger
	srv   *gosmtp.Server
	l     *limitListener
	data  chan struct{} // semaphore of MaxConcurrentData
	done  chan struct{}
}

// Listen starts serving mode cfg.Mode on addr.
func Listen(addr string, store *mailbox.Store, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.Mode == Submission && cfg.TLS == nil && !cfg.AllowInsecureAuth {
		cfg.Logger.Warn("submission without TLS and without insecure auth: nobody can log in", "addr", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Mode, err)
	}
	s := &Server{cfg: cfg, store: store, log: cfg.Logger.With("component", "smtp", "mode", cfg.Mode.String()), done: make(chan struct{}), data: make(chan struct{}, cfg.MaxConcurrentData)}
	s.l = &limitListener{Listener: l, max: cfg.MaxConnections, perIP: cfg.MaxConnectionsPerIP, byIP: map[string]int{}, host: cfg.Hostname}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	srv.LMTP = cfg.Mode == LMTP
	srv.TLSConfig = cfg.TLS
	srv.AllowInsecureAuth = cfg.AllowInsecureAuth
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxLineLength = cfg.MaxLineLength
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = logAdapter{s.log}
	s.srv = srv
	go func() {
		defer close(s.done)
		if err := srv.Serve(s.l); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("listener stopped", "err", err)
		}
	}()
	s.log.Info("listening", "addr", l.Addr().String())
	return s, nil
}

// Addr returns the listening address.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Close stops listening and closes every connection; a delivery in
// progress is not acknowledged.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	if errors.Is(err, gosmtp.ErrServerClosed) {
		err = nil
	}
	return err
}

type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Printf(format string, v ...any) { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a logAdapter) Println(v ...any)               { a.l.Warn(fmt.Sprint(v...)) }

// limitListener refuses connections beyond a total and a per-address
// limit with a 421 greeting, before any session exists.
type limitListener struct {
	net.Listener
	max, perIP int
	host       string
	mu         sync.Mutex
	total      int
	byIP       map[string]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		l.mu.Lock()
		over := l.total >= l.max || (l.perIP > 0 && l.byIP[ip] >= l.perIP)
		if !over {
			l.total++
			l.byIP[ip]++
		}
		l.mu.Unlock()
		if over {
			go func() {
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, _ = fmt.Fprintf(c, "421 4.7.0 %s Too many connections, try again later\r\n", l.host)
				_ = c.Close()
			}()
			continue
		}
		return &countedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *limitListener) release(ip string) {
	l.mu.Lock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
	l.mu.Unlock()
}

type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func remoteIP(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
