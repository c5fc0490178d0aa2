package cluster

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"hastore/storage"
)

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// Writes through every node, reads back through every node, with one node
// down, and after it returns the cluster is fully protected again.
func TestInProcessNodeDown(t *testing.T) {
	c := StartInProcess(t, Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(1, 2))
	objs := map[storage.BlobID][]byte{}
	sizes := []int{0, 1, 1000, 70 << 10, 1 << 20, 3<<20 + 7}
	for i, size := range sizes {
		data := randBytes(rng, size)
		id, err := c.Nodes[i%3].Cluster.Put(ctx, data)
		if err != nil {
			t.Fatalf("put %d bytes: %v", size, err)
		}
		if id != storage.Sum(data) {
			t.Fatalf("put returned %s, want content hash", id)
		}
		objs[id] = data
	}
	check := func(nodes []int) {
		t.Helper()
		for id, want := range objs {
			for _, i := range nodes {
				got, err := c.Nodes[i].Cluster.Get(ctx, id)
				if err != nil {
					t.Fatalf("get %s (%d bytes) on %s: %v", id, len(want), c.IDs[i], err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("get %s on %s: wrong bytes", id, c.IDs[i])
				}
				if len(want) > 10 {
					off, n := int64(len(want)/3), int64(len(want)/2)
					part, err := c.Nodes[i].Cluster.ReadAt(ctx, id, off, n)
					if err != nil || !bytes.Equal(part, want[off:off+n]) {
						t.Fatalf("read %d+%d of %s on %s: %v", off, n, id, c.IDs[i], err)
					}
				}
			}
		}
	}
	check([]int{0, 1, 2})

	c.Stop(2)
	check([]int{0, 1})
	// Writes go on with one node of three down, degraded but safe.
	for _, size := range []int{10, 200 << 10, 2 << 20} {
		data := randBytes(rng, size)
		id, err := c.Nodes[0].Cluster.Put(ctx, data)
		if err != nil {
			t.Fatalf("put %d bytes with a node down: %v", size, err)
		}
		objs[id] = data
	}
	check([]int{0, 1})
	c.Start(2)
	c.WaitHealthy(30 * time.Second)
	Eventually(t, 60*time.Second, "fully protected after the node returned", func() error {
		if n := c.UnderReplicated(c.Leader()); n != 0 {
			return fmt.Errorf("%d objects under-replicated", n)
		}
		return nil
	})
	check([]int{0, 1, 2})
}

// A corrupt shard never reaches a reader, and scrub rebuilds it.
func TestInProcessCorruptShard(t *testing.T) {
	c := StartInProcess(t, Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(3, 4))
	small, big := randBytes(rng, 5000), randBytes(rng, 1<<20)
	var ids []storage.BlobID
	for _, data := range [][]byte{small, big} {
		id, err := c.Nodes[0].Cluster.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Corrupt every shard that node 2 (index 1) holds.
	victim := 1
	var hit []storage.ShardKey
	for _, id := range ids {
		o, err := c.Nodes[0].Cluster.Stat(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for i, node := range o.Placement {
			if node == c.IDs[victim] {
				hit = append(hit, storage.ShardKey{Blob: id, Index: i})
			}
		}
	}
	if len(hit) == 0 {
		t.Fatal("victim holds no shard")
	}
	c.Stop(victim)
	for _, k := range hit {
		if err := CorruptShard(c.DataDir(victim), k); err != nil {
			t.Fatal(err)
		}
	}
	c.Start(victim)
	c.WaitHealthy(30 * time.Second)
	// The victim's own store refuses the bytes...
	for _, k := range hit {
		if _, err := c.Nodes[victim].DB.Get(ctx, k); !errorsIs(err, storage.ErrCorrupt) {
			t.Fatalf("corrupted shard %v: Get err = %v, want ErrCorrupt", k, err)
		}
	}
	// Scrub on the victim finds and rebuilds them before anyone reads.
	p, err := c.Nodes[victim].Cluster.Scrub(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Repaired != int64(len(hit)) || p.Unfixed != 0 {
		t.Fatalf("scrub repaired %d shards, want %d (progress %+v)", p.Repaired, len(hit), p)
	}
	for _, k := range hit {
		if _, err := c.Nodes[victim].DB.Get(ctx, k); err != nil {
			t.Fatalf("shard %v after scrub: %v", k, err)
		}
	}
	// Corrupt them again: every reader, the victim included, still gets the
	// right bytes, and the readers' reports get the shards rebuilt.
	c.Stop(victim)
	for _, k := range hit {
		if err := CorruptShard(c.DataDir(victim), k); err != nil {
			t.Fatal(err)
		}
	}
	c.Start(victim)
	c.WaitHealthy(30 * time.Second)
	for j, id := range ids {
		want := [][]byte{small, big}[j]
		for i := range c.Nodes {
			got, err := c.Nodes[i].Cluster.Get(ctx, id)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("get %s on %s: %v", id, c.IDs[i], err)
			}
		}
	}
	// Readers touch copies and data shards, not parity (scrub covers that).
	var read []storage.ShardKey
	for _, k := range hit {
		if o, _ := c.Nodes[0].Cluster.Stat(ctx, k.Blob); o.Layout == storage.LayoutReplica || k.Index < o.K {
			read = append(read, k)
		}
	}
	Eventually(t, 30*time.Second, "corrupt shards rebuilt after readers reported them", func() error {
		for _, k := range read {
			if _, err := c.Nodes[victim].DB.Get(ctx, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Killing the Raft leader during a stream of writes loses no acknowledged
// write.
func TestInProcessLeaderKilledDuringWrites(t *testing.T) {
	c := StartInProcess(t, Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leader := c.Leader()
	writer := (leader + 1) % 3
	rng := rand.New(rand.NewPCG(5, 6))
	acked := map[storage.BlobID][]byte{}
	for i := range 60 {
		if i == 20 {
			c.Stop(leader)
		}
		data := randBytes(rng, 100+rng.IntN(200<<10))
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		id, err := c.Nodes[writer].Cluster.Put(wctx, data)
		wcancel()
		if err != nil {
			t.Logf("write %d failed (allowed while the leader changes): %v", i, err)
			continue
		}
		acked[id] = data
	}
	if len(acked) < 40 {
		t.Fatalf("only %d of 60 writes acknowledged", len(acked))
	}
	c.Start(leader)
	c.WaitHealthy(30 * time.Second)
	for id, want := range acked {
		for _, i := range c.Running() {
			got, err := c.Nodes[i].Cluster.Get(ctx, id)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("acknowledged %s on %s: %v", id, c.IDs[i], err)
			}
		}
	}
}

// A 5-node 3+2 cluster keeps reading and writing with two nodes down.
func TestInProcessFiveNodesTwoDown(t *testing.T) {
	c := StartInProcess(t, Options{Nodes: 5, Scheme: "3+2"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(7, 8))
	objs := map[storage.BlobID][]byte{}
	for _, size := range []int{100, 100 << 10, 2 << 20} {
		data := randBytes(rng, size)
		id, err := c.Nodes[0].Cluster.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		objs[id] = data
	}
	// Stop two nodes that are not the leader (a quorum of 3 of 5 voters
	// remains either way; keeping the leader only makes the test quicker).
	var down []int
	for i := range c.Nodes {
		if i != c.Leader() && len(down) < 2 {
			down = append(down, i)
		}
	}
	for _, i := range down {
		c.Stop(i)
	}
	for _, size := range []int{50, 300 << 10} {
		data := randBytes(rng, size)
		id, err := c.Nodes[c.Running()[0]].Cluster.Put(ctx, data)
		if err != nil {
			t.Fatalf("put with two of five down: %v", err)
		}
		objs[id] = data
	}
	for id, want := range objs {
		for _, i := range c.Running() {
			got, err := c.Nodes[i].Cluster.Get(ctx, id)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("get %s on %s with two down: %v", id, c.IDs[i], err)
			}
		}
	}
}
