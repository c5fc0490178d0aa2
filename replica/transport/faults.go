package transport

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

// Faults is a fault-injection hook for tests: a set of peer addresses this
// node must not reach. Every connection the package dials (gRPC through a
// [Pool] or [DialOptions], Raft through [StreamLayer.Dial]) consults it, so
// a test running several nodes in one process can partition them without
// touching the network.
//
// Blocking an address makes new dials to it fail at once and closes every
// open connection this node dialed to it, so calls in flight fail too.
// Addresses are compared exactly as dialed: block "127.0.0.1:7001", not
// "localhost:7001", if that is how the peer is addressed.
//
// Faults act on outgoing connections only. To cut A from B completely,
// block B in A's Faults and A in B's (or give both nodes the same Faults
// when only one direction matters). A nil *Faults blocks nothing; the zero
// value is ready to use; all methods are safe for concurrent use.
type Faults struct {
	mu      sync.Mutex
	blocked map[string]bool
	delay   map[string]time.Duration
	conns   map[string]map[*faultConn]struct{}
	// healed are called after Unblock and Heal so that pools retry at once
	// instead of waiting out gRPC's reconnect back-off.
	healed map[int]func()
	nextID int
}

// Block makes the addresses unreachable and closes open connections to them.
func (f *Faults) Block(addrs ...string) {
	var victims []*faultConn
	f.mu.Lock()
	if f.blocked == nil {
		f.blocked = make(map[string]bool)
	}
	for _, a := range addrs {
		f.blocked[a] = true
		for c := range f.conns[a] {
			victims = append(victims, c)
		}
	}
	f.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
}

// Unblock makes the addresses reachable again.
func (f *Faults) Unblock(addrs ...string) {
	f.mu.Lock()
	for _, a := range addrs {
		delete(f.blocked, a)
	}
	f.mu.Unlock()
	f.notify()
}

// Delay makes every write on this node's connections to addr (open ones
// too) wait d first: a slow link or an overloaded peer, as opposed to a
// dead one. Zero removes the delay.
func (f *Faults) Delay(addr string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.delay == nil {
		f.delay = make(map[string]time.Duration)
	}
	if d <= 0 {
		delete(f.delay, addr)
		return
	}
	f.delay[addr] = d
}

func (f *Faults) delayOf(addr string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delay[addr]
}

// Heal unblocks every address and removes every delay.
func (f *Faults) Heal() {
	f.mu.Lock()
	clear(f.blocked)
	clear(f.delay)
	f.mu.Unlock()
	f.notify()
}

// Blocked reports whether addr is blocked.
func (f *Faults) Blocked(addr string) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocked[addr]
}

// BlockedAddrs returns the blocked addresses, sorted.
func (f *Faults) BlockedAddrs() []string {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for a := range f.blocked {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

func (f *Faults) notify() {
	f.mu.Lock()
	fns := make([]func(), 0, len(f.healed))
	for _, fn := range f.healed {
		fns = append(fns, fn)
	}
	f.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// onHeal registers fn to run after Unblock and Heal and returns a function
// that unregisters it.
func (f *Faults) onHeal(fn func()) (cancel func()) {
	if f == nil {
		return func() {}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.healed == nil {
		f.healed = make(map[int]func())
	}
	id := f.nextID
	f.nextID++
	f.healed[id] = fn
	return func() {
		f.mu.Lock()
		delete(f.healed, id)
		f.mu.Unlock()
	}
}

// dial connects to addr unless it is blocked, and tracks the connection so
// that a later Block can cut it.
func (f *Faults) dial(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	if f.Blocked(addr) {
		return nil, fmt.Errorf("transport: dial %s: blocked by fault injection", addr)
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil || f == nil {
		return c, err
	}
	fc := &faultConn{Conn: c, f: f, addr: addr}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Blocked while dialling: the connection must not survive the Block.
	if f.blocked[addr] {
		c.Close()
		return nil, fmt.Errorf("transport: dial %s: blocked by fault injection", addr)
	}
	if f.conns == nil {
		f.conns = make(map[string]map[*faultConn]struct{})
	}
	if f.conns[addr] == nil {
		f.conns[addr] = make(map[*faultConn]struct{})
	}
	f.conns[addr][fc] = struct{}{}
	return fc, nil
}

// faultConn is a dialed connection registered with its Faults.
type faultConn struct {
	net.Conn
	f    *Faults
	addr string
	once sync.Once
}

func (c *faultConn) Write(p []byte) (int, error) {
	if d := c.f.delayOf(c.addr); d > 0 {
		time.Sleep(d)
	}
	return c.Conn.Write(p)
}

func (c *faultConn) Close() error {
	c.once.Do(func() {
		c.f.mu.Lock()
		delete(c.f.conns[c.addr], c)
		if len(c.f.conns[c.addr]) == 0 {
			delete(c.f.conns, c.addr)
		}
		c.f.mu.Unlock()
	})
	return c.Conn.Close()
}
