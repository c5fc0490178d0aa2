package transport

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "hastore/proto/hastorepb"
	"hastore/storage"
)

// split cuts b into buffers of random sizes, as received frames are.
func split(b []byte, rng *rand.Rand) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(20))
		s = append(s, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return s
}

// TestSpanCodecWire: spanCodec writes GetShardChunk's protobuf bytes
// exactly, and reads them back — from messages split anywhere across
// buffers, with fields in any order or unknown fields, as another
// protobuf encoder may send — to the same fields.
func TestSpanCodecWire(t *testing.T) {
	codec := newSpanCodec()
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for _, m := range []*pb.GetShardChunk{
		{},
		{Data: data},
		{Header: data[:100], SpanOffset: 1 << 40, Data: data},
		{Header: data[:77]},
		{SpanOffset: -1},
	} {
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out, err := codec.Marshal(&spanChunkOut{header: m.Header, spanOffset: m.SpanOffset, data: m.Data})
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Materialize(); !bytes.Equal(got, want) {
			t.Errorf("Marshal(%d-byte header, offset %d, %d bytes): % x, want % x", len(m.Header), m.SpanOffset, len(m.Data), got[:min(len(got), 16)], want[:min(len(want), 16)])
		}
		// Unknown fields (a varint, a fixed32, bytes) and reversed
		// order on the wire.
		odd := protowireAppend(nil, 9<<3, 300) // a varint
		odd = append(odd, 10<<3|5, 1, 2, 3, 4)
		odd = append(protowireAppend(odd, 11<<3|2, 2), 'h', 'i')
		if len(m.Data) > 0 {
			odd = append(protowireAppend(odd, tagData, uint64(len(m.Data))), m.Data...)
		}
		if m.SpanOffset != 0 {
			odd = protowireAppend(odd, tagSpanOffset, uint64(m.SpanOffset))
		}
		if len(m.Header) > 0 {
			odd = append(protowireAppend(odd, tagHeader, uint64(len(m.Header))), m.Header...)
		}
		for _, wire := range [][]byte{want, odd} {
			var got pb.GetShardChunk
			in := &spanChunk{fn: func(h []byte, off int64, d [][]byte) error {
				got.Header, got.SpanOffset = h, off
				for _, p := range d {
					got.Data = append(got.Data, p...)
				}
				return nil
			}}
			if err := codec.Unmarshal(split(wire, rng), in); err != nil || in.err != nil {
				t.Fatalf("Unmarshal: %v, %v", err, in.err)
			}
			if !bytes.Equal(got.Header, m.Header) || got.SpanOffset != m.SpanOffset || !bytes.Equal(got.Data, m.Data) {
				t.Errorf("Unmarshal gave %d-byte header, offset %d, %d bytes; want %d, %d, %d", len(got.Header), got.SpanOffset, len(got.Data), len(m.Header), m.SpanOffset, len(m.Data))
			}
		}
	}
	// Other messages pass through to protobuf.
	req := &pb.GetShardRequest{Blob: data[:32], Index: 2, Offset: 5, Length: -1}
	b, err := codec.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var back pb.GetShardRequest
	if err := codec.Unmarshal(b, &back); err != nil || !proto.Equal(&back, req) {
		t.Fatalf("GetShardRequest round trip: %v, %v", err, &back)
	}
}

// TestSpanCodecMalformed: bytes that are not a message are ErrCorrupt, and
// the callback never sees them.
func TestSpanCodecMalformed(t *testing.T) {
	codec := newSpanCodec()
	for name, wire := range map[string][]byte{
		"field longer than the message": {tagData, 10, 1, 2},
		"truncated varint":              {tagSpanOffset, 0x80},
		"overlong varint":               append([]byte{tagSpanOffset}, bytes.Repeat([]byte{0xff}, 11)...),
		"group wire type":               {1<<3 | 3},
		"truncated fixed64":             {5<<3 | 1, 1, 2},
	} {
		called := false
		in := &spanChunk{fn: func([]byte, int64, [][]byte) error { called = true; return nil }}
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, in); err != nil {
			t.Fatalf("%s: Unmarshal returned %v; the error belongs in the message", name, err)
		}
		if !errors.Is(in.err, storage.ErrCorrupt) || called {
			t.Errorf("%s: err %v, callback called %v; want ErrCorrupt, not called", name, in.err, called)
		}
	}
}

func protowireAppend(b []byte, tag byte, x uint64) []byte {
	b = append(b, tag)
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}

// TestSpanPoolTiers: a span buffer is as long as asked, its capacity the
// tier's, and one too large for the tiers is exactly its size.
func TestSpanPoolTiers(t *testing.T) {
	for _, tc := range []struct{ n, cap int }{
		{0, 64 << 10}, {1, 64 << 10}, {64 << 10, 64 << 10}, {64<<10 + 1, 128 << 10},
		{1 << 20, 1 << 20}, {1<<20 + 256<<10, 2 << 20}, {4 << 20, 4 << 20}, {4<<20 + 1, 4<<20 + 1},
	} {
		b := spanBufs.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", tc.n, len(*b), cap(*b), tc.cap)
		}
		spanBufs.Put(b)
	}
}
