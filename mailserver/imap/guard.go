package imap

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"

	"hastore/connlimit"
	"hastore/mailserver/imap/wire"
)

// Defences against clients that hold connections or memory without using
// them: connection limits (in total and per client network), a deadline
// to authenticate, an optional shorter inactivity timeout, and a budget of
// APPEND bytes held in memory.

// guard wraps a raw TCP listener (below TLS, so a connection counts from
// its first byte) in the connection limits.
func (s *Server) guard(ln net.Listener, implicitTLS bool) net.Listener {
	bye := "* BYE [UNAVAILABLE] Too many connections; try again later\r\n"
	refuse := func(c net.Conn) { _, _ = io.WriteString(c, bye) }
	if implicitTLS {
		refuse = func(c net.Conn) {
			tc := tls.Server(c, s.cfg.TLS)
			if tc.Handshake() == nil {
				_, _ = io.WriteString(tc, bye)
				_ = tc.Close()
			}
		}
	}
	return &guardListener{Listener: connlimit.Listener(ln, connlimit.Limits{
		Shared: s.limit, Refuse: refuse, Logger: s.log, Name: "imap",
	}), idle: s.cfg.IdleTimeout}
}

type guardListener struct {
	net.Listener
	idle time.Duration
}

func (l *guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || l.idle <= 0 {
		return c, err
	}
	return &idleConn{Conn: c, idle: l.idle}, nil
}

// idleConn caps every read deadline the library sets at idle from now.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	if lim := time.Now().Add(c.idle); t.IsZero() || t.After(lim) {
		t = lim
	}
	return c.Conn.SetReadDeadline(t)
}

// authGuard is the session the library sees: it drops the connection when
// LoginTimeout passes before a successful LOGIN or AUTHENTICATE, however
// many NOOPs the client sends meanwhile (the library's own timeout is per
// command).
type authGuard struct {
	*session
	authed atomic.Bool
	timer  *time.Timer
}

// byeTimeout bounds saying BYE to a client that did not log in in time.
const byeTimeout = 5 * time.Second

func (s *Server) guardSession(sess *session, c *wire.Conn) *authGuard {
	g := &authGuard{session: sess}
	g.startTimer(c)
	return g
}

// startTimer gives the connection LoginTimeout to log in (again, after
// UNAUTHENTICATE).
func (g *authGuard) startTimer(c *wire.Conn) {
	s, sess := g.srv, g.session
	g.timer = time.AfterFunc(s.cfg.LoginTimeout, func() {
		if g.authed.Load() {
			return
		}
		s.log.Info("imap: dropping a connection that did not log in in time", "remote", sess.remote.String(), "timeout", s.cfg.LoginTimeout)
		done := make(chan struct{})
		go func() {
			_ = c.Bye("Too long without logging in")
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(byeTimeout):
			// Bye waits for a response write stuck on a client that does
			// not read: close under it.
			_ = c.NetConn().Close()
		}
	})
}

// Unauthenticate (RFC 8437) forgets the user; the connection has
// LoginTimeout again to log in.
func (g *authGuard) Unauthenticate() error {
	err := g.session.Unauthenticate()
	g.authed.Store(false)
	if g.timer == nil {
		g.startTimer(g.session.conn)
	}
	return err
}

// loggedIn and Close run on the connection's goroutine; the timer's
// function only reads authed.
func (g *authGuard) loggedIn() {
	g.authed.Store(true)
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil // nothing per connection outlives its login
	}
}

func (g *authGuard) Login(username, password string) error {
	err := g.session.Login(username, password)
	if err == nil {
		g.loggedIn()
	}
	return err
}

func (g *authGuard) Close() error {
	if g.timer != nil {
		g.timer.Stop()
	}
	return g.session.Close()
}

// budget is a pool of bytes (APPEND data held in memory); take waits for
// room until ctx ends.
type budget struct {
	mu      sync.Mutex
	free    int64
	changed chan struct{} // closed and replaced when bytes come back
}

func newBudget(n int64) *budget { return &budget{free: n, changed: make(chan struct{})} }

func (b *budget) take(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			return nil
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *budget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// appendWait is how long an APPEND waits for room in the budget before
// answering NO [LIMIT].
var appendWait = 10 * time.Second

const appendChunk = 64 << 10

// readLiteral reads an APPEND literal into memory that grows with the
// bytes actually received (never by the size announced), each growth taken
// from the budget first. The caller gives back the returned held bytes.
func readLiteral(b *budget, r io.Reader, size int64) (data []byte, held int64, err error) {
	defer func() {
		if err != nil {
			b.give(held)
			held, data = 0, nil
		}
	}()
	var buf []byte
	for int64(len(buf)) < size {
		if len(buf) == cap(buf) {
			grow := min(size, max(appendChunk, 2*int64(cap(buf)))) - int64(cap(buf))
			ctx, cancel := context.WithTimeout(context.Background(), appendWait)
			err := b.take(ctx, grow)
			cancel()
			if err != nil {
				return nil, held, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
					Text: "Too many messages being uploaded at once; try again later"}
			}
			held += grow
			nb := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF && int64(len(buf)) < size {
			return nil, held, fmt.Errorf("imap: literal ended after %d of %d bytes: %w", len(buf), size, io.ErrUnexpectedEOF)
		}
		if err != nil && err != io.EOF {
			return nil, held, fmt.Errorf("imap: reading literal: %w", err)
		}
	}
	return buf, held, nil
}
