package meta

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// breakValue changes one byte of the value stored under key and keeps its
// seal, as bytes changed after badger checked their block would look.
func breakValue(t *testing.T, f *FSM, key []byte) {
	t.Helper()
	h, err := f.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer f.release(h)
	err = h.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		v[0] ^= 0x20
		return txn.Set(key, v)
	})
	if err != nil {
		t.Fatalf("break value of %q: %v", key, err)
	}
}

// A record whose bytes changed fails every read path with ErrDamaged and
// marks the state damaged; it is never answered.
func TestSealedRecordDamaged(t *testing.T) {
	obj := testObject("a")
	cases := []struct {
		name string
		key  []byte
		read func(f *FSM) (answer string, err error)
	}{
		{"TenantGet", tenantKey("t", "k"), func(f *FSM) (string, error) {
			v, _, err := f.TenantGet("t", "k")
			return string(v), err
		}},
		{"TenantScan", tenantKey("t", "k"), func(f *FSM) (string, error) {
			var got []string
			err := f.TenantScan("t", "", func(k string, v []byte) error {
				got = append(got, k+"="+string(v))
				return nil
			})
			return strings.Join(got, ","), err
		}},
		{"Object", objectKey(obj.ID), func(f *FSM) (string, error) {
			o, _, err := f.Object(obj.ID)
			return strings.Join(o.Placement, ","), err
		}},
		{"WalkObjects", objectKey(obj.ID), func(f *FSM) (string, error) {
			var got []string
			err := f.WalkObjects(func(o Object) error {
				got = append(got, o.Placement...)
				return nil
			})
			return strings.Join(got, ","), err
		}},
		{"Nodes", nodeKey("n1"), func(f *FSM) (string, error) {
			ns, err := f.Nodes()
			if len(ns) == 0 {
				return "", err
			}
			return ns[0].Address, err
		}},
		{"applied index at open", keyApplied, func(f *FSM) (string, error) {
			_, err := readApplied(f.cur.db)
			return "", err
		}},
		{"raft snapshot", tenantKey("t", "k"), func(f *FSM) (string, error) {
			s, err := f.Snapshot()
			if err != nil {
				return "", err
			}
			defer s.Release()
			_, err = s.(*fsmSnapshot).writeSafe(io.Discard)
			return "", err
		}},
		{"backup", tenantKey("t", "k"), func(f *FSM) (string, error) {
			_, _, err := f.WriteBackup(io.Discard)
			return "", err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := openTestFSM(t, t.TempDir(), nil)
			defer f.Close()
			applyAll(t, f, 1,
				TenantPut{Tenant: "t", Key: "k", Value: []byte("value")},
				PutObject{Object: obj, Now: 1},
				NodeSet{ID: "n1", Address: "addr", State: NodeActive},
			)
			if ans, err := c.read(f); err != nil {
				t.Fatalf("before the damage: %q %v", ans, err)
			}
			breakValue(t, f, c.key)
			ans, err := c.read(f)
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("read of a changed record answered %q, err %v; want ErrDamaged", ans, err)
			}
			if c.name != "applied index at open" && !f.Damaged() {
				t.Fatal("state not marked damaged")
			}
		})
	}
}

// Applying a command that reads a changed record panics with a message the
// apply guard takes for damage (and rebuilds), not for a bug.
func TestSealedRecordDamagedDuringApply(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	applyAll(t, f, 1, PutObject{Object: testObject("a"), Now: 1})
	breakValue(t, f, objectKey(testObject("a").ID))
	defer func() {
		r := recover()
		if r == nil || !applyPanicIsDamage(r) {
			t.Fatalf("apply over a changed record: panic %v, want one taken for damage", r)
		}
	}()
	applyAll(t, f, 2, DecRef{ID: testObject("a").ID, Now: 2})
}

// A changed record met by a read on a running node: the read fails, the
// node rebuilds the state from raft, and then answers right.
func TestSealedRecordRebuilt(t *testing.T) {
	c := newTestCluster(t, snapshotTune)
	n := c.start("n1", c.servers("n1"))
	c.leader()
	putTenantKeys(t, n.store, 0, 50)
	waitSnapshot(t, n.store)
	putTenantKeys(t, n.store, 50, 60)
	breakValue(t, n.store.fsm, tenantKey("t", "k0055"))
	if v, _, err := n.store.TenantGet("t", "k0055"); !errors.Is(err, ErrDamaged) {
		t.Fatalf("read of a changed record: %q %v, want ErrDamaged", v, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for n.store.fsm.Damaged() {
		if time.Now().After(deadline) {
			t.Fatal("state not rebuilt")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, k := range []string{"k0005", "k0055"} {
		want := "value " + strings.TrimLeft(k[1:], "0")
		if v, ok, err := n.store.TenantGet("t", k); err != nil || !ok || string(v) != want {
			t.Fatalf("after the rebuild, %s: %q %v %v, want %q", k, v, ok, err, want)
		}
	}
}

// A generation written before values were sealed is discarded at open and
// rebuilt by raft, like one not closed cleanly, instead of failing every
// read (or serving values with a seal attached to an older release).
func TestUnsealedGenerationDiscarded(t *testing.T) {
	dir := t.TempDir()
	f := openTestFSM(t, dir, nil)
	applyAll(t, f, 1, PutObject{Object: testObject("a"), Now: 1})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it look like an earlier release's generation.
	if err := os.Rename(filepath.Join(dir, genName(1)), filepath.Join(dir, "gen-000001")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, currentFile), []byte("gen-000001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f = openTestFSM(t, dir, nil)
	defer f.Close()
	if !f.Discarded() || f.AppliedIndex() != 0 {
		t.Fatalf("unsealed generation: Discarded=%v AppliedIndex=%d, want true, 0", f.Discarded(), f.AppliedIndex())
	}
	if g := genDirs(t, dir); len(g) != 1 || filepath.Base(g[0]) != genName(2) {
		t.Fatalf("generation dirs %v, want only %s", g, genName(2))
	}
}

// Tables damaged after a snapshot checked them but before it read them: the
// read ends quietly at the first bad block (badger), so the stream would be
// short yet pass its CRC, and a rebuild would restore it. It must fail.
func TestSnapshotOfTablesDamagedWhileRead(t *testing.T) {
	dir := t.TempDir()
	opts := FSMOptions{Logger: testLogger(t), Badger: func(o badger.Options) badger.Options {
		return smallBadger(o).WithBlockCacheSize(0).WithCompression(options.None)
	}}
	f, err := OpenFSM(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []Command
	for i := range 300 {
		cmds = append(cmds, TenantPut{Tenant: "t", Key: fmt.Sprintf("k%04d", i), Value: []byte(fmt.Sprint("value ", i))})
	}
	applyAll(t, f, 1, cmds...)
	if err := f.Close(); err != nil { // the memtable becomes a table
		t.Fatal(err)
	}
	if f, err = OpenFSM(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	testHookSnapshotVerified = func(gen string) {
		tables, _ := filepath.Glob(filepath.Join(gen, "*.sst"))
		if len(tables) == 0 {
			t.Error("no tables to damage")
		}
		for _, name := range tables {
			fh, err := os.OpenFile(name, os.O_RDWR, 0)
			if err != nil {
				t.Error(err)
				return
			}
			// Early in the file: the first data block.
			fh.WriteAt([]byte{0xff, 0x00, 0xff}, 40)
			fh.Close()
		}
	}
	defer func() { testHookSnapshotVerified = nil }()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	n, err := s.(*fsmSnapshot).writeSafe(io.Discard)
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("snapshot of tables damaged while read: %d records, err %v; want ErrDamaged", n, err)
	}
}
