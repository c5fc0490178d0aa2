// Package metrics holds hastore's Prometheus metrics and the HTTP listener
// that serves them with /healthz and /readyz.
//
// It is a leaf: it imports no other hastore package, so every layer
// (storage excepted, which reports through counters the replica layer reads)
// may count into it. Two kinds of metric live here:
//
//   - counters and histograms that code increments as things happen
//     (proposals, object reads and writes, bad shards), as package variables;
//   - gauges read at scrape time from a [Source] (Raft state, disk, repair
//     queue, connections), so they cannot drift from what the node holds.
//
// The counters are per process. `hastore serve` runs one node per process;
// `hastore dev` runs several and its counters add them up (the gauges carry
// a node label).
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Registry holds every hastore metric and Go's runtime and process metrics.
// A registry of our own rather than the library's global one: nothing a
// dependency registers by accident shows up on the endpoint.
var Registry = prometheus.NewRegistry()

// Latency buckets from 1 ms to ~16 s: a fsynced quorum write on a LAN takes
// milliseconds, a leader change a second or two.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

var (
	// Proposals counts Raft proposals made through this node (forwarded to
	// the leader when it is not one), by result ("ok", "rejected",
	// "failed").
	Proposals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hastore_proposals_total",
		Help: "Metadata proposals made through this node, by result: ok; rejected (the command was judged and refused, e.g. exists, not found); failed (no leader or no quorum within the bound, outcome unknown).",
	}, []string{"result"})
	// ProposalSeconds is the time from proposing to applied, retries
	// across leader changes included.
	ProposalSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hastore_proposal_duration_seconds",
		Help:    "Time from proposing a metadata change to its being applied, retries across leader changes included.",
		Buckets: latencyBuckets,
	})
	// ObjectOps counts object operations by op ("put", "get", "read") and
	// result ("ok", "error").
	ObjectOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hastore_object_ops_total",
		Help: "Object operations served by this node: put (write to the quorum), get (whole object), read (a range), by result.",
	}, []string{"op", "result"})
	// ObjectSeconds is the latency of object operations by op.
	ObjectSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hastore_object_op_duration_seconds",
		Help:    "Latency of object operations by op (put, get, read).",
		Buckets: latencyBuckets,
	}, []string{"op"})
	// DegradedReads counts reads that succeeded although a shard they
	// first asked for failed (down node, missing or corrupt shard) and
	// another had to stand in.
	DegradedReads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hastore_degraded_reads_total",
		Help: "Object reads that succeeded only because other shards stood in for failed ones.",
	})
	// Hedges counts spare shard fetches started because the first ones
	// were slow.
	Hedges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hastore_read_hedges_total",
		Help: "Spare shard fetches started because the fetches in flight were slow.",
	})
	// BadShards counts shards found corrupt (checksum) or missing when
	// read, by kind ("corrupt", "missing").
	BadShards = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hastore_bad_shards_total",
		Help: "Shards found corrupt (checksum mismatch) or missing when read by this node, by kind; each is queued for repair.",
	}, []string{"kind"})
	// Repairs counts objects the repairer worked on, by result
	// ("repaired": shards rebuilt or moved, "error").
	Repairs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hastore_repair_objects_total",
		Help: "Objects whose shards this node rebuilt or moved (repaired), or failed to (error).",
	}, []string{"result"})
)

func init() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		Proposals, ProposalSeconds, ObjectOps, ObjectSeconds, DegradedReads, Hedges, BadShards, Repairs,
	)
	// Present from the start, so a rate() over them is defined before the
	// first event.
	for _, r := range []string{"ok", "rejected", "failed"} {
		Proposals.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		for _, op := range []string{"put", "get", "read"} {
			ObjectOps.WithLabelValues(op, r)
		}
	}
	for _, k := range []string{"corrupt", "missing"} {
		BadShards.WithLabelValues(k)
	}
	for _, r := range []string{"repaired", "error"} {
		Repairs.WithLabelValues(r)
	}
}

// Result is "ok" for a nil error and "error" otherwise.
func Result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// ObserveObject counts one object operation that started at start.
func ObserveObject(op string, start time.Time, err error) {
	ObjectOps.WithLabelValues(op, Result(err)).Inc()
	ObjectSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// ObserveProposal counts one proposal that started at start: rejected
// when the state machine judged and refused it, failed for any other error.
func ObserveProposal(start time.Time, err error, rejected bool) {
	r := "ok"
	switch {
	case rejected:
		r = "rejected"
	case err != nil:
		r = "failed"
	}
	Proposals.WithLabelValues(r).Inc()
	ProposalSeconds.Observe(time.Since(start).Seconds())
}
