package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// Apply applies one entry. Raft calls ApplyBatch instead; Apply exists for
// the raft.FSM interface.
func (f *FSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies raft entries in order and returns one Result per
// entry. All entries of the batch commit in one badger transaction together
// with the index of the last one, so the applied index always describes the
// state exactly. Entries at or below the applied index are skipped: after a
// restart raft re-delivers the log after its last snapshot, and applying
// those entries again would, for instance, count references twice.
//
// Apply reads nothing but the entry and the state: no clock, no randomness,
// no I/O beyond badger. A badger failure here cannot be reported to raft
// (the entry is committed), so it panics; the node restarts, discards the
// FSM state and rebuilds it from raft (fail-stop rather than diverge).
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	h, err := f.acquire()
	if err != nil {
		panic(fmt.Sprintf("meta: raft applied entries to a closed FSM: %v", err))
	}
	defer f.release(h)

	st := newApplyState(h.db, f.sets)
	defer st.rd.Discard()
	applied := f.applied.Load()
	last := applied
	// Events are collected whether or not anyone listens now: a subscriber
	// may arrive before the commit, and it must not miss this batch.
	events := make([]Event, 0, len(logs))
	for i, l := range logs {
		if l.Index <= last {
			out[i] = Result{Index: l.Index, Status: StatusSkipped, Message: fmt.Sprintf("entry %d already applied (FSM at %d)", l.Index, last)}
			continue
		}
		var (
			cmd Command
			res Result
		)
		switch l.Type {
		case raft.LogCommand:
			cmd, res = st.applyEntry(l.Data, l.Index)
		default:
			// Configuration entries change nothing here, but recording their
			// index keeps AppliedIndex close to raft's.
			res = Result{Status: StatusOK}
		}
		if res.Index == 0 { // a repeated Request keeps its first index
			res.Index = l.Index
			for j := range res.Batch {
				res.Batch[j].Index = l.Index
			}
		}
		st.endEntry(l.Index)
		last = l.Index
		out[i] = res
		if l.Type == raft.LogCommand {
			events = append(events, Event{Index: l.Index, Cmd: cmd, Result: res})
		}
	}
	if last == applied {
		return out
	}
	if err := st.commit(last); err != nil {
		panic(fmt.Sprintf("meta: commit FSM state through raft index %d: %v", last, err))
	}
	f.setApplied(last)
	if len(events) > 0 {
		f.emit(events)
	}
	return out
}

type write struct {
	val []byte
	del bool
}

type keyWrite struct {
	key string
	write
}

// applyState collects the writes of one raft batch. Reads see, in order:
// the current entry's writes, earlier entries' writes, then the committed
// state. Keeping an entry's writes apart until it ends lets an atomic Batch
// roll back by dropping them.
type applyState struct {
	sets    *commandSets
	db      *badger.DB
	rd      *badger.Txn
	batch   map[string]write
	entries [][]keyWrite // per entry, for the transaction-too-big fallback
	idx     []uint64
	cur     map[string]write
	order   []string
	// reqTimes holds every request-expiry key written in this raft batch,
	// so that pruning sees them exactly as if earlier entries had been
	// committed (raft batches differ between nodes and replays).
	reqTimes map[string]struct{}
}

func newApplyState(db *badger.DB, sets *commandSets) *applyState {
	return &applyState{
		sets:     sets,
		db:       db,
		rd:       db.NewTransaction(false),
		batch:    make(map[string]write),
		cur:      make(map[string]write),
		reqTimes: make(map[string]struct{}),
	}
}

func (st *applyState) get(key []byte) ([]byte, bool) {
	if w, ok := st.cur[string(key)]; ok {
		return w.val, !w.del
	}
	if w, ok := st.batch[string(key)]; ok {
		return w.val, !w.del
	}
	v, ok, err := txnGet(st.rd, key)
	if err != nil {
		panic(fmt.Sprintf("meta: read FSM key %q during apply: %v", key, err))
	}
	return v, ok
}

func (st *applyState) put(key, val []byte) { st.set(string(key), write{val: val}) }
func (st *applyState) del(key []byte)      { st.set(string(key), write{del: true}) }

func (st *applyState) set(k string, w write) {
	if _, ok := st.cur[k]; !ok {
		st.order = append(st.order, k)
	}
	st.cur[k] = w
	if strings.HasPrefix(k, prefixReqTime) {
		st.reqTimes[k] = struct{}{}
	}
}

// pending returns the uncommitted write of k in this raft batch, if any.
func (st *applyState) pending(k string) (write, bool) {
	if w, ok := st.cur[k]; ok {
		return w, true
	}
	w, ok := st.batch[k]
	return w, ok
}

// keysBelow returns, in key order, up to limit existing keys under the
// request-expiry prefix that sort before below, as the state after the
// previous entry holds them (committed keys merged with this batch's
// writes), whatever way raft grouped the entries.
func (st *applyState) keysBelow(prefix string, below []byte, limit int) [][]byte {
	var keys []string
	it := st.rd.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
	n := 0
	for it.Rewind(); it.Valid() && n < limit; it.Next() {
		k := it.Item().Key()
		if bytes.Compare(k, below) >= 0 {
			break
		}
		if w, ok := st.pending(string(k)); ok && w.del {
			continue
		}
		keys = append(keys, string(k))
		n++
	}
	it.Close()
	for k := range st.reqTimes {
		if !strings.HasPrefix(k, prefix) || k >= string(below) {
			continue
		}
		if w, ok := st.pending(k); ok && !w.del {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte(k)
	}
	return out
}

func (st *applyState) rollback() {
	clear(st.cur)
	st.order = st.order[:0]
}

func (st *applyState) endEntry(index uint64) {
	ws := make([]keyWrite, 0, len(st.order))
	for _, k := range st.order {
		w := st.cur[k]
		st.batch[k] = w
		ws = append(ws, keyWrite{k, w})
	}
	st.entries = append(st.entries, ws)
	st.idx = append(st.idx, index)
	st.rollback()
}

func appliedValue(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

// commit writes the batch and the applied index in one transaction. If the
// batch is too big for one, it falls back to one transaction per entry (and
// splits an entry only if it alone is too big); readers may then see a
// batch in parts, which is harmless, and a crash in between is handled like
// any crash (see doc.go).
func (st *applyState) commit(last uint64) error {
	txn := st.db.NewTransaction(true)
	err := func() error {
		for k, w := range st.batch {
			if err := setWrite(txn, k, w); err != nil {
				return err
			}
		}
		if err := setSealed(txn, keyApplied, appliedValue(last)); err != nil {
			return err
		}
		return txn.Commit()
	}()
	if !errors.Is(err, badger.ErrTxnTooBig) {
		txn.Discard()
		return err
	}
	txn.Discard()
	for i, ws := range st.entries {
		txn := st.db.NewTransaction(true)
		for _, w := range ws {
			err := setWrite(txn, w.key, w.write)
			if errors.Is(err, badger.ErrTxnTooBig) {
				if err := txn.Commit(); err != nil {
					return err
				}
				txn = st.db.NewTransaction(true)
				err = setWrite(txn, w.key, w.write)
			}
			if err != nil {
				txn.Discard()
				return err
			}
		}
		if err := setSealed(txn, keyApplied, appliedValue(st.idx[i])); err != nil {
			txn.Discard()
			return err
		}
		if err := txn.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func setWrite(txn *badger.Txn, k string, w write) error {
	if w.del {
		return txn.Delete([]byte(k))
	}
	return setSealed(txn, []byte(k), w.val)
}

// applyEntry applies one command entry. The command returned is the one to
// report in the entry's Event: a Request's inner command, or nil when a
// repeated Request changed nothing.
func (st *applyState) applyEntry(data []byte, index uint64) (Command, Result) {
	cmd, err := decodeCommand(data, st.sets)
	if err != nil {
		return nil, Result{Status: StatusInvalid, Message: err.Error()}
	}
	if req, ok := cmd.(Request); ok {
		return st.request(req, index)
	}
	return cmd, st.apply(cmd, false)
}

func (st *applyState) apply(cmd Command, inBatch bool) Result {
	switch c := cmd.(type) {
	case PutObject:
		return st.putObject(c)
	case DecRef:
		return st.decRef(c)
	case SetPlacement:
		return st.setPlacement(c)
	case Purge:
		return st.purge(c)
	case NodeSet:
		return st.nodeSet(c)
	case TenantPut:
		return st.tenantPut(c)
	case TenantDelete:
		return st.tenantDelete(c)
	case TenantCheck:
		return st.tenantCheck(c)
	case Batch:
		if inBatch {
			return result(StatusInvalid, "batches do not nest")
		}
		return st.batchCmd(c)
	case Request:
		return result(StatusInvalid, "request %s: a request envelope goes only at the top of an entry", c.ID)
	}
	if s := st.sets.set(cmd.Type()); s != nil {
		return st.applySet(s, cmd)
	}
	return result(StatusInvalid, "command type %s has no apply rule", cmd.Type())
}

func (st *applyState) getObject(id []byte) (Object, bool) {
	v, ok := st.get(id)
	if !ok {
		return Object{}, false
	}
	o, err := decodeObjectRecord(v)
	if err != nil {
		// Only this code writes records; an unreadable one means the
		// database is corrupt, and going on would diverge from the peers.
		panic(fmt.Sprintf("meta: object record %x unreadable: %v", id, err))
	}
	return o, true
}

func (st *applyState) addObjectCount(delta int64) {
	var n int64
	if v, ok := st.get(keyObjectCount); ok {
		var err error
		if n, err = decodeCount(v); err != nil {
			panic(fmt.Sprintf("meta: object count unreadable: %v", err))
		}
	}
	st.put(keyObjectCount, encodeCount(n+delta))
}

func (st *applyState) putObject(c PutObject) Result {
	o := c.Object.clone()
	if err := o.validate(); err != nil {
		return result(StatusInvalid, "put object: %v", err)
	}
	if c.Now <= 0 {
		return result(StatusInvalid, "put object %s: proposer time %d is not positive", o.ID, c.Now)
	}
	key := objectKey(o.ID)
	if cur, ok := st.getObject(key); ok {
		if cur.Size != o.Size {
			r := result(StatusConflict, "put object %s: stored with size %d, put with %d (hash collision or caller bug)", o.ID, cur.Size, o.Size)
			r.Object = cur
			return r
		}
		if cur.Refs == math.MaxInt64 {
			r := result(StatusConflict, "put object %s: reference count saturated", o.ID)
			r.Object = cur
			return r
		}
		revived := cur.Refs == 0
		cur.Refs++
		cur.Deleted = 0
		st.put(key, encodeObjectRecord(&cur))
		return Result{Status: StatusOK, Object: cur, Revived: revived}
	}
	o.Refs, o.Created, o.Deleted = 1, c.Now, 0
	st.put(key, encodeObjectRecord(&o))
	st.addObjectCount(1)
	return Result{Status: StatusOK, Object: o, Created: true}
}

func (st *applyState) decRef(c DecRef) Result {
	if c.Now <= 0 {
		return result(StatusInvalid, "decref %s: proposer time %d is not positive", c.ID, c.Now)
	}
	key := objectKey(c.ID)
	o, ok := st.getObject(key)
	if !ok {
		return result(StatusNotFound, "decref: object %s has no record", c.ID)
	}
	if o.Refs <= 0 {
		r := result(StatusConflict, "decref %s: no references left (tombstone since %d)", c.ID, o.Deleted)
		r.Object = o
		return r
	}
	o.Refs--
	if o.Refs == 0 {
		o.Deleted = c.Now
	}
	st.put(key, encodeObjectRecord(&o))
	return Result{Status: StatusOK, Object: o}
}

func (st *applyState) setPlacement(c SetPlacement) Result {
	if len(c.New) > maxNameLen {
		return result(StatusInvalid, "set placement %s: node ID longer than %d bytes", c.ID, maxNameLen)
	}
	key := objectKey(c.ID)
	o, ok := st.getObject(key)
	if !ok {
		return result(StatusNotFound, "set placement: object %s has no record", c.ID)
	}
	if c.Index < 0 || c.Index >= len(o.Placement) {
		r := result(StatusInvalid, "set placement %s: shard index %d outside 0..%d", c.ID, c.Index, len(o.Placement)-1)
		r.Object = o
		return r
	}
	if o.Placement[c.Index] != c.Old {
		r := result(StatusConflict, "set placement %s shard %d: expected node %q, found %q", c.ID, c.Index, c.Old, o.Placement[c.Index])
		r.Object = o
		return r
	}
	o.Placement[c.Index] = c.New
	st.put(key, encodeObjectRecord(&o))
	return Result{Status: StatusOK, Object: o}
}

func (st *applyState) purge(c Purge) Result {
	key := objectKey(c.ID)
	o, ok := st.getObject(key)
	if !ok {
		return result(StatusNotFound, "purge: object %s has no record", c.ID)
	}
	if o.Refs != 0 || o.Deleted > c.OlderThan {
		return Result{Status: StatusOK, Object: o}
	}
	st.del(key)
	st.addObjectCount(-1)
	return Result{Status: StatusOK, Object: o, Purged: true}
}

func (st *applyState) nodeSet(c NodeSet) Result {
	if c.ID == "" || len(c.ID) > maxNameLen {
		return result(StatusInvalid, "node set: node ID must be 1..%d bytes", maxNameLen)
	}
	if len(c.Address) > MaxTenantKeySize {
		return result(StatusInvalid, "node set %q: address longer than %d bytes", c.ID, MaxTenantKeySize)
	}
	if c.State.code() == 0 {
		return result(StatusInvalid, "node set %q: state %q is not %q or %q", c.ID, c.State, NodeActive, NodeRemoved)
	}
	n := Node(c)
	st.put(nodeKey(c.ID), encodeNodeRecord(&n))
	return Result{Status: StatusOK}
}

func (st *applyState) tenantPut(c TenantPut) Result {
	if err := validTenant(c.Tenant); err != nil {
		return result(StatusInvalid, "tenant put: %v", err)
	}
	if err := validTenantKey(c.Key); err != nil {
		return result(StatusInvalid, "tenant put %q: %v", c.Tenant, err)
	}
	if len(c.Value) > MaxTenantValueSize {
		return result(StatusInvalid, "tenant put %q key %q: value of %d bytes exceeds %d", c.Tenant, c.Key, len(c.Value), MaxTenantValueSize)
	}
	key := tenantKey(c.Tenant, c.Key)
	_, found := st.get(key)
	val := c.Value
	if val == nil {
		val = []byte{}
	}
	st.put(key, val)
	return Result{Status: StatusOK, Found: found}
}

func (st *applyState) tenantDelete(c TenantDelete) Result {
	if err := validTenant(c.Tenant); err != nil {
		return result(StatusInvalid, "tenant delete: %v", err)
	}
	if err := validTenantKey(c.Key); err != nil {
		return result(StatusInvalid, "tenant delete %q: %v", c.Tenant, err)
	}
	key := tenantKey(c.Tenant, c.Key)
	_, found := st.get(key)
	if found {
		st.del(key)
	}
	return Result{Status: StatusOK, Found: found}
}

func (st *applyState) batchCmd(c Batch) Result {
	if len(c.Cmds) > MaxBatchCommands {
		return result(StatusInvalid, "batch of %d commands exceeds %d", len(c.Cmds), MaxBatchCommands)
	}
	res := Result{Status: StatusOK, Batch: make([]Result, len(c.Cmds))}
	for i, sub := range c.Cmds {
		r := st.apply(sub, true)
		res.Batch[i] = r
		if c.Atomic && r.Status != StatusOK {
			// The batch is its entry's only command, so dropping the entry's
			// writes undoes exactly the batch.
			st.rollback()
			for j := i + 1; j < len(c.Cmds); j++ {
				res.Batch[j] = result(StatusAborted, "not applied: command %d of the atomic batch failed", i)
			}
			res.Status = StatusAborted
			res.Message = fmt.Sprintf("command %d (%s): %s: %s", i, st.sets.typeName(sub.Type()), r.Status, r.Message)
			return res
		}
	}
	return res
}

func (st *applyState) tenantCheck(c TenantCheck) Result {
	if err := validTenant(c.Tenant); err != nil {
		return result(StatusInvalid, "tenant check: %v", err)
	}
	if err := validTenantKey(c.Key); err != nil {
		return result(StatusInvalid, "tenant check %q: %v", c.Tenant, err)
	}
	if len(c.Want) > MaxTenantValueSize {
		return result(StatusInvalid, "tenant check %q key %q: wanted value of %d bytes exceeds %d", c.Tenant, c.Key, len(c.Want), MaxTenantValueSize)
	}
	if c.Absent && len(c.Want) > 0 {
		return result(StatusInvalid, "tenant check %q key %q: both absent and a wanted value", c.Tenant, c.Key)
	}
	v, found := st.get(tenantKey(c.Tenant, c.Key))
	var r Result
	switch {
	case c.Absent && found:
		r = result(StatusConflict, "tenant check %q key %q: exists, wanted absent", c.Tenant, c.Key)
	case !c.Absent && !found:
		r = result(StatusConflict, "tenant check %q key %q: absent", c.Tenant, c.Key)
	case !c.Absent && !bytes.Equal(v, c.Want):
		r = result(StatusConflict, "tenant check %q key %q: holds another value", c.Tenant, c.Key)
	default:
		r = Result{Status: StatusOK}
	}
	r.Found = found
	return r
}
