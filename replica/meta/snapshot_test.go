package meta

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"hastore/storage"
)

// fillState writes n objects (with refcounts, placements, tombstones) and
// tenant values of valueSize bytes, grouped in Batches as a proposer would.
func fillState(t testing.TB, f *FSM, first uint64, n, valueSize int) uint64 {
	t.Helper()
	idx := first
	val := make([]byte, valueSize)
	var logs []*raft.Log
	for i := 0; i < n; i += 100 {
		var cmds []Command
		for j := i; j < min(i+100, n); j++ {
			o := testObject(fmt.Sprintf("obj-%d", j))
			o.Placement = []string{fmt.Sprintf("node-%d", j%6), fmt.Sprintf("node-%d", (j+1)%6), fmt.Sprintf("node-%d", (j+2)%6)}
			cmds = append(cmds, PutObject{Object: o, Now: int64(j + 1)})
			if j%4 == 0 {
				cmds = append(cmds, DecRef{ID: o.ID, Now: int64(j + 2)})
			}
			val[0], val[1] = byte(j), byte(j>>8)
			cmds = append(cmds, TenantPut{Tenant: fmt.Sprintf("tenant-%d", j%7), Key: fmt.Sprintf("mbox/%08d", j), Value: append([]byte(nil), val...)})
		}
		logs = append(logs, entry(idx, mustEncode(t, Batch{Cmds: cmds})))
		idx++
		if len(logs) == 32 {
			checkOK(t, f.ApplyBatch(logs))
			logs = logs[:0]
		}
	}
	checkOK(t, f.ApplyBatch(append(logs, entry(idx, mustEncode(t, NodeSet{ID: "node-1", Address: "a:1", State: NodeActive})))))
	return idx
}

func checkOK(t testing.TB, out []any) {
	t.Helper()
	for _, r := range results(out) {
		if r.Status != StatusOK {
			t.Fatalf("entry %d: %v: %s", r.Index, r.Status, r.Message)
		}
		for _, s := range r.Batch {
			if s.Status != StatusOK {
				t.Fatalf("entry %d batch command: %v: %s", r.Index, s.Status, s.Message)
			}
		}
	}
}

// TestSnapshotRestoreLarge streams a multi-megabyte state out and into a
// fresh FSM and compares every record, bookkeeping included.
func TestSnapshotRestoreLarge(t *testing.T) {
	src := openTestFSM(t, t.TempDir(), nil)
	defer src.Close()
	last := fillState(t, src, 1, 10000, 600)

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Apply continues while the snapshot is persisted; the snapshot must not
	// see it.
	checkOK(t, src.ApplyBatch([]*raft.Log{entry(last+1, mustEncode(t, TenantPut{Tenant: "late", Key: "k"}))}))
	path := filepath.Join(t.TempDir(), "snap")
	size := persistToFile(t, snap, path)
	snap.Release()
	if size < 4<<20 {
		t.Fatalf("snapshot is %d bytes; the test wants a state of several MB", size)
	}
	t.Logf("snapshot of %d objects: %.1f MB", 10000, float64(size)/(1<<20))

	dstDir := t.TempDir()
	dst := openTestFSM(t, dstDir, nil)
	// Leftover state in the target must vanish.
	applyAll(t, dst, 1, TenantPut{Tenant: "stale", Key: "k"})
	var restored []Event
	dst.opts.OnApply = func(ev Event) { restored = append(restored, ev) }
	if err := restoreFromFile(dst, path); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if dst.AppliedIndex() != last {
		t.Fatalf("AppliedIndex after restore = %d, want %d", dst.AppliedIndex(), last)
	}
	if len(restored) != 1 || !restored[0].Restored || restored[0].Index != last {
		t.Fatalf("restore events %+v", restored)
	}
	if _, ok, _ := dst.TenantGet("late", "k"); ok {
		t.Fatal("restored state includes an entry applied after the snapshot")
	}
	// Compare against the source as of the snapshot: drop the late entry.
	checkOK(t, dst.ApplyBatch([]*raft.Log{entry(last+1, mustEncode(t, TenantPut{Tenant: "late", Key: "k"}))}))
	equalDumps(t, "restored state", dump(t, src, true), dump(t, dst, true))
	if n, _ := dst.ObjectCount(); n != 10000 {
		t.Fatalf("ObjectCount = %d", n)
	}
	walked := 0
	var prev storage.BlobID
	if err := dst.WalkObjects(func(o Object) error {
		if walked > 0 && string(o.ID[:]) <= string(prev[:]) {
			return fmt.Errorf("walk out of order at %s", o.ID)
		}
		prev = o.ID
		walked++
		return nil
	}); err != nil || walked != 10000 {
		t.Fatalf("WalkObjects: %d, %v", walked, err)
	}
	if g := genDirs(t, dstDir); len(g) != 1 {
		t.Fatalf("generation dirs after restore: %v", g)
	}

	// The restored state survives a clean restart.
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst = openTestFSM(t, dstDir, nil)
	defer dst.Close()
	equalDumps(t, "restored state after reopen", dump(t, src, true), dump(t, dst, true))
}

// TestRestoreKeepsStateThatCoversSnapshot is the clean-restart path: raft
// restores its latest snapshot, which the FSM has already applied.
func TestRestoreKeepsStateThatCoversSnapshot(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	last := fillState(t, f, 1, 300, 10)
	snap, _ := f.Snapshot()
	path := filepath.Join(t.TempDir(), "snap")
	persistToFile(t, snap, path)
	snap.Release()
	applyAll(t, f, last+1, PutObject{Object: testObject("obj-1"), Now: 5})
	before := dump(t, f, true)
	if err := restoreFromFile(f, path); err != nil {
		t.Fatal(err)
	}
	if f.AppliedIndex() != last+1 {
		t.Fatalf("AppliedIndex = %d, want %d", f.AppliedIndex(), last+1)
	}
	equalDumps(t, "state after covered restore", before, dump(t, f, true))
}

func TestRestoreRejectsDamagedSnapshot(t *testing.T) {
	src := openTestFSM(t, t.TempDir(), nil)
	defer src.Close()
	fillState(t, src, 1, 200, 50)
	snap, _ := src.Snapshot()
	path := filepath.Join(t.TempDir(), "snap")
	persistToFile(t, snap, path)
	snap.Release()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	dst := openTestFSM(t, dir, nil)
	applyAll(t, dst, 1, TenantPut{Tenant: "keep", Key: "k", Value: []byte("v")})
	before := dump(t, dst, true)
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 1
	for name, b := range map[string][]byte{
		"truncated":   good[:len(good)-100],
		"no trailer":  good[:len(good)-4],
		"bit flip":    flipped,
		"bad magic":   append([]byte("XXXXXXXX"), good[8:]...),
		"header only": good[:16],
		"empty":       nil,
	} {
		if err := restoreFromBytes(dst, b); err == nil {
			t.Errorf("%s: Restore succeeded", name)
		}
		equalDumps(t, name+": state after failed restore", before, dump(t, dst, true))
		if g := genDirs(t, dir); len(g) != 1 {
			t.Errorf("%s: generation dirs %v", name, g)
		}
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst = openTestFSM(t, dir, nil)
	defer dst.Close()
	equalDumps(t, "state after reopen", before, dump(t, dst, true))
}

// TestRestoreWhileSnapshotPersists: a restore (snapshot installed from the
// leader) may replace the database while an older snapshot is still being
// written; neither may disturb the other.
func TestRestoreWhileSnapshotPersists(t *testing.T) {
	src := openTestFSM(t, t.TempDir(), nil)
	defer src.Close()
	fillState(t, src, 1, 500, 20)
	srcSnap, _ := src.Snapshot()
	newer := filepath.Join(t.TempDir(), "newer")
	persistToFile(t, srcSnap, newer)
	srcSnap.Release()

	dir := t.TempDir()
	f := openTestFSM(t, dir, nil)
	defer f.Close()
	applyAll(t, f, 1, TenantPut{Tenant: "old", Key: "k", Value: []byte("v")})
	oldDump := dump(t, f, true)
	pending, _ := f.Snapshot()
	if err := restoreFromFile(f, newer); err != nil {
		t.Fatal(err)
	}
	if g := genDirs(t, dir); len(g) != 2 {
		t.Fatalf("old generation should live while the snapshot holds it: %v", g)
	}
	old := filepath.Join(t.TempDir(), "old")
	persistToFile(t, pending, old)
	pending.Release()
	if g := genDirs(t, dir); len(g) != 1 {
		t.Fatalf("old generation not removed after release: %v", g)
	}
	equalDumps(t, "restored", dump(t, src, true), dump(t, f, true))
	check := openTestFSM(t, t.TempDir(), nil)
	defer check.Close()
	if err := restoreFromFile(check, old); err != nil {
		t.Fatal(err)
	}
	equalDumps(t, "snapshot taken before the restore", oldDump, dump(t, check, true))
}
