package main

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// delayProxy forwards a node's cluster port (the address the node
// advertises to its peers) to where it really listens. While delay is
// set, every chunk is held back that long in both directions: a slow
// link (the kernel has no netem).
type delayProxy struct {
	l      net.Listener
	target atomic.Pointer[string]
	delay  atomic.Int64 // nanoseconds
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

func newDelayProxy(addr, target string) (*delayProxy, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &delayProxy{l: l, conns: map[net.Conn]bool{}}
	p.target.Store(&target)
	go p.serve()
	return p, nil
}

func (p *delayProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *delayProxy) handle(c net.Conn) {
	u, err := net.DialTimeout("tcp", *p.target.Load(), 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[u] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.pipe(u, c); done <- struct{}{} }()
	go func() { p.pipe(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

func (p *delayProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

func (p *delayProxy) close() {
	p.l.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// retarget sends new connections to target and cuts the current ones (their
// clients reconnect, to the new target).
func (p *delayProxy) retarget(target string) {
	p.target.Store(&target)
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}
