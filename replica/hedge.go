package replica

import (
	"sync"
	"time"
)

// fetchLatency tracks how long shard fetches take, per node, so that reads
// hedge against a slow node, not against a slow machine. A hedge (a spare
// fetch, or rebuilding a span from k other shards) is worth its extra work
// when one node lags the others; when every fetch is slow — a loaded node
// serving many large responses at once — a hedge after a fixed delay fires
// for nearly every read and multiplies the load that made the reads slow
// (each rebuild reads k spans to replace one). So the hedge waits at least
// twice the typical fetch time of the fastest node (an exponentially
// weighted mean of its recent successful fetches): unchanged while the
// nodes answer quickly, longer only while all of them are slow, and never
// more than maxHedgeFactor times HedgeAfter, so that a node that has stopped
// answering is still worked around in bounded time.
type fetchLatency struct {
	mu   sync.Mutex
	mean map[string]time.Duration
}

const (
	// latencyWeight is the weight 1/latencyWeight of a new sample.
	latencyWeight  = 8
	maxHedgeFactor = 10
)

func (l *fetchLatency) observe(node string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mean == nil {
		l.mean = map[string]time.Duration{}
	}
	m, ok := l.mean[node]
	if !ok {
		l.mean[node] = d
		return
	}
	l.mean[node] = m + (d-m)/latencyWeight
}

// fastest returns the lowest mean fetch time of any node (0 before any
// fetch).
func (l *fetchLatency) fastest() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best time.Duration
	for _, m := range l.mean {
		if best == 0 || m < best {
			best = m
		}
	}
	return best
}

// hedgeDelay is how long a read waits for a shard before hedging.
func (c *Cluster) hedgeDelay() time.Duration {
	return min(max(c.opt.HedgeAfter, 2*c.latency.fastest()), maxHedgeFactor*c.opt.HedgeAfter)
}
