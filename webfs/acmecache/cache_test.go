package acmecache_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"hastore/testing/cluster"
	"hastore/webfs/acmecache"
)

func caches(c *cluster.InProcess) []*acmecache.Cache {
	var out []*acmecache.Cache
	for _, n := range c.Nodes {
		out = append(out, acmecache.New(n.Cluster, n.Meta, "https://ca.example.test/dir"))
	}
	return out
}

// TestCacheAcrossNodes: what one node puts, every other node gets at once
// (no waiting for replication: a challenge answer published on one node
// is asked for on another right after); a missing key is ErrCacheMiss; a
// node cut off from the leader answers an error, never ErrCacheMiss
// (autocert would take a miss as "order a new certificate").
func TestCacheAcrossNodes(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	cs := caches(c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for round := range 20 {
		key := fmt.Sprintf("tok%d+http-01", round)
		val := []byte(fmt.Sprintf("answer %d", round))
		from, to := round%3, (round+1)%3
		if err := cs[from].Put(ctx, key, val); err != nil {
			t.Fatalf("put on node %d: %v", from, err)
		}
		got, err := cs[to].Get(ctx, key)
		if err != nil || !bytes.Equal(got, val) {
			t.Fatalf("round %d: get on node %d right after the put on node %d: %q, %v", round, to, from, got, err)
		}
		if err := cs[to].Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		if _, err := cs[to].Get(ctx, key); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("get after delete on the same node: %v, want ErrCacheMiss", err)
		}
	}
	if _, err := cs[0].Get(ctx, "never.example.test"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("get of a missing key: %v, want ErrCacheMiss", err)
	}
	if err := cs[0].Put(ctx, "", []byte("x")); err == nil {
		t.Fatal("put with an empty key accepted")
	}

	// Node 2 cut off: a key put elsewhere is not a miss there but an error.
	cut := 2
	if c.Leader() == cut {
		cut = 1
	}
	var others []int
	for i := range 3 {
		if i != cut {
			others = append(others, i)
		}
	}
	c.Cut(cut, others...)
	defer c.Heal()
	if err := cs[c.Leader()].Put(ctx, "late.example.test", []byte("cert")); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	if _, err := cs[cut].Get(short, "late.example.test"); err == nil || errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("get on a node cut off from the leader: %v, want an error that is not ErrCacheMiss", err)
	}
}

// TestAccountKeyOnce: nodes asking for the ACME account key at once all get
// the same one, a usable EC private key.
func TestAccountKeyOnce(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	cs := caches(c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := make([][]byte, 6)
	errs := make([]error, 6)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i], errs[i] = cs[i%3].Get(ctx, "acme_account+key") })
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !bytes.Equal(got[i], got[0]) {
			t.Fatalf("caller %d got another account key than caller 0", i)
		}
	}
	b, _ := pem.Decode(got[0])
	if b == nil {
		t.Fatalf("account key is not PEM: %q", got[0])
	}
	if _, err := x509.ParseECPrivateKey(b.Bytes); err != nil {
		t.Fatalf("account key: %v", err)
	}
}

// TestLease: one holder at a time across nodes; a waiter gets the lease
// when it ends; a failure leaves a back-off every node sees; a holder that
// never ends its lease loses it after its ttl.
func TestLease(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	cs := caches(c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	l0, err := cs[0].Lock(ctx, "a.example.test", "n1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *acmecache.Lease, 1)
	go func() {
		l, err := cs[1].Lock(ctx, "a.example.test", "n2", time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	select {
	case <-got:
		t.Fatal("a second node took a lease that was held")
	case <-time.After(time.Second):
	}
	// Another name is independent.
	other, err := cs[2].Lock(ctx, "b.example.test", "n3", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.End(nil); err != nil {
		t.Fatal(err)
	}
	if err := l0.End(nil); err != nil {
		t.Fatal(err)
	}
	var l1 *acmecache.Lease
	select {
	case l1 = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get the lease after it was released")
	}
	if l1 == nil {
		t.FailNow()
	}

	// A failure: every node backs off.
	before := time.Now()
	if err := l1.End(errors.New("no DNS record")); err != nil {
		t.Fatal(err)
	}
	for i := range cs {
		cluster.Eventually(t, 10*time.Second, "back-off seen", func() error {
			// A node that has not applied the failure yet sees the lease
			// held and would wait: look briefly.
			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			_, err := cs[i].Lock(short, "a.example.test", "x", time.Minute)
			var bo *acmecache.BackoffError
			if !errors.As(err, &bo) {
				return fmt.Errorf("node %d: Lock: %v, want a BackoffError", i, err)
			}
			if bo.Failures != 1 || bo.Reason != "no DNS record" || bo.Until.Before(before.Add(acmecache.FirstBackoff-time.Second)) {
				return fmt.Errorf("node %d: %+v", i, bo)
			}
			return nil
		})
	}

	// A holder that vanishes: its lease lapses after the ttl.
	if _, err := cs[0].Lock(ctx, "c.example.test", "gone", 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	l, err := cs[1].Lock(ctx, "c.example.test", "n2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("took a live lease after %v", d)
	}
	if err := l.End(nil); err != nil {
		t.Fatal(err)
	}
}
