package replica_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"hastore/testing/cluster"
)

// BenchmarkClusterReadInto reads a 4 MiB object (a web file's chunk) in
// windows of the HTTP server's size from one node of a 3-node 2+1
// in-process cluster: one data shard's part from the node's own store, the
// other's from a peer over gRPC on loopback. MB/s counts the bytes read.
func BenchmarkClusterReadInto(b *testing.B) {
	c := cluster.StartInProcess(b, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(1, 1))
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	id, err := c.Nodes[0].Cluster.Put(ctx, data)
	if err != nil {
		b.Fatal(err)
	}
	for _, w := range []struct {
		name string
		n    int
	}{{"64KiB", 64 << 10}, {"1MiB", 1 << 20}, {"4MiB", 4 << 20}} {
		b.Run(w.name, func(b *testing.B) {
			p := make([]byte, w.n)
			b.SetBytes(int64(w.n))
			b.ReportAllocs()
			off := int64(0)
			for b.Loop() {
				if _, err := c.Nodes[0].Cluster.ReadInto(ctx, id, off, p); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(w.n)) % int64(len(data))
			}
		})
	}
}
