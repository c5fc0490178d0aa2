package replica

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"hastore/storage"
)

// A backup reads the objects its snapshot referenced even when they have
// been deleted since (their shards stay for the grace period), verified;
// once the record is purged it says so, and Get alone would not serve a
// deleted object at all.
func TestBackupReadsObjectDeletedSinceSnapshot(t *testing.T) {
	f := newFakeCluster(3)
	h := NewHealth("n1", f, f, nil)
	h.ProbeAll(context.Background())
	c, err := NewCluster("n1", f, f, f, h, Options{Scheme: storage.Scheme{K: 2, M: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := bytes.Repeat([]byte("deleted after the snapshot "), 5000)
	id, err := c.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
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
