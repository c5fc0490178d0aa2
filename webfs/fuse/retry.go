package fuse

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"hastore/replica/transport"
	"hastore/webfs"
)

// NewClient is webfs.NewClient over conns that note, for the retry logic
// of a mount, when a node failed a call that it may have received and
// carried out before it went away: the call was then repeated on another
// node (webfs.Client does that), and a change that is not idempotent
// (unlink, rmdir, rename) may see its own first attempt as ENOENT.
func NewClient(conns ...grpc.ClientConnInterface) *webfs.Client {
	wrapped := make([]grpc.ClientConnInterface, len(conns))
	for i, cc := range conns {
		wrapped[i] = trackingConn{cc}
	}
	return webfs.NewClient(wrapped...)
}

type trackerKey struct{}

// tracker collects what the calls of one attempt saw.
type tracker struct{ unavailable atomic.Bool }

func noteFailure(ctx context.Context, err error) {
	if err != nil && status.Code(err) == codes.Unavailable {
		if t, ok := ctx.Value(trackerKey{}).(*tracker); ok {
			t.unavailable.Store(true)
		}
	}
}

type trackingConn struct{ cc grpc.ClientConnInterface }

func (t trackingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	err := t.cc.Invoke(ctx, method, args, reply, opts...)
	noteFailure(ctx, err)
	return err
}

func (t trackingConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := t.cc.NewStream(ctx, desc, method, opts...)
	noteFailure(ctx, err)
	return s, err
}

// retryable reports whether err says that the cluster could not be
// reached or could not decide now, so that the call may succeed later or
// through another node.
func retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, transport.ErrUnavailable), status.Code(err) == codes.Unavailable:
		return true
	case errors.Is(err, syscall.EAGAIN):
		return true
	case errors.Is(err, context.DeadlineExceeded), status.Code(err) == codes.DeadlineExceeded:
		return true // the attempt's own deadline; the caller's is checked apart
	}
	return false
}

// call runs fn until it succeeds, fails for good, or the cluster has been
// unreachable for RetryFor. Each attempt gets timeout (0: none).
// maybeDone reports that an attempt that failed may have been carried out
// by the node that failed it. fn must be safe to repeat: idempotent, or
// with a caller that judges the outcome from maybeDone.
func (f *FS) call(op string, timeout time.Duration, fn func(ctx context.Context) error) (maybeDone bool, err error) {
	return f.callCtx(f.ctx, op, timeout, fn)
}

// callCtx is call within ctx (derived from f.ctx).
func (f *FS) callCtx(ctx context.Context, op string, timeout time.Duration, fn func(ctx context.Context) error) (maybeDone bool, err error) {
	start := time.Now()
	if f.opt.Debug {
		defer func() { f.logf("%s: %v (%v)", op, err, time.Since(start)) }()
	}
	giveUp := start.Add(f.opt.RetryFor)
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		tr := &tracker{}
		actx := context.WithValue(ctx, trackerKey{}, tr)
		cancel := context.CancelFunc(func() {})
		if timeout > 0 {
			actx, cancel = context.WithTimeout(actx, timeout)
		}
		err = fn(actx)
		cancel()
		if tr.unavailable.Load() {
			maybeDone = true
			if k := f.failovers.Add(1); k == 1 || k%100 == 0 {
				f.logf("%s: a node could not be reached or failed during the call; it went on through another (%d such calls so far)", op, k)
			}
		}
		if err == nil || !retryable(err) || ctx.Err() != nil {
			if err != nil && attempt > 1 {
				f.logf("%s: giving up after %d attempts: %v", op, attempt, err)
			}
			return maybeDone, err
		}
		if time.Now().After(giveUp) {
			f.logf("%s: the cluster was unreachable for %v, giving up: %v", op, f.opt.RetryFor, err)
			return maybeDone, err
		}
		maybeDone = true
		if attempt == 1 || attempt%20 == 0 {
			f.logf("%s: %v; retrying", op, err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return maybeDone, err
		}
		wait = min(2*wait, time.Second)
	}
}

// errno converts an error from the tree into the errno a FUSE reply
// carries, logging those that only say "I/O error" to the application.
func (f *FS) errno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	e := webfs.Errno(err)
	if e == syscall.EIO || e == syscall.EAGAIN {
		f.logf("%s: %v", op, err)
		e = syscall.EIO
	}
	return e
}
