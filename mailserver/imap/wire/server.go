package wire

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
)

// Options configure a Server.
type Options struct {
	// NewSession starts the Session of a new connection.
	NewSession func(c *Conn) (Session, error)
	// Caps are the capabilities offered after login, besides those this
	// package adds itself (IMAP4rev1, LITERAL+, ID, ENABLE, IDLE...).
	Caps []imap.Cap
	// TLS enables STARTTLS (and is what implicit-TLS listeners use).
	TLS *tls.Config
	// InsecureAuth allows LOGIN and AUTHENTICATE without TLS.
	InsecureAuth bool
	// MaxAppend bounds an APPEND message (NO [TOOBIG] over it).
	MaxAppend int64
	// IdleTimeout drops an authenticated connection silent for that long
	// (default 35 minutes: RFC 3501 asks for at least 30).
	IdleTimeout time.Duration
	Logger      *slog.Logger
}

// CommandTimeout bounds reading the rest of a command once it started
// (its literals and continuation lines); WriteTimeout bounds writing a
// command's responses (or an IDLE update) to a client that does not read.
const (
	CommandTimeout = 30 * time.Second
	WriteTimeout   = 5 * time.Minute
)

// Server serves IMAP connections.
type Server struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	lns    map[net.Listener]struct{}
	conns  map[*Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New returns a server; Serve runs it on listeners.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 35 * time.Minute
	}
	if opts.MaxAppend <= 0 {
		opts.MaxAppend = 50 << 20
	}
	return &Server{opts: opts, log: opts.Logger, lns: map[net.Listener]struct{}{}, conns: map[*Conn]struct{}{}}
}

// Serve accepts connections until ln is closed. implicitTLS says the
// listener's connections are TLS already (no STARTTLS offered).
func (s *Server) Serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			delete(s.lns, ln)
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return net.ErrClosed
			}
			return err
		}
		c := &Conn{srv: s, raw: nc, nc: nc, tls: implicitTLS, state: imap.ConnStateNotAuthenticated}
		c.lr.src = nc
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return net.ErrClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Shutdown stops the listeners and ends every connection with "* BYE
// text": at once if it is waiting for a command or in IDLE, else once its
// command in progress is answered. It waits for them until ctx ends, then
// closes those left (ctx's error).
func (s *Server) Shutdown(ctx context.Context, text string) error {
	s.mu.Lock()
	s.closed = true
	var err error
	for ln := range s.lns {
		if e := ln.Close(); e != nil && err == nil {
			err = e
		}
	}
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.End(text)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return err
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.raw.Close()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// Close stops the listeners and closes every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var err error
	for ln := range s.lns {
		if e := ln.Close(); e != nil && err == nil {
			err = e
		}
	}
	for c := range s.conns {
		c.raw.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}

// Conn is one client connection.
type Conn struct {
	srv  *Server
	raw  net.Conn // as accepted: closing it ends the connection at once
	nc   net.Conn // raw, or the TLS connection over it after STARTTLS
	lr   lineReader
	tls  bool
	sess Session

	wmu sync.Mutex
	e   enc // e.w is nil between commands

	emu     sync.Mutex
	enabled imap.CapSet
	rev2    atomic.Bool

	// End's: endText set means say BYE and close at the next chance;
	// waiting, that the connection's goroutine waits for the client (a
	// command, or DONE), which End then wakes.
	smu     sync.Mutex
	endText string
	waiting bool

	// Owned by the connection's goroutine.
	state imap.ConnState
	line  []byte
}

// NetConn is the connection as accepted (below a STARTTLS layer): its
// address, and Close to end it from any goroutine.
func (c *Conn) NetConn() net.Conn { return c.raw }

// Enabled reports whether the client ENABLEd a capability.
func (c *Conn) Enabled(cap imap.Cap) bool {
	c.emu.Lock()
	defer c.emu.Unlock()
	_, ok := c.enabled[cap]
	return ok
}

// Bye says BYE and closes the connection (from any goroutine).
func (c *Conn) Bye(text string) error {
	e := c.lock()
	e.raw("* BYE ").raw(text).crlf()
	err := e.w.Flush()
	c.releaseW()
	c.wmu.Unlock()
	c.raw.Close()
	return err
}

// End ends the connection with "* BYE text" (from any goroutine): at once
// if it waits for a command or idles, else as soon as the command in
// progress is answered.
func (c *Conn) End(text string) {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.endText == "" {
		c.endText = text
	}
	if c.waiting {
		c.raw.SetReadDeadline(time.Unix(1, 0)) // wakes the read
	}
}

// startWait sets the deadline of a wait for the client; false if the
// connection is to end instead (c.endText).
func (c *Conn) startWait(deadline time.Time) bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.endText != "" {
		return false
	}
	c.waiting = true
	c.nc.SetReadDeadline(deadline)
	return true
}

// endWait ends a wait: the text to end the connection with, if End was
// called, else "" and the deadline of a command is set.
func (c *Conn) endWait() string {
	c.smu.Lock()
	defer c.smu.Unlock()
	c.waiting = false
	if c.endText == "" {
		c.nc.SetReadDeadline(time.Now().Add(CommandTimeout))
	}
	return c.endText
}

// byeTimeout bounds saying BYE when the connection is being ended.
const byeTimeout = 5 * time.Second

// sayEnd says the BYE End asked for and closes the connection.
func (c *Conn) sayEnd() {
	c.smu.Lock()
	text := c.endText
	c.smu.Unlock()
	c.wmu.Lock()
	c.nc.SetWriteDeadline(time.Now().Add(byeTimeout))
	c.wmu.Unlock()
	_ = c.Bye(text)
}

func (c *Conn) lock() *enc {
	c.wmu.Lock()
	if c.e.w == nil {
		bw := writerPool.Get().(*bufio.Writer)
		bw.Reset(c.nc)
		c.e.w = bw
	}
	c.e.utf8 = c.rev2.Load()
	return &c.e
}

func (c *Conn) unlock() { c.wmu.Unlock() }

func (c *Conn) setWriteDeadline() {
	c.wmu.Lock()
	c.nc.SetWriteDeadline(time.Now().Add(WriteTimeout))
	c.wmu.Unlock()
}

func (c *Conn) releaseW() {
	if c.e.w != nil {
		c.e.w.Reset(nil)
		writerPool.Put(c.e.w)
		c.e.w = nil
	}
}

// flush sends what was written and lets the buffer go.
func (c *Conn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.e.w == nil {
		return nil
	}
	err := c.e.w.Flush()
	c.releaseW()
	return err
}

func (c *Conn) writeLine(s string) {
	c.lock().raw(s).crlf()
	c.unlock()
}

func (c *Conn) caps() []string {
	out := []string{"IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"}
	if c.state == imap.ConnStateNotAuthenticated {
		if c.srv.opts.TLS != nil && !c.tls {
			out = append(out, "STARTTLS")
		}
		if c.tls || c.srv.opts.InsecureAuth {
			out = append(out, "AUTH=PLAIN")
		} else {
			out = append(out, "LOGINDISABLED")
		}
		return out
	}
	out = append(out, "UNSELECT")
	for _, cp := range c.srv.opts.Caps {
		out = append(out, string(cp))
	}
	if _, ok := c.sess.(SessionQResync); ok {
		out = append(out, "QRESYNC")
	}
	if _, ok := c.sess.(SessionUnauthenticate); ok {
		out = append(out, "UNAUTHENTICATE")
	}
	if _, ok := c.sess.(SessionAppend); ok {
		out = append(out, "MULTIAPPEND", "CATENATE")
	}
	if _, ok := c.sess.(SessionQuota); ok {
		out = append(out, "QUOTA", "QUOTA=RES-STORAGE")
	}
	if _, ok := c.sess.(SessionSort); ok {
		out = append(out, "SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES")
	}
	return out
}

func (c *Conn) serve() {
	defer func() {
		if v := recover(); v != nil {
			c.srv.log.Error("imap: panic handling command", "panic", v, "stack", string(debug.Stack()))
		}
		c.flush()
		if c.sess != nil {
			c.sess.Close()
		}
		c.nc.Close()
		c.lr.buf, c.line = nil, nil
	}()
	sess, err := c.srv.opts.NewSession(c)
	if err != nil {
		c.writeLine("* BYE [UNAVAILABLE] " + err.Error())
		c.flush()
		return
	}
	c.sess = sess
	c.lock().raw("* OK [CAPABILITY ").raw(strings.Join(c.caps(), " ")).raw("] hastore IMAP ready").crlf()
	c.unlock()
	if c.flush() != nil {
		return
	}
	for c.state != imap.ConnStateLogout {
		deadline := time.Time{} // the login timer bounds this state
		if c.state != imap.ConnStateNotAuthenticated {
			deadline = time.Now().Add(c.srv.opts.IdleTimeout)
		}
		if c.line != nil && cap(c.line) > 4<<10 {
			c.line = nil
		}
		if !c.startWait(deadline) {
			c.sayEnd()
			return
		}
		err := c.lr.wait()
		if c.endWait() != "" {
			// A command that arrived meanwhile is not run: the client
			// sends it again after reconnecting.
			c.sayEnd()
			return
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.srv.log.Debug("imap: connection ended", "err", err)
			}
			return
		}
		c.setWriteDeadline()
		if !c.command() {
			return
		}
		if c.flush() != nil {
			return
		}
		c.lr.release()
	}
}

// command reads and runs one command; false ends the connection.
func (c *Conn) command() bool {
	line, err := c.lr.readLine(c.line[:0], MaxLine)
	c.line = line
	if err == errLineTooLong {
		// The client may be sending anything: answer and close.
		tag := string(line[:min(len(line), 64)])
		tag, _, _ = strings.Cut(tag, " ")
		if !validTag(tag) {
			tag = "*"
		}
		c.writeLine(tag + " BAD [TOOBIG] Command line too long")
		c.writeLine("* BYE Command line too long")
		return false
	}
	if err != nil {
		return false
	}
	if len(line) == 0 {
		c.writeLine("* BAD Empty command line")
		return true
	}
	d := &decoder{lr: &c.lr, line: line, total: len(line), cont: func() error {
		c.writeLine("+ Ready for literal data")
		return c.flush()
	}}
	tag := d.while(func(ch byte) bool { return isAStringChar(ch) && ch != '+' })
	if tag == "" {
		c.writeLine("* BAD Invalid tag")
		if c.state == imap.ConnStateNotAuthenticated {
			return c.byeBad()
		}
		return true
	}
	if d.sp() != nil || d.eol() {
		c.writeLine(tag + " BAD Missing command")
		if c.state == imap.ConnStateNotAuthenticated && !d.eol() {
			return c.byeBad()
		}
		return true
	}
	name, err := d.atom()
	if err != nil {
		c.writeLine(tag + " BAD Missing command")
		return true
	}
	name = strings.ToUpper(name)
	uid := false
	if name == "UID" {
		uid = true
		if err := d.sp(); err != nil {
			return c.answer(d, tag, name, err)
		}
		sub, err := d.atom()
		if err != nil {
			return c.answer(d, tag, name, err)
		}
		name = strings.ToUpper(sub)
		switch name {
		case "FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD":
		default:
			return c.answer(d, tag, "UID", bad("Unknown UID command %s", name))
		}
	}
	err = c.dispatch(d, tag, name, uid)
	return c.answer(d, tag, name, err)
}

func validTag(tag string) bool {
	for i := 0; i < len(tag); i++ {
		if !isAStringChar(tag[i]) || tag[i] == '+' {
			return false
		}
	}
	return tag != ""
}

// byeBad ends a connection that sent something unlike IMAP before
// logging in (another protocol's client, or a scan).
func (c *Conn) byeBad() bool {
	c.writeLine("* BYE Not an IMAP command")
	c.flush()
	return false
}

// errDone: the command wrote its own tagged answer.
var errDone = errors.New("done")

// errEnded: the connection said BYE for End and is closed.
var errEnded = errors.New("connection ended")

// answer writes the tagged answer of a command.
func (c *Conn) answer(d *decoder, tag, name string, err error) bool {
	if err == nil {
		c.writeLine(tag + " OK " + name + " completed")
		return c.state != imap.ConnStateLogout
	}
	if err == errDone {
		return c.state != imap.ConnStateLogout
	}
	if err == errEnded {
		return false
	}
	var pe *protoError
	if errors.As(err, &pe) {
		if pe.fatal {
			c.writeStatus(tag, pe.typ, pe.code, pe.text)
			c.writeLine("* BYE " + pe.text)
			return false
		}
		if !d.skipRest() {
			c.writeLine("* BYE Command too long")
			return false
		}
		c.writeStatus(tag, pe.typ, pe.code, pe.text)
		if pe.typ == imap.StatusResponseTypeBad && pe.text == unknownCommand && c.state == imap.ConnStateNotAuthenticated {
			return c.byeBad()
		}
		return true
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		c.writeStatus(tag, ie.Type, ie.Code, ie.Text)
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return false // the connection failed under the command
	}
	c.srv.log.Warn("handling "+name+" command: "+err.Error(), "err", err)
	c.writeStatus(tag, imap.StatusResponseTypeNo, imap.ResponseCodeServerBug, "Internal server error")
	return true
}

func (c *Conn) writeStatus(tag string, typ imap.StatusResponseType, code imap.ResponseCode, text string) {
	if typ == "" {
		typ = imap.StatusResponseTypeNo
	}
	e := c.lock().raw(tag).sp().raw(string(typ)).sp()
	if code != "" {
		e.raw("[").raw(string(code)).raw("] ")
	}
	if text == "" {
		text = string(typ)
	}
	e.raw(strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, text)).crlf()
	c.unlock()
}

// skipRest drops the rest of a failed command: the rest of its line, and
// any non-synchronizing literals the client sends regardless; false if
// that is too much to read.
func (d *decoder) skipRest() bool {
	for {
		l := d.line
		if len(l) < 3 || l[len(l)-1] != '}' || l[len(l)-2] != '+' {
			return true
		}
		i := strings.LastIndexByte(string(l), '{')
		if i < 0 {
			return true
		}
		n := 0
		for _, ch := range l[i+1 : len(l)-2] {
			if ch < '0' || ch > '9' || n > MaxCommand {
				return true
			}
			n = n*10 + int(ch-'0')
		}
		if n > MaxCommand {
			return false
		}
		if _, err := io.CopyN(io.Discard, d.lr, int64(n)); err != nil {
			return false
		}
		if d.nextLine() != nil {
			return false
		}
	}
}
