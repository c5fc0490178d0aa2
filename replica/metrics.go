package replica

import (
	"context"
	"errors"
	"time"

	"hastore/metrics"
	"hastore/storage"
)

// The object calls below count into package metrics around the work done
// in cluster.go and read.go.

// Put stores data and returns its ID. It returns only once every shard
// written is fsynced on its node and the object's record is committed
// through Raft; see docs for what happens with nodes down.
func (c *Cluster) Put(ctx context.Context, data []byte) (storage.BlobID, error) {
	start := time.Now()
	id, err := c.put(ctx, data)
	metrics.ObserveObject("put", start, err)
	return id, err
}

// Get returns the whole object, rebuilt from any k intact shards and checked
// against its ID.
func (c *Cluster) Get(ctx context.Context, id storage.BlobID) ([]byte, error) {
	start := time.Now()
	data, err := c.get(ctx, id)
	metrics.ObserveObject("get", start, err)
	return data, err
}

// ReadAt returns bytes [off, off+n) of the object. Only the shards covering
// the range are read; a missing or corrupt one is rebuilt from the same span
// of k others.
func (c *Cluster) ReadAt(ctx context.Context, id storage.BlobID, off, n int64) ([]byte, error) {
	start := time.Now()
	data, err := c.readAt(ctx, id, off, n)
	metrics.ObserveObject("read", start, err)
	return data, err
}

// badKind labels a bad shard for metrics.BadShards.
func badKind(err error) string {
	if errors.Is(err, storage.ErrCorrupt) {
		return "corrupt"
	}
	return "missing"
}
