// Package connlimit caps the connections a listener hands out: in total
// and per client address, IPv6 clients counted by /64 (one host usually
// owns a whole /64, so counting single addresses would let it open 2^64
// times the limit). A connection over a cap is refused at accept, before
// any server state (or TLS handshake) exists for it, so an idle or slow
// client costs one socket and nothing else.
//
// Each [Listener] counts against a [Limiter]: its own, or one shared with
// other listeners so that they have one budget (IMAP and IMAPS). Refusals
// cost bounded work: at most 64 refusals per Limiter are answered at once,
// each within 5 s, and one log line per 10 s reports them.
package connlimit

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Limiter counts connections against a total cap and a per-client cap.
// One Limiter may be shared by several listeners, which then draw on one
// budget. It is safe for concurrent use.
type Limiter struct {
	total, perIP int

	mu    sync.Mutex
	open  int
	byKey map[netip.Prefix]int
	// Refusal log: at most one line per logEvery, over all listeners.
	lastLog      time.Time
	refusedSince int
	refusing     int // Refuse calls running
}

// NewLimiter returns a Limiter of at most total connections open at once
// and perIP from one client (an IPv4 address or an IPv6 /64); zero or
// negative means no cap.
func NewLimiter(total, perIP int) *Limiter {
	return &Limiter{total: total, perIP: perIP, byKey: map[netip.Prefix]int{}}
}

// Count returns the connections open now: in total, and from remote's
// client key (0 if remote is not an IP address).
func (l *Limiter) Count(remote net.Addr) (total, fromClient int) {
	key := clientKey(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	if key.IsValid() {
		fromClient = l.byKey[key]
	}
	return l.open, fromClient
}

func (l *Limiter) take(key netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total > 0 && l.open >= l.total {
		return false
	}
	if l.perIP > 0 && key.IsValid() && l.byKey[key] >= l.perIP {
		return false
	}
	l.open++
	if key.IsValid() {
		l.byKey[key]++
	}
	return true
}

func (l *Limiter) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if key.IsValid() {
		if l.byKey[key]--; l.byKey[key] <= 0 {
			delete(l.byKey, key)
		}
	}
}

// Limits configure one listener. Zero or negative caps mean no cap.
type Limits struct {
	// Total caps the connections open at once.
	Total int
	// PerIP caps one client's connections: one IPv4 address or one IPv6 /64.
	PerIP int
	// Shared, if set, is the Limiter this listener counts against, with
	// its caps (Total and PerIP are then ignored), so that several
	// listeners share one budget.
	Shared *Limiter
	// Refuse, if set, is given each refused connection to say why in the
	// protocol's words, on its own goroutine, under a deadline of 5 s;
	// the connection is closed when it returns. Beyond 64 refusals
	// running at once (per Limiter), a refused connection is closed
	// without a word, so a flood of them costs no more than that.
	Refuse func(c net.Conn)
	// Logger gets one Warn line per refusing spell (at most one every
	// 10 s per Limiter, with the count refused); nil means slog.Default().
	Logger *slog.Logger
	// Name says which port in log lines, as in its flags: "http" for
	// --http-max-connections.
	Name string
}

// Listener wraps l so that Accept never returns more connections than the
// limits allow; the count drops when a returned connection is closed.
func Listener(l net.Listener, lim Limits) net.Listener {
	if lim.Logger == nil {
		lim.Logger = slog.Default()
	}
	if lim.Shared == nil {
		lim.Shared = NewLimiter(lim.Total, lim.PerIP)
	}
	return &listener{Listener: l, lim: lim, counts: lim.Shared}
}

type listener struct {
	net.Listener
	lim    Limits
	counts *Limiter
}

const (
	// maxRefusing bounds the Refuse calls running at once per Limiter.
	maxRefusing = 64
	logEvery    = 10 * time.Second
)

// refuseTimeout bounds one Refuse call (a variable for tests).
var refuseTimeout = 5 * time.Second

// Accept waits for the next connection within the limits, refusing those
// beyond them.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := clientKey(c.RemoteAddr())
		if l.counts.take(key) {
			return &conn{Conn: c, release: func() { l.counts.release(key) }}, nil
		}
		l.refuse(c, key)
	}
}

func (l *listener) refuse(c net.Conn, key netip.Prefix) {
	lc := l.counts
	lc.mu.Lock()
	lc.refusedSince++
	now := time.Now()
	var n int
	if now.Sub(lc.lastLog) >= logEvery {
		n, lc.refusedSince, lc.lastLog = lc.refusedSince, 0, now
	}
	open, fromClient, total, perIP := lc.open, lc.byKey[key], lc.total, lc.perIP // read locked: SetLimits may change the caps
	answer := l.lim.Refuse != nil && lc.refusing < maxRefusing
	if answer {
		lc.refusing++
	}
	lc.mu.Unlock()
	if n > 0 {
		msg := "refusing connections over the cap (raise the caps if these are real clients)"
		if name := l.lim.Name; name != "" {
			msg = name + ": refusing connections over the cap (if these are real clients, raise --" +
				name + "-max-connections or --" + name + "-max-connections-per-ip)"
		}
		l.lim.Logger.Warn(msg, "port", l.lim.Name, "client", key.String(), "refused_since_last_line", n,
			"open", open, "max_total", total, "from_client", fromClient, "max_per_ip", perIP)
	}
	if !answer {
		_ = c.Close()
		return
	}
	go func() {
		defer func() {
			lc.mu.Lock()
			lc.refusing--
			lc.mu.Unlock()
		}()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refuseTimeout))
		l.lim.Refuse(c)
	}()
}

// clientKey is what a client's connections are counted under: its IPv4
// address (also when IPv4-mapped) as a /32, or its IPv6 address's /64.
// The zero Prefix (not counted per client) if the address is not IP.
func clientKey(a net.Addr) netip.Prefix {
	var ap netip.AddrPort
	switch t := a.(type) {
	case *net.TCPAddr:
		ap = t.AddrPort()
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.Prefix{}
		}
	}
	ip := ap.Addr().Unmap()
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close closes the connection and gives its place back, once however
// often it is called.
func (c *conn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// NetConn returns the wrapped connection, for code that needs the
// *net.TCPConn (keep-alive settings).
func (c *conn) NetConn() net.Conn { return c.Conn }
