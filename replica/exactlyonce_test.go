package replica_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hastore/replica/meta"
	"hastore/storage"
	"hastore/testing/cluster"
)

// Leadership moves again and again while every node proposes reference
// changes — not idempotent: applied twice they would count twice. Proposals
// caught by a change (raft's "leadership lost", a transfer in progress, the
// old leader's answer never coming) are resent with the same request ID, so
// every one succeeds and the reference count ends exactly right.
func TestProposalsSurviveLeaderChangesExactlyOnce(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	o := meta.Object{ID: storage.Sum([]byte("exactly once")), Size: 10, K: 2, M: 1, Layout: storage.LayoutErasure, Placement: c.IDs}
	if _, err := c.Nodes[0].Cluster.Propose(ctx, meta.PutObject{Object: o, Now: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}

	// Two kinds of leader change: a graceful transfer (raft refuses new
	// entries meanwhile), and a leader cut off from everyone mid-flight —
	// its followers elect another, it steps down, and proposals sent to it
	// end in "leadership lost" or a dropped connection, committed or not.
	const workers, wantTransfers, wantCuts = 6, 8, 4
	var (
		wg       sync.WaitGroup
		done     atomic.Bool
		ok, bad  atomic.Int64
		failMu   sync.Mutex
		failures []error
	)
	transfers, cuts := 0, 0
	moveDone := make(chan struct{})
	go func() {
		defer close(moveDone)
		defer done.Store(true)
		for (transfers < wantTransfers || cuts < wantCuts) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			l := c.Leader()
			if l < 0 {
				continue
			}
			if transfers > 2*cuts {
				var others []int
				for j := range c.Nodes {
					if j != l {
						others = append(others, j)
					}
				}
				c.Cut(l, others...)
				time.Sleep(1500 * time.Millisecond)
				c.Heal()
				cuts++
				time.Sleep(500 * time.Millisecond)
				continue
			}
			if err := c.Nodes[l].Meta.TransferLeadership(); err == nil {
				transfers++
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := c.Nodes[w%len(c.Nodes)]
			// Until the transfers are over, and then to the end of a pair.
			for i := 0; !done.Load() || i%2 == 1; i++ {
				// Alternate +1 and -1 so the count stays above zero.
				var cmd meta.Command = meta.PutObject{Object: o, Now: time.Now().UnixNano()}
				if i%2 == 1 {
					cmd = meta.DecRef{ID: o.ID, Now: time.Now().UnixNano()}
				}
				pctx, pcancel := context.WithTimeout(ctx, 15*time.Second)
				_, err := n.Cluster.Propose(pctx, cmd)
				pcancel()
				if err != nil {
					if bad.Add(1) <= 10 {
						failMu.Lock()
						failures = append(failures, fmt.Errorf("%s: %T #%d: %w", n.ID(), cmd, i, err))
						failMu.Unlock()
					}
					continue
				}
				ok.Add(1)
			}
		}()
	}
	<-moveDone
	wg.Wait()
	for _, err := range failures {
		t.Errorf("proposal failed across a leader change: %v", err)
	}
	if bad.Load() > 0 {
		t.Errorf("%d of %d proposals failed", bad.Load(), bad.Load()+ok.Load())
	}
	if transfers < wantTransfers || cuts < wantCuts {
		t.Fatalf("only %d leadership transfers and %d cut-off leaders; the test proves nothing", transfers, cuts)
	}
	t.Logf("%d proposals, %d leadership transfers, %d leaders cut off", ok.Load(), transfers, cuts)

	// Every node agrees, and the count is what the successful proposals
	// add up to: each +1/-1 pair nets zero, so one reference is left.
	for i, n := range c.Nodes {
		if err := n.Cluster.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		got, found, err := n.Meta.Object(o.ID)
		if err != nil || !found {
			t.Fatalf("node %d: object missing: %v", i, err)
		}
		if bad.Load() == 0 && got.Refs != 1 {
			t.Errorf("node %d: %d references, want 1 after %d balanced proposals: some applied twice or never", i, got.Refs, ok.Load())
		}
	}
}
