package transport

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"hastore/storage"
)

// Errors of the transport itself, to be tested with errors.Is. An error
// returned by a client call may match one of these and a storage error at
// once (a peer that is shutting down is ErrUnavailable and
// storage.ErrClosed).
var (
	// ErrUnavailable means the peer could not be reached or is going away;
	// another replica may answer.
	ErrUnavailable = errors.New("transport: peer unavailable")
	// ErrUnauthenticated means the peer refused the cluster key, or the peer
	// could not prove it knows the key.
	ErrUnauthenticated = errors.New("transport: cluster key refused")
)

// errDomain is the ErrorInfo domain of hastore's error details.
const errDomain = "hastore"

// kinds maps storage error kinds to gRPC codes. The ErrorInfo reason makes
// the mapping back exact: gRPC itself answers RESOURCE_EXHAUSTED for an
// oversized message, which must not read as a full disk.
var kinds = []struct {
	err    error
	code   codes.Code
	reason string
}{
	{storage.ErrNotFound, codes.NotFound, "NOT_FOUND"},
	{storage.ErrCorrupt, codes.DataLoss, "CORRUPT"},
	{storage.ErrNoSpace, codes.ResourceExhausted, "NO_SPACE"},
	{storage.ErrInvalid, codes.InvalidArgument, "INVALID"},
	{storage.ErrTooFewShards, codes.Unavailable, "TOO_FEW_SHARDS"},
	{storage.ErrClosed, codes.Unavailable, "CLOSED"},
}

// ToStatus converts an error for return from a gRPC handler: storage error
// kinds become their gRPC code with an ErrorInfo detail naming the kind, a
// context error becomes CANCELLED or DEADLINE_EXCEEDED, an error that
// already carries a status keeps it, anything else is INTERNAL. The message
// is err's text, so the caller sees which shard and why.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			st := status.New(k.code, err.Error())
			if d, derr := st.WithDetails(&errdetails.ErrorInfo{Domain: errDomain, Reason: k.reason}); derr == nil {
				st = d
			}
			return st.Err()
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// Error is an error returned by a peer (or by gRPC on the way to it).
// errors.Is matches the storage error kind it stands for, ErrUnavailable,
// ErrUnauthenticated and context.Canceled/DeadlineExceeded as fit; status.Code
// still sees the original gRPC status.
type Error struct {
	Op     string // the call, such as "GetShard"
	Peer   string // the peer's address; empty if not known
	Status *status.Status
	kinds  []error
}

func (e *Error) Error() string {
	s := "transport: " + e.Op
	if e.Peer != "" {
		s += " " + e.Peer
	}
	return fmt.Sprintf("%s: %s: %s", s, e.Status.Code(), e.Status.Message())
}

// Unwrap returns the error kinds e stands for.
func (e *Error) Unwrap() []error { return e.kinds }

// GRPCStatus lets status.FromError and status.Code see through e.
func (e *Error) GRPCStatus() *status.Status { return e.Status }

// FromStatus converts an error returned by a gRPC call into an [*Error]
// that errors.Is matches against the storage error kinds; errors without a
// gRPC status, and nil, are returned as they are.
func FromStatus(err error) error { return remoteErr("", "", err) }

func remoteErr(op, peer string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Op: op, Peer: peer, Status: st}
	reasoned := false
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errDomain {
			for _, k := range kinds {
				if k.reason == info.GetReason() {
					e.kinds = append(e.kinds, k.err)
					reasoned = true
				}
			}
		}
	}
	switch st.Code() {
	case codes.NotFound, codes.DataLoss, codes.InvalidArgument:
		// Without a detail (a peer that is not hastore, or an older one)
		// these codes can still only mean the one storage kind.
		if !reasoned {
			for _, k := range kinds {
				if k.code == st.Code() {
					e.kinds = append(e.kinds, k.err)
					break
				}
			}
		}
	case codes.Unavailable:
		e.kinds = append(e.kinds, ErrUnavailable)
	case codes.Unauthenticated:
		e.kinds = append(e.kinds, ErrUnauthenticated)
	case codes.Canceled:
		e.kinds = append(e.kinds, context.Canceled)
	case codes.DeadlineExceeded:
		e.kinds = append(e.kinds, context.DeadlineExceeded)
	}
	return e
}
