package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/storage"
)

// NodeInfo is a node's identity and disk usage, as reported by Info.
type NodeInfo struct {
	ID        string
	Shards    int64 // shard records stored
	UsedBytes int64 // bytes those records take
	DiskFree  int64
	DiskTotal int64
}

// NodeClient calls the Node service of one peer. Everything it returns has
// been checked against the record's checksums here, whatever the peer
// did: bad bytes from the wire are storage.ErrCorrupt. Errors from the peer
// are [*Error]s matching the storage error kinds. Deadlines come from the
// context. Safe for concurrent use.
type NodeClient struct {
	addr  string
	c     pb.NodeClient
	codec spanCodec
}

// NewNodeClient returns a client calling over cc; addr names the peer in
// errors.
func NewNodeClient(cc grpc.ClientConnInterface, addr string) *NodeClient {
	return &NodeClient{addr: addr, c: pb.NewNodeClient(cc), codec: newSpanCodec()}
}

// Addr returns the peer's address.
func (c *NodeClient) Addr() string { return c.addr }

func (c *NodeClient) err(op string, err error) error { return remoteErr(op, c.addr, err) }

// PutShard stores a whole shard record on the peer, which verifies it and
// answers once it is durable.
func (c *NodeClient) PutShard(ctx context.Context, rec []byte) error {
	return c.PutShardParts(ctx, rec)
}

// PutShardParts is PutShard for a record held in pieces (such as a
// storage.Record's Head and Payload): they are streamed in order without
// being joined first.
func (c *NodeClient) PutShardParts(ctx context.Context, parts ...[]byte) error {
	// Cancel the stream on every early return so gRPC frees it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.PutShard(ctx)
	if err != nil {
		return c.err("PutShard", err)
	}
	send := func(b []byte) error {
		if err := stream.Send(&pb.PutShardChunk{Data: b}); err != nil {
			if err == io.EOF {
				// The server ended the call; its status says why.
				_, err = stream.CloseAndRecv()
			}
			return c.err("PutShard", err)
		}
		return nil
	}
	sent := false
	for _, p := range parts {
		for i := 0; i < len(p); i += chunkSize {
			if err := send(p[i:min(i+chunkSize, len(p))]); err != nil {
				return err
			}
			sent = true
		}
	}
	if !sent {
		if err := send(nil); err != nil {
			return err
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return c.err("PutShard", err)
	}
	return nil
}

// GetShard returns exactly the payload bytes [off, off+n) of a shard on
// the peer (n = -1: to the payload's end) and the shard's header. The
// header's checksum and those of every block the span touches are
// verified before anything is returned.
func (c *NodeClient) GetShard(ctx context.Context, k storage.ShardKey, off, n int64) ([]byte, storage.Header, error) {
	h, _, span, spanOff, err := c.getSpan(ctx, k, off, n)
	if err != nil {
		return nil, storage.Header{}, err
	}
	if n < 0 {
		n = h.PayloadLen - off
	}
	if n == 0 {
		// RangeInPayload gives an empty span at the block start, which
		// may lie before off.
		return []byte{}, h, nil
	}
	return span[off-spanOff : off-spanOff+n], h, nil
}

// ReadShardInto reads payload bytes [off, off+len(p)) of a shard on the
// peer into p. The bytes are verified against the shard's header (itself
// verified) and copied once, from gRPC's receive buffers into p, as each
// message arrives: no span is assembled in between. On an error p's
// content is unspecified. guard (which may be nil) lets the caller take p
// back while the read is still going on; the read then fails with
// storage.ErrAbandoned.
func (c *NodeClient) ReadShardInto(ctx context.Context, k storage.ShardKey, off int64, p []byte, guard *storage.Guard) error {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("transport: GetShard %v from %s: %w: %s", k, c.addr, storage.ErrCorrupt, fmt.Sprintf(format, args...))
	}
	if off < 0 {
		return fmt.Errorf("transport: GetShard %v: %w: range %d+%d", k, storage.ErrInvalid, off, len(p))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.GetShard(ctx, &pb.GetShardRequest{Blob: k.Blob[:], Index: int32(k.Index), Offset: off, Length: int64(len(p))}, grpc.ForceCodecV2(c.codec))
	if err != nil {
		return c.err("GetShard", err)
	}
	var cp *storage.SpanCopy
	msg := &spanChunk{fn: func(hdr []byte, spanOff int64, data [][]byte) error {
		if cp == nil {
			h, hl, err := storage.ParseHeader(hdr)
			if err != nil {
				return fmt.Errorf("transport: GetShard %v from %s: %w", k, c.addr, err)
			}
			if hl != len(hdr) {
				return corrupt("header is %d bytes, its fields say %d", len(hdr), hl)
			}
			if h.Key() != k {
				return corrupt("peer sent shard %v", h.Key())
			}
			if cp, err = storage.NewSpanCopy(h, hdr, off, p, guard); err != nil {
				// The peer served a range its own header rules out.
				return corrupt("%v", err)
			}
			if spanOff != cp.Start() {
				return corrupt("span starts at %d, want %d", spanOff, cp.Start())
			}
		}
		for _, d := range data {
			if err := cp.Write(d); err != nil {
				return fmt.Errorf("transport: GetShard from %s: %w", c.addr, err)
			}
		}
		return nil
	}}
	for {
		err := stream.RecvMsg(msg)
		if err == io.EOF {
			break
		}
		if err != nil {
			return c.err("GetShard", err)
		}
		if msg.err != nil {
			return msg.err
		}
	}
	if cp == nil {
		return corrupt("empty reply")
	}
	if err := cp.Close(); err != nil {
		return fmt.Errorf("transport: GetShard from %s: %w", c.addr, err)
	}
	return nil
}

// GetRecord returns a whole shard record from the peer, verified with
// storage.ParseShard.
func (c *NodeClient) GetRecord(ctx context.Context, k storage.ShardKey) ([]byte, error) {
	_, hdr, span, _, err := c.getSpan(ctx, k, 0, -1)
	if err != nil {
		return nil, err
	}
	rec := make([]byte, 0, len(hdr)+len(span))
	rec = append(append(rec, hdr...), span...)
	if _, err := storage.ParseShard(rec); err != nil {
		return nil, fmt.Errorf("transport: GetRecord %v from %s: %w", k, c.addr, err)
	}
	return rec, nil
}

// getSpan fetches and verifies the span covering [off, off+n).
func (c *NodeClient) getSpan(ctx context.Context, k storage.ShardKey, off, n int64) (h storage.Header, hdr, span []byte, spanOff int64, err error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("transport: GetShard %v from %s: %w: %s", k, c.addr, storage.ErrCorrupt, fmt.Sprintf(format, args...))
	}
	if off < 0 || n < -1 {
		return h, nil, nil, 0, fmt.Errorf("transport: GetShard %v: %w: range %d+%d", k, storage.ErrInvalid, off, n)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.GetShard(ctx, &pb.GetShardRequest{Blob: k.Blob[:], Index: int32(k.Index), Offset: off, Length: n})
	if err != nil {
		return h, nil, nil, 0, c.err("GetShard", err)
	}
	first, err := stream.Recv()
	if err == io.EOF {
		return h, nil, nil, 0, corrupt("empty reply")
	}
	if err != nil {
		return h, nil, nil, 0, c.err("GetShard", err)
	}
	hdr = first.GetHeader()
	h, hl, err := storage.ParseHeader(hdr)
	if err != nil {
		return h, nil, nil, 0, fmt.Errorf("transport: GetShard %v from %s: %w", k, c.addr, err)
	}
	if hl != len(hdr) {
		return h, nil, nil, 0, corrupt("header is %d bytes, its fields say %d", len(hdr), hl)
	}
	if h.Key() != k {
		return h, nil, nil, 0, corrupt("peer sent shard %v", h.Key())
	}
	if n < 0 {
		n = h.PayloadLen - off
	}
	wantOff, wantLen, err := storage.RangeInPayload(&h, off, n)
	if err != nil {
		// The peer served a range its own header rules out.
		return h, nil, nil, 0, corrupt("%v", err)
	}
	spanOff = first.GetSpanOffset()
	if spanOff != wantOff {
		return h, nil, nil, 0, corrupt("span starts at %d, want %d", spanOff, wantOff)
	}
	// Sized from our own request, not the peer's claims, but capped so that
	// a huge whole-payload read grows as data actually arrives.
	span = make([]byte, 0, min(wantLen, 64<<20))
	span = append(span, first.GetData()...)
	for int64(len(span)) <= wantLen {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return h, nil, nil, 0, c.err("GetShard", err)
		}
		span = append(span, msg.GetData()...)
	}
	if int64(len(span)) != wantLen {
		return h, nil, nil, 0, corrupt("span of %d bytes, want %d", len(span), wantLen)
	}
	if err := storage.VerifyPayload(&h, hdr, spanOff, span); err != nil {
		return h, nil, nil, 0, fmt.Errorf("transport: GetShard from %s: %w", c.addr, err)
	}
	return h, hdr, span, spanOff, nil
}

// StatShard returns the header of a shard on the peer.
func (c *NodeClient) StatShard(ctx context.Context, k storage.ShardKey) (storage.Header, error) {
	info, err := c.c.StatShard(ctx, shardRef(k))
	if err != nil {
		return storage.Header{}, c.err("StatShard", err)
	}
	h, err := header(info)
	if err != nil {
		return storage.Header{}, fmt.Errorf("transport: StatShard %v from %s: %w", k, c.addr, err)
	}
	if h.Key() != k {
		return storage.Header{}, fmt.Errorf("transport: StatShard %v from %s: %w: peer described shard %v", k, c.addr, storage.ErrCorrupt, h.Key())
	}
	return h, nil
}

// DeleteShard removes a shard from the peer; a shard the peer does not
// hold counts as removed.
// DeleteShard deletes a shard; with a non-zero writtenBefore only if the
// shard was written before then.
func (c *NodeClient) DeleteShard(ctx context.Context, k storage.ShardKey, writtenBefore time.Time) error {
	ref := shardRef(k)
	if !writtenBefore.IsZero() {
		ref.WrittenBeforeUnixNano = writtenBefore.UnixNano()
	}
	_, err := c.c.DeleteShard(ctx, ref)
	return c.err("DeleteShard", err)
}

// ListShards calls fn with the header of every shard on the peer, in the
// peer's order, stopping at (and returning) fn's first error.
func (c *NodeClient) ListShards(ctx context.Context, fn func(storage.Header) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.ListShards(ctx, &pb.ListShardsRequest{})
	if err != nil {
		return c.err("ListShards", err)
	}
	for {
		info, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return c.err("ListShards", err)
		}
		h, err := header(info)
		if err != nil {
			return fmt.Errorf("transport: ListShards from %s: %w", c.addr, err)
		}
		if err := fn(h); err != nil {
			return err
		}
	}
}

// Info returns the peer's identity and disk usage.
func (c *NodeClient) Info(ctx context.Context) (NodeInfo, error) {
	ni, err := c.c.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return NodeInfo{}, c.err("Info", err)
	}
	return NodeInfo{ID: ni.GetNodeId(), Shards: ni.GetShards(), UsedBytes: ni.GetUsedBytes(), DiskFree: ni.GetDiskFree(), DiskTotal: ni.GetDiskTotal()}, nil
}
