package replica

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// A backup reads the objects its snapshot referenced even when they have
// been deleted since (their shards stay for the grace period), verified;
// once the record is purged it says so, and Get alone would not serve a
// deleted object at all.
func TestBackupReadsObjectDeletedSinceSnapshot(t *testing.T) {
	f, _, c := newTestCluster(t, 3)
	ctx := context.Background()
	data := bytes.Repeat([]byte("deleted after the snapshot "), 5000)
	id := putDeleted(t, c, data)
	if _, err := c.Get(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a deleted object: %v, want not found", err)
	}
	got, err := c.getForBackup(ctx, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("backup read of a tombstone: %d bytes, %v", len(got), err)
	}
	f.mu.Lock()
	delete(f.objects, id) // purged
	f.mu.Unlock()
	if _, err := c.getForBackup(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("backup read of a purged object: %v, want not found", err)
	}
}
