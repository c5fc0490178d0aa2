package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// testOptions keeps badger's files small so that tests cross memtable and
// value-log file boundaries quickly, and logs to the test.
func dbTestOptions(t testing.TB) Options {
	return Options{
		MemTableSize:     1 << 20,
		ValueLogFileSize: 2 << 20,
		GCInterval:       -1,
		Logger:           slog.New(slog.NewTextHandler(slogTestWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

type slogTestWriter struct{ t testing.TB }

func (w slogTestWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func openTestDB(t testing.TB, dir string, opts Options) *DB {
	t.Helper()
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// testShard returns a shard whose every byte follows from its key, payload
// length and block size, so that a reader can check any stored shard without
// knowing who wrote it.
func dbShard(id BlobID, idx, n, blockSize int) *Shard {
	var seed [32]byte
	copy(seed[:], id[:])
	seed[31] ^= byte(idx)
	p := make([]byte, n)
	_, _ = rand.NewChaCha8(seed).Read(p)
	return &Shard{
		Header: Header{
			Blob: id, Index: idx, K: 1, M: 3, Layout: LayoutReplica,
			BlobLen: int64(n), PayloadLen: int64(n), BlockSize: blockSize,
			Written: time.Unix(1_700_000_000, int64(idx)),
		},
		Payload: p,
	}
}

// testID returns a blob ID derived from a test-local counter.
func dbID(tag string, i int) BlobID {
	return Sum(fmt.Appendf(nil, "%s/%d", tag, i))
}

func dbMarshal(t testing.TB, s *Shard) []byte {
	t.Helper()
	rec, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func sameDBShard(t testing.TB, got, want *Shard) {
	t.Helper()
	if got == nil {
		t.Fatalf("shard %v: got nil", want.Key())
	}
	if !bytes.Equal(dbMarshal(t, got), dbMarshal(t, want)) {
		t.Fatalf("shard %v: stored shard differs from the one put", want.Key())
	}
}

func TestDBPutGetStat(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()
	tests := []struct {
		name      string
		n         int
		blockSize int
	}{
		{"empty", 0, 4096},
		{"one byte", 1, 4096},
		{"block minus one", 4095, 4096},
		{"one block", 4096, 4096},
		{"block plus one", 4097, 4096},
		{"64KiB+3 in 16KiB blocks", 64<<10 + 3, 16 << 10},
		{"1MiB default blocks", 1 << 20, 0},
		{"small header inline", 16, 1 << 20}, // record shorter than the value threshold
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dbShard(dbID("putget", i), i%4, tt.n, tt.blockSize)
			if err := db.Put(ctx, s); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if tt.blockSize == 0 {
				s.BlockSize = DefaultBlockSize
			}
			got, err := db.Get(ctx, s.Key())
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			sameDBShard(t, got, s)
			rec, err := db.GetRecord(ctx, s.Key())
			if err != nil {
				t.Fatalf("GetRecord: %v", err)
			}
			if !bytes.Equal(rec, dbMarshal(t, s)) {
				t.Fatal("GetRecord differs from Marshal")
			}
			h, err := db.Stat(ctx, s.Key())
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			if h.Key() != s.Key() || h.PayloadLen != int64(tt.n) || h.BlockSize != s.BlockSize || !h.Written.Equal(s.Written) {
				t.Fatalf("Stat = %+v, want the header of %+v", h, s.Header)
			}
		})
	}
}

func TestDBReadAtAndSpan(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()
	const bs = 4096
	s := dbShard(dbID("readat", 0), 1, 5*bs+100, bs)
	if err := db.Put(ctx, s); err != nil {
		t.Fatal(err)
	}
	n := int64(len(s.Payload))
	tests := []struct {
		name   string
		off, n int64
		err    error
	}{
		{"empty at start", 0, 0, nil},
		{"first byte", 0, 1, nil},
		{"across a block boundary", bs - 1, 2, nil},
		{"exactly one block", bs, bs, nil},
		{"tail of last short block", n - 10, 10, nil},
		{"whole payload", 0, n, nil},
		{"empty at end", n, 0, nil},
		{"past the end", n - 1, 2, ErrInvalid},
		{"negative offset", -1, 1, ErrInvalid},
		{"negative length", 0, -1, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, h, err := db.ReadAt(ctx, s.Key(), tt.off, tt.n)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ReadAt err = %v, want %v", err, tt.err)
				}
				if _, _, _, err := db.ReadSpan(ctx, s.Key(), tt.off, tt.n); !errors.Is(err, tt.err) {
					t.Fatalf("ReadSpan err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadAt: %v", err)
			}
			if !bytes.Equal(got, s.Payload[tt.off:tt.off+tt.n]) || h.Key() != s.Key() {
				t.Fatalf("ReadAt(%d, %d) returned wrong bytes or header", tt.off, tt.n)
			}

			hdr, span, spanOff, err := db.ReadSpan(ctx, s.Key(), tt.off, tt.n)
			if err != nil {
				t.Fatalf("ReadSpan: %v", err)
			}
			// What a remote reader does with the answer.
			rh, _, err := ParseHeader(hdr)
			if err != nil {
				t.Fatalf("ParseHeader of span header: %v", err)
			}
			if err := VerifyPayload(&rh, hdr, spanOff, span); err != nil {
				t.Fatalf("VerifyPayload of span: %v", err)
			}
			if tt.n > 0 && (spanOff > tt.off || spanOff+int64(len(span)) < tt.off+tt.n) || spanOff%bs != 0 {
				t.Fatalf("span %d+%d does not cover %d+%d on a block boundary", spanOff, len(span), tt.off, tt.n)
			}
			if !bytes.Equal(span, s.Payload[spanOff:spanOff+int64(len(span))]) {
				t.Fatal("span bytes differ from the payload")
			}
		})
	}
}

func TestDBNotFound(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()
	k := ShardKey{Blob: dbID("missing", 0), Index: 2}
	ops := map[string]func() error{
		"Get":       func() error { _, err := db.Get(ctx, k); return err },
		"GetRecord": func() error { _, err := db.GetRecord(ctx, k); return err },
		"ReadAt":    func() error { _, _, err := db.ReadAt(ctx, k, 0, 1); return err },
		"ReadSpan":  func() error { _, _, _, err := db.ReadSpan(ctx, k, 0, 1); return err },
		"ReadInto":  func() error { _, err := db.ReadInto(ctx, k, 0, make([]byte, 1), nil); return err },
		"Stat":      func() error { _, err := db.Stat(ctx, k); return err },
	}
	for name, op := range ops {
		err := op()
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), k.String()) {
			t.Errorf("%s of a missing shard: %v, want ErrNotFound naming %v", name, err, k)
		}
	}
	if err := db.Delete(ctx, k); err != nil {
		t.Errorf("Delete of a missing shard: %v", err)
	}
}

func TestDBInvalid(t *testing.T) {
	opts := dbTestOptions(t)
	opts.ValueLogFileSize = 1 << 20
	db := openTestDB(t, t.TempDir(), opts)
	ctx := t.Context()
	big := dbShard(dbID("invalid", 0), 0, 1<<20, 0)
	tests := []struct {
		name string
		op   func() error
	}{
		{"nil shard", func() error { return db.Put(ctx, nil) }},
		{"inconsistent header", func() error {
			s := dbShard(dbID("invalid", 1), 0, 10, 4096)
			s.PayloadLen = 11
			return db.Put(ctx, s)
		}},
		{"record above ValueLogFileSize", func() error { return db.Put(ctx, big) }},
		{"zero blob ID", func() error { _, err := db.Get(ctx, ShardKey{}); return err }},
		{"index out of range", func() error { _, err := db.Stat(ctx, ShardKey{Blob: dbID("x", 0), Index: MaxShards}); return err }},
		{"delete negative index", func() error { return db.Delete(ctx, ShardKey{Blob: dbID("x", 0), Index: -1}) }},
	}
	for _, tt := range tests {
		if err := tt.op(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tt.name, err)
		}
	}
	if _, err := Open(t.TempDir(), Options{MemTableSize: 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Open with a tiny memtable: %v, want ErrInvalid", err)
	}
}

func TestDBOverwriteDeleteUsage(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()
	a := dbShard(dbID("usage", 0), 0, 10_000, 4096)
	b := dbShard(dbID("usage", 1), 3, 50_000, 4096)
	a2 := dbShard(dbID("usage", 0), 0, 3_000, 4096) // same key as a, other content
	size := func(s *Shard) int64 { return int64(len(dbMarshal(t, s))) }

	steps := []struct {
		name   string
		do     func() error
		shards int64
		bytes  int64
	}{
		{"empty", func() error { return nil }, 0, 0},
		{"put a", func() error { return db.Put(ctx, a) }, 1, size(a)},
		{"put b", func() error { return db.Put(ctx, b) }, 2, size(a) + size(b)},
		{"put a again", func() error { return db.Put(ctx, a) }, 2, size(a) + size(b)},
		{"replace a", func() error { return db.Put(ctx, a2) }, 2, size(a2) + size(b)},
		{"delete b", func() error { return db.Delete(ctx, b.Key()) }, 1, size(a2)},
		{"delete b again", func() error { return db.Delete(ctx, b.Key()) }, 1, size(a2)},
		{"delete a", func() error { return db.Delete(ctx, a.Key()) }, 0, 0},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		u, err := db.Usage()
		if err != nil {
			t.Fatalf("%s: Usage: %v", st.name, err)
		}
		if u.Shards != st.shards || u.Bytes != st.bytes {
			t.Fatalf("after %s: Usage = %d shards, %d bytes; want %d, %d", st.name, u.Shards, u.Bytes, st.shards, st.bytes)
		}
		if u.DiskTotal <= 0 || u.DiskFree <= 0 || u.DiskFree > u.DiskTotal {
			t.Fatalf("after %s: implausible disk figures %+v", st.name, u)
		}
	}
	if _, err := db.Get(ctx, b.Key()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of deleted shard: %v", err)
	}
	if _, err := db.Stat(ctx, a.Key()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of deleted shard: %v", err)
	}
}

func TestDBWalk(t *testing.T) {
	dir := t.TempDir()
	db := openTestDB(t, dir, dbTestOptions(t))
	ctx := t.Context()
	// More than one walk batch, put in random order.
	var want []ShardKey
	for i := range walkBatch*2 + 17 {
		want = append(want, ShardKey{Blob: dbID("walk", i/3), Index: i % 3})
	}
	order := slices.Clone(want)
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, k := range order {
		if err := db.Put(ctx, dbShard(k.Blob, k.Index, 100+k.Index, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	slices.SortFunc(want, func(a, b ShardKey) int {
		if c := bytes.Compare(a.Blob[:], b.Blob[:]); c != 0 {
			return c
		}
		return a.Index - b.Index
	})

	var got []ShardKey
	err := db.Walk(ctx, func(h Header) error {
		if h.PayloadLen != int64(100+h.Index) {
			return fmt.Errorf("header of %v has payload length %d", h.Key(), h.PayloadLen)
		}
		got = append(got, h.Key())
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Walk visited %d shards, want %d in key order", len(got), len(want))
	}

	stop := errors.New("stop")
	var n int
	if err := db.Walk(ctx, func(Header) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("Walk with a failing callback: %v after %d calls, want stop after 1", err, n)
	}

	cctx, cancel := context.WithCancel(ctx)
	n = 0
	err = db.Walk(cctx, func(Header) error {
		if n++; n == 10 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 10 {
		t.Fatalf("Walk with cancelled context: %v after %d calls", err, n)
	}

	// A callback may use the store, and the walk reads no payloads: corrupt
	// every record and the walk still succeeds.
	for _, k := range want[:5] {
		rawSetDB(t, db, dbKey(prefixRecord, k), []byte("garbage"))
	}
	n = 0
	if err := db.Walk(ctx, func(h Header) error {
		n++
		_, err := db.Stat(ctx, h.Key())
		return err
	}); err != nil || n != len(want) {
		t.Fatalf("Walk over corrupt records: %v after %d calls", err, n)
	}

	// An unreadable header is reported at the end, after every good one.
	rawSetDB(t, db, dbKey(prefixIndex, want[7]), []byte("garbage"))
	n = 0
	err = db.Walk(ctx, func(Header) error { n++; return nil })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want[7].String()) || n != len(want)-1 {
		t.Fatalf("Walk over a corrupt header: %v after %d calls, want ErrCorrupt naming %v after %d", err, n, want[7], len(want)-1)
	}
}

func TestDBReopen(t *testing.T) {
	dir := t.TempDir()
	opts := dbTestOptions(t)
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var shards []*Shard
	for i := range 40 {
		s := dbShard(dbID("reopen", i), i%4, 1000*i, 4096)
		shards = append(shards, s)
		if err := db.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Delete(ctx, shards[0].Key()); err != nil {
		t.Fatal(err)
	}
	before, _ := db.Usage()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTestDB(t, dir, opts)
	after, err := db.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if after.Shards != before.Shards || after.Bytes != before.Bytes {
		t.Fatalf("Usage after reopen = %+v, before close %+v", after, before)
	}
	if _, err := db.Get(ctx, shards[0].Key()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted shard after reopen: %v", err)
	}
	for _, s := range shards[1:] {
		got, err := db.Get(ctx, s.Key())
		if err != nil {
			t.Fatal(err)
		}
		sameDBShard(t, got, s)
	}
	if _, err := Open(dir, opts); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open of a store in use: %v, want an error naming the directory", err)
	}
}

func TestDBPutRecord(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()
	s := dbShard(dbID("putrecord", 0), 2, 20_000, 4096)
	rec := dbMarshal(t, s)
	h, err := db.PutRecord(ctx, rec)
	if err != nil {
		t.Fatalf("PutRecord: %v", err)
	}
	if h.Key() != s.Key() {
		t.Fatalf("PutRecord header names %v, want %v", h.Key(), s.Key())
	}
	got, err := db.GetRecord(ctx, s.Key())
	if err != nil || !bytes.Equal(got, rec) {
		t.Fatalf("GetRecord after PutRecord: %v", err)
	}

	bad := dbShard(dbID("putrecord", 1), 0, 20_000, 4096)
	brec := dbMarshal(t, bad)
	brec[len(brec)-1] ^= 1
	if _, err := db.PutRecord(ctx, brec); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("PutRecord of a damaged record: %v, want ErrCorrupt", err)
	}
	if _, err := db.Stat(ctx, bad.Key()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("damaged record was stored: Stat = %v", err)
	}
}

// rawSet writes value under key behind the store's back, the way a bad disk
// or a bug would.
func rawSetDB(t testing.TB, db *DB, key, value []byte) {
	t.Helper()
	if err := db.bdb.Update(func(txn *badger.Txn) error { return txn.Set(key, value) }); err != nil {
		t.Fatal(err)
	}
}

func TestDBCorruptRecord(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()
	const bs = 4096
	other := dbShard(dbID("corrupt", 999), 0, 3*bs, bs)
	const wholeRecord = -1
	tests := []struct {
		name string
		// mutate damages a good record of a 3-block shard in place or
		// returns a replacement.
		mutate func(rec []byte, hl int) []byte
		// damaged is the payload block that no longer verifies, or
		// wholeRecord when nothing in the record may be served.
		damaged int
	}{
		{"payload byte in block 0", func(r []byte, hl int) []byte { r[hl+5] ^= 0x40; return r }, 0},
		{"payload byte in block 2", func(r []byte, hl int) []byte { r[len(r)-1] ^= 1; return r }, 2},
		{"header field", func(r []byte, hl int) []byte { r[50] ^= 1; return r }, wholeRecord},
		{"block checksum", func(r []byte, hl int) []byte { r[headerFixedLen] ^= 1; return r }, wholeRecord},
		{"header checksum", func(r []byte, hl int) []byte { r[hl-1] ^= 1; return r }, wholeRecord},
		{"magic", func(r []byte, hl int) []byte { r[0] = 'X'; return r }, wholeRecord},
		{"truncated", func(r []byte, hl int) []byte { return r[:len(r)-1] }, wholeRecord},
		{"trailing byte", func(r []byte, hl int) []byte { return append(r, 0) }, wholeRecord},
		{"empty", func(r []byte, hl int) []byte { return nil }, wholeRecord},
		{"record of another shard", func(r []byte, hl int) []byte { return dbMarshal(t, other) }, wholeRecord},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dbShard(dbID("corrupt", i), 1, 3*bs, bs)
			if err := db.Put(ctx, s); err != nil {
				t.Fatal(err)
			}
			rawSetDB(t, db, dbKey(prefixRecord, s.Key()), tt.mutate(dbMarshal(t, s), HeaderLen(&s.Header)))
			k := s.Key()
			corrupt := func(op string, b []byte, err error) {
				t.Helper()
				if !errors.Is(err, ErrCorrupt) || b != nil {
					t.Errorf("%s: got %d bytes, err %v; want no bytes and ErrCorrupt", op, len(b), err)
				} else if !strings.Contains(err.Error(), k.String()) {
					t.Errorf("%s: error %q does not name shard %v", op, err, k)
				}
			}
			g, err := db.Get(ctx, k)
			if g != nil {
				t.Errorf("Get returned a shard of a corrupt record")
			}
			corrupt("Get", nil, err)
			r, err := db.GetRecord(ctx, k)
			corrupt("GetRecord", r, err)
			b, _, err := db.ReadAt(ctx, k, 0, 3*bs)
			corrupt("ReadAt(all)", b, err)
			// A ranged read verifies exactly the blocks it covers.
			for blk := range 3 {
				off := int64(blk*bs + 7)
				b, _, err := db.ReadAt(ctx, k, off, 10)
				_, span, _, serr := db.ReadSpan(ctx, k, off, 10)
				into := make([]byte, 10)
				_, ierr := db.ReadInto(ctx, k, off, into, nil)
				_, pspan, _, perr := db.ReadSpanInto(ctx, k, off, 10, func(n int) []byte { return make([]byte, n) })
				if tt.damaged == wholeRecord || tt.damaged == blk {
					corrupt(fmt.Sprintf("ReadAt(block %d)", blk), b, err)
					corrupt(fmt.Sprintf("ReadSpan(block %d)", blk), span, serr)
					corrupt(fmt.Sprintf("ReadInto(block %d)", blk), nil, ierr)
					corrupt(fmt.Sprintf("ReadSpanInto(block %d)", blk), pspan, perr)
					continue
				}
				if perr != nil || !bytes.Equal(pspan, s.Payload[blk*bs:(blk+1)*bs]) {
					t.Errorf("ReadSpanInto of intact block %d: %v", blk, perr)
				}
				if ierr != nil || !bytes.Equal(into, s.Payload[off:off+10]) {
					t.Errorf("ReadInto of intact block %d: %v", blk, ierr)
				}
				if err != nil || !bytes.Equal(b, s.Payload[off:off+10]) {
					t.Errorf("ReadAt of intact block %d: %v", blk, err)
				}
				if serr != nil || !bytes.Equal(span, s.Payload[blk*bs:(blk+1)*bs]) {
					t.Errorf("ReadSpan of intact block %d: %v", blk, serr)
				}
			}
		})
	}
}

// TestDBCorruptOnDisk flips a payload byte in the value-log file itself.
func TestDBCorruptOnDisk(t *testing.T) {
	dir := t.TempDir()
	db := openTestDB(t, dir, dbTestOptions(t))
	ctx := t.Context()
	s := dbShard(dbID("disk", 0), 0, 20_000, 4096)
	if err := db.Put(ctx, s); err != nil {
		t.Fatal(err)
	}
	needle := s.Payload[8000:8064]
	var hit bool
	vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	for _, name := range vlogs {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(data, needle)
		if i < 0 {
			continue
		}
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Badger maps the file shared, so this write is what it reads.
		if _, err := f.WriteAt([]byte{needle[0] ^ 0x80}, int64(i)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		hit = true
	}
	if !hit {
		t.Fatal("payload not found in any value-log file")
	}
	if g, err := db.Get(ctx, s.Key()); !errors.Is(err, ErrCorrupt) || g != nil {
		t.Fatalf("Get after on-disk damage: %v", err)
	}
	if b, _, err := db.ReadAt(ctx, s.Key(), 8000, 1); !errors.Is(err, ErrCorrupt) || b != nil {
		t.Fatalf("ReadAt of the damaged block: %v", err)
	}
	if b, _, err := db.ReadAt(ctx, s.Key(), 0, 100); err != nil || !bytes.Equal(b, s.Payload[:100]) {
		t.Fatalf("ReadAt of an intact block: %v", err)
	}
	// The damaged byte is outside the range but inside its block.
	if _, err := db.ReadInto(ctx, s.Key(), 8100, make([]byte, 10), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadInto of the damaged block: %v", err)
	}
	if p := make([]byte, 100); func() error { _, err := db.ReadInto(ctx, s.Key(), 0, p, nil); return err }() != nil || !bytes.Equal(p, s.Payload[:100]) {
		t.Fatalf("ReadInto of an intact block failed or gave wrong bytes")
	}
}

func TestDBContextCancelled(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s := dbShard(dbID("ctx", 0), 0, 100, 4096)
	k := s.Key()
	ops := map[string]func() error{
		"Put":       func() error { return db.Put(ctx, s) },
		"PutRecord": func() error { _, err := db.PutRecord(ctx, dbMarshal(t, s)); return err },
		"Get":       func() error { _, err := db.Get(ctx, k); return err },
		"GetRecord": func() error { _, err := db.GetRecord(ctx, k); return err },
		"ReadAt":    func() error { _, _, err := db.ReadAt(ctx, k, 0, 1); return err },
		"ReadSpan":  func() error { _, _, _, err := db.ReadSpan(ctx, k, 0, 1); return err },
		"ReadInto":  func() error { _, err := db.ReadInto(ctx, k, 0, make([]byte, 1), nil); return err },
		"Stat":      func() error { _, err := db.Stat(ctx, k); return err },
		"Delete":    func() error { return db.Delete(ctx, k) },
		"Walk":      func() error { return db.Walk(ctx, func(Header) error { return nil }) },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v", name, err)
		}
	}
	if _, err := db.Stat(t.Context(), k); !errors.Is(err, ErrNotFound) {
		t.Errorf("a put with a cancelled context stored the shard: %v", err)
	}
}

func TestDBClosed(t *testing.T) {
	db, err := Open(t.TempDir(), dbTestOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	s := dbShard(dbID("closed", 0), 0, 100, 4096)
	if err := db.Put(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	k := s.Key()
	ops := map[string]func() error{
		"Put":       func() error { return db.Put(ctx, s) },
		"PutRecord": func() error { _, err := db.PutRecord(ctx, dbMarshal(t, s)); return err },
		"Get":       func() error { _, err := db.Get(ctx, k); return err },
		"GetRecord": func() error { _, err := db.GetRecord(ctx, k); return err },
		"ReadAt":    func() error { _, _, err := db.ReadAt(ctx, k, 0, 1); return err },
		"ReadSpan":  func() error { _, _, _, err := db.ReadSpan(ctx, k, 0, 1); return err },
		"ReadInto":  func() error { _, err := db.ReadInto(ctx, k, 0, make([]byte, 1), nil); return err },
		"Stat":      func() error { _, err := db.Stat(ctx, k); return err },
		"Delete":    func() error { return db.Delete(ctx, k) },
		"Walk":      func() error { return db.Walk(ctx, func(Header) error { return nil }) },
		"Usage":     func() error { _, err := db.Usage(); return err },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// TestDBCloseWaits closes the store while puts and reads are running: each
// either completes or reports ErrClosed, and nothing touches a closed badger.
func TestDBCloseWaits(t *testing.T) {
	db, err := Open(t.TempDir(), dbTestOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				s := dbShard(dbID(fmt.Sprint("closewait", w), i), 0, 2000, 4096)
				if err := db.Put(ctx, s); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Put during Close: %v", err)
					}
					return
				}
				if _, err := db.Get(ctx, s.Key()); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("Get during Close: %v", err)
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// TestDBGroupCommit shows that concurrent puts share fsync rounds.
func TestDBGroupCommit(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()
	// A disk's fsync takes a millisecond or more; on a tmpfs it takes
	// nothing and there would be nothing to share. Set before any put, so
	// the syncer sees it through its kick channel.
	fsync := db.group.sync
	db.group.sync = func() error { time.Sleep(time.Millisecond); return fsync() }
	const writers, each = 32, 8
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := range each {
				if err := db.Put(ctx, dbShard(dbID(fmt.Sprint("group", w), i), 0, 4096, 4096)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	before := db.Stats()
	close(start)
	wg.Wait()
	st := db.Stats()
	puts, syncs := st.Puts-before.Puts, st.Syncs-before.Syncs
	t.Logf("%d concurrent puts took %d fsync rounds", puts, syncs)
	if puts != writers*each || syncs*2 > puts {
		t.Fatalf("%d puts took %d fsync rounds; want at most half as many rounds as puts", puts, syncs)
	}
}

// TestDBSyncCoversRetiredLogs writes past several memtable and value-log
// rotations and checks that every log file but the newest of each kind has
// been fsynced by a round (which DB.Sync alone would not do).
func TestDBSyncCoversRetiredLogs(t *testing.T) {
	dir := t.TempDir()
	opts := dbTestOptions(t)
	opts.MemTableSize = 64 << 10
	db := openTestDB(t, dir, opts)
	ctx := t.Context()
	for i := range 200 {
		if err := db.Put(ctx, dbShard(dbID("retired", i), 0, 30_000, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	// One more round sees the final directory listing.
	if err := db.Delete(ctx, ShardKey{Blob: dbID("none", 0)}); err != nil {
		t.Fatal(err)
	}
	g := db.group
	newest := map[string]string{}
	var names []string
	for _, ext := range []string{".mem", ".vlog"} {
		m, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
		slices.Sort(m)
		if len(m) > 0 {
			newest[ext] = filepath.Base(m[len(m)-1])
		}
		for _, n := range m {
			names = append(names, filepath.Base(n))
		}
	}
	var retired int
	for _, n := range names {
		if n == newest[filepath.Ext(n)] {
			continue
		}
		retired++
		if !g.retired[n] {
			t.Errorf("retired log %s was never fsynced", n)
		}
	}
	if retired == 0 {
		t.Fatal("no log file was retired; the test did not cross a rotation")
	}
}

// TestDBGCReclaims deletes most shards and checks that value-log GC gives
// the space back, and that the survivors are intact after the rewrite.
func TestDBGCReclaims(t *testing.T) {
	dir := t.TempDir()
	opts := dbTestOptions(t)
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var keep []*Shard
	for i := range 120 {
		s := dbShard(dbID("gc", i), 0, 100_000, 4096)
		if err := db.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
		if i%6 == 0 {
			keep = append(keep, s)
		} else if err := db.Delete(ctx, s.Key()); err != nil {
			t.Fatal(err)
		}
	}
	vlogBytes := func() int64 { return allocatedBytes(dir, ".vlog") }
	before := vlogBytes()
	reopenCompacted(t, &db, dir, opts)
	n := db.collectGarbage()
	after := vlogBytes()
	t.Logf("GC rewrote %d value-log files: %s -> %s", n, human(before), human(after))
	if n == 0 || after >= before/2 {
		t.Fatalf("GC rewrote %d files, value log %s -> %s; want most of it reclaimed", n, human(before), human(after))
	}
	for _, s := range keep {
		got, err := db.Get(ctx, s.Key())
		if err != nil {
			t.Fatal(err)
		}
		sameDBShard(t, got, s)
	}
}

// reopenCompacted closes and reopens *db with a level-0 compaction in
// between. Badger learns which value-log bytes are garbage only from
// compactions, which a test this small never triggers by itself.
func reopenCompacted(t testing.TB, db **DB, dir string, opts Options) {
	t.Helper()
	if err := (*db).Close(); err != nil {
		t.Fatal(err)
	}
	o := opts
	o.tune = func(bo *badger.Options) { bo.CompactL0OnClose = true }
	compact, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := compact.Close(); err != nil {
		t.Fatal(err)
	}
	*db = openTestDB(t, dir, opts)
}

// TestDBGCLoopStopsOnClose runs the background GC loop with a short interval
// under concurrent puts and deletes and checks that Close stops it.
func TestDBGCLoopStopsOnClose(t *testing.T) {
	opts := dbTestOptions(t)
	opts.GCInterval = 10 * time.Millisecond
	db, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for i := range 60 {
		s := dbShard(dbID("gcloop", i), 0, 50_000, 4096)
		if err := db.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := db.Delete(ctx, s.Key()); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(30 * time.Millisecond)
	done := make(chan error)
	go func() { done <- db.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: GC loop not stopped")
	}
}

// TestDBErrorMessages checks that a space error tells an operator where and
// how much.
func TestDBErrorMessages(t *testing.T) {
	dir := t.TempDir()
	opts := dbTestOptions(t)
	free, _, err := diskSpace(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts.Reserve = free + 64<<20 // more than the disk has: every put is refused
	db := openTestDB(t, dir, opts)
	err = db.Put(t.Context(), dbShard(dbID("msg", 0), 0, 100, 4096))
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put beyond the reserve: %v, want ErrNoSpace", err)
	}
	for _, want := range []string{dir, "free", "reserve", "delete shards"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if !isNoSpace(fmt.Errorf("while sync file: x, error: %v", "no space left on device")) {
		t.Error("isNoSpace misses an ENOSPC that badger formatted without %w")
	}
	if got := human(3 << 20); got != "3.0 MiB" {
		t.Errorf("human(3 MiB) = %q", got)
	}
}

// mountTmpfs mounts a tmpfs of the given size on a fresh directory, or skips
// the test when that is not permitted.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// fillDisk writes a file into dir until the filesystem refuses, as another
// process on the same disk would, and returns a function that removes it.
func fillDisk(t *testing.T, dir string) (unfill func()) {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{1 << 20, 4 << 10} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				if !isNoSpace(err) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	f.Close()
	return func() {
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDBNoSpace fills a real (small tmpfs) filesystem: puts fail with
// ErrNoSpace before badger can hit the full disk through its mappings (which
// would kill the process with SIGBUS), acknowledged shards stay readable, the
// store reopens, and deletes plus GC make room for new puts.
func TestDBNoSpace(t *testing.T) {
	mnt := mountTmpfs(t, "96m")
	dir := filepath.Join(mnt, "store")
	opts := dbTestOptions(t)
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	readAll := func(db *DB, shards []*Shard) {
		t.Helper()
		for _, s := range shards {
			got, err := db.Get(ctx, s.Key())
			if err != nil {
				t.Fatalf("acknowledged shard after filling the disk: %v", err)
			}
			sameDBShard(t, got, s)
		}
	}
	checkNoSpace := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("%s on a full disk: %v, want ErrNoSpace", op, err)
		}
		if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "free") {
			t.Fatalf("%s: %q does not say which directory and how much is free", op, err)
		}
	}

	// 1. The store fills the disk itself.
	var acked []*Shard
	for i := 0; ; i++ {
		s := dbShard(dbID("full", i), i%4, 256<<10, 0)
		err := db.Put(ctx, s)
		if errors.Is(err, ErrNoSpace) {
			checkNoSpace("Put", err)
			t.Logf("full after %d puts: %v", len(acked), err)
			break
		}
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		acked = append(acked, s)
		if i > 1000 {
			t.Fatal("the disk never filled up")
		}
	}
	if len(acked) < 50 {
		t.Fatalf("only %d puts fitted; the reserve leaves too little of a 96 MiB disk", len(acked))
	}
	readAll(db, acked)

	// 2. Something else takes the rest, reserve included: writes are
	// refused, reads go on, and Close declines rather than let badger's
	// memtable flush fault.
	time.Sleep(100 * time.Millisecond) // let badger's own flushes settle
	unfill := fillDisk(t, mnt)
	checkNoSpace("Put", db.Put(ctx, dbShard(dbID("full", -1), 0, 1000, 4096)))
	checkNoSpace("Delete", db.Delete(ctx, acked[0].Key()))
	readAll(db, acked)
	if err := db.Walk(ctx, func(Header) error { return nil }); err != nil {
		t.Fatalf("Walk on a full disk: %v", err)
	}
	checkNoSpace("Close", db.Close())
	unfill()
	if err := db.Close(); err != nil {
		t.Fatalf("Close once space was back: %v", err)
	}

	// 3. Open on a full disk is refused cleanly too.
	unfill = fillDisk(t, mnt)
	_, err = Open(dir, opts)
	checkNoSpace("Open", err)
	unfill()

	// 4. Reopen, delete most shards, let GC reclaim their space, and put
	// again.
	db = openTestDB(t, dir, opts)
	readAll(db, acked)
	var kept []*Shard
	for i, s := range acked {
		if i%4 == 0 {
			kept = append(kept, s)
			continue
		}
		if err := db.Delete(ctx, s.Key()); err != nil {
			t.Fatalf("delete on a store at its reserve: %v", err)
		}
	}
	before, _ := db.Usage()
	reopenCompacted(t, &db, dir, opts)
	files := db.collectGarbage()
	after, _ := db.Usage()
	t.Logf("GC rewrote %d value-log files: free %s -> %s", files, human(before.DiskFree), human(after.DiskFree))
	if after.DiskFree-before.DiskFree < 20<<20 {
		t.Fatalf("GC freed only %s after deleting 3/4 of %d shards", human(after.DiskFree-before.DiskFree), len(acked))
	}
	for i := range 20 {
		s := dbShard(dbID("again", i), 0, 256<<10, 0)
		if err := db.Put(ctx, s); err != nil {
			t.Fatalf("put after GC freed space: %v", err)
		}
		kept = append(kept, s)
	}
	readAll(db, kept)
}

// TestDBIndexDecides covers records and index entries that disagree: the
// index entry says whether a shard is stored, a record without one (what
// badger's value-log GC can resurface after a delete) is invisible and swept,
// and an index entry without a matching record is corruption.
func TestDBIndexDecides(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()

	// A record without an index entry.
	orphan := dbShard(dbID("orphan", 0), 1, 5000, 4096)
	rawSetDB(t, db, dbKey(prefixRecord, orphan.Key()), dbMarshal(t, orphan))
	if _, err := db.Get(ctx, orphan.Key()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an orphaned record: %v, want ErrNotFound", err)
	}
	if _, _, err := db.ReadAt(ctx, orphan.Key(), 0, 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadAt of an orphaned record: %v, want ErrNotFound", err)
	}
	var n int
	if err := db.Walk(ctx, func(Header) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("Walk saw %d shards (%v), want none", n, err)
	}
	kept := dbShard(dbID("orphan", 1), 0, 5000, 4096)
	if err := db.Put(ctx, kept); err != nil {
		t.Fatal(err)
	}
	if swept, err := db.sweepOrphans(); err != nil || swept != 1 {
		t.Fatalf("sweepOrphans = %d, %v; want 1", swept, err)
	}
	if err := db.bdb.View(func(txn *badger.Txn) error {
		_, err := txn.Get(dbKey(prefixRecord, orphan.Key()))
		return err
	}); !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("orphaned record still stored after the sweep: %v", err)
	}
	if got, err := db.Get(ctx, kept.Key()); err != nil {
		t.Fatalf("the sweep hurt an indexed shard: %v", err)
	} else {
		sameDBShard(t, got, kept)
	}

	// An index entry whose record is gone, or is another version.
	if err := db.bdb.Update(func(txn *badger.Txn) error { return txn.Delete(dbKey(prefixRecord, kept.Key())) }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get(ctx, kept.Key()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of an index entry without record: %v, want ErrCorrupt", err)
	}
	other := dbShard(kept.Blob, kept.Index, 6000, 4096) // same key, other length
	rawSetDB(t, db, dbKey(prefixRecord, kept.Key()), dbMarshal(t, other))
	if _, err := db.Get(ctx, kept.Key()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of a record that does not match its index entry: %v, want ErrCorrupt", err)
	}
	if _, _, err := db.ReadAt(ctx, kept.Key(), 0, 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadAt of a record that does not match its index entry: %v, want ErrCorrupt", err)
	}
	// Deleting clears both, and the orphan case too.
	if err := db.Delete(ctx, kept.Key()); err != nil {
		t.Fatal(err)
	}
	rawSetDB(t, db, dbKey(prefixRecord, orphan.Key()), dbMarshal(t, orphan))
	if err := db.Delete(ctx, orphan.Key()); err != nil {
		t.Fatal(err)
	}
	if swept, err := db.sweepOrphans(); err != nil || swept != 0 {
		t.Fatalf("after deletes, sweepOrphans = %d, %v; want 0", swept, err)
	}
	if u, _ := db.Usage(); u.Shards != 0 || u.Bytes != 0 {
		t.Fatalf("Usage after deleting everything: %+v", u)
	}
}

func TestDBIndexEncoding(t *testing.T) {
	for i, s := range []*Shard{
		dbShard(dbID("idx", 0), 3, 12345, 8192),
		{Header: Header{Blob: dbID("idx", 1), Index: 5, K: 4, M: 2, Layout: LayoutErasure, BlobLen: 1 << 30, PayloadLen: 1 << 28, BlockSize: DefaultBlockSize}},
	} {
		b := encodeIndex(&s.Header)
		h, err := decodeIndex(b)
		if err != nil {
			t.Fatalf("%d: decode: %v", i, err)
		}
		if err := matchIndex(&s.Header, &h); err != nil || h.Key() != s.Key() {
			t.Fatalf("%d: round trip changed the header: %v", i, err)
		}
		for j := range b {
			c := bytes.Clone(b)
			c[j] ^= 0x10
			if _, err := decodeIndex(c); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%d: flipping byte %d of an index entry went unnoticed", i, j)
			}
		}
		if len(b) >= valueThreshold {
			t.Fatalf("index entries (%d bytes) must stay below the value threshold (%d) to stay out of the value log", len(b), valueThreshold)
		}
	}
}

// TestDBDeleteIfRacesPut runs a conditional delete of an old version of a
// shard against a put of a newer version: whichever commits first, the newer
// version must survive, since the delete judges the header it deletes.
func TestDBDeleteIfRacesPut(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()
	cut := time.Unix(1_800_000_000, 0)
	for i := range 100 {
		old := dbShard(dbID("deleteif", i), 0, 3000, 4096)
		old.Written = cut.Add(-time.Hour)
		fresh := dbShard(dbID("deleteif", i), 0, 3000, 4096)
		fresh.Written = cut.Add(time.Hour)
		if err := db.Put(ctx, old); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := db.Put(ctx, fresh); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			if err := db.deleteIf(ctx, old.Key(), func(h Header) bool { return h.Written.Before(cut) }); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		got, err := db.Get(ctx, fresh.Key())
		if err != nil {
			t.Fatalf("round %d: the newer shard is gone: %v", i, err)
		}
		sameDBShard(t, got, fresh)
		if err := db.deleteIf(ctx, fresh.Key(), func(h Header) bool { return h.Written.Before(cut) }); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Stat(ctx, fresh.Key()); err != nil {
			t.Fatalf("round %d: conditional delete removed a shard it should keep: %v", i, err)
		}
	}
	if u, _ := db.Usage(); u.Shards != 100 {
		t.Fatalf("Usage counts %d shards, want 100", u.Shards)
	}
}
