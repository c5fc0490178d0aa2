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

// A leader that is reachable but slow (every call from the followers to it
// waits 300 ms first, as over a lossy link or to an overloaded host) keeps
// its heartbeats going, so Raft alone would keep it; the followers' probes
// see it slow and it hands leadership to a healthy node. Writes work
// throughout and afterwards.
func TestInProcessSlowLeaderHandsOver(t *testing.T) {
	c := StartInProcess(t, Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(3, 4))
	old := c.Leader()
	for j := range c.Nodes {
		if j != old {
			c.Faults[j].Delay(c.Addrs[old], 300*time.Millisecond)
		}
	}
	Eventually(t, 30*time.Second, "leadership moved off the slow node", func() error {
		if l := c.Leader(); l == old || l < 0 {
			return errorf("leader is still %s", c.IDs[old])
		}
		return nil
	})
	t.Logf("leadership moved from %s to %s", c.IDs[old], c.IDs[c.Leader()])
	data := randBytes(rng, 200<<10)
	id, err := c.Nodes[(old+1)%3].Cluster.Put(ctx, data)
	if err != nil {
		t.Fatalf("write after the hand-over: %v", err)
	}
	c.Heal()
	for i := range c.Nodes {
		got, err := c.Nodes[i].Cluster.Get(ctx, id)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read on %s: %v", c.IDs[i], err)
		}
	}
}
