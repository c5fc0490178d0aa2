package meta

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"hastore/storage"
)

// ErrDamaged means the metadata files on this node are damaged (a badger
// table or value log of the FSM failing its checksums). The FSM is derived
// from raft, so it is rebuilt from the raft snapshot and log; the call that
// met the damage fails and may be retried once that is done.
var ErrDamaged = errors.New("meta: metadata state on this node is damaged")

// openBadger opens an FSM generation. With verify, every table is first
// checked against its checksums on this goroutine: badger (v4.9.6) opens
// tables on goroutines of its own, where a damaged block panics the process
// (see storage.VerifyTables). A panic in badger.Open is an error too.
func openBadger(o badger.Options, verify bool) (db *badger.DB, err error) {
	if verify {
		if err := storage.VerifyTables(o); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: badger panicked opening %s: %v", ErrDamaged, o.Dir, r)
		}
	}()
	db, err = badger.Open(o)
	if err != nil && !strings.Contains(err.Error(), "Cannot acquire directory lock") {
		err = fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return db, err
}

// replaceDamaged moves the damaged generation gen out of the FSM directory
// (to fsm.corrupt-<time> next to it, for an operator to look at and delete)
// and opens an empty generation gen+1 in its place, for raft to fill.
func (f *FSM) replaceDamaged(gen int, cause error) (*dbHandle, error) {
	if !errors.Is(cause, ErrDamaged) {
		return nil, cause
	}
	src := filepath.Join(f.dir, genName(gen))
	aside := fmt.Sprintf("%s.corrupt-%s", f.dir, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(src, aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("meta: the FSM state in %s is damaged (%v) and could not be moved aside: %w", src, cause, err)
	}
	f.log.Error("METADATA STATE DAMAGED: moved it aside; starting empty, raft rebuilds it from the latest snapshot and the log (from the leader if this node's are not enough). Delete the moved directory when the node is healthy",
		"moved_to", aside, "err", cause)
	h, err := f.openGen(gen+1, true)
	if err != nil {
		return nil, err
	}
	if err := writeCurrent(f.dir, gen+1); err != nil {
		f.closeHandle(h)
		return nil, err
	}
	f.discarded = true
	return h, nil
}

// badgerDamage reports whether a badger read error is its files failing
// their checksums rather than a missing key, a closed store or an error of
// the caller's callback.
func badgerDamage(err error) bool {
	if errors.Is(err, ErrDamaged) {
		return false // already reported
	}
	msg := err.Error()
	return strings.Contains(msg, errSealBroken) || strings.Contains(msg, "checksum mismatch") || strings.Contains(msg, "CHECKSUM_MISMATCH") ||
		strings.Contains(msg, "failed to read from file") || strings.Contains(msg, "Invalid read")
}

// damagedRead reports damage met by a read (a recovered panic or a checksum
// error): the read fails with ErrDamaged, the state is never marked clean
// again (so a restart rebuilds it from raft), and the store, if it asked to
// be told, rebuilds it now.
func (f *FSM) damagedRead(cause any) error {
	err := fmt.Errorf("%w: reading the FSM in %s: %v", ErrDamaged, f.dir, cause)
	if !f.damaged.Swap(true) {
		f.log.Error("METADATA STATE DAMAGED: a read of the FSM failed on damaged files; it is rebuilt from raft (at the latest on restart)", "err", err)
		if f.onDamage != nil {
			go f.onDamage(err)
		}
	}
	return err
}

// Damaged reports whether a read found the FSM's files damaged since open.
func (f *FSM) Damaged() bool { return f.damaged.Load() }
