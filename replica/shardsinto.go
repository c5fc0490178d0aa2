package replica

import (
	"context"

	"hastore/storage"
)

// shardIntoReader is a ShardService that can copy a verified payload range
// straight into the caller's buffer, the read path's one copy per byte
// (shards.go's ReadShard returns a buffer of its own, which the caller then
// copies). guard lets the caller take p back early (storage.Guard); on an
// error p's content is unspecified.
type shardIntoReader interface {
	ReadShardInto(ctx context.Context, k storage.ShardKey, off int64, p []byte, guard *storage.Guard) error
}

var (
	_ shardIntoReader = localShards{}
	_ shardIntoReader = remoteShards{}
)

// ReadShardInto reads from this node's store without gRPC: the bytes go
// from the value log's mapping into p, verified as they are copied.
func (l localShards) ReadShardInto(ctx context.Context, k storage.ShardKey, off int64, p []byte, guard *storage.Guard) error {
	_, err := l.db.ReadInto(ctx, k, off, p, guard)
	return err
}

// ReadShardInto reads from a peer: the received frames are verified and
// copied into p as they arrive (transport.NodeClient.ReadShardInto).
func (r remoteShards) ReadShardInto(ctx context.Context, k storage.ShardKey, off int64, p []byte, guard *storage.Guard) error {
	return r.c.ReadShardInto(ctx, k, off, p, guard)
}
