package meta

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/hashicorp/raft"

	"hastore/storage"
)

// FSMOptions configures an FSM.
type FSMOptions struct {
	Logger *slog.Logger
	// OnApply, if set, is called after each applied command entry and after
	// each restore, in log order, on raft's FSM goroutine once the change is
	// visible to reads. It must return quickly and must not propose (that
	// would wait for this very goroutine): hand the event to a queue. For a
	// bounded buffer that can never stall Apply use FSM.Subscribe.
	OnApply func(Event)
	// Badger, if set, adjusts the badger options (memory, compaction). It
	// must not turn SyncWrites on or off: the FSM's crash story does not
	// depend on it either way.
	Badger func(badger.Options) badger.Options
	// CommandSets are the plug-in command sets this FSM applies, besides
	// the built-in commands. Every node must list the same sets: a command
	// of a set a node lacks is StatusInvalid there (see doc.go).
	CommandSets []CommandSet
}

// FSM is the replicated metadata state machine: a raft.BatchingFSM over a
// badger database. Reads may run concurrently with Apply and see committed
// raft batches whole.
type FSM struct {
	sets *commandSets
	dir  string
	opts FSMOptions
	log  *slog.Logger

	mu       sync.Mutex
	cur      *dbHandle
	gen      int
	closed   bool
	closeErr error
	open     sync.WaitGroup // one per open badger generation

	applied  atomic.Uint64
	waitMu   sync.Mutex
	waitCh   chan struct{} // closed and replaced whenever applied advances
	closedCh chan struct{}

	subMu sync.Mutex
	subs  map[*Subscription]struct{}

	discarded bool // state was thrown away at open; see doc.go

	damaged  atomic.Bool // a read found the badger files damaged; see damagedRead
	onDamage func(error) // set by Store before raft starts
}

var _ raft.BatchingFSM = (*FSM)(nil)

// dbHandle is one badger generation. A restore builds a new generation and
// swaps it in; the old one closes when its last reader (or snapshot being
// persisted) releases it, so restores never wait for readers and readers
// never see a half-loaded database.
type dbHandle struct {
	db      *badger.DB
	dir     string
	refs    int
	retired bool
	remove  bool   // delete dir after close (replaced generation)
	moveTo  string // with remove: rename dir here instead (damaged generation)
}

const (
	currentFile = "CURRENT"
	cleanFile   = "CLEAN"
	genPrefix   = "gen-"
)

// OpenFSM opens (or creates) the FSM state in dir, a directory of its own.
//
// If the previous process did not Close the FSM, the state is discarded and
// AppliedIndex is 0: raft rebuilds it from its snapshot and log when it
// starts (see doc.go for why a crash leaves nothing else to trust).
func OpenFSM(dir string, opts FSMOptions) (*FSM, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	sets, err := newCommandSets(opts.CommandSets)
	if err != nil {
		return nil, err
	}
	f := &FSM{
		sets:     sets,
		dir:      dir,
		opts:     opts,
		log:      opts.Logger.With("component", "meta.fsm"),
		waitCh:   make(chan struct{}),
		closedCh: make(chan struct{}),
		subs:     make(map[*Subscription]struct{}),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil { // the state holds password hashes
		return nil, fmt.Errorf("meta: create FSM dir: %w", err)
	}
	gen, sealed, haveCurrent, err := readCurrent(dir)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(filepath.Join(dir, cleanFile))
	clean := statErr == nil
	fresh := !haveCurrent
	switch {
	case haveCurrent && !clean:
		f.log.Warn("FSM was not closed cleanly; discarding its state, raft will rebuild it from the latest snapshot and the log", "dir", dir, "generation", gen)
	case haveCurrent && !sealed:
		f.log.Warn("FSM state was written by an earlier release, without value checksums; discarding it, raft will rebuild it from the latest snapshot and the log", "dir", dir, "generation", gen)
	}
	if haveCurrent && (!clean || !sealed) {
		gen++
		fresh = true
		f.discarded = true
	}
	if !haveCurrent {
		gen = 1
	}
	// Remove the marker before the first write: from here on, a crash
	// must again be noticed by the next open.
	if clean {
		if err := os.Remove(filepath.Join(dir, cleanFile)); err != nil {
			return nil, fmt.Errorf("meta: remove clean-shutdown marker: %w", err)
		}
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	h, err := f.openGen(gen, fresh)
	var applied uint64
	if err == nil {
		applied, err = readApplied(h.db)
		if err != nil {
			// Not Close: that would mark this unreadable state clean.
			f.closeHandle(h)
		}
	}
	if err != nil && !fresh {
		// The state is derived from raft: a damaged generation is set
		// aside and raft rebuilds the state from its snapshot and log,
		// as after a crash.
		if h, err = f.replaceDamaged(gen, err); err != nil {
			return nil, err
		}
		gen++
		fresh, applied = true, 0
	}
	if err != nil {
		return nil, err
	}
	if fresh {
		if err := writeCurrent(dir, gen); err != nil {
			f.closeHandle(h)
			return nil, err
		}
	}
	f.cur, f.gen = h, gen
	if err := removeOtherGens(dir, gen); err != nil {
		f.log.Warn("could not remove old FSM generations; they only waste space", "error", err)
	}
	f.applied.Store(applied)
	return f, nil
}

// Discarded reports whether OpenFSM threw the state away because the
// previous process had not closed it.
func (f *FSM) Discarded() bool { return f.discarded }

func (f *FSM) openGen(gen int, fresh bool) (*dbHandle, error) {
	path := filepath.Join(f.dir, genName(gen))
	if fresh {
		if err := os.RemoveAll(path); err != nil {
			return nil, fmt.Errorf("meta: clear FSM generation dir: %w", err)
		}
	}
	o := badger.DefaultOptions(path).
		WithSyncWrites(false).
		// Blocks are verified on every read, whole tables before open
		// (see openBadger): a damaged file is then an error, not a
		// panic or wrong metadata.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithLogger(badgerLogger{f.log}).
		WithMemTableSize(32 << 20).
		WithNumMemtables(3).
		WithBlockCacheSize(64 << 20).
		WithValueLogFileSize(128 << 20)
	if f.opts.Badger != nil {
		o = f.opts.Badger(o)
	}
	o = o.WithDir(path).WithValueDir(path)
	db, err := openBadger(o, !fresh)
	if err != nil {
		return nil, fmt.Errorf("meta: open FSM badger at %s: %w", path, err)
	}
	f.open.Add(1)
	return &dbHandle{db: db, dir: path}, nil
}

// genSealed ends the name of a generation whose values are sealed
// (seal.go). Generations of earlier releases lack it and are rebuilt from
// raft when opened; an earlier release refuses a sealed generation's name
// instead of reading its values with the seal attached.
const genSealed = ".s1"

func genName(gen int) string { return fmt.Sprintf("%s%06d%s", genPrefix, gen, genSealed) }

// readCurrent returns the generation CURRENT names; sealed is false for a
// generation written by a release before value seals.
func readCurrent(dir string) (gen int, sealed, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, currentFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, false, nil
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("meta: read FSM %s: %w", currentFile, err)
	}
	s := strings.TrimSpace(string(b))
	num, sealed := strings.CutSuffix(strings.TrimPrefix(s, genPrefix), genSealed)
	n, err := strconv.Atoi(num)
	if !strings.HasPrefix(s, genPrefix) || err != nil || n < 1 {
		return 0, false, false, fmt.Errorf("meta: FSM %s holds %q, not a generation name; remove %s to rebuild the FSM from raft", currentFile, s, dir)
	}
	return n, sealed, true, nil
}

// writeCurrent points CURRENT at gen atomically (write, fsync, rename,
// fsync dir), so an interrupted restore leaves the previous generation in
// charge.
func writeCurrent(dir string, gen int) error {
	tmp := filepath.Join(dir, currentFile+".tmp")
	if err := writeFileSync(tmp, []byte(genName(gen)+"\n")); err != nil {
		return fmt.Errorf("meta: write FSM %s: %w", currentFile, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, currentFile)); err != nil {
		return fmt.Errorf("meta: install FSM %s: %w", currentFile, err)
	}
	return syncDir(dir)
}

func writeFileSync(path string, data []byte) error {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("meta: open dir for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("meta: fsync dir %s: %w", dir, err)
	}
	return nil
}

func removeOtherGens(dir string, keep int) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), genPrefix) && e.Name() != genName(keep) {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

func readApplied(db *badger.DB) (applied uint64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("meta: read FSM applied index: %w: %v", ErrDamaged, r)
		}
	}()
	err = db.View(func(txn *badger.Txn) error {
		v, ok, err := txnGet(txn, keyApplied)
		if err != nil || !ok {
			return err
		}
		if len(v) != 8 {
			return fmt.Errorf("applied index record of %d bytes", len(v))
		}
		applied = binary.BigEndian.Uint64(v)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("meta: read FSM applied index: %w: %v", ErrDamaged, err)
	}
	return applied, nil
}

func (f *FSM) acquire() (*dbHandle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	f.cur.refs++
	return f.cur, nil
}

func (f *FSM) release(h *dbHandle) {
	f.mu.Lock()
	h.refs--
	done := h.retired && h.refs == 0
	f.mu.Unlock()
	if done {
		f.closeHandle(h)
	}
}

// swap makes h the current generation; the previous one is closed and
// deleted once nobody uses it.
func (f *FSM) swap(h *dbHandle, gen int) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return ErrClosed
	}
	old := f.cur
	f.cur, f.gen = h, gen
	old.retired, old.remove = true, true
	done := old.refs == 0
	f.mu.Unlock()
	if done {
		f.closeHandle(old)
	}
	return nil
}

func (f *FSM) closeHandle(h *dbHandle) {
	err := h.db.Close()
	if h.remove && h.moveTo != "" {
		if rerr := os.Rename(h.dir, h.moveTo); rerr != nil {
			f.log.Warn("could not move the damaged FSM generation aside; deleting it", "dir", h.dir, "error", rerr)
			h.moveTo = ""
		}
	}
	if h.remove && h.moveTo == "" {
		if rerr := os.RemoveAll(h.dir); rerr != nil {
			f.log.Warn("could not remove replaced FSM generation; it only wastes space", "dir", h.dir, "error", rerr)
		}
	} else if !h.remove && err != nil {
		f.mu.Lock()
		f.closeErr = err
		f.mu.Unlock()
	}
	f.open.Done()
}

// Close closes the database once every reader and snapshot has released
// it, and then records a clean shutdown so that the next open trusts the
// state. Call it only after raft has shut down (Store.Close does).
func (f *FSM) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	close(f.closedCh)
	h := f.cur
	h.retired = true
	done := h.refs == 0
	f.mu.Unlock()
	if done {
		f.closeHandle(h)
	}
	f.open.Wait()

	f.subMu.Lock()
	for s := range f.subs {
		s.err = ErrClosed
		close(s.ch)
		delete(f.subs, s)
	}
	f.subMu.Unlock()

	f.mu.Lock()
	err := f.closeErr
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("meta: close FSM badger: %w", err)
	}
	if f.damaged.Load() {
		// No clean marker: the next open discards the state and raft
		// rebuilds it.
		return nil
	}
	if err := writeFileSync(filepath.Join(f.dir, cleanFile), nil); err != nil {
		return fmt.Errorf("meta: record clean FSM shutdown (the next open will rebuild from raft): %w", err)
	}
	if err := syncDir(f.dir); err != nil {
		return err
	}
	return nil
}

// AppliedIndex returns the raft index of the last entry applied (or the
// index of the snapshot last restored).
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

func (f *FSM) setApplied(i uint64) {
	f.applied.Store(i)
	f.waitMu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.waitMu.Unlock()
}

// WaitApplied blocks until the FSM has applied index (or a later one), the
// context ends or the FSM closes. With the index from a leader's
// Store.LeaderCommitIndex it gives a follower read-your-writes.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		if f.applied.Load() >= index {
			return nil
		}
		f.waitMu.Lock()
		ch := f.waitCh
		f.waitMu.Unlock()
		// Re-check: setApplied stores before swapping the channel, so if we
		// got the new channel the store is visible now.
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("meta: wait for raft index %d (applied %d): %w", index, f.applied.Load(), ctx.Err())
		case <-f.closedCh:
			return ErrClosed
		}
	}
}

func (f *FSM) view(fn func(txn *badger.Txn) error) (err error) {
	h, err := f.acquire()
	if err != nil {
		return err
	}
	defer f.release(h)
	defer func() {
		if r := recover(); r != nil {
			err = f.damagedRead(r)
		}
	}()
	err = h.db.View(fn)
	if err != nil && badgerDamage(err) {
		err = f.damagedRead(err)
	}
	return err
}

// Object returns the record of id; ok is false if there is none.
func (f *FSM) Object(id storage.BlobID) (o Object, ok bool, err error) {
	err = f.view(func(txn *badger.Txn) error {
		v, found, err := txnGet(txn, objectKey(id))
		if err != nil || !found {
			return err
		}
		o, err = decodeObjectRecord(v)
		ok = err == nil
		return err
	})
	if err != nil {
		return Object{}, false, fmt.Errorf("meta: read object %s: %w", id, err)
	}
	return o, ok, nil
}

// WalkObjects calls fn for every object record (tombstones included) in ID
// order. A non-nil error from fn stops the walk and is returned.
func (f *FSM) WalkObjects(fn func(Object) error) error {
	return f.WalkObjectsFrom(storage.BlobID{}, fn)
}

// WalkObjectsFrom is WalkObjects starting at ID start (inclusive), so a long
// scan can be done in slices, each under a short-lived read transaction.
func (f *FSM) WalkObjectsFrom(start storage.BlobID, fn func(Object) error) error {
	return f.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte(prefixObject)})
		defer it.Close()
		for it.Seek(objectKey(start)); it.Valid(); it.Next() {
			var o Object
			err := viewValue(it.Item(), func(v []byte) error {
				var err error
				o, err = decodeObjectRecord(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("meta: walk objects at key %x: %w", it.Item().Key(), err)
			}
			if err := fn(o); err != nil {
				return err
			}
		}
		return nil
	})
}

// ObjectCount returns the number of object records, tombstones included.
func (f *FSM) ObjectCount() (int64, error) {
	var n int64
	err := f.view(func(txn *badger.Txn) error {
		v, ok, err := txnGet(txn, keyObjectCount)
		if err != nil || !ok {
			return err
		}
		n, err = decodeCount(v)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("meta: read object count: %w", err)
	}
	return n, nil
}

// Nodes returns every membership record, sorted by ID.
func (f *FSM) Nodes() ([]Node, error) {
	var nodes []Node
	err := f.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte(prefixNode)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			err := viewValue(it.Item(), func(v []byte) error {
				n, err := decodeNodeRecord(v)
				nodes = append(nodes, n)
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("meta: read nodes: %w", err)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	return nodes, nil
}

// TenantGet returns the value of key in tenant's keyspace.
func (f *FSM) TenantGet(tenant, key string) (value []byte, ok bool, err error) {
	if err := validTenant(tenant); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	err = f.view(func(txn *badger.Txn) error {
		value, ok, err = txnGet(txn, tenantKey(tenant, key))
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("meta: read tenant %q key %q: %w", tenant, key, err)
	}
	return value, ok, nil
}

// TenantScan calls fn for every key of tenant that starts with prefix, in
// key order. fn may keep value. A non-nil error from fn stops the scan and
// is returned.
func (f *FSM) TenantScan(tenant, prefix string, fn func(key string, value []byte) error) error {
	if err := validTenant(tenant); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	base := tenantPrefix(tenant)
	return f.view(func(txn *badger.Txn) error {
		p := append(append([]byte(nil), base...), prefix...)
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: p})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := itemValue(it.Item())
			if err != nil {
				return fmt.Errorf("meta: scan tenant %q: %w", tenant, err)
			}
			if err := fn(string(it.Item().Key()[len(base):]), v); err != nil {
				return err
			}
		}
		return nil
	})
}

func txnGet(txn *badger.Txn, key []byte) ([]byte, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err := itemValue(item)
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

func encodeCount(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

func decodeCount(v []byte) (int64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("counter record of %d bytes", len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// Subscription is a bounded, ordered stream of Events. Apply never waits
// for it: a subscriber that lets its buffer fill is cancelled (Err returns
// ErrLagged) and must reload state and subscribe again.
type Subscription struct {
	f   *FSM
	ch  chan Event
	err error // set before ch is closed
}

// Subscribe starts a subscription buffering up to buffer events (at least
// 1). To mirror state: subscribe, then read the state and note
// AppliedIndex, then apply events above that index and ignore the rest; no
// change committed after the read is missed.
func (f *FSM) Subscribe(buffer int) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	s := &Subscription{f: f, ch: make(chan Event, buffer)}
	f.subMu.Lock()
	defer f.subMu.Unlock()
	select {
	case <-f.closedCh:
		s.err = ErrClosed
		close(s.ch)
	default:
		f.subs[s] = struct{}{}
	}
	return s
}

// Events returns the stream; it is closed when the subscription ends.
func (s *Subscription) Events() <-chan Event { return s.ch }

// Err says why Events was closed: ErrLagged, ErrClosed, or nil after Close.
// Call it only after Events is closed.
func (s *Subscription) Err() error { return s.err }

// Close ends the subscription.
func (s *Subscription) Close() {
	s.f.subMu.Lock()
	defer s.f.subMu.Unlock()
	if _, ok := s.f.subs[s]; ok {
		delete(s.f.subs, s)
		close(s.ch)
	}
}

func (f *FSM) emit(events []Event) {
	for _, ev := range events {
		if f.opts.OnApply != nil {
			f.opts.OnApply(ev)
		}
	}
	f.subMu.Lock()
	defer f.subMu.Unlock()
	for s := range f.subs {
		for _, ev := range events {
			select {
			case s.ch <- ev:
				continue
			default:
			}
			s.err = ErrLagged
			close(s.ch)
			delete(f.subs, s)
			break
		}
	}
}

// reset replaces the state with an empty generation. Only for Open, before
// raft starts: raft then rebuilds the state from its snapshot and log.
func (f *FSM) reset() error {
	f.mu.Lock()
	gen := f.gen + 1
	f.mu.Unlock()
	h, err := f.openGen(gen, true)
	if err == nil {
		err = writeCurrent(f.dir, gen)
	}
	if err == nil {
		err = f.swap(h, gen)
	}
	if err != nil {
		if h != nil {
			h.remove = true
			f.closeHandle(h)
		}
		return fmt.Errorf("meta: reset FSM state: %w", err)
	}
	f.applied.Store(0)
	f.discarded = true
	return nil
}
