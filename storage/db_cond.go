package storage

import (
	"context"
	"time"
)

// DeleteWrittenBefore deletes the shard only if its header says it was
// written before t, checking and deleting in one transaction. A purge of an
// old object uses it so that it cannot delete a shard that a newer write of
// the same content has just stored.
func (db *DB) DeleteWrittenBefore(ctx context.Context, k ShardKey, t time.Time) error {
	return db.deleteIf(ctx, k, func(h Header) bool { return h.Written.Before(t) })
}
