package cluster

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"hastore/storage"
)

// Cutting the leader off from the rest: the majority elects a new leader
// and keeps accepting writes; the isolated node refuses writes with an
// error instead of acknowledging what it cannot protect; after the cut
// heals, every acknowledged write is readable on every node.
func TestInProcessLeaderPartitioned(t *testing.T) {
	c := StartInProcess(t, Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(9, 10))
	acked := map[storage.BlobID][]byte{}
	put := func(i int, size int) error {
		data := randBytes(rng, size)
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		defer wcancel()
		id, err := c.Nodes[i].Cluster.Put(wctx, data)
		if err == nil {
			acked[id] = data
		}
		return err
	}
	for range 5 {
		if err := put(0, 100<<10); err != nil {
			t.Fatal(err)
		}
	}
	old := c.Leader()
	var rest []int
	for i := range c.Nodes {
		if i != old {
			rest = append(rest, i)
		}
	}
	c.Cut(old, rest...)
	Eventually(t, 20*time.Second, "a new leader on the majority side", func() error {
		for _, i := range rest {
			if c.Nodes[i].IsLeader() {
				return nil
			}
		}
		return errorf("no leader among %v", rest)
	})
	for j := range 5 {
		if err := put(rest[j%2], 1000+j*50<<10); err != nil {
			t.Fatalf("write on the majority side: %v", err)
		}
	}
	if err := put(old, 5000); err == nil {
		t.Fatal("the isolated old leader acknowledged a write it could not replicate")
	} else {
		t.Logf("isolated node refused the write: %v", err)
	}
	c.Heal()
	c.WaitHealthy(30 * time.Second)
	for id, want := range acked {
		for i := range c.Nodes {
			got, err := c.Nodes[i].Cluster.Get(ctx, id)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("acknowledged %s on %s after heal: %v", id, c.IDs[i], err)
			}
		}
	}
}
