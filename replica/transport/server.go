package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	pb "hastore/proto/hastorepb"
	"hastore/storage"
)

// Store is the node-local shard store that [NodeServer] serves;
// *storage.DB implements it. Errors are storage's kinds (ErrNotFound,
// ErrCorrupt, ErrNoSpace, ErrInvalid), which travel to the client intact.
type Store interface {
	// PutRecord verifies a whole shard record and stores it durably.
	PutRecord(ctx context.Context, rec []byte) (storage.Header, error)
	// ReadSpan returns the record's header bytes and the verified,
	// block-aligned payload span covering [off, off+n), with the span's
	// payload offset.
	ReadSpan(ctx context.Context, k storage.ShardKey, off, n int64) (hdr, span []byte, spanOff int64, err error)
	// Stat returns a shard's header.
	Stat(ctx context.Context, k storage.ShardKey) (storage.Header, error)
	// Delete removes a shard; deleting one that is not stored succeeds.
	Delete(ctx context.Context, k storage.ShardKey) error
	// DeleteWrittenBefore removes a shard only if its header's Written
	// time is before t, atomically with that check.
	DeleteWrittenBefore(ctx context.Context, k storage.ShardKey, t time.Time) error
	// Walk calls fn with the header of every stored shard, stopping at
	// fn's first error.
	Walk(ctx context.Context, fn func(storage.Header) error) error
	// Usage reports the store's disk usage.
	Usage() (storage.Usage, error)
}

// maxRecordLen is the longest record PutShard accepts: the largest payload
// behind the largest header (4 KiB blocks, the smallest allowed).
var maxRecordLen = storage.MaxPayload + int64(storage.HeaderLen(&storage.Header{PayloadLen: storage.MaxPayload, BlockSize: 4 << 10}))

// minHeaderLen is the length of the smallest record header (no blocks).
var minHeaderLen = storage.HeaderLen(&storage.Header{BlockSize: storage.DefaultBlockSize})

// NodeServer serves the Node service (shard calls between nodes) over a
// Store. Register it with [NodeServer.Register] on a server from
// [NewGRPCServer].
type NodeServer struct {
	pb.UnimplementedNodeServer
	id    string
	store Store
}

// NewNodeServer returns a server for the node with Raft ID id.
func NewNodeServer(id string, store Store) *NodeServer {
	return &NodeServer{id: id, store: store}
}

// Register adds the Node service to s.
func (s *NodeServer) Register(r grpc.ServiceRegistrar) { pb.RegisterNodeServer(r, s) }

// PutShard assembles the streamed record and stores it. The record's size
// is learnt from its header as soon as that arrives, so a peer cannot make
// the node buffer more than the record it announced.
func (s *NodeServer) PutShard(stream grpc.ClientStreamingServer[pb.PutShardChunk, pb.PutShardReply]) error {
	var (
		rec     []byte
		want    int64 = -1 // record length, once the header is parsed
		triedAt int        // len(rec) at the last failed header parse
	)
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		rec = append(rec, chunk.GetData()...)
		if want >= 0 && int64(len(rec)) > want {
			return ToStatus(fmt.Errorf("PutShard: %w: record longer than the %d bytes its header says", storage.ErrCorrupt, want))
		}
		if int64(len(rec)) > maxRecordLen {
			return ToStatus(fmt.Errorf("PutShard: %w: record longer than any record may be (%d bytes)", storage.ErrInvalid, maxRecordLen))
		}
		// Try the header again only once the buffer has doubled, so a
		// stream of tiny chunks costs O(log n) parses, not O(n).
		if want < 0 && len(rec) >= 2*triedAt && len(rec) >= minHeaderLen {
			if h, hl, err := storage.ParseHeader(rec); err == nil {
				want = int64(hl) + h.PayloadLen
				if int64(cap(rec)) < want {
					rec = append(make([]byte, 0, want), rec...)
				}
			} else {
				triedAt = len(rec)
			}
		}
	}
	h, err := s.store.PutRecord(stream.Context(), rec)
	if err != nil {
		return ToStatus(fmt.Errorf("PutShard: %w", err))
	}
	return stream.SendAndClose(&pb.PutShardReply{Shard: shardInfo(h)})
}

// GetShard streams the header and the verified span covering the range.
func (s *NodeServer) GetShard(req *pb.GetShardRequest, stream grpc.ServerStreamingServer[pb.GetShardChunk]) error {
	ctx := stream.Context()
	k, err := shardKey(req.GetBlob(), req.GetIndex())
	if err != nil {
		return ToStatus(fmt.Errorf("GetShard: %w", err))
	}
	off, n := req.GetOffset(), req.GetLength()
	if n < 0 {
		if n != -1 {
			return ToStatus(fmt.Errorf("GetShard %v: %w: length %d", k, storage.ErrInvalid, n))
		}
		h, err := s.store.Stat(ctx, k)
		if err != nil {
			return ToStatus(fmt.Errorf("GetShard: %w", err))
		}
		n = h.PayloadLen - off
		if off < 0 || n < 0 {
			return ToStatus(fmt.Errorf("GetShard %v: %w: offset %d outside %d-byte payload", k, storage.ErrInvalid, off, h.PayloadLen))
		}
	}
	hdr, rest, err := s.readSpan(ctx, k, off, n)
	if err != nil {
		return ToStatus(fmt.Errorf("GetShard: %w", err))
	}
	defer func() {
		if rest != nil {
			rest.Free()
		}
	}()
	// The messages refer to the span rather than copy it (spanCodec, which
	// NewGRPCServer installs), and gRPC frees each once it is sent.
	m := &spanChunkOut{header: hdr.head, spanOffset: hdr.spanOff}
	for {
		if rest.Len() > chunkSize {
			m.buf, rest = mem.SplitUnsafe(rest, chunkSize)
		} else {
			m.buf, rest = rest, nil
		}
		if err := stream.SendMsg(m); err != nil {
			return err
		}
		if rest == nil {
			return nil
		}
		m = &spanChunkOut{}
	}
}

type spanHead struct {
	head    []byte
	spanOff int64
}

// spanIntoStore is a Store that reads a span into a buffer the server
// provides, from spanBufs rather than a new allocation per call;
// *storage.DB is one.
type spanIntoStore interface {
	ReadSpanInto(ctx context.Context, k storage.ShardKey, off, n int64, alloc func(size int) []byte) (hdr, span []byte, spanOff int64, err error)
}

// readSpan reads the verified span covering [off, off+n) into a buffer
// that returns to spanBufs once released.
func (s *NodeServer) readSpan(ctx context.Context, k storage.ShardKey, off, n int64) (spanHead, mem.Buffer, error) {
	st, ok := s.store.(spanIntoStore)
	if !ok {
		hdr, span, spanOff, err := s.store.ReadSpan(ctx, k, off, n)
		return spanHead{hdr, spanOff}, mem.SliceBuffer(span), err
	}
	var held *[]byte
	hdr, span, spanOff, err := st.ReadSpanInto(ctx, k, off, n, func(size int) []byte {
		held = spanBufs.Get(size)
		return *held
	})
	if err != nil {
		if held != nil {
			spanBufs.Put(held)
		}
		return spanHead{}, nil, err
	}
	*held = (*held)[:len(span)]
	return spanHead{hdr, spanOff}, mem.NewBuffer(held, spanBufs), nil
}

// StatShard returns a shard's header.
func (s *NodeServer) StatShard(ctx context.Context, ref *pb.ShardRef) (*pb.ShardInfo, error) {
	k, err := shardKey(ref.GetBlob(), ref.GetIndex())
	if err != nil {
		return nil, ToStatus(fmt.Errorf("StatShard: %w", err))
	}
	h, err := s.store.Stat(ctx, k)
	if err != nil {
		return nil, ToStatus(fmt.Errorf("StatShard: %w", err))
	}
	return shardInfo(h), nil
}

// DeleteShard removes a shard.
func (s *NodeServer) DeleteShard(ctx context.Context, ref *pb.ShardRef) (*pb.Empty, error) {
	k, err := shardKey(ref.GetBlob(), ref.GetIndex())
	if err != nil {
		return nil, ToStatus(fmt.Errorf("DeleteShard: %w", err))
	}
	if ns := ref.GetWrittenBeforeUnixNano(); ns != 0 {
		err = s.store.DeleteWrittenBefore(ctx, k, time.Unix(0, ns))
	} else {
		err = s.store.Delete(ctx, k)
	}
	if err != nil {
		return nil, ToStatus(fmt.Errorf("DeleteShard: %w", err))
	}
	return &pb.Empty{}, nil
}

// errSend marks a failed Send inside Walk, whose status must pass through
// unchanged rather than be reported as a store error.
type errSend struct{ err error }

func (e errSend) Error() string { return e.err.Error() }

// ListShards streams every stored shard's header.
func (s *NodeServer) ListShards(_ *pb.ListShardsRequest, stream grpc.ServerStreamingServer[pb.ShardInfo]) error {
	err := s.store.Walk(stream.Context(), func(h storage.Header) error {
		if err := stream.Send(shardInfo(h)); err != nil {
			return errSend{err}
		}
		return nil
	})
	var se errSend
	if errors.As(err, &se) {
		return se.err
	}
	if err != nil {
		return ToStatus(fmt.Errorf("ListShards: %w", err))
	}
	return nil
}

// Info reports the node's ID and usage.
func (s *NodeServer) Info(context.Context, *pb.InfoRequest) (*pb.NodeInfo, error) {
	u, err := s.store.Usage()
	if err != nil {
		return nil, ToStatus(fmt.Errorf("Info: %w", err))
	}
	return &pb.NodeInfo{NodeId: s.id, Shards: u.Shards, UsedBytes: u.Bytes, DiskFree: u.DiskFree, DiskTotal: u.DiskTotal}, nil
}
