package replica

import (
	"context"
	"sync"
	"time"
)

// readIndexTimeout bounds one shared read-index round: it runs on behalf of
// many callers, so no one caller's context may cut it short.
const readIndexTimeout = 15 * time.Second

// readIndexer coalesces read-index round trips (etcd's batching of
// ReadIndex requests). Every node-local read that must reflect changes
// acknowledged elsewhere — an HTTP request, an IMAP command, a lookup that
// missed — needs the leader's commit index as of some moment after the read
// began; asking the leader once per read costs a heartbeat round to a
// quorum (VerifyLeader) per read, plus a gRPC call from a follower. Here at
// most one round is in flight per node: every caller that arrives while it
// runs joins the next round, which starts when the running one ends and
// answers all of them with one index. Under load a node thus asks the
// leader about once per round-trip time, whatever the request rate.
//
// Why no read can miss an acknowledged write: a caller that arrives at time
// A only ever joins a round that has not started yet, so its round starts
// at T ≥ A. The round asks Proposer.ReadIndex, which (Store.
// LeaderCommitIndex) confirms leadership with a quorum after T and then
// reads the leader's applied index; a write acknowledged before A was
// applied on the leader that acknowledged it before the acknowledgement,
// and a later leader has applied every earlier term's entries before it
// answers (its per-term barrier), so the index returned is at or past that
// write. The caller then waits until its own node has applied that index
// (Cluster.catchUp), so its read sees the write. A round that fails fails
// every caller that joined it; nobody is answered with an older round's
// index. There is no lease: hashicorp/raft has no lease read, and a lease
// argued from its timeouts would be broken by what this cluster does —
// leadership transfers (leaderhealth.go), followers whose heartbeat timeout
// is lowered at run time (watchLeaderConn), a restarted voter that votes at
// once — so an old leader could answer from a stale state while a new one
// has acknowledged writes.
type readIndexer struct {
	fn func(context.Context) (uint64, error)

	mu      sync.Mutex
	running bool
	next    *readIndexRound // the round callers join; it has not started
	rounds  uint64          // rounds started, for tests and metrics
}

type readIndexRound struct {
	done    chan struct{}
	index   uint64
	err     error
	waiters int // callers that joined, for tests
}

// readIndex returns a commit index of the leader taken after the call
// began: once this node has applied it, every change acknowledged anywhere
// before the call is visible here.
func (r *readIndexer) readIndex(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &readIndexRound{done: make(chan struct{})}
	}
	rd := r.next
	rd.waiters++
	if !r.running {
		r.start()
	}
	r.mu.Unlock()
	select {
	case <-rd.done:
		return rd.index, rd.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// start runs the pending round; r.mu is held. The round's callers were all
// waiting before it starts, which is what makes its index good for them.
func (r *readIndexer) start() {
	rd := r.next
	r.next, r.running = nil, true
	r.rounds++
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), readIndexTimeout)
		rd.index, rd.err = r.fn(ctx)
		cancel()
		close(rd.done)
		r.mu.Lock()
		r.running = false
		if r.next != nil {
			r.start()
		}
		r.mu.Unlock()
	}()
}

// stats returns the rounds started so far and how many callers wait for
// the round not yet started.
func (r *readIndexer) stats() (rounds uint64, queued int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next != nil {
		queued = r.next.waiters
	}
	return r.rounds, queued
}
