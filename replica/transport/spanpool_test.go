package transport

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"hastore/storage"
)

// TestPooledSpansNotReusedEarly: many concurrent reads of different
// shards, each sent from a pooled buffer, get their own shard's bytes — a
// buffer handed back to the pool while gRPC still sent from it would mix
// one shard's bytes into another's reply (and fail its checksums).
func TestPooledSpansNotReusedEarly(t *testing.T) {
	store := storeImpls[1].new(t) // a real store: the pooled path
	if _, ok := store.(spanIntoStore); !ok {
		t.Fatalf("%T does not read into pooled buffers", store)
	}
	n := startNode(t, "n", Config{Key: testKey}, store)
	c, err := newPool(t, Config{Key: testKey}).Node(n.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var shards []*storage.Shard
	for i := range 4 {
		rec := makeRecord(t, 1<<20+i*4099, 16<<10)
		if err := c.PutShard(ctx, rec); err != nil {
			t.Fatal(err)
		}
		sh, _ := storage.ParseShard(rec)
		shards = append(shards, sh)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 6 {
		wg.Go(func() {
			for i := range 8 {
				sh := shards[(w+i)%len(shards)]
				off := int64((w*7919 + i*104729) % (64 << 10))
				p := make([]byte, len(sh.Payload)-int(off)-w)
				if err := c.ReadShardInto(ctx, sh.Key(), off, p, nil); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, sh.Payload[off:off+int64(len(p))]) {
					errs <- fmt.Errorf("shard %v at %d: wrong bytes", sh.Key(), off)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
