package replica_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"hastore/testing/cluster"
)

// ReadInto fills the caller's buffer from the shards covering the range —
// both when it crosses from one data shard to the next — with
// the same bytes as the object, a short count and io.EOF at its end, and
// still when a node is down and its span is rebuilt from the others.
func TestReadInto(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rng := rand.New(rand.NewPCG(7, 8))
	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	id, err := c.Nodes[0].Cluster.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(data))
	half := (size + 1) / 2 // 2+1: the first data shard holds [0, half)
	cases := []struct {
		name    string
		off, n  int64
		wantN   int64
		wantEOF bool
	}{
		{"start", 0, 4096, 4096, false},
		{"within the second shard", half + 100, 70000, 70000, false},
		{"across the shard boundary", half - 5000, 1 << 20, 1 << 20, false},
		{"whole", 0, size, size, false},
		{"past the end", size - 10, 100, 10, true},
		{"at the end", size, 10, 0, true},
	}
	check := func(node int) {
		t.Helper()
		for _, tc := range cases {
			p := make([]byte, tc.n)
			n, err := c.Nodes[node].Cluster.ReadInto(ctx, id, tc.off, p)
			if tc.wantEOF && !errors.Is(err, io.EOF) || !tc.wantEOF && err != nil {
				t.Fatalf("%s on %s: %d, %v", tc.name, c.IDs[node], n, err)
			}
			if int64(n) != tc.wantN || !bytes.Equal(p[:n], data[tc.off:tc.off+int64(n)]) {
				t.Fatalf("%s on %s: %d bytes, equal %v; want %d", tc.name, c.IDs[node], n, bytes.Equal(p[:n], data[tc.off:tc.off+int64(n)]), tc.wantN)
			}
		}
	}
	for i := range c.Nodes {
		check(i)
	}
	if _, err := c.Nodes[1].Cluster.ReadInto(ctx, id, size+1, make([]byte, 1)); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read past the end: %v, want an invalid-range error", err)
	}
	c.Stop(2)
	check(0)
	check(1)
}
