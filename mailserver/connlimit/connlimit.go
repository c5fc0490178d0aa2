// Package connlimit bounds a server's connections in total and per client
// network, before any session (or TLS handshake) exists, so that a flood
// of idle connections from one place cannot use up the process's file
// descriptors and lock everyone else out.
//
// A client network is an IPv4 address, or the /64 prefix of an IPv6
// address (one customer's line is typically given a whole /64, so counting
// single IPv6 addresses would be no limit at all).
package connlimit

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Limiter counts connections; one Limiter may be shared by several
// listeners (IMAP and IMAPS share one budget). It is safe for concurrent use.
type Limiter struct {
	max, perNet int

	mu    sync.Mutex
	total int
	byNet map[netip.Addr]int
}

// New returns a Limiter of at most max connections in total (≤0: none)
// and perNet per client network (≤0: no per-network limit).
func New(max, perNet int) *Limiter {
	return &Limiter{max: max, perNet: perNet, byNet: map[netip.Addr]int{}}
}

// Key is the client network a remote address counts against: the IPv4
// address (also when IPv4-mapped), or the IPv6 /64.
func Key(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// Acquire counts a connection from remote; ok is false (and nothing is
// counted) when a limit is reached. release must be called exactly once
// for an acquired connection.
func (l *Limiter) Acquire(remote net.Addr) (release func(), ok bool) {
	k := Key(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.total >= l.max) || (l.perNet > 0 && l.byNet[k] >= l.perNet) {
		return nil, false
	}
	l.total++
	l.byNet[k]++
	var once sync.Once
	return func() { once.Do(func() { l.release(k) }) }, true
}

func (l *Limiter) release(k netip.Addr) {
	l.mu.Lock()
	l.total--
	if l.byNet[k]--; l.byNet[k] <= 0 {
		delete(l.byNet, k)
	}
	l.mu.Unlock()
}

// Count returns the connections counted now, in total and from remote's
// network.
func (l *Limiter) Count(remote net.Addr) (total, fromNet int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.byNet[Key(remote)]
}

// Max returns the total limit (≤0: none).
func (l *Limiter) Max() int { return l.max }

// Listener accepts only connections its Limiter admits. A refused
// connection is handed to Refuse (which may write a protocol's "too many
// connections" answer) in its own goroutine, with a deadline of
// RefuseTimeout, and then closed; at most maxRefusing are answered at once,
// beyond that a refused connection is closed at once.
type Listener struct {
	net.Listener
	Limiter *Limiter
	Refuse  func(c net.Conn)
	// OnRefuse, when set, is told of each refused connection (for a log
	// line; it is called in the accepting goroutine and must not block).
	OnRefuse func(remote net.Addr, total, fromNet int)

	refusing sync.Mutex
	inFlight int
}

// RefuseTimeout bounds answering one refused connection.
const RefuseTimeout = 5 * time.Second

const maxRefusing = 64

// Accept returns the next admitted connection; closing it releases its
// count.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, ok := l.Limiter.Acquire(c.RemoteAddr())
		if ok {
			return &Conn{Conn: c, release: release}, nil
		}
		if l.OnRefuse != nil {
			total, fromNet := l.Limiter.Count(c.RemoteAddr())
			l.OnRefuse(c.RemoteAddr(), total, fromNet)
		}
		l.refuse(c)
	}
}

func (l *Listener) refuse(c net.Conn) {
	l.refusing.Lock()
	answer := l.Refuse != nil && l.inFlight < maxRefusing
	if answer {
		l.inFlight++
	}
	l.refusing.Unlock()
	if !answer {
		_ = c.Close()
		return
	}
	go func() {
		_ = c.SetDeadline(time.Now().Add(RefuseTimeout))
		l.Refuse(c)
		_ = c.Close()
		l.refusing.Lock()
		l.inFlight--
		l.refusing.Unlock()
	}()
}

// Conn is an admitted connection; Close releases its count.
type Conn struct {
	net.Conn
	release func()
}

// Close closes the connection and releases its count (once).
func (c *Conn) Close() error {
	c.release()
	return c.Conn.Close()
}
