package cluster

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hastore/replica"
	"hastore/replica/meta"
	"hastore/storage"
)

// corruptFiles flips the first 16 bytes and 8 seeded random bytes of every
// file under dir matching one of globs, and returns how many files it hit.
func corruptFiles(t *testing.T, rng *rand.Rand, dir string, globs ...string) int {
	t.Helper()
	hit := 0
	for _, g := range globs {
		files, err := filepath.Glob(filepath.Join(dir, g))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range files {
			fi, err := os.Stat(name)
			if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
				continue
			}
			f, err := os.OpenFile(name, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			var offs []int64
			for i := range int64(16) {
				offs = append(offs, i%fi.Size())
			}
			for range 8 {
				offs = append(offs, rng.Int64N(fi.Size()))
			}
			for _, off := range offs {
				b := []byte{0}
				if _, err := f.ReadAt(b, off); err != nil {
					t.Fatal(err)
				}
				b[0] ^= byte(1 + rng.IntN(255))
				if _, err := f.WriteAt(b, off); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			rel, _ := filepath.Rel(dir, name)
			t.Logf("damaged %s (%d bytes) at %v", rel, fi.Size(), offs[16:])
			hit++
		}
	}
	return hit
}

// corruptCluster is a three-node cluster holding objects whose bytes the
// test knows.
type corruptCluster struct {
	*InProcess
	t    *testing.T
	objs map[storage.BlobID][]byte
}

// restart starts node i after its files were damaged. If the node refuses
// to start (a raft log it cannot trust), the error must say what to do, and
// the test does it: it moves the metadata aside and starts again.
func (c *corruptCluster) restart(i int) {
	c.t.Helper()
	n, err := replica.StartNode(c.cfgs[i])
	if err != nil {
		c.t.Logf("%s refused to start: %v", c.IDs[i], err)
		if !strings.Contains(err.Error(), "mv DATA/meta DATA/meta.corrupt") {
			c.t.Fatalf("%s refused to start without saying what to do: %v", c.IDs[i], err)
		}
		md := filepath.Join(c.DataDir(i), "meta")
		if err := os.Rename(md, md+".corrupt"+fmt.Sprint(time.Now().UnixNano())); err != nil {
			c.t.Fatal(err)
		}
		if n, err = replica.StartNode(c.cfgs[i]); err != nil {
			c.t.Fatalf("%s with its metadata moved aside: %v", c.IDs[i], err)
		}
	}
	c.Nodes[i] = n
}

// readAll reads every object through every running node: each read must
// return the bytes written (or fail; never other bytes).
func (c *corruptCluster) readAll(ctx context.Context, mustSucceed bool) error {
	for id, want := range c.objs {
		for _, i := range c.Running() {
			got, err := c.Nodes[i].Cluster.Get(ctx, id)
			if err != nil {
				if mustSucceed {
					return fmt.Errorf("get %s through %s: %w", id, c.IDs[i], err)
				}
				continue
			}
			if !bytes.Equal(got, want) {
				c.t.Fatalf("get %s through %s: WRONG BYTES served (%d bytes, want %d)", id, c.IDs[i], len(got), len(want))
			}
		}
	}
	return nil
}

// fullyReplicated checks that every object's record is on every node and
// each of its shards is intact on the node its placement names.
func (c *corruptCluster) fullyReplicated(ctx context.Context) error {
	idx := map[string]int{}
	for i, id := range c.IDs {
		idx[id] = i
	}
	for id := range c.objs {
		var o meta.Object
		for _, i := range c.Running() {
			got, ok, err := c.Nodes[i].Meta.Object(id)
			if err != nil || !ok {
				return fmt.Errorf("object %s on %s: found %v, %v", id, c.IDs[i], ok, err)
			}
			if o.ID.IsZero() {
				o = got
			} else if fmt.Sprint(o.Placement) != fmt.Sprint(got.Placement) {
				return fmt.Errorf("object %s: placement %v on one node, %v on %s", id, o.Placement, got.Placement, c.IDs[i])
			}
		}
		for s, node := range o.Placement {
			n := c.Nodes[idx[node]]
			if n == nil {
				return fmt.Errorf("object %s shard %d on stopped node %s", id, s, node)
			}
			if _, err := n.DB.Get(ctx, storage.ShardKey{Blob: id, Index: s}); err != nil {
				return fmt.Errorf("object %s shard %d on %s: %w", id, s, node, err)
			}
		}
	}
	for _, i := range c.Running() {
		if u := c.UnderReplicated(i); u != 0 {
			return fmt.Errorf("%s reports %d objects under-replicated", c.IDs[i], u)
		}
	}
	return nil
}

// TestInProcessCorruptDataDir damages every kind of file in a stopped node's
// data directory (issue #11): the badger tables, value logs, MANIFEST,
// DISCARD and KEYREGISTRY of the shard store and of the metadata FSM, the
// raft log and the raft snapshots. The node must start (or refuse with
// instructions), never panic, never serve a wrong byte, and end up with
// everything readable and fully replicated again. Then it damages a running
// node's tables and reads through it.
func TestInProcessCorruptDataDir(t *testing.T) {
	ic := StartInProcess(t, Options{Nodes: 3, Node: func(cfg *replica.NodeConfig) {
		cfg.Storage.MemTableSize = 1 << 20
		cfg.Storage.ValueLogFileSize = 4 << 20
		cfg.ScanEvery = 300 * time.Millisecond
		prev := cfg.Meta
		cfg.Meta = func(mc *meta.Config) {
			prev(mc)
			// Snapshots early, so that there are snapshot files to damage.
			mc.SnapshotThreshold = 16
			mc.SnapshotInterval = 100 * time.Millisecond
		}
	}})
	c := &corruptCluster{InProcess: ic, t: t, objs: map[storage.BlobID][]byte{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(11, 12))
	for i := range 30 {
		size := 3000 + rng.IntN(3000) // copies
		if i%2 == 0 {
			size = 80_000 + rng.IntN(40_000) // erasure-coded
		}
		data := randBytes(rng, size)
		id, err := c.Nodes[i%3].Cluster.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		c.objs[id] = data
	}
	Eventually(t, 10*time.Second, "raft snapshots taken", func() error {
		for i := range c.IDs {
			if s, _ := filepath.Glob(filepath.Join(c.DataDir(i), "meta", "snapshots", "*", "state.bin")); len(s) == 0 {
				return fmt.Errorf("%s has no snapshot", c.IDs[i])
			}
		}
		return nil
	})

	const fsm = "meta/fsm/gen-*/"
	rounds := []struct {
		name  string
		globs []string
	}{
		{"tables", []string{"shards/*.sst", fsm + "*.sst"}},
		{"value logs", []string{"shards/*.vlog", fsm + "*.vlog"}},
		{"MANIFEST", []string{"shards/MANIFEST", fsm + "MANIFEST"}},
		{"DISCARD and KEYREGISTRY", []string{"shards/DISCARD", "shards/KEYREGISTRY", fsm + "DISCARD", fsm + "KEYREGISTRY"}},
		{"raft log and snapshots", []string{"meta/raft/log.db", "meta/snapshots/*/state.bin", "meta/snapshots/*/meta.json"}},
	}
	for r, round := range rounds {
		v := r % 3
		t.Logf("round %d: damaging the %s of %s", r, round.name, c.IDs[v])
		c.Stop(v)
		if n := corruptFiles(t, rng, c.DataDir(v), round.globs...); n == 0 {
			t.Fatalf("round %d: no %s files in %s", r, round.name, c.DataDir(v))
		}
		c.restart(v)
		c.WaitHealthy(30 * time.Second)
		// Reads through every node, the damaged one included, are right
		// or fail; with two intact copies of everything they succeed.
		Eventually(t, 20*time.Second, "every object readable through every node", func() error {
			return c.readAll(ctx, true)
		})
		aside, _ := filepath.Glob(filepath.Join(c.DataDir(v), "shards.corrupt-*"))
		if len(aside) == 0 {
			// The store was kept: damaged records in it are found by
			// reads (above) and the scrub, as for any bit rot.
			if _, err := c.Nodes[v].Cluster.Scrub(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		// A store moved aside is rebuilt without any scrub (R1).
		Eventually(t, 30*time.Second, "everything fully replicated again", func() error {
			return c.fullyReplicated(ctx)
		})
	}

	// A wiped data directory (issue #11 R1): the node comes back empty, and
	// is counted under-replicated and rebuilt without waiting for a scrub.
	v := 2
	c.Stop(v)
	if err := os.RemoveAll(c.DataDir(v)); err != nil {
		t.Fatal(err)
	}
	c.restart(v)
	c.WaitHealthy(30 * time.Second)
	Eventually(t, 30*time.Second, "everything fully replicated after a wiped disk", func() error {
		return c.fullyReplicated(ctx)
	})

	// A running node's tables damaged under it: reads through it stay
	// right, it keeps serving, and a restart rebuilds it.
	v = 1
	corruptFiles(t, rng, c.DataDir(v), "shards/*.sst", fsm+"*.sst")
	if err := c.readAll(ctx, false); err != nil {
		t.Fatal(err)
	}
	for id := range c.objs {
		_, _, _ = c.Nodes[v].Meta.Object(id)
	}
	_ = c.Nodes[v].Meta.WalkObjects(func(meta.Object) error { return nil })
	_ = c.Nodes[v].Meta.TenantScan("hastore:stores", "", func(string, []byte) error { return nil })
	c.Stop(v)
	c.restart(v)
	c.WaitHealthy(30 * time.Second)
	Eventually(t, 20*time.Second, "every object readable after the restart", func() error {
		return c.readAll(ctx, true)
	})
	if aside, _ := filepath.Glob(filepath.Join(c.DataDir(v), "shards.corrupt-*")); len(aside) == 0 {
		if _, err := c.Nodes[v].Cluster.Scrub(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, 30*time.Second, "everything fully replicated after the restart", func() error {
		return c.fullyReplicated(ctx)
	})
}
