package meta

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"hastore/storage"
)

// Live rebuild of a damaged FSM. The FSM is derived from raft: when a read
// (or Apply) meets damaged badger files, the state is rebuilt from this
// node's raft snapshot and log into a generation of its own, beside the
// damaged one, which keeps answering (or failing) reads meanwhile; the new
// generation is then swapped in at the same applied index, so readers never
// see the state go back or go empty. Raft's apply waits while this runs.
// If the local snapshot and log cannot rebuild it, the state stays damaged
// (reads of the damaged parts fail) and the next start discards it, so raft
// rebuilds it then, from the leader if need be.

// guardedFSM is what raft drives: the FSM, with applies serialised against
// rebuilds, and an apply that panics on damaged files rebuilt and retried.
type guardedFSM struct {
	s  *Store
	mu *sync.Mutex
}

var _ raft.BatchingFSM = guardedFSM{}

func (g guardedFSM) Apply(l *raft.Log) any { return g.ApplyBatch([]*raft.Log{l})[0] }

func (g guardedFSM) ApplyBatch(logs []*raft.Log) []any {
	g.mu.Lock()
	defer g.mu.Unlock()
	out, r := g.tryApply(logs)
	if r == nil {
		return out
	}
	if !applyPanicIsDamage(r) {
		panic(r)
	}
	// Nothing of the batch was committed (ApplyBatch commits once, at its
	// end). Rebuild the state and apply the batch again; if it still fails
	// the cause is not the files, and fail-stop is right.
	g.s.fsm.damagedReadQuiet(r)
	if err := g.s.rebuildLocked(); err != nil {
		panic(fmt.Sprintf("%v (rebuilding the damaged FSM failed too: %v)", r, err))
	}
	return g.s.fsm.ApplyBatch(logs)
}

func (g guardedFSM) tryApply(logs []*raft.Log) (out []any, r any) {
	defer func() { r = recover() }()
	return g.s.fsm.ApplyBatch(logs), nil
}

func (g guardedFSM) Snapshot() (raft.FSMSnapshot, error) { return g.s.fsm.Snapshot() }

func (g guardedFSM) Restore(rc io.ReadCloser) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.s.fsm.Restore(rc)
}

// applyPanicIsDamage reports whether an Apply panic may come from damaged
// files: a badger read error, or a runtime error (badger indexing past a
// damaged block). A bug would panic again on the retry.
func applyPanicIsDamage(r any) bool {
	if _, ok := r.(runtime.Error); ok {
		return true
	}
	return badgerDamage(fmt.Errorf("%v", r))
}

// damagedReadQuiet marks the FSM damaged without asking for a rebuild (the
// caller is doing it).
func (f *FSM) damagedReadQuiet(cause any) {
	if !f.damaged.Swap(true) {
		f.log.Error("METADATA STATE DAMAGED: applying a raft entry failed on damaged files; rebuilding the state from raft", "err", fmt.Sprint(cause))
	}
}

// rebuildFSM is FSM.onDamage: it rebuilds the state from raft now.
func (s *Store) rebuildFSM(cause error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if !s.fsm.Damaged() {
		return // rebuilt meanwhile
	}
	if err := s.rebuildLocked(); err != nil && !errors.Is(err, ErrClosed) {
		s.log.Error("could not rebuild the damaged metadata state from this node's raft snapshot and log; reads of the damaged part fail until the node is restarted, which rebuilds it from the leader if need be",
			"cause", cause, "err", err)
	}
}

// rebuildLocked rebuilds the FSM at its current applied index; applyMu is
// held, so nothing is applied meanwhile.
func (s *Store) rebuildLocked() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rebuild panicked: %v", r)
		}
	}()
	f := s.fsm
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return ErrClosed
	}
	target := f.AppliedIndex()
	start := time.Now()
	tmpDir := f.dir + ".rebuild"
	if err := os.RemoveAll(tmpDir); err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)
	tmp, err := OpenFSM(tmpDir, FSMOptions{Logger: s.log, Badger: f.opts.Badger, CommandSets: f.opts.CommandSets})
	if err != nil {
		return err
	}
	tmpClosed := false
	defer func() {
		if !tmpClosed {
			tmp.Close()
		}
	}()
	metas, err := s.snaps.List()
	if err != nil {
		return fmt.Errorf("list raft snapshots: %w", err)
	}
	var from uint64
	if len(metas) > 0 && metas[0].Index <= target {
		_, rc, err := s.snaps.Open(metas[0].ID)
		if err != nil {
			return fmt.Errorf("open raft snapshot %s: %w", metas[0].ID, err)
		}
		if err := tmp.Restore(rc); err != nil {
			return err
		}
		from = metas[0].Index
	}
	first, err := s.wal.FirstIndex()
	if err != nil {
		return err
	}
	if target > from && first > from+1 {
		return fmt.Errorf("the raft log starts at %d, after the snapshot at %d", first, from)
	}
	batch := make([]*raft.Log, 0, 256)
	flush := func() {
		if len(batch) > 0 {
			tmp.ApplyBatch(batch)
			batch = batch[:0]
		}
	}
	for i := from + 1; i <= target; i++ {
		l := new(raft.Log)
		if err := s.wal.GetLog(i, l); err != nil {
			return fmt.Errorf("raft log entry %d: %w", i, err)
		}
		if batch = append(batch, l); len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	if got := tmp.AppliedIndex(); got != target && target != 0 {
		return fmt.Errorf("rebuilt state is at index %d, want %d", got, target)
	}
	tmpGen, _, _, err := readCurrent(tmpDir)
	if err != nil {
		return err
	}
	tmpClosed = true
	if err := tmp.Close(); err != nil {
		return err
	}

	// Adopt the rebuilt generation: the damaged one is moved aside (still
	// open for its readers) and the new one swapped in.
	f.mu.Lock()
	gen, old := f.gen+1, f.cur
	f.mu.Unlock()
	dst := filepath.Join(f.dir, genName(gen))
	if err := os.Rename(filepath.Join(tmpDir, genName(tmpGen)), dst); err != nil {
		return err
	}
	h, err := f.openGen(gen, false)
	if err != nil {
		return err
	}
	if err := writeCurrent(f.dir, gen); err != nil {
		f.closeHandle(h)
		return err
	}
	// Moved aside once closed (badger writes to it until then), when its
	// last reader is done.
	aside := fmt.Sprintf("%s.corrupt-%s", f.dir, time.Now().UTC().Format("20060102T150405Z"))
	f.mu.Lock()
	old.moveTo = aside
	f.mu.Unlock()
	if err := f.swap(h, gen); err != nil {
		f.closeHandle(h)
		return err
	}
	f.damaged.Store(false)
	s.log.Error("METADATA STATE REBUILT from this node's raft snapshot and log; the damaged state was moved aside (delete it when convenient)",
		"index", target, "snapshot", from, "took", time.Since(start).Round(time.Millisecond), "moved_to", aside)
	// Subscribers reload, as after a snapshot install.
	f.emit([]Event{{Index: target, Restored: true, Result: Result{Index: target, Status: StatusOK}}})
	return nil
}

// verifyLoop re-verifies the FSM's tables every interval until the FSM
// closes. Reads verify every block they touch, but a table's index (block
// offsets, bloom filter) is checked by badger only when the table is opened:
// damage to it while the node runs can make a key read as absent. This
// bounds how long that can go unnoticed; damage found triggers a rebuild.
func (s *Store) verifyLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.fsm.closedCh:
			return
		case <-t.C:
		}
		if err := s.verifyFSM(); err != nil {
			s.fsm.damagedRead(err)
		}
	}
}

// verifyFSM checks the current generation's tables against their checksums.
// A table that compaction removed meanwhile is no damage.
func (s *Store) verifyFSM() error {
	h, err := s.fsm.acquire()
	if err != nil {
		return nil
	}
	defer s.fsm.release(h)
	err = storage.VerifyTables(badger.DefaultOptions(h.dir).WithLogger(nil))
	if err != nil && errors.Is(err, storage.ErrCorrupt) && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
