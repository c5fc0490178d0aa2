package replica_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"hastore/storage"
	"hastore/testing/cluster"
)

// TestReadIntoCorruptShard: ReadInto copies shard bytes straight into the
// caller's buffer, from this node's store or from a peer's gRPC frames. A
// byte flipped on disk in a data shard — outside the range read but inside
// a checksum block it touches — never reaches the buffer on either path:
// the reader gets the right bytes, rebuilt from the other shards, and the
// shard it refused is repaired.
func TestReadIntoCorruptShard(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(9, 10))
	data := make([]byte, 3<<20+4321)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	id, err := c.Nodes[0].Cluster.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Nodes[0].Cluster.Stat(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if o.Layout != storage.LayoutErasure || o.K != 2 {
		t.Fatalf("object stored as %v %d+%d, want erasure 2+1", o.Layout, o.K, o.M)
	}
	victim := -1
	for i, node := range c.IDs {
		if node == o.Placement[0] {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("data shard 0 on %q, not a node of the cluster", o.Placement[0])
	}
	k := storage.ShardKey{Blob: id, Index: 0}
	size := int64(len(data))
	half := (size + 1) / 2 // shard 0 holds [0, half); CorruptShard flips byte half-1
	ranges := []struct{ off, n int64 }{
		{half - 5000, 4000}, // in the damaged byte's block, not on it
		{half - 70_000, 70_000},
		{0, size},
	}
	corrupt := func() {
		t.Helper()
		c.Stop(victim)
		if err := cluster.CorruptShard(c.DataDir(victim), k); err != nil {
			t.Fatal(err)
		}
		c.Start(victim)
		c.WaitHealthy(30 * time.Second)
		// Checked by whole-record verification, not the path under test.
		if _, err := c.Nodes[victim].DB.Get(ctx, k); !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("the victim's store reads the damaged shard: %v, want ErrCorrupt", err)
		}
	}
	// A peer (remote reads, over gRPC) first, then the victim itself
	// (local reads, no gRPC).
	for _, reader := range []int{(victim + 1) % len(c.Nodes), victim} {
		corrupt()
		for _, r := range ranges {
			p := bytes.Repeat([]byte{0xee}, int(r.n))
			n, err := c.Nodes[reader].Cluster.ReadInto(ctx, id, r.off, p)
			if err != nil || int64(n) != r.n || !bytes.Equal(p, data[r.off:r.off+r.n]) {
				t.Fatalf("ReadInto %d+%d on %s: %d, %v; equal %v", r.off, r.n, c.IDs[reader], n, err, bytes.Equal(p, data[r.off:r.off+r.n]))
			}
		}
		cluster.Eventually(t, 60*time.Second, "the refused shard repaired", func() error {
			_, err := c.Nodes[victim].DB.Get(ctx, k)
			return err
		})
	}
}
