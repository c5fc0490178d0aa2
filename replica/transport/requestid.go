package transport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// RequestIDHeader is the gRPC metadata key carrying a client's request ID:
// 32 hex digits (16 bytes). A client sets one per logical call and keeps it
// when it repeats the call on another node (Failover does, as the call's
// context is the same); the node then proposes the call's commands under
// IDs derived from it, and the cluster applies each of them at most once,
// answering the repeat with the first result.
const RequestIDHeader = "hastore-request-id"

// NewRequestID returns a random request ID.
func NewRequestID() [16]byte {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		panic(fmt.Sprintf("transport: no randomness for a request ID: %v", err))
	}
	return id
}

// WithOutgoingRequestID returns ctx carrying id to the server of every gRPC
// call made with it. Give every logical call its own ID: two calls under
// one ID would get the first one's answers.
func WithOutgoingRequestID(ctx context.Context, id [16]byte) context.Context {
	return metadata.AppendToOutgoingContext(ctx, RequestIDHeader, hex.EncodeToString(id[:]))
}

type requestIDKey struct{}

// callRequest is one logical call's request ID and the number of proposals
// made for it so far.
type callRequest struct {
	id  [16]byte
	seq atomic.Uint64
}

// WithRequestID returns ctx naming the logical call it serves: proposals
// made with it take IDs derived from id, numbered in the order they are
// made (see NextRequestID).
func WithRequestID(ctx context.Context, id [16]byte) context.Context {
	return context.WithValue(ctx, requestIDKey{}, &callRequest{id: id})
}

// NextRequestID returns the call's request ID and the sequence number of
// this proposal within the call (0, 1, ...); ok is false if ctx names no
// call. A handler that proposes in the same order each time it runs gets
// the same numbers on a retry.
func NextRequestID(ctx context.Context) (id [16]byte, seq uint64, ok bool) {
	cr, _ := ctx.Value(requestIDKey{}).(*callRequest)
	if cr == nil {
		return id, 0, false
	}
	return cr.id, cr.seq.Add(1) - 1, true
}

// requestIDFromMetadata reads the header of an incoming call.
func requestIDFromMetadata(ctx context.Context) (id [16]byte, ok bool, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(RequestIDHeader)
	if len(vals) == 0 {
		return id, false, nil
	}
	b, err := hex.DecodeString(vals[0])
	if err != nil || len(b) != len(id) || len(vals) > 1 {
		return id, false, status.Errorf(codes.InvalidArgument, "%s header must be one value of %d hex digits", RequestIDHeader, 2*len(id))
	}
	copy(id[:], b)
	return id, true, nil
}

// RequestIDServerOptions returns the interceptors that turn a call's
// RequestIDHeader into WithRequestID on its context; add them to
// NewGRPCServer's options (they run after the cluster-key check).
func RequestIDServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			id, ok, err := requestIDFromMetadata(ctx)
			if err != nil {
				return nil, err
			}
			if ok {
				ctx = WithRequestID(ctx, id)
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			id, ok, err := requestIDFromMetadata(ss.Context())
			if err != nil {
				return err
			}
			if ok {
				ss = ctxStream{ss, WithRequestID(ss.Context(), id)}
			}
			return h(srv, ss)
		}),
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }
