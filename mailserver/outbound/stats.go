package outbound

import (
	"fmt"
	"time"

	"hastore/metrics"
)

// Stats sums up the queue as one node's replica holds it: the same on
// every node that has caught up (the queue is cluster-wide).
type Stats struct {
	// Entries are the messages queued (any recipient still pending).
	Entries int `json:"entries"`
	// Deferred are the entries tried at least once and still waiting:
	// a remote answered 4xx, or no server was reachable.
	Deferred int `json:"deferred"`
	// Oldest is when the oldest entry was queued (unix ns; 0: empty).
	Oldest int64 `json:"oldest,omitempty"`
}

// OldestAge is how long the oldest entry has waited at now (0: empty).
func (s Stats) OldestAge(now time.Time) time.Duration {
	if s.Oldest == 0 {
		return 0
	}
	return max(now.Sub(time.Unix(0, s.Oldest)), 0)
}

// QueueStats reads the queue's size and age from kv.
func QueueStats(kv KV) (Stats, error) {
	es, _, err := records{kv: kv}.list()
	if err != nil {
		return Stats{}, fmt.Errorf("outbound: reading the queue: %w", err)
	}
	var s Stats
	for _, e := range es {
		s.Entries++
		if e.Attempts > 0 {
			s.Deferred++
		}
		if s.Oldest == 0 || e.Created < s.Oldest {
			s.Oldest = e.Created
		}
	}
	return s, nil
}

// snapshot is what the metrics endpoint reports of the queue; a read
// error reports nothing rather than an empty queue.
func (q *Queue) snapshot() (metrics.QueueSnapshot, bool) {
	s, err := QueueStats(q.rec.kv)
	if err != nil {
		q.log.Warn("queue metrics: reading the queue failed", "err", err)
		return metrics.QueueSnapshot{}, false
	}
	return metrics.QueueSnapshot{Node: q.cfg.Node, Entries: s.Entries, Deferred: s.Deferred,
		OldestSeconds: s.OldestAge(q.cfg.Now()).Seconds()}, true
}
