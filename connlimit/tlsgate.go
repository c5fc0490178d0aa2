package connlimit

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"
)

// TLSListener is tls.NewListener with the handshakes done before Accept
// returns, at most a few at a time, each in its own goroutine.
//
// Why: a node that dies sends its thousands of IMAPS clients to the
// survivors at once. With tls.NewListener every one of them is a
// goroutine doing a millisecond or so of key agreement and signing, all
// runnable together; Go schedules runnable goroutines in turn without
// priorities, so the node's Raft heartbeats wait behind seconds of
// handshakes and its followers start elections — the storm then costs
// leadership on top of CPU. A handshake waiting for its turn here is
// blocked, not runnable, so the queue of work the scheduler cycles
// through stays short. The storm takes as long as the CPU needs either
// way.
//
// Accepted connections are *tls.Conn with the handshake complete; one
// whose handshake fails or exceeds HandshakeTimeout is closed and never
// returned.
func TLSListener(inner net.Listener, cfg *tls.Config, lim HandshakeLimits) net.Listener {
	if lim.Concurrent <= 0 {
		lim.Concurrent = 2 * runtime.GOMAXPROCS(0)
	}
	if lim.Timeout <= 0 {
		lim.Timeout = 30 * time.Second
	}
	l := &tlsListener{
		inner: inner, cfg: cfg, lim: lim,
		gate:  make(chan struct{}, lim.Concurrent),
		ready: make(chan *tls.Conn),
		done:  make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

// HandshakeLimits configures TLSListener.
type HandshakeLimits struct {
	// Concurrent handshakes at most (default: twice the Go processors).
	Concurrent int
	// Timeout for a handshake, waits for a turn included (default 30 s):
	// a client that does not finish in time is dropped.
	Timeout time.Duration
	Logger  *slog.Logger
}

type tlsListener struct {
	inner net.Listener
	cfg   *tls.Config
	lim   HandshakeLimits
	gate  chan struct{}
	ready chan *tls.Conn

	closeOnce sync.Once
	done      chan struct{}
	mu        sync.Mutex
	err       error // the inner listener's error, once it failed
}

func (l *tlsListener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
				l.Close()
				return
			}
			// Anything else (out of file descriptors, a connection
			// reset before accept) passes: retry with backoff, as
			// net/http and the IMAP server do, rather than stop
			// serving for good.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if l.lim.Logger != nil {
				l.lim.Logger.Warn("accept failed; retrying", "addr", l.inner.Addr(), "in", delay, "err", err)
			}
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		go l.handshake(c)
	}
}

func (l *tlsListener) handshake(c net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), l.lim.Timeout)
	defer cancel()
	gc := &gatedConn{Conn: c, gate: l.gate, ctx: ctx, done: l.done}
	tc := tls.Server(gc, l.cfg)
	err := tc.HandshakeContext(ctx)
	gc.finish()
	if err != nil {
		if l.lim.Logger != nil {
			l.lim.Logger.Debug("TLS handshake failed", "remote", c.RemoteAddr(), "err", err)
		}
		c.Close()
		return
	}
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

// gatedConn holds a slot of the gate only while its handshake computes:
// a Read gives the slot up while it waits for the client and takes one
// again before the handshake goes on. So a client that stalls (sends
// nothing, or a ClientHello and then nothing) holds no slot, and the
// slots bound exactly the handshakes that want the CPU. After the
// handshake (finish) reads and writes go straight through.
type gatedConn struct {
	net.Conn
	gate chan struct{}
	ctx  context.Context
	done <-chan struct{}

	mu     sync.Mutex
	held   bool
	passed bool // handshake over: no more gating
}

func (c *gatedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.passed {
		c.mu.Unlock()
		return c.Conn.Read(p)
	}
	if c.held {
		<-c.gate
		c.held = false
	}
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	if err != nil {
		return n, err
	}
	select {
	case c.gate <- struct{}{}:
	case <-c.ctx.Done():
		return 0, c.ctx.Err()
	case <-c.done:
		return 0, net.ErrClosed
	}
	c.mu.Lock()
	if c.passed { // finish ran meanwhile (the handshake gave up)
		<-c.gate
	} else {
		c.held = true
	}
	c.mu.Unlock()
	return n, nil
}

func (c *gatedConn) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		<-c.gate
		c.held = false
	}
	c.passed = true
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

func (l *tlsListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }
