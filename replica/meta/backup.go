package meta

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"hastore/storage"
)

// Online backup and restore (docs/operations.md, "Backup and restore").
//
// A backup's metadata is the FSM state read in one badger read transaction,
// written in the snapshot format (snapshot.go). Every raft batch commits in
// one badger transaction together with its applied index, so the read sees
// exactly the state at the index it reads from m/applied: a consistent cut,
// taken while Apply goes on, without a raft snapshot.
//
// A restore is Raft's user snapshot restore (raft.Restore) of a merged
// state on the leader: raft writes it as its latest snapshot, the leader's
// FSM loads it, and followers, finding a hole in the log, are sent it and
// load it too. The merge keeps what belongs to the cluster being restored
// into and takes the rest from the backup; see RestoreBackup.

// keepOnRestore holds the tenants that describe the cluster itself rather
// than its users' data (see KeepOnRestore).
var keepOnRestore sync.Map

// KeepOnRestore marks tenant as describing the cluster itself (its
// credentials, its nodes' store IDs, its ACME account): a restore keeps
// the target cluster's records of it and ignores the backup's. Packages
// owning such a tenant call it from init. Every other tenant is user data
// and comes from the backup — "hastore:"-named service data included
// (DKIM keys, Sieve scripts, the outbound queue): a prefix rule once left
// those behind on restore.
func KeepOnRestore(tenant string) { keepOnRestore.Store(tenant, true) }

// ErrNotEmpty: the cluster holds tenant data a restore would replace.
var ErrNotEmpty = errors.New("meta: cluster is not empty")

// WriteBackup writes the state as of one applied index to w in the
// snapshot format and returns that index and the number of records.
func (f *FSM) WriteBackup(w io.Writer) (index uint64, records int, err error) {
	h, err := f.acquire()
	if err != nil {
		return 0, 0, fmt.Errorf("meta: backup: %w", err)
	}
	defer f.release(h)
	txn := h.db.NewTransaction(false)
	defer txn.Discard()
	defer func() {
		if r := recover(); r != nil {
			err = f.damagedRead(r)
		}
	}()
	// As in a raft snapshot (writeSafe): badger's iterators end quietly at
	// a block that fails its checksum, which would make a short backup
	// that passes its own CRC.
	if verr := storage.VerifyTables(badger.DefaultOptions(h.dir).WithLogger(nil)); verr != nil && errors.Is(verr, storage.ErrCorrupt) {
		return 0, 0, f.damagedRead(verr)
	}
	v, ok, err := txnGet(txn, keyApplied)
	if err != nil {
		return 0, 0, fmt.Errorf("meta: backup: read applied index: %w", err)
	}
	if ok && len(v) == 8 {
		index = binary.BigEndian.Uint64(v)
	}
	s := &fsmSnapshot{f: f, h: h, txn: txn, applied: index}
	records, err = s.write(w)
	if err != nil && badgerDamage(err) {
		err = f.damagedRead(err)
	}
	if err != nil {
		return index, records, fmt.Errorf("meta: backup at index %d: %w", index, err)
	}
	// And after, as writeSafe does: damage met while reading.
	if verr := storage.VerifyTables(badger.DefaultOptions(h.dir).WithLogger(nil)); verr != nil && errors.Is(verr, storage.ErrCorrupt) {
		return 0, 0, f.damagedRead(verr)
	}
	return index, records, nil
}

// ReadSnapshot reads a stream in the snapshot format, calling fn for each
// record in stream order, and checks its trailer (record count, CRC-32C).
// fn must not keep key or value. A corrupt stream is an error, but fn has
// then already seen records before the damage: check first, then use.
func ReadSnapshot(r io.Reader, fn func(key, value []byte) error) (index uint64, records int, err error) {
	cr := &crcReader{r: bufio.NewReaderSize(r, 1<<20), h: crc32.New(castagnoli)}
	hdr := make([]byte, len(snapshotMagic)+8)
	if _, err := io.ReadFull(cr, hdr); err != nil {
		return 0, 0, fmt.Errorf("read snapshot header: %w", unexpectedEOF(err))
	}
	if !bytes.Equal(hdr[:len(snapshotMagic)], snapshotMagic) {
		return 0, 0, fmt.Errorf("not a hastore metadata snapshot (or an unknown format version %x)", hdr[:len(snapshotMagic)])
	}
	index = binary.BigEndian.Uint64(hdr[len(snapshotMagic):])
	for {
		kind, err := cr.ReadByte()
		if err != nil {
			return index, records, fmt.Errorf("read frame: %w", unexpectedEOF(err))
		}
		if kind == frameEnd {
			break
		}
		if kind != frameKV {
			return index, records, fmt.Errorf("frame kind %d unknown: snapshot corrupt", kind)
		}
		k, err := readFrameBytes(cr)
		if err != nil {
			return index, records, err
		}
		v, err := readFrameBytes(cr)
		if err != nil {
			return index, records, err
		}
		if err := fn(k, v); err != nil {
			return index, records, err
		}
		records++
	}
	count, err := binary.ReadUvarint(cr)
	if err != nil {
		return index, records, fmt.Errorf("read trailer: %w", unexpectedEOF(err))
	}
	want := cr.h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return index, records, fmt.Errorf("read checksum: %w", unexpectedEOF(err))
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return index, records, fmt.Errorf("checksum %08x, computed %08x: snapshot corrupt", got, want)
	}
	if count != uint64(records) {
		return index, records, fmt.Errorf("trailer counts %d records, read %d: snapshot corrupt", count, records)
	}
	return index, records, nil
}

// SnapshotObject decodes the record of a snapshot frame if it is an object
// record (ok false for other keys).
func SnapshotObject(key, value []byte) (o Object, ok bool, err error) {
	if !bytes.HasPrefix(key, []byte(prefixObject)) {
		return Object{}, false, nil
	}
	if len(key) != len(prefixObject)+len(storage.BlobID{}) {
		return Object{}, false, fmt.Errorf("object key %x of the wrong length: snapshot corrupt", key)
	}
	o, err = decodeObjectRecord(value)
	if err != nil {
		return Object{}, false, fmt.Errorf("object record %x: %w", key, err)
	}
	return o, true, nil
}

// snapshotTenant returns the tenant of a tenant key (ok false otherwise).
func snapshotTenant(key []byte) (tenant string, ok bool) {
	rest, ok := bytes.CutPrefix(key, []byte(prefixTenant))
	if !ok {
		return "", false
	}
	i := bytes.IndexByte(rest, '/')
	if i < 0 {
		return "", false
	}
	return string(rest[:i]), true
}

func internalTenant(t string) bool { _, ok := keepOnRestore.Load(t); return ok }

// RestoreStats says what RestoreBackup installed.
type RestoreStats struct {
	Index      uint64
	Objects    int64 // live object records
	TenantKeys int64 // tenant records taken from the backup
	Tombstoned int64 // objects of this cluster the backup does not reference
}

// CheckRestorable returns ErrNotEmpty if the state holds tenant data other
// than the cluster's own (KeepOnRestore).
func (f *FSM) CheckRestorable() error {
	var found string
	err := f.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixTenant)})
		defer it.Close()
		for it.Rewind(); it.Valid(); {
			t, ok := snapshotTenant(it.Item().Key())
			if !ok {
				it.Next()
				continue
			}
			if !internalTenant(t) {
				found = t
				return nil
			}
			// Past every key of this internal tenant: "t/<tenant>0"
			// sorts right after "t/<tenant>/...".
			it.Seek([]byte(prefixTenant + t + "0"))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("meta: check for tenant data: %w", err)
	}
	if found != "" {
		return fmt.Errorf("%w: it holds data of tenant %q (restore into a fresh cluster, or force to replace it)", ErrNotEmpty, found)
	}
	return nil
}

// restoreGap is how far above raft's last index the restored state's index
// is put. raft.Restore uses max(its last index, the given index)+1; the
// header of the stream (written before raft is called) must carry the same
// index, so the given one must stay above raft's last index while the
// stream is written. A fresh cluster appends a handful of entries a second.
const restoreGap = 1 << 16

// RestoreBackup replaces the state with the backup snapshot in the file
// backupPath (the snapshot format, from WriteBackup), through raft's user
// snapshot restore, so every node installs it. Only the leader can.
//
// What comes from where:
//   - tenant records: the backup's, except internal tenants
//     (KeepOnRestore), which stay this cluster's;
//   - membership (n/) and bookkeeping (m/, including request memory):
//     this cluster's;
//   - object records: this cluster's (its placement: the caller has put
//     every object of the backup again, content addressed, so the IDs are
//     the same), with the backup's reference count and creation time. An
//     object the backup does not reference becomes a tombstone, collected
//     after the grace period. An object of the backup missing here is an
//     error.
//
// Without force a cluster holding tenant data is refused (ErrNotEmpty).
// Writes to the cluster while the restore runs are lost: restore into a
// cluster nobody uses yet.
func (s *Store) RestoreBackup(ctx context.Context, backupPath, tmpDir string, force bool, now time.Time) (RestoreStats, error) {
	var st RestoreStats
	if !s.IsLeader() {
		return st, s.notLeader()
	}
	if !force {
		if err := s.fsm.CheckRestorable(); err != nil {
			return st, err
		}
	}
	type ref struct{ refs, created int64 }
	want := map[storage.BlobID]ref{}
	bf, err := os.Open(backupPath)
	if err != nil {
		return st, fmt.Errorf("meta: restore: %w", err)
	}
	defer bf.Close()
	if _, _, err := ReadSnapshot(bf, func(k, v []byte) error {
		o, ok, err := SnapshotObject(k, v)
		if err != nil || !ok || o.Refs <= 0 {
			return err
		}
		want[o.ID] = ref{o.Refs, o.Created}
		return nil
	}); err != nil {
		return st, fmt.Errorf("meta: restore: backup metadata: %w", err)
	}

	out, err := os.CreateTemp(tmpDir, "restore-*.snap")
	if err != nil {
		return st, fmt.Errorf("meta: restore: %w", err)
	}
	defer os.Remove(out.Name())
	defer out.Close()

	index := s.raft.LastIndex() + restoreGap
	st.Index = index
	bw := bufio.NewWriterSize(out, 1<<20)
	cw := &crcWriter{w: bw, h: crc32.New(castagnoli)}
	var n uint64
	put := func(k, v []byte) error {
		frame := binary.AppendUvarint([]byte{frameKV}, uint64(len(k)))
		frame = append(frame, k...)
		frame = binary.AppendUvarint(frame, uint64(len(v)))
		if _, err := cw.Write(frame); err != nil {
			return err
		}
		_, err := cw.Write(v)
		n++
		return err
	}
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], index)
	if _, err := cw.Write(append(append([]byte(nil), snapshotMagic...), hdr[:]...)); err != nil {
		return st, err
	}

	// This cluster's part, from one read transaction.
	var objects int64
	seen := 0
	err = s.fsm.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			switch {
			case bytes.Equal(k, keyApplied), bytes.Equal(k, keyObjectCount):
				continue
			case bytes.HasPrefix(k, []byte(prefixTenant)):
				if t, ok := snapshotTenant(k); !ok || !internalTenant(t) {
					continue
				}
			}
			v, err := itemValue(it.Item())
			if err != nil {
				return fmt.Errorf("read key %q: %w", k, err)
			}
			if bytes.HasPrefix(k, []byte(prefixObject)) {
				o, err := decodeObjectRecord(v)
				if err != nil {
					return fmt.Errorf("object record %x: %w", k, err)
				}
				if r, ok := want[o.ID]; ok && o.Refs > 0 {
					o.Refs, o.Created, o.Deleted = r.refs, r.created, 0
					seen++
				} else if o.Refs > 0 {
					o.Refs, o.Deleted = 0, now.UnixNano()
					st.Tombstoned++
				}
				if o.Refs > 0 {
					st.Objects++
				}
				v = encodeObjectRecord(&o)
				objects++
			}
			if err := put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("meta: restore: read this cluster's state: %w", err)
	}
	if seen != len(want) {
		missing := ""
		for id := range want {
			if o, ok, _ := s.fsm.Object(id); !ok || o.Refs <= 0 {
				missing = id.String()
				break
			}
		}
		return st, fmt.Errorf("meta: restore: %d of the backup's %d objects are not stored in this cluster (e.g. %s): put them first", len(want)-seen, len(want), missing)
	}
	if err := put(keyObjectCount, encodeCount(objects)); err != nil {
		return st, err
	}

	// The backup's tenants.
	if _, err := bf.Seek(0, io.SeekStart); err != nil {
		return st, err
	}
	if _, _, err := ReadSnapshot(bf, func(k, v []byte) error {
		t, ok := snapshotTenant(k)
		if !ok || internalTenant(t) {
			return nil
		}
		st.TenantKeys++
		return put(k, v)
	}); err != nil {
		return st, fmt.Errorf("meta: restore: backup metadata: %w", err)
	}
	if _, err := cw.Write(binary.AppendUvarint([]byte{frameEnd}, n)); err != nil {
		return st, err
	}
	if _, err := bw.Write(binary.BigEndian.AppendUint32(nil, cw.h.Sum32())); err != nil {
		return st, err
	}
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("meta: restore: write merged state: %w", err)
	}
	size, err := out.Seek(0, io.SeekCurrent)
	if err != nil {
		return st, err
	}
	// raft panics if the FSM fails to load what it was given: read it
	// back through the same parser first.
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return st, err
	}
	if _, _, err := ReadSnapshot(out, func(k, v []byte) error { return nil }); err != nil {
		return st, fmt.Errorf("meta: restore: merged state does not read back: %w", err)
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return st, err
	}
	if last := s.raft.LastIndex(); last >= index {
		return st, fmt.Errorf("meta: restore: raft log grew past the restore index %d (now %d) while it was prepared; is the cluster in use? try again", index, last)
	}
	timeout, err := ctxTimeout(ctx)
	if err != nil {
		return st, err
	}
	if timeout == 0 {
		timeout = time.Minute
	}
	if err := s.raft.Restore(&raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: index - 1, Size: size}, out, timeout); err != nil {
		return st, s.raftErr("restore backup", err)
	}
	s.log.Info("restored backup", "index", index, "objects", st.Objects, "tenant_keys", st.TenantKeys, "tombstoned", st.Tombstoned)
	return st, nil
}

// IsMonotonic makes the raft log a raft.MonotonicLogStore: after a user
// snapshot restore (RestoreBackup) on the leader and after installing a
// snapshot on a follower, raft then deletes every older entry instead of
// keeping some below a hole in the indexes. The log must stay contiguous:
// verifyLog refuses to open a log with a hole (the node would not start
// again after a restore).
func (s *logStore) IsMonotonic() bool { return true }

var _ raft.MonotonicLogStore = (*logStore)(nil)
