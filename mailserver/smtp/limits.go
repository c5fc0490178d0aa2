package smtp

import (
	"sync"
	"time"
)

// leakyCounter counts events per key, forgiving limit of them per window
// (a leaky bucket), in bounded memory.
type leakyCounter struct {
	limit   float64
	window  time.Duration
	maxKeys int
	mu      sync.Mutex
	m       map[string]leaky
}

type leaky struct {
	level float64
	at    time.Time
}

func newLeakyCounter(limit float64, window time.Duration, maxKeys int) *leakyCounter {
	return &leakyCounter{limit: limit, window: window, maxKeys: maxKeys, m: map[string]leaky{}}
}

// add counts one event for key and reports whether key is now over its
// limit. A counter with a non-positive limit never is.
func (c *leakyCounter) add(key string, now time.Time) bool {
	if c.limit <= 0 || key == "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.maxKeys {
		// A flood of distinct keys must not exhaust memory: forget the
		// drained ones, then arbitrary ones.
		for k, b := range c.m {
			if c.decayed(b, now) <= 0 || len(c.m) >= c.maxKeys*9/10 {
				delete(c.m, k)
			}
		}
	}
	l := c.decayed(c.m[key], now) + 1
	c.m[key] = leaky{level: l, at: now}
	return l > c.limit
}

func (c *leakyCounter) decayed(b leaky, now time.Time) float64 {
	if b.at.IsZero() {
		return 0
	}
	return max(0, b.level-now.Sub(b.at).Seconds()*c.limit/c.window.Seconds())
}

// dataSlot takes a DATA slot for the client's network, if it has one free.
func (s *Server) dataSlot(net string) bool {
	if s.cfg.MaxConcurrentDataPerNet <= 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dataByNet[net] >= s.cfg.MaxConcurrentDataPerNet {
		return false
	}
	s.dataByNet[net]++
	return true
}

func (s *Server) releaseDataSlot(net string) {
	if s.cfg.MaxConcurrentDataPerNet <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dataByNet[net]--; s.dataByNet[net] <= 0 {
		delete(s.dataByNet, net)
	}
}

// over reports whether key is at or over its limit now.
func (c *leakyCounter) over(key string, now time.Time) bool {
	if c.limit <= 0 || key == "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[key]
	return ok && c.decayed(b, now) >= c.limit
}
