package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Defaults for [Options]. They are sized for a data disk of a few TiB; see
// the fields of Options for what each one trades.
const (
	DefaultMemTableSize     = 16 << 20
	DefaultValueLogFileSize = 256 << 20
	DefaultGCInterval       = time.Minute
	DefaultGCDiscardRatio   = 0.5
)

const (
	// Values at least this long go to the value log; shorter ones live in
	// the LSM tree. Shard records are nearly always longer, so the tree
	// holds keys, value pointers and index entries, and compactions do not
	// rewrite payloads. It must exceed indexLen (see DB).
	valueThreshold = 1 << 10

	minMemTableSize     = 64 << 10
	minValueLogFileSize = 1 << 20
	maxValueLogFileSize = 2<<30 - 1 // badger's limit

	// Each Walk batch is read in its own short transaction, so a slow
	// callback does not pin a snapshot (and the value-log files it refers
	// to) for the whole walk.
	walkBatch = 256

	// A GC run rewrites at most this many value-log files, so that a
	// backlog of deletions is worked off over several intervals.
	gcMaxFilesPerRun = 16

	// The orphan sweep runs every sweepEvery GC intervals (hourly by
	// default): it scans every key, and orphans are rare. It deletes at most
	// sweepMax records per run.
	sweepEvery = 60
	sweepMax   = 10000

	// A put whose transaction keeps conflicting with concurrent puts of the
	// same shard gives up after this many attempts.
	maxConflictRetries = 16
)

// Options configures a [DB]. The zero value is ready for production.
type Options struct {
	// Reserve is the free disk space, in bytes, that puts leave alone: a put
	// that would leave less fails with ErrNoSpace. Zero selects
	// DefaultReserve(MemTableSize, ValueLogFileSize).
	//
	// The reserve is what keeps the process alive on a full disk. Badger
	// writes its logs and tables through mmap into sparse files; a write to
	// an unallocated page of such a mapping on a full filesystem raises
	// SIGBUS and kills the process, it never returns ENOSPC. So free space
	// is checked before each put, and the reserve must cover what badger
	// writes on its own after puts stop: a value-log GC rewrite, memtable
	// flushes and compactions. Half of it stays usable by deletes and GC,
	// which are how space comes back.
	Reserve int64

	// Logger receives badger's warnings and errors and the store's own
	// notes (GC runs, space warnings). Nil discards them.
	Logger *slog.Logger

	// MemTableSize bounds a memtable, its write-ahead log and a level-0
	// table. Zero selects DefaultMemTableSize (16 MiB). Badger's 64 MiB
	// default buys nothing here, since the tree holds no payloads, and
	// would need a larger reserve.
	MemTableSize int64

	// ValueLogFileSize is the size at which badger starts a new value-log
	// file. It is also the largest record the store accepts, and GC
	// reclaims space a whole file at a time. Zero selects
	// DefaultValueLogFileSize (256 MiB). Every value-log file stays mmapped:
	// at 256 MiB, a disk beyond ~14 TiB exceeds Linux's default
	// vm.max_map_count of 65530; raise that sysctl or this size.
	ValueLogFileSize int64

	// GCInterval is how often value-log GC looks for space freed by
	// deletions and overwrites. Zero selects DefaultGCInterval; a negative
	// value disables GC.
	GCInterval time.Duration

	// GCDiscardRatio is the fraction of a value-log file that must be
	// garbage before GC rewrites it, in (0, 1). Zero selects 0.5: every
	// byte written is then rewritten at most once more on average.
	GCDiscardRatio float64

	// tune, when set by a test, adjusts badger's options last.
	tune func(*badger.Options)
}

// DefaultReserve returns the reserve used when Options.Reserve is zero: one
// value-log file, which a GC pass may rewrite before it deletes the old one,
// plus 32 memtables' worth for what the LSM tree writes before it frees:
// a memtable flush, a level-0 compaction of up to 15 tables and the
// overlapping base level, and concurrent deeper compactions (tables below
// level 0 are an eighth of a memtable, so those stay small). At the
// defaults this is 768 MiB.
func DefaultReserve(memTableSize, valueLogFileSize int64) int64 {
	return valueLogFileSize + 32*memTableSize
}

func (o Options) resolve() (Options, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.ValueLogFileSize == 0 {
		o.ValueLogFileSize = DefaultValueLogFileSize
	}
	if o.Reserve == 0 {
		o.Reserve = DefaultReserve(o.MemTableSize, o.ValueLogFileSize)
	}
	if o.GCInterval == 0 {
		o.GCInterval = DefaultGCInterval
	}
	if o.GCDiscardRatio == 0 {
		o.GCDiscardRatio = DefaultGCDiscardRatio
	}
	switch {
	case o.MemTableSize < minMemTableSize:
		return o, fmt.Errorf("%w: MemTableSize %d is below %d", ErrInvalid, o.MemTableSize, minMemTableSize)
	case o.ValueLogFileSize < minValueLogFileSize || o.ValueLogFileSize > maxValueLogFileSize:
		return o, fmt.Errorf("%w: ValueLogFileSize %d outside %d..%d", ErrInvalid, o.ValueLogFileSize, minValueLogFileSize, maxValueLogFileSize)
	case o.Reserve < 0:
		return o, fmt.Errorf("%w: negative Reserve %d", ErrInvalid, o.Reserve)
	case o.GCDiscardRatio <= 0 || o.GCDiscardRatio >= 1:
		return o, fmt.Errorf("%w: GCDiscardRatio %v outside (0, 1)", ErrInvalid, o.GCDiscardRatio)
	}
	return o, nil
}

// Usage is what a store holds and what its disk has left.
type Usage struct {
	Shards    int64 // shards stored
	Bytes     int64 // record bytes stored (headers and payloads)
	DiskFree  int64 // bytes of the filesystem still available
	DiskTotal int64 // size of the filesystem
}

// Stats are counters since Open, for metrics and tests.
type Stats struct {
	Puts    int64 // successful puts
	Deletes int64 // successful deletes
	Syncs   int64 // group-commit fsync rounds; far fewer than Puts under concurrency
	GCFiles int64 // value-log files rewritten by GC
}

// DB stores shard records on one disk in badger.
//
// Each shard is two badger keys written in one transaction: the whole record,
// which goes to the value log, and an index entry (the header fields, 69
// bytes), which stays in the LSM tree so that Stat and Walk never touch
// records. Badger runs without SyncWrites; durability comes from the group
// committer (see groupSync).
//
// The index entry, not the record, decides whether a shard is stored. Badger's
// value-log GC (v4.9.6) copies a live value forward under its old version; if
// the key is deleted meanwhile, or the process dies before the copy is
// flushed, a compaction can later drop the delete's tombstone and the copy
// resurfaces. Index entries never pass through the value log, so they cannot
// resurface: a deleted shard stays deleted, and a resurfaced record without
// an index entry is invisible and is removed by sweepOrphans.
type DB struct {
	dir  string
	opts Options
	log  *slog.Logger
	bdb  *badger.DB

	mu     sync.Mutex
	idle   *sync.Cond // signalled when active drops to zero
	closed bool       // no new operations; set by Close
	active int        // operations in progress
	done   bool       // badger closed

	closeMu sync.Mutex // serializes Close

	inflight atomic.Int64 // bytes of admitted puts not yet committed
	shards   atomic.Int64
	bytes    atomic.Int64

	group    *groupSync
	gcStop   chan struct{}
	gcDone   chan struct{}
	stopOnce sync.Once

	puts, deletes, gcFiles atomic.Int64
	corruptions            atomic.Int64 // badger panics recovered (see guard)

	storeID string // see StoreID
	fresh   bool   // see Fresh
	aside   string // see MovedAside
}

// Open opens or creates the store in dir.
func Open(dir string, opts Options) (*DB, error) {
	o, err := opts.resolve()
	if err != nil {
		return nil, fmt.Errorf("open store in %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil { // only the node reads its shards
		return nil, fmt.Errorf("open store: %w", err)
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	db := &DB{dir: dir, opts: o, log: o.Logger.With("dir", dir)}
	db.idle = sync.NewCond(&db.mu)
	if o.Reserve < DefaultReserve(o.MemTableSize, o.ValueLogFileSize) {
		db.log.Warn("storage reserve is below the default; a full disk may crash the process with SIGBUS",
			"reserve", human(o.Reserve), "default", human(DefaultReserve(o.MemTableSize, o.ValueLogFileSize)))
	}

	if err := removeEmptyLogs(dir, db.log); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// Opening replays the memtable logs into level-0 tables, written through
	// mmap like everything else, so it needs room too.
	free, _, err := diskSpace(dir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if need := max(db.maintFloor(), allocatedBytes(dir, ".mem")+2*o.MemTableSize); free < need {
		return nil, db.noSpace("open store (replaying its write-ahead log)", free, need)
	}

	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{db.log}).
		// Every block is verified when read, so that a table damaged
		// while open fails the reads that touch it instead of serving
		// or panicking on garbage. Tables are verified as a whole
		// before badger opens them (VerifyTables), not by badger's
		// OnTableRead, which panics on a damaged block. It costs little
		// because the tree holds no payloads (docs/storage.md has the
		// figures).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithSyncWrites(false).
		WithMemTableSize(o.MemTableSize).
		WithBaseTableSize(o.MemTableSize / 8).
		WithValueLogFileSize(o.ValueLogFileSize).
		WithValueThreshold(valueThreshold).
		// The tree holds random blob IDs and CRCs: compression would gain
		// nothing, and without it badger needs no block cache (the page
		// cache serves instead).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithNumCompactors(2).
		WithNumVersionsToKeep(1).
		WithMetricsEnabled(false)
	// Fixed-size tables on every level bound what one compaction writes
	// before it frees its inputs; that bound is part of the reserve.
	bo.TableSizeMultiplier = 1
	if o.tune != nil {
		o.tune(&bo)
	}
	bdb, err := db.openVerified(bo)
	if err != nil {
		if isNoSpace(err) {
			free, _, _ := diskSpace(dir)
			return nil, db.noSpace("open store", free, 0)
		}
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open store in %s: another process has it open (a second hastore on the same disk?): %w", dir, err)
		}
		if !damaged(err) {
			return nil, fmt.Errorf("open store in %s: %w", dir, err)
		}
		// Every shard here has its other shards on other nodes, which
		// rebuild it: a store that cannot be read is worth less than
		// a node that serves. Moved aside, not deleted, so that an
		// operator can look at it (and delete it once repair is done).
		aside, merr := moveAside(dir)
		if merr != nil {
			return nil, fmt.Errorf("open store in %s: the store is damaged (%v) and could not be moved aside: %w", dir, err, merr)
		}
		db.log.Error("SHARD STORE DAMAGED: moved it aside and started an empty store; the cluster rebuilds this node's shards from the other nodes. Delete the moved store once `hastore admin status` shows nothing under-replicated",
			"moved_to", aside, "file", damagedFile(dir, err.Error()), "err", err)
		db.aside = aside
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		if bdb, err = db.openVerified(bo); err != nil {
			return nil, fmt.Errorf("open store in %s (empty, after moving the damaged one to %s): %w", dir, aside, err)
		}
	}
	db.bdb = bdb
	id, created, err := db.loadStoreID()
	if err != nil {
		_ = db.guard("close", bdb.Close)
		return nil, fmt.Errorf("open store in %s: %w", dir, err)
	}
	db.storeID, db.fresh = id, created && db.shards.Load() == 0
	db.group = newGroupSync(db.syncAll)
	db.gcStop = make(chan struct{})
	db.gcDone = make(chan struct{})
	if o.GCInterval > 0 {
		go db.gcLoop(o.GCInterval)
	} else {
		close(db.gcDone)
	}
	return db, nil
}

// removeEmptyLogs deletes zero-length memtable logs and value-log files.
// Badger (v4.9.6) creates these files, then sizes them, and deletes them by
// truncating to zero and then unlinking; a crash in either gap leaves an
// empty file, on which badger.Open fails ("Create a new file") for good. An
// empty file holds no entries, and no value pointer refers into it, so
// removing it loses nothing.
func removeEmptyLogs(dir string, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range ents {
		if ext := filepath.Ext(e.Name()); ext != ".mem" && ext != ".vlog" {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() != 0 || !fi.Mode().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove empty log file left by a crash: %w", err)
		}
		log.Info("removed empty log file left by a crash", "file", path)
		removed = true
	}
	if removed {
		return syncPath(dir)
	}
	return nil
}

// loadCounters derives Usage's counts from the index. It costs one
// pass over the LSM tree (no payloads) at open, and saves a shared counter
// key that every put would conflict on.
func (db *DB) loadCounters() error {
	var n, b int64
	err := db.guard("count shards", func() error {
		return db.bdb.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte{prefixIndex}})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				n++
				err := it.Item().Value(func(v []byte) error {
					h, err := decodeIndex(v)
					b += recordLen(&h)
					return err
				})
				if err != nil {
					db.log.Warn("unreadable index entry; Walk and Get report the shard corrupt", "key", fmt.Sprintf("%x", it.Item().Key()), "err", err)
				}
			}
			return nil
		})
	})
	db.shards.Store(n)
	db.bytes.Store(b)
	return err
}

// openVerified opens badger and reads the whole index once (loadCounters),
// so that a store Open returns is one whose tables all passed their
// checksums and whose index can be walked.
func (db *DB) openVerified(bo badger.Options) (*badger.DB, error) {
	bdb, err := openBadger(bo)
	if err != nil {
		return nil, err
	}
	db.bdb = bdb
	if err := db.loadCounters(); err != nil {
		_ = db.guard("close", bdb.Close)
		db.bdb = nil
		return nil, err
	}
	return bdb, nil
}

// Key layout: a prefix byte, the blob ID, the shard index. The index fits in
// a byte because the record header stores it in one.
const (
	prefixRecord = 'r'
	prefixIndex  = 'h'
	dbKeyLen     = 1 + len(BlobID{}) + 1
)

func dbKey(prefix byte, k ShardKey) []byte {
	key := make([]byte, dbKeyLen)
	key[0] = prefix
	copy(key[1:], k.Blob[:])
	key[dbKeyLen-1] = byte(k.Index)
	return key
}

func parseDBKey(key []byte) (ShardKey, bool) {
	var k ShardKey
	if len(key) != dbKeyLen {
		return k, false
	}
	copy(k.Blob[:], key[1:])
	k.Index = int(key[dbKeyLen-1])
	return k, true
}

func checkKey(op string, k ShardKey) error {
	if k.Blob.IsZero() || k.Index < 0 || k.Index >= MaxShards {
		return fmt.Errorf("%w: %s shard %v: need a non-zero blob ID and an index in 0..%d", ErrInvalid, op, k, MaxShards-1)
	}
	return nil
}

// An index entry holds a shard's header fields in a fixed, compact form of
// the store's own (not the record's header, whose checksum list grows with
// the payload). It is always shorter than valueThreshold, so it lives in the
// LSM tree and value-log GC never copies it; see DB for why that matters.
//
//	0       format version (1)
//	1:33    blob ID
//	33..36  index, k, m, layout
//	37:45   blob length
//	45:53   payload length
//	53:57   block size
//	57:65   written, Unix nanoseconds (0: zero time)
//	65:69   CRC32C of bytes 0:65
const (
	indexVersion = 1
	indexLen     = 69
)

func encodeIndex(h *Header) []byte {
	b := make([]byte, indexLen)
	b[0] = indexVersion
	copy(b[1:33], h.Blob[:])
	b[33], b[34], b[35], b[36] = byte(h.Index), byte(h.K), byte(h.M), byte(h.Layout)
	binary.LittleEndian.PutUint64(b[37:45], uint64(h.BlobLen))
	binary.LittleEndian.PutUint64(b[45:53], uint64(h.PayloadLen))
	binary.LittleEndian.PutUint32(b[53:57], uint32(h.BlockSize))
	if !h.Written.IsZero() {
		binary.LittleEndian.PutUint64(b[57:65], uint64(h.Written.UnixNano()))
	}
	binary.LittleEndian.PutUint32(b[65:69], crc32.Checksum(b[:65], castagnoli))
	return b
}

func decodeIndex(b []byte) (Header, error) {
	var h Header
	if len(b) != indexLen {
		return h, fmt.Errorf("%w: index entry of %d bytes, want %d", ErrCorrupt, len(b), indexLen)
	}
	if b[0] != indexVersion {
		return h, fmt.Errorf("%w: index entry version %d (written by a newer hastore?)", ErrCorrupt, b[0])
	}
	if got, want := crc32.Checksum(b[:65], castagnoli), binary.LittleEndian.Uint32(b[65:69]); got != want {
		return h, fmt.Errorf("%w: index entry checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	copy(h.Blob[:], b[1:33])
	h.Index, h.K, h.M, h.Layout = int(b[33]), int(b[34]), int(b[35]), Layout(b[36])
	h.BlobLen = int64(binary.LittleEndian.Uint64(b[37:45]))
	h.PayloadLen = int64(binary.LittleEndian.Uint64(b[45:53]))
	h.BlockSize = int(binary.LittleEndian.Uint32(b[53:57]))
	if w := int64(binary.LittleEndian.Uint64(b[57:65])); w != 0 {
		h.Written = time.Unix(0, w)
	}
	if err := h.check(); err != nil {
		return h, fmt.Errorf("%w: index entry: %v", ErrCorrupt, err)
	}
	return h, nil
}

// enter admits an operation unless the store is closed; leave ends it.
// Close waits for admitted operations, so they never see badger closed.
func (db *DB) enter() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return ErrClosed
	}
	db.active++
	return nil
}

func (db *DB) leave() {
	db.mu.Lock()
	db.active--
	if db.active == 0 {
		db.idle.Broadcast()
	}
	db.mu.Unlock()
}

// maintFloor is the free space below which even deletes and GC stop: they
// write little themselves, but may set off memtable flushes and compactions.
func (db *DB) maintFloor() int64 { return db.opts.Reserve / 2 }

// noSpace builds the ErrNoSpace an operator sees.
func (db *DB) noSpace(what string, free, need int64) error {
	msg := fmt.Sprintf("%s in %s: %s free", what, db.dir, human(free))
	if need > 0 {
		msg += fmt.Sprintf(", %s needed", human(need))
	}
	return fmt.Errorf("%w: %s (%s of it kept in reserve for the store's own logs and compactions); delete shards and let GC reclaim their space, or add capacity",
		ErrNoSpace, msg, human(db.opts.Reserve))
}

// wrap turns a badger error into one of this package's kinds, naming the
// operation, shard and directory.
func (db *DB) wrap(op string, k ShardKey, err error) error {
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return fmt.Errorf("%s shard %v: %w", op, k, ErrNotFound)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	case isNoSpace(err):
		free, _, _ := diskSpace(db.dir)
		return fmt.Errorf("%s shard %v: %w (badger: %v)", op, k, db.noSpace("write", free, 0), err)
	case errors.Is(err, badger.ErrDBClosed):
		return fmt.Errorf("%s shard %v: %w", op, k, ErrClosed)
	}
	return fmt.Errorf("%s shard %v in %s: %w", op, k, db.dir, err)
}

// Put stores s and returns once it is durable. Putting a shard that is
// already stored replaces it.
func (db *DB) Put(ctx context.Context, s *Shard) error {
	if s == nil {
		return fmt.Errorf("%w: put of a nil shard", ErrInvalid)
	}
	rec, err := s.Marshal()
	if err != nil {
		return err
	}
	// Marshal fills in defaults (the block size): index what it wrote.
	h, _, err := ParseHeader(rec)
	if err != nil {
		return fmt.Errorf("put shard %v: %w", s.Key(), err)
	}
	return db.store(ctx, &h, rec)
}

// PutRecord verifies a record received from elsewhere and stores its bytes
// unchanged, returning its header. A record that fails verification is
// rejected with ErrCorrupt.
func (db *DB) PutRecord(ctx context.Context, rec []byte) (Header, error) {
	s, err := ParseShard(rec)
	if err != nil {
		return Header{}, fmt.Errorf("put record: %w", err)
	}
	return s.Header, db.store(ctx, &s.Header, rec)
}

// store writes rec and its index entry in one transaction and waits for a
// group commit.
func (db *DB) store(ctx context.Context, h *Header, rec []byte) error {
	const op = "put"
	k := h.Key()
	if err := checkKey(op, k); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	defer db.leave()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	size := int64(len(rec))
	if size > db.opts.ValueLogFileSize {
		return fmt.Errorf("%w: %s shard %v: record of %s exceeds the store's limit of %s (Options.ValueLogFileSize); split the blob into more or smaller shards",
			ErrInvalid, op, k, human(size), human(db.opts.ValueLogFileSize))
	}
	if err := db.group.failed(); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}

	// Puts admitted together must not each count the same free space.
	need := size + int64(indexLen+2*dbKeyLen)
	pending := db.inflight.Add(need)
	defer db.inflight.Add(-need)
	free, _, err := diskSpace(db.dir)
	if err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	if free-pending < db.opts.Reserve {
		return db.noSpace(fmt.Sprintf("%s shard %v (%s)", op, k, human(size)), free, pending+db.opts.Reserve)
	}

	rkey, hkey, ival := dbKey(prefixRecord, k), dbKey(prefixIndex, k), encodeIndex(h)
	var existed bool
	var oldSize int64
	for attempt := 1; ; attempt++ {
		err = db.guard(op, func() error {
			return db.bdb.Update(func(txn *badger.Txn) error {
				// Reading the old entry makes concurrent puts of one shard
				// conflict, so the counters below see each replacement once.
				var err error
				h, found, err := indexed(txn, hkey)
				if err != nil {
					return err
				}
				existed, oldSize = found, recordLen(&h)
				if err := txn.Set(rkey, rec); err != nil {
					return err
				}
				return txn.Set(hkey, ival)
			})
		})
		if errors.Is(err, badger.ErrConflict) && attempt < maxConflictRetries {
			continue
		}
		break
	}
	if err != nil {
		return db.wrap(op, k, err)
	}
	if existed {
		db.bytes.Add(size - oldSize)
	} else {
		db.shards.Add(1)
		db.bytes.Add(size)
	}
	if err := db.group.wait(ctx); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	db.puts.Add(1)
	return nil
}

// Get returns the shard, every checksum verified.
func (db *DB) Get(ctx context.Context, k ShardKey) (*Shard, error) {
	s, _, err := db.getRecord(ctx, "get", k)
	return s, err
}

// GetRecord returns the shard's whole record, every checksum verified, as it
// would be sent to another node.
func (db *DB) GetRecord(ctx context.Context, k ShardKey) ([]byte, error) {
	_, rec, err := db.getRecord(ctx, "get record of", k)
	return rec, err
}

func (db *DB) getRecord(ctx context.Context, op string, k ShardKey) (*Shard, []byte, error) {
	var rec []byte
	var ih Header
	err := db.view(ctx, op, k, func(txn *badger.Txn) error {
		var err error
		if ih, err = lookupIndex(txn, k); err != nil {
			return err
		}
		item, err := txn.Get(dbKey(prefixRecord, k))
		if err != nil {
			return indexedButMissing(err)
		}
		rec, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	s, err := ParseShard(rec)
	if err == nil {
		err = matchIndex(&ih, &s.Header)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s shard %v in %s: %w", op, k, db.dir, err)
	}
	return s, rec, nil
}

// ReadAt returns payload bytes [off, off+n) of the shard and its header. Only
// the checksum blocks covering the range are read and verified.
func (db *DB) ReadAt(ctx context.Context, k ShardKey, off, n int64) ([]byte, Header, error) {
	var out []byte
	var hdr Header
	err := db.readSpan(ctx, "read", k, off, n, func(h Header, rec []byte, hl int, start int64, span []byte) error {
		// Allocated only now that the header has bounded n.
		b := make([]byte, n)
		if err := copySpan(h, rec[:hl], off, b, span, nil); err != nil {
			return err
		}
		out, hdr = b, h
		return nil
	})
	if err != nil {
		return nil, Header{}, err
	}
	return out, hdr, nil
}

// ReadInto reads payload bytes [off, off+len(p)) of the shard into p and
// returns its header. The checksum blocks covering the range are verified
// as the bytes are copied, once, from the value log's mapping into p; on
// an error p's content is unspecified. guard (which may be nil) lets a
// hedged reader take p back while the read is still going on.
func (db *DB) ReadInto(ctx context.Context, k ShardKey, off int64, p []byte, guard *Guard) (Header, error) {
	var hdr Header
	err := db.readSpan(ctx, "read", k, off, int64(len(p)), func(h Header, rec []byte, hl int, start int64, span []byte) error {
		hdr = h
		return copySpan(h, rec[:hl], off, p, span, guard)
	})
	return hdr, err
}

// copySpan copies the part of span in [off, off+len(p)) into p, verifying
// every block of span.
func copySpan(h Header, head []byte, off int64, p, span []byte, guard *Guard) error {
	c, err := NewSpanCopy(h, head, off, p, guard)
	if err != nil {
		return err
	}
	if err := c.Write(span); err != nil {
		return err
	}
	return c.Close()
}

// ReadSpan returns the shard's record header and the verified, block-aligned
// payload span covering [off, off+n), which starts at payload offset spanOff.
// A remote reader re-verifies them with ParseHeader and VerifyPayload.
func (db *DB) ReadSpan(ctx context.Context, k ShardKey, off, n int64) (hdr, span []byte, spanOff int64, err error) {
	err = db.readSpan(ctx, "read span of", k, off, n, func(h Header, rec []byte, hl int, start int64, s []byte) error {
		// append copies into memory it does not clear first (make
		// would); the copy is what is verified and handed out.
		out := append([]byte(nil), s...)
		if err := VerifyPayload(&h, rec, start, out); err != nil {
			return err
		}
		hdr = append([]byte(nil), rec[:hl]...)
		span, spanOff = out, start
		return nil
	})
	if err != nil {
		return nil, nil, 0, err
	}
	return hdr, span, spanOff, nil
}

// ReadSpanInto is ReadSpan into a buffer of the caller's: alloc is called
// once, with the span's length, and must return a slice of that length
// (from a pool, say), which becomes span. It is called only after the
// header has bounded the length; if the read then fails, span is nil and
// the buffer alloc gave is the caller's to recycle.
func (db *DB) ReadSpanInto(ctx context.Context, k ShardKey, off, n int64, alloc func(size int) []byte) (hdr, span []byte, spanOff int64, err error) {
	err = db.readSpan(ctx, "read span of", k, off, n, func(h Header, rec []byte, hl int, start int64, s []byte) error {
		// Verify the copy as it is made: it is what is handed out.
		out := alloc(len(s))
		if len(out) != len(s) {
			return fmt.Errorf("%w: span buffer of %d bytes for a span of %d", ErrInvalid, len(out), len(s))
		}
		if err := copySpan(h, rec[:hl], start, out, s, nil); err != nil {
			return err
		}
		hdr = append([]byte(nil), rec[:hl]...)
		span, spanOff = out, start
		return nil
	})
	if err != nil {
		return nil, nil, 0, err
	}
	return hdr, span, spanOff, nil
}

// readSpan finds the block-aligned span covering [off, off+n) and hands it,
// not yet verified, to use, which must verify what it keeps and copy it:
// the mapping is only valid during the call. An error from use fails the
// read.
func (db *DB) readSpan(ctx context.Context, op string, k ShardKey, off, n int64, use func(h Header, rec []byte, hl int, start int64, span []byte) error) error {
	var rangeErr error
	err := db.view(ctx, op, k, func(txn *badger.Txn) error {
		ih, err := lookupIndex(txn, k)
		if err != nil {
			return err
		}
		item, err := txn.Get(dbKey(prefixRecord, k))
		if err != nil {
			return indexedButMissing(err)
		}
		return item.Value(func(rec []byte) error {
			h, hl, err := ParseHeader(rec)
			if err != nil {
				return err
			}
			if err := matchIndex(&ih, &h); err != nil {
				return err
			}
			if got := int64(len(rec) - hl); got != h.PayloadLen {
				return fmt.Errorf("%w: payload is %d bytes, header says %d", ErrCorrupt, got, h.PayloadLen)
			}
			start, length, err := RangeInPayload(&h, off, n)
			if err != nil {
				rangeErr = err
				return nil
			}
			return use(h, rec, hl, start, rec[int64(hl)+start:int64(hl)+start+length])
		})
	})
	if err == nil && rangeErr != nil {
		err = fmt.Errorf("%s shard %v: %w", op, k, rangeErr)
	}
	return err
}

// Stat returns the shard's header from the index, without reading the
// record.
func (db *DB) Stat(ctx context.Context, k ShardKey) (Header, error) {
	var h Header
	err := db.view(ctx, "stat", k, func(txn *badger.Txn) error {
		var err error
		h, err = lookupIndex(txn, k)
		return err
	})
	return h, err
}

// lookupIndex returns k's index entry. The index, not the record, says
// whether a shard is stored (see DB).
func lookupIndex(txn *badger.Txn, k ShardKey) (Header, error) {
	item, err := txn.Get(dbKey(prefixIndex, k))
	if err != nil {
		return Header{}, err
	}
	var h Header
	err = item.Value(func(v []byte) error {
		h, err = decodeIndex(v)
		if err == nil && h.Key() != k {
			err = fmt.Errorf("%w: index entry is of shard %v", ErrCorrupt, h.Key())
		}
		return err
	})
	return h, err
}

// indexedButMissing reports a record missing under an index entry, which
// writing both in one transaction rules out: the store is damaged.
func indexedButMissing(err error) error {
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("%w: indexed shard has no record", ErrCorrupt)
	}
	return err
}

// matchIndex checks a record's header against the shard's index entry.
func matchIndex(ih, h *Header) error {
	if h.Key() != ih.Key() {
		return fmt.Errorf("%w: record is of shard %v", ErrCorrupt, h.Key())
	}
	if h.K != ih.K || h.M != ih.M || h.Layout != ih.Layout || h.BlobLen != ih.BlobLen ||
		h.PayloadLen != ih.PayloadLen || h.BlockSize != ih.BlockSize || !h.Written.Equal(ih.Written) {
		return fmt.Errorf("%w: record header %+v does not match its index entry %+v", ErrCorrupt, *h, *ih)
	}
	return nil
}

// indexed reads hkey's index entry inside a write transaction, which makes
// the transaction conflict with any concurrent write of the shard. An
// unreadable entry counts as stored, with a zero header.
func indexed(txn *badger.Txn, hkey []byte) (Header, bool, error) {
	item, err := txn.Get(hkey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Header{}, false, nil
	}
	if err != nil {
		return Header{}, false, err
	}
	var h Header
	_ = item.Value(func(v []byte) error {
		if d, err := decodeIndex(v); err == nil {
			h = d
		}
		return nil
	})
	return h, true, nil
}

func recordLen(h *Header) int64 {
	if h.BlockSize <= 0 {
		return 0
	}
	return int64(HeaderLen(h)) + h.PayloadLen
}

// view runs fn in a read transaction on behalf of operation op on k, and
// maps badger's errors to this package's kinds.
func (db *DB) view(ctx context.Context, op string, k ShardKey, fn func(*badger.Txn) error) error {
	if err := checkKey(op, k); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	defer db.leave()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	err := db.guard(op, func() error { return db.bdb.View(fn) })
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrCorrupt):
		return fmt.Errorf("%s shard %v in %s: %w", op, k, db.dir, err)
	case errors.Is(err, ErrAbandoned), errors.Is(err, ErrInvalid):
		// The caller's doing, not damage.
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	case errors.Is(err, badger.ErrKeyNotFound), errors.Is(err, badger.ErrDBClosed):
		return db.wrap(op, k, err)
	}
	// Anything else is badger failing to read the value: a value pointer
	// into a truncated or damaged log, a table block failing its checksum,
	// or an I/O error. Either way the shard cannot be served and should be
	// repaired, which is what ErrCorrupt tells the caller.
	db.corruptions.Add(1)
	db.log.Error("shard store damaged: badger failed reading it; the shard is reported corrupt and served and repaired from other nodes. If this repeats, restart the node: Open verifies every table and rebuilds a damaged store from the other nodes",
		"op", op, "shard", k, "file", damagedFile(db.dir, err.Error()), "err", err)
	return fmt.Errorf("%w: %s shard %v in %s: %v", ErrCorrupt, op, k, db.dir, err)
}

// Delete removes the shard durably. Deleting a shard that is not stored is
// not an error.
func (db *DB) Delete(ctx context.Context, k ShardKey) error {
	return db.deleteIf(ctx, k, nil)
}

// deleteIf is Delete, except that when cond is not nil it deletes only a
// stored shard whose header cond accepts. The check and the delete are one
// transaction: a put of the shard that commits in between makes it start
// over and judge the new header, so it never deletes what it did not check.
func (db *DB) deleteIf(ctx context.Context, k ShardKey, cond func(Header) bool) error {
	const op = "delete"
	if err := checkKey(op, k); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	defer db.leave()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	if err := db.group.failed(); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	free, _, err := diskSpace(db.dir)
	if err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	if free < db.maintFloor() {
		return db.noSpace(fmt.Sprintf("%s shard %v", op, k), free, db.maintFloor())
	}
	rkey, hkey := dbKey(prefixRecord, k), dbKey(prefixIndex, k)
	var existed bool
	var oldSize int64
	for attempt := 1; ; attempt++ {
		err = db.guard(op, func() error {
			return db.bdb.Update(func(txn *badger.Txn) error {
				h, found, err := indexed(txn, hkey)
				if err != nil {
					return err
				}
				existed, oldSize = false, 0
				if cond != nil && (!found || !cond(h)) {
					return nil
				}
				existed, oldSize = found, recordLen(&h)
				if !existed {
					// An orphaned record (see DB) goes too; but no
					// tombstones for shards that were never there.
					if _, err := txn.Get(rkey); errors.Is(err, badger.ErrKeyNotFound) {
						return nil
					} else if err != nil {
						return err
					}
				}
				if err := txn.Delete(rkey); err != nil {
					return err
				}
				return txn.Delete(hkey)
			})
		})
		if errors.Is(err, badger.ErrConflict) && attempt < maxConflictRetries {
			continue
		}
		break
	}
	if err != nil {
		return db.wrap(op, k, err)
	}
	if existed {
		db.shards.Add(-1)
		db.bytes.Add(-oldSize)
	}
	// Even when the shard was already gone, the deletion that removed it may
	// not be durable yet: wait for a sync either way.
	if err := db.group.wait(ctx); err != nil {
		return fmt.Errorf("%s shard %v: %w", op, k, err)
	}
	db.deletes.Add(1)
	return nil
}

// Walk calls fn with the header of every stored shard, in key order (blob ID,
// then index), reading only the index. Shards put or deleted during the walk
// may or may not be seen. An error from fn stops the walk and is returned.
// Shards whose index entry is unreadable are skipped and reported together,
// as ErrCorrupt, once the walk is done. fn may use the store; Close waits for
// the walk to end.
func (db *DB) Walk(ctx context.Context, fn func(Header) error) error {
	if err := db.enter(); err != nil {
		return fmt.Errorf("walk: %w", err)
	}
	defer db.leave()
	type entry struct {
		h   Header
		err error
	}
	var bad []string // the first few unreadable entries
	var nbad int
	seek := []byte{prefixIndex}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("walk: %w", err)
		}
		batch := make([]entry, 0, walkBatch)
		var next []byte
		err := db.guard("walk", func() error {
			return db.bdb.View(func(txn *badger.Txn) error {
				it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte{prefixIndex}})
				defer it.Close()
				for it.Seek(seek); it.Valid(); it.Next() {
					item := it.Item()
					if len(batch) == walkBatch {
						next = item.KeyCopy(nil)
						return nil
					}
					var e entry
					k, ok := parseDBKey(item.Key())
					if !ok {
						e.err = fmt.Errorf("%w: malformed index key %x", ErrCorrupt, item.Key())
					} else if err := item.Value(func(v []byte) error {
						var err error
						e.h, err = decodeIndex(v)
						if err == nil && e.h.Key() != k {
							err = fmt.Errorf("%w: index entry is of shard %v", ErrCorrupt, e.h.Key())
						}
						return err
					}); err != nil {
						e.err = fmt.Errorf("shard %v: %w", k, err)
					}
					batch = append(batch, e)
				}
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("walk %s: %w", db.dir, err)
		}
		for _, e := range batch {
			if e.err != nil {
				if nbad++; len(bad) < 5 {
					bad = append(bad, e.err.Error())
				}
				continue
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("walk: %w", err)
			}
			if err := fn(e.h); err != nil {
				return err
			}
		}
		if next == nil {
			break
		}
		seek = next
	}
	if nbad > 0 {
		return fmt.Errorf("%w: walk %s: %d index entries unreadable (Get reports these shards corrupt; delete and repair them): %s",
			ErrCorrupt, db.dir, nbad, strings.Join(bad, "; "))
	}
	return nil
}

// Usage reports what the store holds and its disk's free space.
func (db *DB) Usage() (Usage, error) {
	if err := db.enter(); err != nil {
		return Usage{}, fmt.Errorf("usage: %w", err)
	}
	defer db.leave()
	free, total, err := diskSpace(db.dir)
	if err != nil {
		return Usage{}, fmt.Errorf("usage: %w", err)
	}
	return Usage{Shards: db.shards.Load(), Bytes: db.bytes.Load(), DiskFree: free, DiskTotal: total}, nil
}

// Stats returns counters since Open.
func (db *DB) Stats() Stats {
	return Stats{
		Puts:    db.puts.Load(),
		Deletes: db.deletes.Load(),
		Syncs:   db.group.syncs.Load(),
		GCFiles: db.gcFiles.Load(),
	}
}

// Close waits for operations in progress, stops GC and closes badger. Every
// acknowledged put is already durable; Close adds nothing to that.
//
// Badger flushes its memtable on close, through mmap into a new table; on a
// disk without room for it that write would kill the process. Close then
// fails with ErrNoSpace and leaves badger open (its write-ahead log holds
// everything): free some space and call Close again, or exit.
func (db *DB) Close() error {
	db.closeMu.Lock()
	defer db.closeMu.Unlock()
	db.mu.Lock()
	if db.done {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	for db.active > 0 {
		db.idle.Wait()
	}
	db.mu.Unlock()

	db.stopOnce.Do(func() { close(db.gcStop) })
	<-db.gcDone

	free, _, err := diskSpace(db.dir)
	if err == nil {
		if need := 2*db.opts.MemTableSize + 1<<20; free < need {
			return db.noSpace("close store (badger flushes its memtable on close)", free, need)
		}
	}
	err = db.guard("close", db.bdb.Close)
	db.group.stop()
	db.mu.Lock()
	db.done = true
	db.mu.Unlock()
	if err != nil {
		if isNoSpace(err) {
			return db.noSpace("close store", free, 0)
		}
		return fmt.Errorf("close store in %s: %w", db.dir, err)
	}
	return nil
}

// syncAll makes everything badger has written durable. It is the group
// committer's one fsync round.
//
// badger's DB.Sync (v4.9.6) msyncs the active memtable's write-ahead log and
// the newest value-log file, nothing else. Two things fall outside it:
//   - A memtable that filled up waits, immutable, to be flushed into a
//     level-0 table; until then its log is the only copy of its entries, and
//     with SyncWrites off nobody syncs it.
//   - A value-log file that filled up is msynced when badger truncates it,
//     except when its length already matched (a value larger than the
//     preallocated file), and never after a crash-restart.
//
// So every log file that is no longer the newest of its kind is fsynced once,
// the first time a round sees it retired; it receives no writes after that.
// A put's entries sit in files that existed before its round began, so they
// are either the newest (covered by DB.Sync) or retired (covered here).
// Badger creates these files without syncing the directory, so the directory
// is fsynced whenever a round sees a new one.
func (db *DB) syncAll() error {
	if err := db.bdb.Sync(); err != nil {
		return err
	}
	return db.group.syncRetired(db.dir)
}

// gcLoop runs value-log GC every interval until Close.
func (db *DB) gcLoop(interval time.Duration) {
	defer close(db.gcDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-db.gcStop:
			return
		case <-t.C:
		}
		db.collectGarbage()
		if time.Since(lastSweep) >= sweepEvery*interval {
			if n, err := db.sweepOrphans(); err != nil {
				db.log.Error("sweeping orphaned records failed", "err", err)
			} else if n > 0 {
				db.log.Info("deleted records resurfaced by value-log GC", "records", n)
			}
			db.verifyTablesLive()
			lastSweep = time.Now()
		}
	}
}

// sweepOrphans deletes records that have no index entry: copies that
// value-log GC brought back after their shard was deleted (see DB). It reads
// keys only, from the LSM tree, and returns how many records it deleted.
func (db *DB) sweepOrphans() (int, error) {
	var orphans [][]byte
	err := db.guard("sweep orphaned records", func() error {
		return db.bdb.View(func(txn *badger.Txn) error {
			ri := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
			defer ri.Close()
			ii := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixIndex}})
			defer ii.Close()
			ii.Rewind()
			for ri.Rewind(); ri.Valid() && len(orphans) < sweepMax; ri.Next() {
				k := ri.Item().Key()[1:]
				for ii.Valid() && bytes.Compare(ii.Item().Key()[1:], k) < 0 {
					ii.Next()
				}
				if !ii.Valid() || !bytes.Equal(ii.Item().Key()[1:], k) {
					orphans = append(orphans, ri.Item().KeyCopy(nil))
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("sweep orphaned records in %s: %w", db.dir, err)
	}
	var n int
	for _, rkey := range orphans {
		ikey := append([]byte{prefixIndex}, rkey[1:]...)
		// Reading the index entry makes a put that races with the sweep
		// conflict with it, so the sweep never deletes a fresh record.
		err := db.guard("sweep orphaned records", func() error {
			return db.bdb.Update(func(txn *badger.Txn) error {
				if _, err := txn.Get(ikey); !errors.Is(err, badger.ErrKeyNotFound) {
					return err // indexed after all, or a read error
				}
				return txn.Delete(rkey)
			})
		})
		switch {
		case err == nil:
			n++
		case errors.Is(err, badger.ErrConflict):
		default:
			return n, fmt.Errorf("sweep orphaned records in %s: %w", db.dir, err)
		}
	}
	return n, nil
}

// collectGarbage rewrites value-log files that are mostly garbage, and
// returns how many it rewrote. After each file it pauses as long as the
// rewrite took, so GC takes at most about half of the write path from puts.
func (db *DB) collectGarbage() int {
	for n := 0; n < gcMaxFilesPerRun; n++ {
		free, _, err := diskSpace(db.dir)
		if err != nil {
			db.log.Warn("value-log GC skipped", "err", err)
			return n
		}
		if free < db.maintFloor() {
			db.log.Warn("value-log GC skipped: disk too full to rewrite a value-log file safely; free some space",
				"free", human(free), "need", human(db.maintFloor()))
			return n
		}
		start := time.Now()
		rewrote, err := db.gcOnce()
		if err != nil {
			db.log.Error("value-log GC failed", "err", err)
			return n
		}
		if !rewrote {
			return n
		}
		db.gcFiles.Add(1)
		db.log.Debug("value-log GC rewrote a file", "took", time.Since(start))
		select {
		case <-db.gcStop:
			return n + 1
		case <-time.After(time.Since(start)):
		}
	}
	return gcMaxFilesPerRun
}

// gcOnce rewrites at most one value-log file and reports whether it did.
//
// badger's GC copies the live values into the newest value-log file, without
// syncing (SyncWrites is off), and then deletes the old file: a power cut
// between the two would lose values that were durable. badger defers that
// deletion while any iterator is open, so one is held across the GC and our
// sync, and closing it lets the deletion happen.
func (db *DB) gcOnce() (rewrote bool, err error) {
	// GC reads value-log entries and looks their keys up in the tree: a
	// damaged file must fail this run, not kill the process.
	defer func() {
		if r := recover(); r != nil {
			rewrote, err = false, db.panicked("value-log GC", r)
		}
	}()
	txn := db.bdb.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{0xff}})
	err = db.bdb.RunValueLogGC(db.opts.GCDiscardRatio)
	if err == nil {
		err = db.group.wait(context.Background())
	} else if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
		it.Close()
		return false, nil
	}
	it.Close()
	if err != nil {
		return false, fmt.Errorf("value-log GC in %s: %w", db.dir, err)
	}
	return true, nil
}

// groupSync is the group committer. A writer commits its badger transaction,
// then waits for an fsync round that started after its commit; one round
// serves every writer waiting when it starts, so N concurrent puts cost far
// fewer than N rounds.
//
// An fsync failure is sticky. After a failed fsync Linux may have dropped
// the dirty pages, so retrying cannot prove anything durable: every later
// write fails until the store is reopened, which replays its logs.
type groupSync struct {
	sync  func() error
	kick  chan struct{}
	quit  chan struct{}
	ended chan struct{}
	syncs atomic.Int64

	mu   sync.Mutex
	next chan struct{} // closed when the round that takes it completes
	err  error

	// Only the syncer goroutine touches these.
	seen    map[string]bool // log files seen in the directory
	retired map[string]bool // retired log files already fsynced
}

func newGroupSync(fn func() error) *groupSync {
	g := &groupSync{
		sync:    fn,
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		ended:   make(chan struct{}),
		next:    make(chan struct{}),
		seen:    map[string]bool{},
		retired: map[string]bool{},
	}
	go g.run()
	return g
}

func (g *groupSync) run() {
	defer close(g.ended)
	for {
		select {
		case <-g.kick:
		case <-g.quit:
			return
		}
		// Take the channel before syncing: writers that grab the new one
		// after this point committed too late for this round and wait for
		// the next.
		g.mu.Lock()
		done := g.next
		g.next = make(chan struct{})
		g.mu.Unlock()
		err := g.sync()
		g.syncs.Add(1)
		if err != nil {
			g.mu.Lock()
			if g.err == nil {
				g.err = fmt.Errorf("fsync failed, later writes are refused until the store is reopened (restart the process): %w", err)
			}
			g.mu.Unlock()
		}
		close(done)
	}
}

// wait returns once an fsync round that started after the call has
// completed, or ctx is done.
func (g *groupSync) wait(ctx context.Context) error {
	g.mu.Lock()
	done, err := g.next, g.err
	g.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case g.kick <- struct{}{}:
	default: // a round is already due, and it will take done
	}
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("committed but not yet known durable: %w", ctx.Err())
	}
	return g.failed()
}

func (g *groupSync) failed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil && isNoSpace(g.err) {
		return fmt.Errorf("%w: %v", ErrNoSpace, g.err)
	}
	return g.err
}

func (g *groupSync) stop() {
	close(g.quit)
	<-g.ended
}

// syncRetired fsyncs the memtable logs and value-log files of dir that are
// no longer the newest of their kind and have not been fsynced since they
// retired, and dir itself if a log file appeared since the last round.
func (g *groupSync) syncRetired(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	type file struct {
		name string
		fid  int64
	}
	var logs []file
	newest := map[string]int64{}
	present := map[string]bool{}
	newFile := false
	for _, e := range ents {
		ext := filepath.Ext(e.Name())
		if ext != ".mem" && ext != ".vlog" {
			continue
		}
		fid, err := strconv.ParseInt(strings.TrimSuffix(e.Name(), ext), 10, 64)
		if err != nil {
			continue
		}
		logs = append(logs, file{e.Name(), fid})
		newest[ext] = max(newest[ext], fid)
		present[e.Name()] = true
		if !g.seen[e.Name()] {
			g.seen[e.Name()] = true
			newFile = true
		}
	}
	for _, f := range logs {
		if f.fid == newest[filepath.Ext(f.name)] || g.retired[f.name] {
			continue
		}
		if err := syncPath(filepath.Join(dir, f.name)); err != nil {
			return err
		}
		g.retired[f.name] = true
	}
	for name := range g.seen {
		if !present[name] {
			delete(g.seen, name)
			delete(g.retired, name)
		}
	}
	if newFile {
		return syncPath(dir)
	}
	return nil
}

// badgerLogger passes badger's log lines to slog. Badger's Info lines are
// routine (compactions, replays) and go to Debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) { b.l.Error(badgerMsg(f, a), "component", "badger") }
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(badgerMsg(f, a), "component", "badger")
}
func (b badgerLogger) Infof(f string, a ...any)  { b.l.Debug(badgerMsg(f, a), "component", "badger") }
func (b badgerLogger) Debugf(f string, a ...any) { b.l.Debug(badgerMsg(f, a), "component", "badger") }

func badgerMsg(f string, a []any) string { return strings.TrimSpace(fmt.Sprintf(f, a...)) }
