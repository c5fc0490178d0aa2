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
	"sync/atomic"
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
	// AllowLocalSenders lets MX clients use an envelope sender (MAIL
	// FROM) in one of the cluster's local domains without AUTH. Off, such
	// a sender is refused (550 5.7.1): mail from local users goes through
	// submission, so a local sender arriving on port 25 is forged, unless
	// a forwarder or mailing list keeps the original sender (turn it on
	// for those sites; SPF checks judge that case better).
	AllowLocalSenders bool
	MaxMessageBytes   int64 // default 50 MiB
	MaxRecipients     int   // per message; default 100 (LMTP: 1000)
	MaxLineLength     int   // default 2000 (RFC 5321's 1000, doubled)
	MaxConnections    int   // default 1000
	// MaxConnectionsPerIP bounds one client address's (IPv6: /64's)
	// connections; default 10, negative: no limit (LMTP defaults to none:
	// its client is the MTA).
	MaxConnectionsPerIP int
	ReadTimeout         time.Duration // default 5 minutes
	WriteTimeout        time.Duration // default 1 minute
	// CommitTimeout bounds storing one message (default 2 minutes).
	CommitTimeout time.Duration
	// MaxConcurrentData bounds the messages being received and stored at
	// once; others wait (default 512: memory is bounded by Memory, disk
	// by Spool; this bounds open spool files).
	MaxConcurrentData int
	// MaxConcurrentDataPerNet bounds them per client network (IPv4 /24,
	// IPv6 /64), so that one network cannot take every slot; over it DATA
	// is answered 451 at once. Default 8; negative: no limit (LMTP
	// defaults to none).
	MaxConcurrentDataPerNet int
	// Memory is the budget of message bytes held in memory, shared by the
	// listeners given the same one; nil: one of DataMemory bytes for this
	// listener alone.
	Memory     *Budget
	DataMemory int64 // default 256 MiB
	// Spool is the budget of bytes in spool files, shared like Memory;
	// nil: one of MaxSpool bytes (default 4 GiB). A message that does not
	// fit is answered 452 4.3.1.
	Spool    *Budget
	MaxSpool int64
	// MessageInMemory is how much of a message being received stays in
	// memory before it goes to a spool file in SpoolDir (default 1 MiB;
	// SpoolDir default: the system's temporary directory).
	MessageInMemory int64
	SpoolDir        string
	// A DATA transfer must bring at least MinDataBytes (default 4 KiB)
	// every DataStallTimeout (default 30 s) and end within MaxDataTime
	// (default 10 minutes); otherwise the connection is closed with 421.
	MinDataBytes     int64
	DataStallTimeout time.Duration
	MaxDataTime      time.Duration
	// MaxUnknownRecipients is how many RCPTs naming no local user one
	// connection may send before it is closed with 421 (default 20), and
	// MaxUnknownRecipientsPerIP how many one address may send in 10
	// minutes across connections (default 100). Negative: no limit (LMTP
	// defaults to none).
	MaxUnknownRecipients      int
	MaxUnknownRecipientsPerIP int
	// IdleEvictAfter: when MaxConnections is reached, a connection that
	// has not started a mail transaction for this long (default 10 s) may
	// be closed to make room (see limitListener).
	IdleEvictAfter time.Duration
	// RetryWindow is how long a delivery is remembered so that a client's
	// retry of the same message to the same mailbox is stored once
	// (default 10 minutes; negative: off). Every node must run a release
	// that knows mailstate.MailDeliverOnce before it is on.
	RetryWindow time.Duration
	// Checks, on an MX listener, verifies SPF, DKIM and DMARC of each
	// message and records them in an Authentication-Results: header (nil:
	// off; the other modes never check: submission is authenticated, and
	// an MTA in front of LMTP has checked).
	Checks *SenderChecks
	// Outbound, on a submission listener, queues mail for remote
	// recipients (nil: refused with 550 5.7.1).
	Outbound Outbound
	// Milter puts content filters (rspamd …) before the 250 of MX and
	// LMTP deliveries, and of submission if it says so (nil: none).
	Milter *MilterConfig
	Logger *slog.Logger
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
		c.MaxConnectionsPerIP = 10
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
		c.MaxConcurrentData = 512
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
			if c.Mode == LMTP {
				*v = -1
			}
		}
	}
	def(&c.MaxConcurrentDataPerNet, 8)
	def(&c.MaxUnknownRecipients, 20)
	def(&c.MaxUnknownRecipientsPerIP, 100)
	if c.DataMemory == 0 {
		c.DataMemory = 256 << 20
	}
	if c.Memory == nil {
		c.Memory = NewBudget(c.DataMemory)
	}
	if c.MaxSpool == 0 {
		c.MaxSpool = 4 << 30
	}
	if c.Spool == nil {
		c.Spool = NewBudget(c.MaxSpool)
	}
	if c.MessageInMemory == 0 {
		c.MessageInMemory = 1 << 20
	}
	if c.MinDataBytes == 0 {
		c.MinDataBytes = 4 << 10
	}
	if c.DataStallTimeout == 0 {
		c.DataStallTimeout = 30 * time.Second
	}
	if c.MaxDataTime == 0 {
		c.MaxDataTime = 10 * time.Minute
	}
	if c.IdleEvictAfter == 0 {
		c.IdleEvictAfter = 10 * time.Second
	}
	if c.RetryWindow == 0 {
		c.RetryWindow = 10 * time.Minute
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

	mu        sync.Mutex
	dataByNet map[string]int // DATA in progress per client network
	unknown   *leakyCounter  // unknown recipients per client address
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
	s := &Server{cfg: cfg, store: store, log: cfg.Logger.With("component", "smtp", "mode", cfg.Mode.String()), done: make(chan struct{}), data: make(chan struct{}, cfg.MaxConcurrentData),
		dataByNet: map[string]int{}, unknown: newLeakyCounter(float64(cfg.MaxUnknownRecipientsPerIP), 10*time.Minute, 100000)}
	s.l = &limitListener{Listener: l, max: cfg.MaxConnections, perIP: cfg.MaxConnectionsPerIP, byIP: map[string]int{}, conns: map[*countedConn]struct{}{},
		host: cfg.Hostname, minIdle: cfg.IdleEvictAfter, log: s.log}
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
// limit with a 421 greeting, before any session exists. When the total is
// reached, it first makes room by closing the connection that has gone
// longest without starting a mail transaction (connected, or last MAIL
// FROM, at least minIdle ago) and is not in DATA now: a flood of idle
// connections from many addresses then costs its oldest members their
// place, not legitimate senders theirs.
type limitListener struct {
	net.Listener
	max, perIP int
	minIdle    time.Duration
	host       string
	log        interface{ Info(string, ...any) }
	mu         sync.Mutex
	total      int
	byIP       map[string]int
	conns      map[*countedConn]struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		key := ipKey(ip)
		var evict *countedConn
		l.mu.Lock()
		overIP := l.perIP > 0 && l.byIP[key] >= l.perIP
		if !overIP && l.total >= l.max {
			evict = l.idlestLocked(time.Now())
		}
		over := overIP || (l.total >= l.max && evict == nil)
		var cc *countedConn
		if !over {
			l.total++
			l.byIP[key]++
			cc = &countedConn{Conn: c}
			cc.since.Store(time.Now().UnixNano())
			cc.release = func() { l.release(cc) }
			l.conns[cc] = struct{}{}
		}
		l.mu.Unlock()
		if evict != nil {
			if l.log != nil {
				l.log.Info("connection limit reached: closing the longest idle connection", "remote", evict.RemoteAddr().String(), "for", ip)
			}
			go evict.shut("4.7.0 " + l.host + " Too many connections; closing idle connection")
		}
		if over {
			go shut(c, "4.7.0 "+l.host+" Too many connections, try again later")
			continue
		}
		return cc, nil
	}
}

// idlestLocked returns the connection outside a mail transaction whose
// last transaction (or connection) started longest ago, if that was at
// least minIdle ago, and stops counting it.
func (l *limitListener) idlestLocked(now time.Time) *countedConn {
	var best *countedConn
	bestSince := now.Add(-l.minIdle).UnixNano()
	for c := range l.conns {
		if c.busy.Load() {
			continue
		}
		if s := c.since.Load(); s <= bestSince {
			best, bestSince = c, s
		}
	}
	if best != nil {
		// Counted out now, so that the new connection takes its place
		// even before its goroutine closes it.
		best.once.Do(func() { l.releaseLocked(best) })
	}
	return best
}

func (l *limitListener) release(c *countedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(c)
}

func (l *limitListener) releaseLocked(c *countedConn) {
	if _, ok := l.conns[c]; !ok {
		return
	}
	delete(l.conns, c)
	key := ipKey(remoteIP(c.RemoteAddr()))
	l.total--
	if l.byIP[key]--; l.byIP[key] <= 0 {
		delete(l.byIP, key)
	}
}

// shut answers 421 and closes c.
func shut(c net.Conn, text string) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = fmt.Fprintf(c, "421 %s\r\n", text)
	_ = c.Close()
}

type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
	since   atomic.Int64 // unix nanoseconds of the connection or its last MAIL FROM
	busy    atomic.Bool  // in DATA (receiving or storing a message)
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// shut closes the connection with a 421 (evicted under load). Written
// below TLS, the reply reaches plaintext clients only; TLS ones see the
// connection close.
func (c *countedConn) shut(text string) {
	shut(c.Conn, text)
}

// startTxn notes a MAIL FROM: the connection counts as idle from then.
func (c *countedConn) startTxn() { c.since.Store(time.Now().UnixNano()) }

// inData marks a message being received or stored, during which the
// connection is not evicted (the rate rules of DATA apply instead).
func (c *countedConn) inData(on bool) { c.busy.Store(on) }

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

// ipKey is what per-address limits count: the address for IPv4, its /64
// for IPv6 (one customer usually has a whole /64).
func ipKey(ip string) string {
	return netKey(net.ParseIP(ip), 32, 64)
}

// netKey masks ip to v4bits (IPv4) or v6bits (IPv6).
func netKey(ip net.IP, v4bits, v6bits int) string {
	if ip == nil {
		return ""
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.Mask(net.CIDRMask(v4bits, 32)).String() + fmt.Sprintf("/%d", v4bits)
	}
	return ip.Mask(net.CIDRMask(v6bits, 128)).String() + fmt.Sprintf("/%d", v6bits)
}
