package storage

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Badger (v4.9.6) trusts its files: a damaged table block or value-log
// entry can make it index a slice out of range and panic. Checksum
// verification (see Open) turns most of that into errors, but not all: a
// block's entry offsets are parsed before its checksum is checked. So every
// call into badger that reads its files runs under guard, which turns a panic
// into ErrCorrupt for that one operation, and the node keeps serving.

// guard runs fn and turns a panic in it into ErrCorrupt, naming op and, when
// badger's message says so, the table and block that could not be read.
func (db *DB) guard(op string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = db.panicked(op, r)
		}
	}()
	return fn()
}

// panicked logs a recovered badger panic and returns it as ErrCorrupt.
func (db *DB) panicked(op string, r any) error {
	msg := fmt.Sprint(r)
	where := damagedFile(db.dir, msg)
	db.corruptions.Add(1)
	db.log.Error("shard store damaged: badger failed reading its files; the shards affected are reported corrupt and served and repaired from other nodes. Restart the node: Open verifies every table and rebuilds the store from the other nodes if it is damaged",
		"op", op, "file", where, "panic", msg, "stack", string(debug.Stack()))
	return fmt.Errorf("%w: %s in %s: badger failed reading %s: %s", ErrCorrupt, op, db.dir, where, msg)
}

var tableIDRe = regexp.MustCompile(`Table ID: (\d+)`)

// damagedFile names the file a badger panic or error message points to, if
// it does.
func damagedFile(dir, msg string) string {
	if m := tableIDRe.FindStringSubmatch(msg); m != nil {
		var id int
		fmt.Sscan(m[1], &id)
		return filepath.Join(dir, fmt.Sprintf("%06d.sst", id))
	}
	for _, f := range strings.Fields(msg) {
		f = strings.Trim(f, "\"',:;()")
		if ext := filepath.Ext(f); ext == ".sst" || ext == ".vlog" || ext == ".mem" || strings.Contains(f, "MANIFEST") || strings.Contains(f, "KEYREGISTRY") || strings.Contains(f, "DISCARD") {
			return f
		}
	}
	return "an unknown file"
}

// Corruptions returns how many reads since Open found badger's own files
// damaged (not counting shard records failing their checksums).
func (db *DB) Corruptions() int64 { return db.corruptions.Load() }

// openBadger verifies the tables in bo.Dir and opens badger, turning a panic
// into an error.
func openBadger(bo badger.Options) (bdb *badger.DB, err error) {
	if err := VerifyTables(bo); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			bdb, err = nil, fmt.Errorf("badger panicked opening the store: %v", r)
		}
	}()
	return badger.Open(bo)
}

// damaged reports whether a failure to open the store is the store's own
// files being unreadable, as opposed to the environment (a full disk, a
// permission, a second process), which moving the store aside would not fix
// and would turn into a needless rebuild.
func damaged(err error) bool {
	if err == nil || isNoSpace(err) || errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM) {
		return false
	}
	msg := err.Error()
	for _, s := range []string{"Cannot acquire directory lock", "permission denied", "read-only file system", "too many open files", "cannot allocate memory"} {
		if strings.Contains(msg, s) {
			return false
		}
	}
	return true
}

// moveAside renames a damaged store to <dir>.corrupt-<UTC time> so that Open
// can start an empty one in its place, and returns the new name.
func moveAside(dir string) (string, error) {
	aside := fmt.Sprintf("%s.corrupt-%s", dir, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(dir, aside); err != nil {
		return "", fmt.Errorf("move damaged store %s aside: %w", dir, err)
	}
	if err := syncPath(filepath.Dir(dir)); err != nil {
		return "", err
	}
	return aside, nil
}

// The store ID is a random identity written into the store when it is
// created. A node whose store ID changed (a wiped or replaced disk, or a
// store moved aside because it was damaged) has lost every shard it held;
// the cluster compares it with the ID it recorded to notice that at once
// instead of waiting for a scrub.
var keyStoreID = []byte("s:store-id")

// loadStoreID reads the store's ID, creating one if it has none. created is
// true when it was created now; a store created now that holds shards was
// written by a hastore from before store IDs.
func (db *DB) loadStoreID() (id string, created bool, err error) {
	err = db.guard("read store ID", func() error {
		return db.bdb.View(func(txn *badger.Txn) error {
			item, err := txn.Get(keyStoreID)
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			return item.Value(func(v []byte) error {
				id = string(v)
				return nil
			})
		})
	})
	if err != nil {
		return "", false, err
	}
	if len(id) == 32 {
		if _, herr := hex.DecodeString(id); herr == nil {
			return id, false, nil
		}
	}
	if id != "" {
		db.log.Warn("store ID unreadable; giving the store a new one (the cluster will check this node's shards)", "id", fmt.Sprintf("%q", id))
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, err
	}
	id = hex.EncodeToString(b[:])
	err = db.guard("write store ID", func() error {
		return db.bdb.Update(func(txn *badger.Txn) error { return txn.Set(keyStoreID, []byte(id)) })
	})
	if err == nil {
		err = db.bdb.Sync()
	}
	if err != nil {
		return "", false, fmt.Errorf("write store ID: %w", err)
	}
	return id, true, nil
}

// StoreID returns the store's random identity, fixed when it was created.
func (db *DB) StoreID() string { return db.storeID }

// Fresh reports whether Open created the store empty: a new or wiped data
// directory, or a damaged store moved aside. Any shard the cluster placed on
// this node before is then gone.
func (db *DB) Fresh() bool { return db.fresh }

// MovedAside returns where Open moved a damaged store, or "".
func (db *DB) MovedAside() string { return db.aside }

// verifyTablesLive re-checks the tables of the open store (hourly, with the
// orphan sweep). Reads verify every block they touch, but badger checks a
// table's index (block offsets, bloom filter) only when it opens the table,
// and its iterators end quietly at a bad block: damage that appears while
// the node runs could make shards read as absent and a walk or scrub come up
// short. The store cannot swap its files while open, so this reports; the
// restart it asks for rebuilds the store (see Open).
func (db *DB) verifyTablesLive() {
	if err := db.enter(); err != nil {
		return
	}
	defer db.leave()
	err := VerifyTables(badger.DefaultOptions(db.dir).WithLogger(nil))
	if err != nil && errors.Is(err, ErrCorrupt) {
		db.corruptions.Add(1)
		db.log.Error("SHARD STORE DAMAGED while running: a table fails its checksums; shards in it may read as missing (they are served and repaired from other nodes). Restart the node: Open moves the damaged store aside and the cluster rebuilds it",
			"err", err)
	}
}
