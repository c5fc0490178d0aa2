package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"hastore/replica/meta"
	"hastore/storage"
)

// fakeCluster is the smallest world a Cluster needs: in-memory metadata, a
// proposer that applies PutObject at once, and in-memory shard services of
// which some never answer a write (a partitioned or stuck node).
type fakeCluster struct {
	mu      sync.Mutex
	nodes   []meta.Node
	objects map[storage.BlobID]meta.Object
	shards  map[string]*fakeShards
}

// newTestCluster is node n1's Cluster (2+1) over a fake of n nodes, all
// probed up.
func newTestCluster(t *testing.T, n int) (*fakeCluster, *Health, *Cluster) {
	t.Helper()
	f := newFakeCluster(n)
	h := NewHealth("n1", f, f, nil)
	h.ProbeAll(context.Background())
	c, err := NewCluster("n1", f, f, f, h, Options{Scheme: storage.Scheme{K: 2, M: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return f, h, c
}

// putDeleted stores data and deletes it again: a tombstone in its grace
// period.
func putDeleted(t *testing.T, c *Cluster, data []byte) storage.BlobID {
	t.Helper()
	id, err := c.Put(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	return id
}

// removeShardNode marks a node holding one of id's shards (not n1)
// removed from the cluster, and returns the record and that node.
func removeShardNode(f *fakeCluster, id storage.BlobID) (meta.Object, string) {
	o, _, _ := f.Object(id)
	gone := o.Placement[1]
	if gone == "n1" {
		gone = o.Placement[0]
	}
	for i := range f.nodes {
		if f.nodes[i].ID == gone {
			f.nodes[i].State = meta.NodeRemoved
		}
	}
	return o, gone
}

func newFakeCluster(n int, hanging ...string) *fakeCluster {
	f := &fakeCluster{objects: map[storage.BlobID]meta.Object{}, shards: map[string]*fakeShards{}}
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		f.nodes = append(f.nodes, meta.Node{ID: id, Address: id, State: meta.NodeActive})
		f.shards[id] = &fakeShards{recs: map[storage.ShardKey][]byte{}, hang: slices.Contains(hanging, id)}
	}
	return f
}

func (f *fakeCluster) Object(id storage.BlobID) (meta.Object, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objects[id]
	return o, ok, nil
}

func (f *fakeCluster) WalkObjects(fn func(meta.Object) error) error {
	f.mu.Lock()
	objs := slices.Collect(maps.Values(f.objects))
	f.mu.Unlock()
	for _, o := range objs {
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}
func (f *fakeCluster) Nodes() ([]meta.Node, error)               { return f.nodes, nil }
func (f *fakeCluster) WaitApplied(context.Context, uint64) error { return nil }
func (f *fakeCluster) ReadIndex(context.Context) (uint64, error) { return 0, nil }

func (f *fakeCluster) Propose(ctx context.Context, cmd meta.Command) (meta.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ok := meta.Result{Status: meta.StatusOK}
	switch cmd := cmd.(type) {
	case meta.PutObject:
		if o, found := f.objects[cmd.Object.ID]; found {
			// Like the FSM: the stored placement wins; a tombstone revives.
			ok.Revived = o.Refs == 0
			o.Refs++
			o.Deleted = 0
			f.objects[o.ID] = o
			ok.Object = o
			return ok, nil
		}
		o := cmd.Object
		o.Refs = 1
		f.objects[o.ID] = o
		ok.Object, ok.Created = o, true
		return ok, nil
	case meta.DecRef:
		o := f.objects[cmd.ID]
		if o.Refs--; o.Refs == 0 {
			o.Deleted = cmd.Now
		}
		f.objects[o.ID] = o
		ok.Object = o
		return ok, nil
	case meta.SetPlacement:
		o := f.objects[cmd.ID]
		if o.Placement[cmd.Index] != cmd.Old {
			return meta.Result{Status: meta.StatusConflict}, meta.ErrConflict
		}
		o.Placement = slices.Clone(o.Placement)
		o.Placement[cmd.Index] = cmd.New
		f.objects[o.ID] = o
		ok.Object = o
		return ok, nil
	}
	return meta.Result{}, fmt.Errorf("fake proposer: %T not supported", cmd)
}

func (f *fakeCluster) Shards(node string) (ShardService, error) {
	s, ok := f.shards[node]
	if !ok {
		return nil, fmt.Errorf("no node %s", node)
	}
	return s, nil
}

type fakeShards struct {
	mu        sync.Mutex
	recs      map[storage.ShardKey][]byte
	hang      bool          // writes never answer until their context ends
	hangReads bool          // nor do reads
	delay     time.Duration // writes answer, but this late
	usageErr  error         // what a health probe gets
}

func (s *fakeShards) PutRecord(ctx context.Context, rec storage.Record) error {
	if s.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h, _, err := storage.ParseHeader(rec.Head)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[h.Key()] = rec.Bytes()
	return nil
}

func (s *fakeShards) GetShard(ctx context.Context, k storage.ShardKey) (*storage.Shard, error) {
	s.mu.Lock()
	if s.hangReads {
		s.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	b, ok := s.recs[k]
	s.mu.Unlock()
	if !ok {
		return nil, storage.ErrNotFound
	}
	return storage.ParseShard(b)
}

func (s *fakeShards) ReadShard(ctx context.Context, k storage.ShardKey, off, n int64) ([]byte, error) {
	sh, err := s.GetShard(ctx, k)
	if err != nil {
		return nil, err
	}
	return sh.Payload[off : off+n], nil
}

func (s *fakeShards) DeleteShard(context.Context, storage.ShardKey, time.Time) error { return nil }
func (s *fakeShards) ListShards(context.Context, func(storage.Header) error) error {
	return errors.ErrUnsupported
}
func (s *fakeShards) Usage(context.Context) (storage.Usage, error) {
	if s.usageErr != nil {
		return storage.Usage{}, s.usageErr
	}
	return storage.Usage{DiskFree: 1 << 40}, nil
}

// A node that accepts connections but never finishes a shard write must not
// hold writes for ShardTimeout: its shards go elsewhere after the
// straggler wait, the write is acknowledged with every shard placed, and
// the object reads back. ShardTimeout is an hour here, so without the
// straggler rule every case would hit the test's deadline instead.
func TestPutAroundHangingNode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nodes   int
		scheme  storage.Scheme
		hanging []string
		size    int
	}{
		{"2+1 on 4 nodes, one hangs", 4, storage.Scheme{K: 2, M: 1}, []string{"n2"}, 300 << 10},
		{"3+2 on 5 nodes, one hangs", 5, storage.Scheme{K: 3, M: 2}, []string{"n3"}, 1 << 20},
		{"3+2 on 5 nodes, two hang", 5, storage.Scheme{K: 3, M: 2}, []string{"n1", "n4"}, 1 << 20},
		{"small object as copies", 3, storage.Scheme{K: 2, M: 1}, []string{"n1"}, 1000},
		{"no node hangs", 3, storage.Scheme{K: 2, M: 1}, nil, 200 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCluster(tc.nodes, tc.hanging...)
			h := NewHealth("n1", f, f, nil)
			h.ProbeAll(context.Background())
			// A hanging node's writes are abandoned per object (a late
			// node is not marked down: the prober decides that), so every
			// put waits StragglerWait once; 200 ms keeps a loaded host's
			// scheduling delays from making a healthy node late too.
			c, err := NewCluster("n1", f, f, f, h, Options{Scheme: tc.scheme, ShardTimeout: time.Hour, StragglerWait: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for i := range 5 {
				data := make([]byte, tc.size)
				rng := rand.New(rand.NewPCG(uint64(i), 7))
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				id, err := c.Put(ctx, data)
				if err != nil {
					t.Fatalf("put %d: %v", i, err)
				}
				o, _, _ := f.Object(id)
				for idx, node := range o.Placement {
					if node == "" || slices.Contains(tc.hanging, node) {
						t.Fatalf("put %d: shard %d placed on %q (hanging: %v); placement %v", i, idx, node, tc.hanging, o.Placement)
					}
				}
				got, err := c.Get(ctx, id)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("put %d: read back: %v (equal %v)", i, err, bytes.Equal(got, data))
				}
			}
		})
	}
}

// A node that answers, only late (a loaded host), is slow, not gone: its
// late shards go elsewhere for that one object, but it stays in every
// other write's plan; and when leaving the late nodes out leaves no plan
// that survives one more loss, the write waits for them instead of
// failing. (Seen in a 9,000-client chaos run: two late answers took both
// surviving peers out of every plan and the cluster refused all writes.)
func TestPutBesideSlowNodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nodes  int
		scheme storage.Scheme
		slow   []string
	}{
		{"2+1 on 3 nodes, one slow", 3, storage.Scheme{K: 2, M: 1}, []string{"n2"}},
		{"2+1 on 3 nodes, both peers slow", 3, storage.Scheme{K: 2, M: 1}, []string{"n2", "n3"}},
		{"3+2 on 3 nodes (two lost), both peers slow", 3, storage.Scheme{K: 3, M: 2}, []string{"n2", "n3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCluster(tc.nodes)
			for _, n := range tc.slow {
				f.shards[n].delay = 150 * time.Millisecond
			}
			h := NewHealth("n1", f, f, nil)
			h.ProbeAll(context.Background())
			c, err := NewCluster("n1", f, f, f, h, Options{Scheme: tc.scheme, ShardTimeout: time.Hour, StragglerWait: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for i := range 4 {
				data := bytes.Repeat([]byte{byte(i), 7}, 100<<10)
				id, err := c.Put(ctx, data)
				if err != nil {
					t.Fatalf("put %d beside slow nodes %v: %v", i, tc.slow, err)
				}
				got, err := c.Get(ctx, id)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("put %d: read back: %v (equal %v)", i, err, bytes.Equal(got, data))
				}
				for _, n := range tc.slow {
					if !h.Up(n) {
						t.Fatalf("put %d: slow node %s counted down after a late answer", i, n)
					}
				}
			}
		})
	}
}

// Reads must not wait on a node that stops answering either: whole reads
// and ranged reads (which ask the one data shard covering the range first)
// both go around it, whether or not the health prober has noticed yet.
func TestReadAroundHangingNode(t *testing.T) {
	for _, probed := range []bool{false, true} {
		t.Run(fmt.Sprintf("prober noticed %v", probed), func(t *testing.T) {
			f := newFakeCluster(5)
			h := NewHealth("n1", f, f, nil)
			h.ProbeAll(context.Background())
			c, err := NewCluster("n1", f, f, f, h, Options{Scheme: storage.Scheme{K: 3, M: 2}, ShardTimeout: time.Hour, HedgeAfter: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			data := make([]byte, 3<<20)
			rng := rand.New(rand.NewPCG(1, 2))
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			id, err := c.Put(ctx, data)
			if err != nil {
				t.Fatal(err)
			}
			o, _, _ := f.Object(id)
			for shard := range o.K {
				node := o.Placement[shard]
				if node == "n1" {
					continue // this node's own shards do not hang
				}
				f.shards[node].mu.Lock()
				f.shards[node].hangReads = true
				f.shards[node].mu.Unlock()
				if probed {
					h.Suspect(node, errors.New("probe timed out"))
				}
				off := int64(shard)<<20 + 1000
				got, err := c.ReadAt(ctx, id, off, 5000)
				if err != nil || !bytes.Equal(got, data[off:off+5000]) {
					t.Fatalf("ReadAt in shard %d with %s hanging: %v (equal %v)", shard, node, err, bytes.Equal(got, data[off:off+5000]))
				}
				whole, err := c.Get(ctx, id)
				if err != nil || !bytes.Equal(whole, data) {
					t.Fatalf("Get with %s hanging: %v", node, err)
				}
				f.shards[node].mu.Lock()
				f.shards[node].hangReads = false
				f.shards[node].mu.Unlock()
				h.ProbeAll(ctx)
			}
		})
	}
}

// A deleted object (a tombstone in its grace period) with a shard on a
// node that has since been removed is not under-replicated: it is never
// read and will be purged. If it is put again before the purge, it comes
// back with its old placement, and the put makes it whole before it
// acknowledges.
func TestTombstoneOnRemovedNode(t *testing.T) {
	f, _, c := newTestCluster(t, 4)
	ctx := context.Background()
	data := bytes.Repeat([]byte("tombstone "), 20000)
	id := putDeleted(t, c, data)
	o, gone := removeShardNode(f, id)
	c.countUnderReplicated()
	if n := c.UnderReplicated(); n != 0 {
		t.Fatalf("a tombstone with a shard on removed %s counts as %d under-replicated", gone, n)
	}
	if _, err := c.Put(ctx, data); err != nil {
		t.Fatalf("reviving put: %v", err)
	}
	o, _, _ = f.Object(id)
	if o.Refs != 1 || slices.Contains(o.Placement, gone) {
		t.Fatalf("revived object: refs %d, placement %v still names removed %s", o.Refs, o.Placement, gone)
	}
	c.countUnderReplicated()
	if n := c.UnderReplicated(); n != 0 {
		t.Fatalf("after the revival %d objects are under-replicated", n)
	}
	got, err := c.Get(ctx, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
}
