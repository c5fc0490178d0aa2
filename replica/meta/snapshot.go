package meta

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"hastore/storage"
)

// Snapshot stream format (all of it streamed, never held in memory):
//
//	magic "HSMETA\x00\x01" | applied index (8 bytes big-endian)
//	frames: 0x01 | uvarint key length | key | uvarint value length | value
//	end:    0x00 | uvarint frame count | CRC-32C of every byte before it (4 bytes BE)
//
// The applied index travels in the header, not as a frame, so a restore
// writes it last, after the data it describes.
var snapshotMagic = []byte("HSMETA\x00\x01")

const (
	frameKV  = 1
	frameEnd = 0
	// maxFrameLen bounds a key or value read from a snapshot, so a corrupt
	// length cannot make Restore allocate gigabytes.
	maxFrameLen = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot captures the state at the current applied index: a badger read
// transaction, which costs nothing until Persist reads it. Raft calls it on
// the FSM goroutine, so no entry is applied halfway through.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	h, err := f.acquire()
	if err != nil {
		return nil, fmt.Errorf("meta: snapshot: %w", err)
	}
	return &fsmSnapshot{f: f, h: h, txn: h.db.NewTransaction(false), applied: f.applied.Load()}, nil
}

type fsmSnapshot struct {
	f       *FSM
	h       *dbHandle
	txn     *badger.Txn
	applied uint64
	once    sync.Once
}

// Persist streams the captured state to sink. It runs concurrently with
// Apply, which the read transaction does not see.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	n, err := s.writeSafe(sink)
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("meta: persist snapshot at index %d: %w", s.applied, err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("meta: close snapshot at index %d: %w", s.applied, err)
	}
	s.f.log.Debug("snapshot persisted", "index", s.applied, "records", n)
	return nil
}

func (s *fsmSnapshot) write(w io.Writer) (int, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &crcWriter{w: bw, h: crc32.New(castagnoli)}
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], s.applied)
	if _, err := cw.Write(append(append([]byte(nil), snapshotMagic...), hdr[:]...)); err != nil {
		return 0, err
	}
	it := s.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	var (
		n   int
		buf []byte
	)
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if bytes.Equal(k, keyApplied) {
			continue
		}
		stored, err := item.ValueCopy(buf[:0])
		if err != nil {
			return n, fmt.Errorf("read key %q: %w", k, err)
		}
		buf = stored
		v, err := unseal(k, stored)
		if err != nil {
			return n, err
		}
		frame := binary.AppendUvarint([]byte{frameKV}, uint64(len(k)))
		if _, err := cw.Write(frame); err != nil {
			return n, err
		}
		if _, err := cw.Write(k); err != nil {
			return n, err
		}
		if _, err := cw.Write(binary.AppendUvarint(nil, uint64(len(v)))); err != nil {
			return n, err
		}
		if _, err := cw.Write(v); err != nil {
			return n, err
		}
		n++
	}
	if _, err := cw.Write(binary.AppendUvarint([]byte{frameEnd}, uint64(n))); err != nil {
		return n, err
	}
	if _, err := bw.Write(binary.BigEndian.AppendUint32(nil, cw.h.Sum32())); err != nil {
		return n, err
	}
	return n, bw.Flush()
}

// Release ends the read transaction; raft calls it whether or not Persist
// ran.
func (s *fsmSnapshot) Release() {
	s.once.Do(func() {
		s.txn.Discard()
		s.f.release(s.h)
	})
}

type crcWriter struct {
	w io.Writer
	h hash.Hash32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	c.h.Write(p)
	return c.w.Write(p)
}

type crcReader struct {
	r *bufio.Reader
	h hash.Hash32
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.h.Write([]byte{b})
	}
	return b, err
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	return n, err
}

// Restore replaces the state with the snapshot in rc.
//
// If the FSM has already applied the snapshot's index (the usual case when
// raft restores its latest snapshot on a clean restart), the local state is
// kept: it already contains everything the snapshot does, and raft will
// re-deliver only entries after the snapshot, which ApplyBatch skips up to
// its own index. Otherwise the snapshot is loaded into a new badger
// generation that replaces the current one only when complete, so a failed
// or interrupted restore leaves the previous state in place.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	cr := &crcReader{r: bufio.NewReaderSize(rc, 1<<20), h: crc32.New(castagnoli)}
	hdr := make([]byte, len(snapshotMagic)+8)
	if _, err := io.ReadFull(cr, hdr); err != nil {
		return fmt.Errorf("meta: restore: read snapshot header: %w", err)
	}
	if !bytes.Equal(hdr[:len(snapshotMagic)], snapshotMagic) {
		return fmt.Errorf("meta: restore: not a metadata snapshot (or an unknown format version %x); upgrade this node", hdr[:len(snapshotMagic)])
	}
	index := binary.BigEndian.Uint64(hdr[len(snapshotMagic):])
	if a := f.applied.Load(); index <= a {
		f.log.Info("snapshot already covered by local FSM state; keeping it", "snapshot_index", index, "applied", a)
		return nil
	}

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return fmt.Errorf("meta: restore: %w", ErrClosed)
	}
	gen := f.gen + 1
	f.mu.Unlock()
	h, err := f.openGen(gen, true)
	if err != nil {
		return fmt.Errorf("meta: restore: %w", err)
	}
	h.remove = true // until it is installed
	n, err := loadSnapshot(cr, h.db, index)
	if err == nil {
		err = writeCurrent(f.dir, gen)
	}
	if err == nil {
		h.remove = false
		err = f.swap(h, gen)
	}
	if err != nil {
		// If CURRENT already names gen, the next open finds it gone, and
		// without a clean marker it starts empty and raft rebuilds it.
		h.remove = true
		f.closeHandle(h)
		return fmt.Errorf("meta: restore snapshot at index %d (after %d records): %w", index, n, err)
	}
	f.setApplied(index)
	f.log.Info("restored FSM from snapshot", "index", index, "records", n)
	f.emit([]Event{{Index: index, Restored: true, Result: Result{Index: index, Status: StatusOK}}})
	return nil
}

func loadSnapshot(cr *crcReader, db *badger.DB, index uint64) (int, error) {
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	for {
		kind, err := cr.ReadByte()
		if err != nil {
			return n, fmt.Errorf("read frame: %w", unexpectedEOF(err))
		}
		if kind == frameEnd {
			break
		}
		if kind != frameKV {
			return n, fmt.Errorf("frame kind %d unknown: snapshot corrupt", kind)
		}
		k, err := readFrameBytes(cr)
		if err != nil {
			return n, err
		}
		v, err := readFrameBytes(cr)
		if err != nil {
			return n, err
		}
		if bytes.Equal(k, keyApplied) {
			return n, fmt.Errorf("snapshot carries the applied-index key as data: corrupt")
		}
		if err := wb.Set(k, seal(k, v)); err != nil {
			return n, fmt.Errorf("load key %q: %w", k, err)
		}
		n++
	}
	count, err := binary.ReadUvarint(cr)
	if err != nil {
		return n, fmt.Errorf("read trailer: %w", unexpectedEOF(err))
	}
	want := cr.h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return n, fmt.Errorf("read checksum: %w", unexpectedEOF(err))
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return n, fmt.Errorf("checksum %08x, computed %08x: snapshot corrupt", got, want)
	}
	if count != uint64(n) {
		return n, fmt.Errorf("trailer counts %d records, read %d: snapshot corrupt", count, n)
	}
	// Written last: the index claims the data above it.
	if err := wb.Set(keyApplied, seal(keyApplied, appliedValue(index))); err != nil {
		return n, err
	}
	if err := wb.Flush(); err != nil {
		return n, fmt.Errorf("write loaded state: %w", err)
	}
	return n, nil
}

func readFrameBytes(cr *crcReader) ([]byte, error) {
	l, err := binary.ReadUvarint(cr)
	if err != nil {
		return nil, fmt.Errorf("read frame length: %w", unexpectedEOF(err))
	}
	if l > maxFrameLen {
		return nil, fmt.Errorf("frame length %d exceeds %d: snapshot corrupt", l, maxFrameLen)
	}
	p := make([]byte, l)
	if _, err := io.ReadFull(cr, p); err != nil {
		return nil, fmt.Errorf("read frame: %w", unexpectedEOF(err))
	}
	return p, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// testHookSnapshotVerified, if set (by tests only), runs in writeSafe
// between the check of the tables and the read of the state, with the
// generation's directory.
var testHookSnapshotVerified func(dir string)

// writeSafe is write, with a panic of badger reading damaged files turned
// into an error: raft persists snapshots on a goroutine of its own, where a
// panic would end the process. The snapshot is cancelled and the FSM rebuilt
// (see damagedRead).
func (s *fsmSnapshot) writeSafe(w io.Writer) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, s.f.damagedRead(r)
		}
	}()
	// Badger's iterators end quietly at a block that fails its checksum:
	// a snapshot of damaged tables would be short, pass its CRC, and be
	// restored here and sent to followers. The tables are checked first.
	if verr := storage.VerifyTables(badger.DefaultOptions(s.h.dir).WithLogger(nil)); verr != nil && errors.Is(verr, storage.ErrCorrupt) {
		return 0, s.f.damagedRead(verr)
	}
	if testHookSnapshotVerified != nil {
		testHookSnapshotVerified(s.h.dir)
	}
	n, err = s.write(w)
	if err != nil && badgerDamage(err) {
		err = s.f.damagedRead(err)
	}
	if err != nil {
		return n, err
	}
	// And after: damage that appeared while the stream was read may have
	// cut it short, or (tables without compression are parsed in place in
	// the mmap'd file) changed records after badger checked their block.
	if verr := storage.VerifyTables(badger.DefaultOptions(s.h.dir).WithLogger(nil)); verr != nil && errors.Is(verr, storage.ErrCorrupt) {
		return 0, s.f.damagedRead(verr)
	}
	return n, nil
}
