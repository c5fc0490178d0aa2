package socketmap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// MaxRequest bounds one request netstring's payload (Postfix's map name
// and key are far shorter: an address is at most 320 bytes).
const MaxRequest = 1000

// Defaults of Config.
const (
	DefaultMaxConnections = 100
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultLookupTimeout  = 10 * time.Second
)

// Store is what a lookup needs of the mail store (*mailbox.Store).
type Store interface {
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
	Resolve(ctx context.Context, addr string, size int64) (mailbox.Route, error)
}

// Config configures a Server.
type Config struct {
	Store Store
	// MaxConnections bounds the connections served at once; more are
	// closed on accept (Postfix treats that as a temporary lookup error).
	// 0: DefaultMaxConnections.
	MaxConnections int
	// IdleTimeout bounds the wait for (all of) the next request; Postfix
	// keeps a connection open between lookups and reconnects when it is
	// closed. 0: DefaultIdleTimeout.
	IdleTimeout time.Duration
	// LookupTimeout bounds one lookup; past it the answer is TEMP.
	// 0: DefaultLookupTimeout.
	LookupTimeout time.Duration
	Logger        *slog.Logger
}

// Server answers socketmap lookups on one listener.
type Server struct {
	cfg  Config
	log  *slog.Logger
	ctx  context.Context // canceled by Close: lookups in flight end
	stop context.CancelFunc
	l    net.Listener
	sem  chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]bool
	done bool
}

// Listen starts a Server on addr (host:port).
func Listen(addr string, cfg Config) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("socketmap: listen on %s: %w", addr, err)
	}
	return Serve(l, cfg), nil
}

// Serve starts a Server answering on l, which it closes when closed.
func Serve(l net.Listener, cfg Config) *Server {
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log.With("listener", "socketmap"), l: l,
		sem: make(chan struct{}, cfg.MaxConnections), conn: map[net.Conn]bool{}}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.accept()
	return s
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Close stops accepting, closes the open connections and waits for their
// goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.done = true
	s.stop()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	err := s.l.Close()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("socketmap accept failed; retrying", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		select {
		case s.sem <- struct{}{}:
		default:
			s.log.Warn("socketmap connection limit reached: connection closed; raise the limit or lower Postfix's process count", "remote", c.RemoteAddr(), "max_connections", s.cfg.MaxConnections)
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			c.Close()
			<-s.sem
			return
		}
		s.conn[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conn, c)
			s.mu.Unlock()
			c.Close()
			<-s.sem
		}()
	}
}

// serve answers c's requests until it closes, goes idle, or sends
// something that is not a netstring of at most MaxRequest bytes.
func (s *Server) serve(c net.Conn) {
	r := bufio.NewReaderSize(c, 256)
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		req, err := readNetstring(r, MaxRequest)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Info("socketmap connection closed", "remote", c.RemoteAddr(), "why", err)
			}
			return
		}
		reply := s.answer(req, c.RemoteAddr())
		c.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if _, err := fmt.Fprintf(c, "%d:%s,", len(reply), reply); err != nil {
			return
		}
	}
}

// answer is the reply to one request "<name> <key>".
func (s *Server) answer(req []byte, remote net.Addr) string {
	name, key, ok := strings.Cut(string(req), " ")
	if !ok || name == "" || key == "" {
		s.log.Info("socketmap: malformed request (want \"<name> <key>\")", "remote", remote, "len", len(req))
		return "PERM malformed request: want <name> <key>"
	}
	addr := strings.ToLower(key)
	if mailstate.ValidMailAddress(addr) != nil {
		// Postfix also asks for "@domain" and bare local parts; the
		// full address's answer already covered catch-alls.
		return "NOTFOUND "
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LookupTimeout)
	defer cancel()
	_, domain, _ := strings.Cut(addr, "@")
	local, err := s.cfg.Store.IsLocalDomain(ctx, domain)
	if err != nil {
		s.log.Warn("socketmap: cannot read the mail domains; answered TEMP", "key", addr, "err", err)
		return "TEMP cluster unavailable, try again later"
	}
	if !local {
		return "NOTFOUND "
	}
	_, err = s.cfg.Store.Resolve(ctx, addr, 0)
	var qe *mailbox.QuotaError
	switch {
	case err == nil, errors.As(err, &qe), errors.Is(err, mailbox.ErrOverQuota):
		return "OK " + addr
	case errors.Is(err, mailbox.ErrNotFound), errors.Is(err, mailbox.ErrDisabled):
		return "NOTFOUND "
	case errors.Is(err, mailbox.ErrFanOut):
		// SMTP's RCPT refuses it for good (550 5.3.5); so does Postfix
		// on NOTFOUND. The alias is the postmaster's to fix.
		s.log.Warn("socketmap: alias expands too widely: answered NOTFOUND; fix the alias", "key", addr, "err", err)
		return "NOTFOUND "
	}
	s.log.Warn("socketmap: recipient lookup failed; answered TEMP", "key", addr, "err", err)
	return "TEMP cluster unavailable, try again later"
}

// readNetstring reads one netstring "<len>:<bytes>," of at most max bytes.
func readNetstring(r *bufio.Reader, max int) ([]byte, error) {
	n, digits := 0, 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			if digits > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if b == ':' && digits > 0 {
			break
		}
		if b < '0' || b > '9' {
			return nil, fmt.Errorf("not a netstring: byte %q in the length", b)
		}
		if digits++; digits > 1 && n == 0 {
			return nil, errors.New("not a netstring: leading zero in the length")
		}
		if n = 10*n + int(b-'0'); n > max {
			return nil, fmt.Errorf("netstring longer than %d bytes", max)
		}
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("netstring cut short: %w", err)
	}
	if buf[n] != ',' {
		return nil, errors.New("not a netstring: no ',' after the data")
	}
	return buf[:n], nil
}
