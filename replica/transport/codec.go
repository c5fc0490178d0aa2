package transport

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec delegated to
	"google.golang.org/grpc/mem"

	"hastore/storage"
)

// spanCodec is gRPC's protobuf codec with a fast path for the GetShard
// stream, the bulk of the bytes between nodes. gRPC's own codec copies a
// span three times beyond the socket: marshalling a message into a fresh
// (zeroed) buffer on the sender, joining the received frames into one
// buffer and copying the bytes field out of it on the receiver. Here:
//   - a server sends a [spanChunkOut], whose data the message refers to
//     where it lies instead of copying it;
//   - a client receives into a [spanChunk], whose callback sees the data
//     field as pieces of the received frames, to be verified and copied
//     once, into the reader's buffer.
//
// The bytes on the wire are GetShardChunk's exactly (proto/hastore.proto);
// every other message goes to the protobuf codec unchanged.
type spanCodec struct{ proto encoding.CodecV2 }

// protoCodec is gRPC's own protobuf codec, taken before init replaces it.
var protoCodec = encoding.GetCodecV2("proto")

func newSpanCodec() spanCodec { return spanCodec{proto: protoCodec} }

// The node server must pick spanCodec for GetShard, yet every other codec
// by the call's content subtype (the outbound and Sieve admin services
// speak JSON): forcing one codec on the server (grpc.ForceServerCodecV2)
// broke those. So spanCodec is registered as this process's "proto" codec;
// it hands every message but its own two types to gRPC's, unchanged.
func init() { encoding.RegisterCodecV2(newSpanCodec()) }

// Name is the protobuf codec's: the content type on the wire is unchanged.
func (c spanCodec) Name() string { return c.proto.Name() }

// GetShardChunk's field numbers and wire types.
const (
	tagHeader     = 1<<3 | 2
	tagSpanOffset = 2 << 3 // wire type 0, varint
	tagData       = 3<<3 | 2
)

// spanChunkOut is a GetShardChunk to be sent by spanCodec: its data is
// sent from where it is, and must not change until the message is on the
// wire. It is buf if set — which Marshal takes over, so that gRPC releases
// it (to its pool) once written — and data otherwise.
type spanChunkOut struct {
	header     []byte
	spanOffset int64
	data       []byte
	buf        mem.Buffer
}

func (c spanCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*spanChunkOut)
	if !ok {
		return c.proto.Marshal(v)
	}
	// Fields in number order and empty ones left out, as protobuf does.
	prefix := make([]byte, 0, len(m.header)+3*(1+binary.MaxVarintLen64))
	if len(m.header) > 0 {
		prefix = binary.AppendUvarint(append(prefix, tagHeader), uint64(len(m.header)))
		prefix = append(prefix, m.header...)
	}
	if m.spanOffset != 0 {
		prefix = binary.AppendUvarint(append(prefix, tagSpanOffset), uint64(m.spanOffset))
	}
	data := m.buf
	if data == nil {
		data = mem.SliceBuffer(m.data)
	}
	if data.Len() == 0 {
		data.Free()
		return mem.BufferSlice{mem.SliceBuffer(prefix)}, nil
	}
	prefix = binary.AppendUvarint(append(prefix, tagData), uint64(data.Len()))
	return mem.BufferSlice{mem.SliceBuffer(prefix), data}, nil
}

// spanChunk receives one GetShardChunk through spanCodec. The codec calls
// fn with the message's fields — header copied out, data as pieces of the
// received frames, valid only during the call — and keeps fn's error in
// err rather than returning it, which gRPC would turn into a status and
// lose its kind. A message that is not valid protobuf sets err to an
// ErrCorrupt.
type spanChunk struct {
	fn  func(header []byte, spanOffset int64, data [][]byte) error
	err error
}

func (c spanCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*spanChunk)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	m.err = m.parse(data)
	return nil
}

var errWire = fmt.Errorf("%w: malformed GetShard message", storage.ErrCorrupt)

func (m *spanChunk) parse(data mem.BufferSlice) error {
	r := wireReader{bufs: make([][]byte, 0, len(data))}
	for _, b := range data {
		r.bufs = append(r.bufs, b.ReadOnlyData())
	}
	var (
		header     []byte
		spanOffset int64
		pieces     [][]byte
	)
	for !r.done() {
		tag, err := r.varint()
		if err != nil {
			return err
		}
		switch tag & 7 {
		case 0: // varint
			x, err := r.varint()
			if err != nil {
				return err
			}
			if tag == tagSpanOffset {
				spanOffset = int64(x)
			}
		case 2: // length-delimited
			n, err := r.varint()
			if err != nil {
				return err
			}
			if n > uint64(r.left()) {
				return fmt.Errorf("%w: field of %d bytes in a message of %d left", errWire, n, r.left())
			}
			switch tag {
			case tagHeader:
				// Protobuf keeps the last of repeated occurrences.
				header = header[:0]
				r.take(int(n), func(b []byte) { header = append(header, b...) })
			case tagData:
				pieces = pieces[:0]
				r.take(int(n), func(b []byte) { pieces = append(pieces, b) })
			default:
				r.take(int(n), func([]byte) {})
			}
		case 1: // fixed64
			if r.left() < 8 {
				return errWire
			}
			r.take(8, func([]byte) {})
		case 5: // fixed32
			if r.left() < 4 {
				return errWire
			}
			r.take(4, func([]byte) {})
		default:
			return fmt.Errorf("%w: wire type %d", errWire, tag&7)
		}
	}
	return m.fn(header, spanOffset, pieces)
}

// wireReader reads a message held in several buffers.
type wireReader struct {
	bufs [][]byte
}

func (r *wireReader) done() bool {
	for len(r.bufs) > 0 && len(r.bufs[0]) == 0 {
		r.bufs = r.bufs[1:]
	}
	return len(r.bufs) == 0
}

func (r *wireReader) left() int {
	n := 0
	for _, b := range r.bufs {
		n += len(b)
	}
	return n
}

func (r *wireReader) varint() (uint64, error) {
	var x uint64
	for shift := 0; shift < 64; shift += 7 {
		if r.done() {
			return 0, errWire
		}
		b := r.bufs[0][0]
		r.bufs[0] = r.bufs[0][1:]
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return x, nil
		}
	}
	return 0, errors.Join(errWire, errors.New("varint overflow"))
}

// take hands the next n bytes (at most left()) to fn in the pieces they
// lie in.
func (r *wireReader) take(n int, fn func([]byte)) {
	for n > 0 && !r.done() {
		b := r.bufs[0]
		k := min(n, len(b))
		fn(b[:k])
		r.bufs[0] = b[k:]
		n -= k
	}
}
