package mailbox

import (
	"context"
	"sync"
	"time"
)

// catchUpper coalesces read-your-writes barriers. A barrier only helps a
// caller if it starts after the caller arrived, so a caller that finds one
// running waits for the next, which starts when the running one ends and
// serves everyone who arrived meanwhile. However many lookups miss at once
// (a relay probe, a dictionary attack on addresses), a node asks the leader
// at most twice in a row.
type catchUpper struct {
	fn      func(context.Context) error
	timeout time.Duration

	mu      sync.Mutex
	running bool
	next    *flight
}

type flight struct {
	done chan struct{}
	err  error
}

func (c *catchUpper) do(ctx context.Context) error {
	c.mu.Lock()
	if c.next == nil {
		c.next = &flight{done: make(chan struct{})}
	}
	f := c.next
	if !c.running {
		c.start()
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// start runs the queued flight; c.mu is held.
func (c *catchUpper) start() {
	f := c.next
	c.next, c.running = nil, true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		f.err = c.fn(ctx)
		cancel()
		close(f.done)
		c.mu.Lock()
		c.running = false
		if c.next != nil {
			c.start()
		}
		c.mu.Unlock()
	}()
}
