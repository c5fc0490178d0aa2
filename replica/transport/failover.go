package transport

import (
	"context"
	"errors"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Failover spreads a client's calls over the nodes of a cluster the way a
// client behind DNS round robin would: a call goes to the node that
// answered last, and on to the next one when that node is unreachable
// (codes.Unavailable). Any other error is the answer; a call that timed out
// makes the next call start at the next node. Only calls that are safe
// to repeat may be made through it: reads, and calls that change state
// when their context carries a request ID (WithOutgoingRequestID), which
// every try reuses since fn closes over the same context — the cluster
// then applies the call's change once and answers a repeat with the first
// result. Safe for concurrent use.
type Failover[C any] struct {
	clients []C
	last    atomic.Uint32
}

// NewFailover returns a Failover over one client per node.
func NewFailover[C any](clients []C) *Failover[C] {
	return &Failover[C]{clients: clients}
}

// ErrNoNodes is returned by a Failover with no nodes.
var ErrNoNodes = errors.New("transport: no cluster nodes given")

// Call runs fn against one node after another until one answers.
func (f *Failover[C]) Call(ctx context.Context, fn func(C) error) error {
	if len(f.clients) == 0 {
		return status.Error(codes.Unavailable, ErrNoNodes.Error())
	}
	first := int(f.last.Load())
	var err error
	for i := range f.clients {
		idx := (first + i) % len(f.clients)
		if err = fn(f.clients[idx]); err == nil {
			f.last.Store(uint32(idx))
			return nil
		}
		if code := status.Code(err); code == codes.Unavailable || code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			// The next call starts at the next node: this one is down, or
			// hangs (cut off by a firewall, say) and would make every
			// caller wait out its deadline again.
			f.last.CompareAndSwap(uint32(idx), uint32((idx+1)%len(f.clients)))
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
	}
	return err
}
