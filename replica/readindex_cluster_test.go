package replica_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hastore/replica"
	"hastore/testing/cluster"
)

// On a real 3-node cluster, a follower that many readers keep catching up
// (so a shared read-index round is nearly always in flight) must still see
// every object the moment another node has acknowledged it: the read that
// follows the acknowledgement waits for a round begun after it.
func TestReadAfterAckThroughSharedReadIndex(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	lead := c.Leader()
	follower := (lead + 1) % len(c.Nodes)
	writers := []int{lead, (lead + 2) % len(c.Nodes)} // the leader, and the other follower
	f := c.Nodes[follower].Cluster

	// Background readers: catch-ups on the follower, all the time.
	stop := make(chan struct{})
	var calls atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := f.CatchUp(ctx); err != nil && ctx.Err() == nil {
					t.Errorf("catch-up: %v", err)
					return
				}
				calls.Add(1)
			}
		})
	}
	rounds0 := replica.ReadIndexRounds(f)

	for i := range 60 {
		w := c.Nodes[writers[i%len(writers)]].Cluster
		data := []byte(fmt.Sprintf("object %d, written on node %d at %v", i, writers[i%len(writers)], time.Now().UnixNano()))
		id, err := w.Put(ctx, data)
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		// Acknowledged: every node must serve it now.
		got, err := f.Get(ctx, id)
		if err != nil {
			t.Fatalf("object %d acknowledged on another node, then read on the follower: %v", i, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("object %d: follower returned %q, want %q", i, got, data)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d catch-ups on the follower took %d read-index rounds", calls.Load(), replica.ReadIndexRounds(f)-rounds0)
}
