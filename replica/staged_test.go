package replica_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"hastore/replica"
	"hastore/replica/meta"
	"hastore/storage"
	"hastore/testing/cluster"
)

// TestStagedPut drives StagePut and Commit on a real 3-node cluster: the
// record commits only with the caller's commands, a refused batch or a
// staged put never committed leaves no record, known content takes one
// more reference, and a tombstone comes back readable.
func TestStagedPut(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	n := c.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := bytes.Repeat([]byte("staged body "), 8000) // erasure-coded, not a small object
	refs := func(what string, want int64) {
		t.Helper()
		o, ok, err := n.Meta.Object(storage.Sum(data))
		switch {
		case err != nil:
			t.Fatalf("%s: %v", what, err)
		case want < 0 && ok:
			t.Fatalf("%s: record %+v exists, want none", what, o)
		case want >= 0 && (!ok || o.Refs != want):
			t.Fatalf("%s: record %+v (found %v), want %d references", what, o, ok, want)
		}
	}

	// Staged but never committed: shards only.
	if _, err := n.Cluster.StagePut(ctx, data); err != nil {
		t.Fatal(err)
	}
	refs("staged, not committed", -1)

	// A batch refused by a later command takes no reference.
	sp, err := n.Cluster.StagePut(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sp.Commit(ctx, meta.TenantCheck{Tenant: "staged", Key: "k", Want: []byte("not there")})
	if !replica.Judged(err) {
		t.Fatalf("refused batch: err %v, want a verdict", err)
	}
	refs("refused batch", -1)
	if _, err := sp.Commit(ctx); err == nil {
		t.Fatal("a second Commit of one staged put succeeded")
	}

	// Committed with a command of the caller's: one entry, both applied.
	sp, err = n.Cluster.StagePut(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sp.Commit(ctx, meta.TenantPut{Tenant: "staged", Key: "k", Value: []byte("v")})
	if err != nil || len(res.Batch) != 2 || !res.Batch[0].Created {
		t.Fatalf("commit: %v %+v", err, res)
	}
	refs("committed", 1)
	if v, ok, err := n.Meta.TenantGet("staged", "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("the batch's own command: %q %v %v", v, ok, err)
	}

	// Known content: a second staged put adds a reference.
	if sp, err = n.Cluster.StagePut(ctx, data); err != nil {
		t.Fatal(err)
	}
	if res, err = sp.Commit(ctx); err != nil || res.Batch[0].Created {
		t.Fatalf("known content: %v %+v", err, res)
	}
	refs("known content", 2)

	// Down to a tombstone and back: revived, and readable.
	for range 2 {
		if err := n.Cluster.Delete(ctx, sp.ID()); err != nil {
			t.Fatal(err)
		}
	}
	refs("deleted", 0)
	if sp, err = n.Cluster.StagePut(ctx, data); err != nil {
		t.Fatal(err)
	}
	if res, err = sp.Commit(ctx); err != nil || !res.Batch[0].Revived {
		t.Fatalf("revive: %v %+v", err, res)
	}
	refs("revived", 1)
	got, err := c.Nodes[1].Cluster.Get(ctx, sp.ID())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("revived object reads %d bytes, %v", len(got), err)
	}
}
