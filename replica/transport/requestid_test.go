package transport

import (
	"context"
	"encoding/hex"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestRequestIDContext(t *testing.T) {
	ctx := context.Background()
	if _, _, ok := NextRequestID(ctx); ok {
		t.Fatal("a bare context names a call")
	}
	id := NewRequestID()
	ctx = WithRequestID(ctx, id)
	for want := range uint64(3) {
		got, seq, ok := NextRequestID(ctx)
		if !ok || got != id || seq != want {
			t.Fatalf("proposal %d: id %x seq %d ok %v", want, got, seq, ok)
		}
	}
}

func TestRequestIDFromMetadata(t *testing.T) {
	id := NewRequestID()
	out := WithOutgoingRequestID(context.Background(), id)
	md, _ := metadata.FromOutgoingContext(out)
	for _, tc := range []struct {
		name   string
		md     metadata.MD
		wantOK bool
		code   codes.Code
	}{
		{"none", metadata.MD{}, false, codes.OK},
		{"set by the client helper", md, true, codes.OK},
		{"not hex", metadata.Pairs(RequestIDHeader, "zz"), false, codes.InvalidArgument},
		{"short", metadata.Pairs(RequestIDHeader, hex.EncodeToString(id[:8])), false, codes.InvalidArgument},
		{"twice", metadata.Pairs(RequestIDHeader, hex.EncodeToString(id[:]), RequestIDHeader, hex.EncodeToString(id[:])), false, codes.InvalidArgument},
	} {
		got, ok, err := requestIDFromMetadata(metadata.NewIncomingContext(context.Background(), tc.md))
		if ok != tc.wantOK || status.Code(err) != tc.code || (ok && got != id) {
			t.Errorf("%s: id %x ok %v err %v", tc.name, got, ok, err)
		}
	}
}
