package replica

import (
	"context"
	"fmt"
	"sync"
	"time"

	"hastore/replica/transport"
	"hastore/storage"
)

// localShards is this node's own store as a ShardService: no network, but
// the same verification on every read.
type localShards struct{ db *storage.DB }

func (l localShards) PutRecord(ctx context.Context, rec storage.Record) error {
	_, err := l.db.PutRecord(ctx, rec.Bytes())
	return err
}

func (l localShards) GetShard(ctx context.Context, k storage.ShardKey) (*storage.Shard, error) {
	return l.db.Get(ctx, k)
}

func (l localShards) ReadShard(ctx context.Context, k storage.ShardKey, off, n int64) ([]byte, error) {
	b, _, err := l.db.ReadAt(ctx, k, off, n)
	return b, err
}

func (l localShards) DeleteShard(ctx context.Context, k storage.ShardKey, before time.Time) error {
	if before.IsZero() {
		return l.db.Delete(ctx, k)
	}
	return l.db.DeleteWrittenBefore(ctx, k, before)
}

func (l localShards) ListShards(ctx context.Context, fn func(storage.Header) error) error {
	return l.db.Walk(ctx, fn)
}

func (l localShards) Usage(context.Context) (storage.Usage, error) { return l.db.Usage() }

// remoteShards is a peer's store reached over gRPC.
type remoteShards struct{ c *transport.NodeClient }

func (r remoteShards) PutRecord(ctx context.Context, rec storage.Record) error {
	return r.c.PutShardParts(ctx, rec.Head, rec.Payload)
}

func (r remoteShards) GetShard(ctx context.Context, k storage.ShardKey) (*storage.Shard, error) {
	rec, err := r.c.GetRecord(ctx, k)
	if err != nil {
		return nil, err
	}
	// GetRecord verified every checksum of rec already.
	h, hl, err := storage.ParseHeader(rec)
	if err != nil {
		return nil, err
	}
	return &storage.Shard{Header: h, Payload: rec[hl:]}, nil
}

func (r remoteShards) ReadShard(ctx context.Context, k storage.ShardKey, off, n int64) ([]byte, error) {
	if n < 0 {
		return nil, fmt.Errorf("read shard %v: %w: range %d+%d", k, storage.ErrInvalid, off, n)
	}
	// ReadShardInto's one copy, into a buffer of our own (n comes from the
	// object's record, not the peer).
	p := make([]byte, n)
	if err := r.c.ReadShardInto(ctx, k, off, p, nil); err != nil {
		return nil, err
	}
	return p, nil
}

func (r remoteShards) DeleteShard(ctx context.Context, k storage.ShardKey, before time.Time) error {
	return r.c.DeleteShard(ctx, k, before)
}

func (r remoteShards) ListShards(ctx context.Context, fn func(storage.Header) error) error {
	return r.c.ListShards(ctx, fn)
}

func (r remoteShards) Usage(ctx context.Context) (storage.Usage, error) {
	info, err := r.c.Info(ctx)
	if err != nil {
		return storage.Usage{}, err
	}
	return storage.Usage{Shards: info.Shards, Bytes: info.UsedBytes, DiskFree: info.DiskFree, DiskTotal: info.DiskTotal}, nil
}

// peerSet resolves node IDs to shard services: this node's store directly,
// others through the connection pool at the address the membership
// records give (or the configured peers before those exist).
type peerSet struct {
	self  string
	local ShardService
	pool  *transport.Pool
	md    Metadata

	mu     sync.Mutex
	static map[string]string
}

func (p *peerSet) Shards(node string) (ShardService, error) {
	if node == p.self {
		return p.local, nil
	}
	addr, err := p.address(node)
	if err != nil {
		return nil, err
	}
	c, err := p.pool.Node(addr)
	if err != nil {
		return nil, err
	}
	return remoteShards{c}, nil
}

func (p *peerSet) address(node string) (string, error) {
	if nodes, err := p.md.Nodes(); err == nil {
		for _, n := range nodes {
			if n.ID == node && n.Address != "" {
				return n.Address, nil
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.static[node]; ok {
		return a, nil
	}
	return "", fmt.Errorf("%w: node %q has no known address", ErrUnavailable, node)
}
