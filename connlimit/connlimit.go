// Package connlimit caps the connections a listener hands out: in total
// and per client address, IPv6 clients counted by /64 (one host usually
// owns a whole /64, so counting single addresses would let it open 2^64
// times the limit). A connection over a cap is refused at accept, before
// any server state exists for it, so an idle or slow client costs one
// socket and nothing else.
package connlimit

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits are the caps of one listener. Zero or negative means no cap.
type Limits struct {
	// Total caps the connections open at once.
	Total int
	// PerIP caps one client's connections: one IPv4 address or one IPv6 /64.
	PerIP int
	// Refuse, if set, is given each refused connection instead of closing
	// it at once, to say why in the protocol's words; it must close it.
	// It runs on its own goroutine; beyond maxRefusing of them at once,
	// connections are closed without a word, so a flood of refused
	// connections costs no more than that.
	Refuse func(c net.Conn)
	// Logger gets one Warn line per refusing spell (at most one every
	// 10 s, with the count refused); nil means slog.Default().
	Logger *slog.Logger
	// Name says which port in log lines, e.g. "http".
	Name string
}

// Listener wraps l so that Accept never returns more connections than lim
// allows; the count drops when a returned connection is closed.
func Listener(l net.Listener, lim Limits) *Limited {
	if lim.Logger == nil {
		lim.Logger = slog.Default()
	}
	return &Limited{Listener: l, lim: lim, byKey: map[netip.Prefix]int{}}
}

// Limited is a listener returned by [Listener].
type Limited struct {
	net.Listener
	lim Limits

	mu      sync.Mutex
	total   int
	byKey   map[netip.Prefix]int
	lastLog time.Time
	refused atomic.Int64 // since lastLog
	// refusing counts Refuse calls running.
	refusing atomic.Int64
}

// maxRefusing bounds the Refuse calls running at once.
const maxRefusing = 64

// Accept waits for the next connection within the limits, closing (or
// handing to Refuse) those beyond them.
func (l *Limited) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := ClientKey(c.RemoteAddr())
		if l.take(key) {
			return &conn{Conn: c, release: func() { l.release(key) }}, nil
		}
		l.refuse(c, key)
	}
}

// Open returns the number of connections open now.
func (l *Limited) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func (l *Limited) take(key netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lim.Total > 0 && l.total >= l.lim.Total {
		return false
	}
	if l.lim.PerIP > 0 && key.IsValid() && l.byKey[key] >= l.lim.PerIP {
		return false
	}
	l.total++
	if key.IsValid() {
		l.byKey[key]++
	}
	return true
}

func (l *Limited) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if key.IsValid() {
		if l.byKey[key]--; l.byKey[key] <= 0 {
			delete(l.byKey, key)
		}
	}
}

func (l *Limited) refuse(c net.Conn, key netip.Prefix) {
	n := l.refused.Add(1)
	l.mu.Lock()
	now := time.Now()
	logIt := now.Sub(l.lastLog) >= 10*time.Second
	if logIt {
		l.lastLog = now
		l.refused.Store(0)
	}
	total := l.total
	l.mu.Unlock()
	if logIt {
		l.lim.Logger.Warn("refusing connections over the cap (raise the limit if these are legitimate clients)",
			"port", l.lim.Name, "client", key.String(), "refused_since_last_report", n, "open", total,
			"max_total", l.lim.Total, "max_per_ip", l.lim.PerIP)
	}
	if l.lim.Refuse != nil && l.refusing.Add(1) <= maxRefusing {
		go func() {
			defer l.refusing.Add(-1)
			l.lim.Refuse(c)
		}()
		return
	}
	if l.lim.Refuse != nil {
		l.refusing.Add(-1)
	}
	c.Close()
}

// ClientKey is what a client's connections are counted under: its IPv4
// address as a /32, or its IPv6 address's /64. The zero Prefix (not
// counted per client) if the address is not IP.
func ClientKey(a net.Addr) netip.Prefix {
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

func (c *conn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// NetConn returns the wrapped connection, for code that needs the
// *net.TCPConn (keep-alive settings).
func (c *conn) NetConn() net.Conn { return c.Conn }
