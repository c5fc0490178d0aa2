package meta

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// CommandSet is a group of commands that a package above replica plugs into
// the state machine: the host decodes its type bytes with Decode and applies
// them with Apply inside a [Txn] confined to the set's key prefixes, in the
// same badger transaction as the rest of the raft batch, so replay-skip by
// applied index, snapshots and restores treat its state like any other.
//
// Every node of a cluster must open its FSM with the same sets (see
// FSMOptions.CommandSets and doc.go, "Command sets"): a node without a set
// answers its commands StatusInvalid, like a node of an older release.
type CommandSet struct {
	// Name names the set in errors and logs.
	Name string
	// Types are the command type bytes the set owns, with their names (as
	// CommandType.String and batch messages spell them). The values are
	// part of the log format and never change.
	Types map[CommandType]string
	// Prefixes are the key ranges the set's commands may read and write,
	// each inside the tenant keyspace ("t/..."). Sets may not overlap.
	Prefixes []string
	// Decode decodes the body of a command of one of Types (the bytes after
	// the type byte, up to the end of the command). It must reject
	// trailing or truncated input with an error and never panic; an error
	// makes the whole entry StatusInvalid (with the error as message).
	Decode func(t CommandType, body []byte) (Command, error)
	// Apply applies one decoded command. It must be deterministic: read
	// nothing but the command and tx (no clock, no randomness, no I/O). The
	// command's writes are kept only if the result's status is StatusOK; a
	// command that touched keys outside Prefixes gets StatusInvalid and
	// changes nothing.
	Apply func(tx *Txn, cmd Command) Result
}

// commandSets is the registry an FSM was opened with.
type commandSets struct {
	byType map[CommandType]*CommandSet
}

func newCommandSets(sets []CommandSet) (*commandSets, error) {
	r := &commandSets{byType: map[CommandType]*CommandSet{}}
	var prefixes []string
	owner := map[string]string{}
	for i := range sets {
		s := &sets[i]
		switch {
		case s.Name == "":
			return nil, fmt.Errorf("meta: command set %d has no name", i)
		case s.Decode == nil || s.Apply == nil:
			return nil, fmt.Errorf("meta: command set %s lacks Decode or Apply", s.Name)
		case len(s.Types) == 0:
			return nil, fmt.Errorf("meta: command set %s owns no command type", s.Name)
		}
		for t := range s.Types {
			if builtinType(t) {
				return nil, fmt.Errorf("meta: command set %s claims type %d, a built-in command (%s)", s.Name, t, t)
			}
			if o, ok := r.byType[t]; ok {
				return nil, fmt.Errorf("meta: command sets %s and %s both claim type %d", o.Name, s.Name, t)
			}
			r.byType[t] = s
		}
		for _, p := range s.Prefixes {
			if !strings.HasPrefix(p, prefixTenant) || len(p) == len(prefixTenant) {
				return nil, fmt.Errorf("meta: command set %s: prefix %q is not inside the tenant keyspace %q", s.Name, p, prefixTenant)
			}
			for _, q := range prefixes {
				if owner[q] != s.Name && (strings.HasPrefix(p, q) || strings.HasPrefix(q, p)) {
					return nil, fmt.Errorf("meta: command sets %s and %s overlap: prefixes %q and %q", owner[q], s.Name, q, p)
				}
			}
			prefixes = append(prefixes, p)
			owner[p] = s.Name
		}
	}
	return r, nil
}

// set returns the set owning t, nil if none (or r is nil).
func (r *commandSets) set(t CommandType) *CommandSet {
	if r == nil {
		return nil
	}
	return r.byType[t]
}

// typeName names t, asking the registry for the types of command sets.
func (r *commandSets) typeName(t CommandType) string {
	if s := r.set(t); s != nil {
		if n := s.Types[t]; n != "" {
			return n
		}
	}
	return t.String()
}

func builtinType(t CommandType) bool {
	switch t {
	case TypePutObject, TypeDecRef, TypeSetPlacement, TypePurge, TypeNodeSet,
		TypeTenantPut, TypeTenantDelete, TypeBatch, TypeTenantCheck, TypeRequest:
		return true
	}
	return false
}

// Item is one per-item outcome of a command set's command (one recipient of
// a delivery, one message of a flag change): a code and numbers and strings
// that the set defines. The host carries items in Result.Items without
// looking inside; their encoding (a code byte, five uvarints, a string
// list) is fixed because results are stored in the request memory and
// cross the forwarding RPC between releases.
type Item struct {
	Code uint8 // never 0
	Nums [5]uint64
	Strs []string
}

// Result item limits (see Item): a command set's outcomes must fit them.
const (
	MaxResultItems = 20000
	MaxItemStrings = 100
)

// KV is one key and value a Txn scan returns.
type KV struct {
	Key   string
	Value []byte
}

// Txn is what a command set's Apply reads and writes: the state as the
// previous commands left it (committed state, then this raft batch's and
// this entry's writes, then the command's own), confined to the set's key
// prefixes. Writes are staged and reach the raft batch's badger
// transaction only if the command's status is StatusOK.
//
// A record that does not decode means the database is corrupt: like the
// host, a set should panic then rather than diverge from its peers.
type Txn struct {
	st    *applyState
	cs    *CommandSet
	w     map[string]write
	order []string
	err   error // first access outside the set's prefixes
}

func (t *Txn) allowed(k string) bool {
	for _, p := range t.cs.Prefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	if t.err == nil {
		t.err = fmt.Errorf("key %q is outside its prefixes %q", k, t.cs.Prefixes)
	}
	return false
}

// Get returns the value of key and whether it exists.
func (t *Txn) Get(key string) ([]byte, bool) {
	if !t.allowed(key) {
		return nil, false
	}
	if w, ok := t.w[key]; ok {
		return w.val, !w.del
	}
	return t.st.get([]byte(key))
}

func (t *Txn) set(k string, w write) {
	if !t.allowed(k) {
		return
	}
	if _, ok := t.w[k]; !ok {
		t.order = append(t.order, k)
	}
	t.w[k] = w
}

// Put sets key to val.
func (t *Txn) Put(key string, val []byte) { t.set(key, write{val: val}) }

// Delete removes key; a missing key is not an error.
func (t *Txn) Delete(key string) { t.set(key, write{del: true}) }

// Rollback drops every write the command staged so far (the command may
// go on and stage others).
func (t *Txn) Rollback() {
	clear(t.w)
	t.order = t.order[:0]
}

func (t *Txn) commit() {
	for _, k := range t.order {
		t.st.set(k, t.w[k])
	}
}

// Scan returns every live key under prefix, with its value, in key order.
func (t *Txn) Scan(prefix string) []KV {
	if !t.allowed(prefix) {
		return nil
	}
	m := map[string][]byte{}
	it := t.st.rd.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte(prefix)})
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := itemValue(it.Item())
		if err != nil {
			it.Close()
			panic(fmt.Sprintf("meta: scan %q during apply: %v", prefix, err))
		}
		m[string(it.Item().Key())] = v
	}
	it.Close()
	for _, ws := range []map[string]write{t.st.batch, t.st.cur, t.w} {
		for k, w := range ws {
			if strings.HasPrefix(k, prefix) {
				if w.del {
					delete(m, k)
				} else {
					m[k] = w.val
				}
			}
		}
	}
	return sortedKVs(m, -1)
}

// ScanRange returns the first limit live keys under prefix that sort
// before end, in key order. Unlike Scan it reads only as much of the
// committed state as it needs.
func (t *Txn) ScanRange(prefix, end string, limit int) []KV {
	if !t.allowed(prefix) {
		return nil
	}
	pend := map[string]write{}
	for _, ws := range []map[string]write{t.st.batch, t.st.cur, t.w} {
		for k, w := range ws {
			if k >= prefix && k < end {
				pend[k] = w
			}
		}
	}
	dels := 0
	for _, w := range pend {
		if w.del {
			dels++
		}
	}
	m := map[string][]byte{}
	it := t.st.rd.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: []byte(prefix)})
	for it.Seek([]byte(prefix)); it.Valid() && len(m) < limit+dels; it.Next() {
		k := string(it.Item().Key())
		if k >= end {
			break
		}
		v, err := itemValue(it.Item())
		if err != nil {
			it.Close()
			panic(fmt.Sprintf("meta: scan %q during apply: %v", prefix, err))
		}
		m[k] = v
	}
	it.Close()
	for k, w := range pend {
		if w.del {
			delete(m, k)
		} else {
			m[k] = w.val
		}
	}
	return sortedKVs(m, limit)
}

func sortedKVs(m map[string][]byte, limit int) []KV {
	out := make([]KV, 0, len(m))
	for k, v := range m {
		out = append(out, KV{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if limit >= 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// Object returns an object's record as this command sees it.
func (t *Txn) Object(id BlobID) (Object, bool) {
	k := string(objectKey(id))
	b, ok := t.w[k]
	v, found := b.val, ok && !b.del
	if !ok {
		v, found = t.st.get([]byte(k))
	}
	if !found {
		return Object{}, false
	}
	o, err := decodeObjectRecord(v)
	if err != nil {
		panic(fmt.Sprintf("meta: object record %s unreadable: %v", id, err))
	}
	return o, true
}

// AddRefs changes an object's reference count by delta; at zero the object
// becomes a tombstone stamped now, above zero it is live. It reports false,
// changing nothing, if the object has no record or too few references (a
// caller bug or corrupt state). References are how a command set's records
// hold stored bodies: each reference it adds it must release exactly once.
func (t *Txn) AddRefs(id BlobID, delta int64, now int64) bool {
	if delta == 0 {
		return true
	}
	o, ok := t.Object(id)
	if !ok {
		return false
	}
	if o.Refs+delta < 0 || delta > 0 && o.Refs > math.MaxInt64-delta {
		return false
	}
	o.Refs += delta
	if o.Refs == 0 {
		o.Deleted = now
	} else {
		o.Deleted = 0
	}
	k := string(objectKey(id))
	if _, ok := t.w[k]; !ok {
		t.order = append(t.order, k)
	}
	t.w[k] = write{val: encodeObjectRecord(&o)}
	return true
}

// applySet runs a command set's command on a staging Txn and keeps its
// writes only if it succeeded.
func (st *applyState) applySet(s *CommandSet, cmd Command) Result {
	t := &Txn{st: st, cs: s, w: map[string]write{}}
	r := s.Apply(t, cmd)
	if t.err != nil {
		return result(StatusInvalid, "command set %s: %s: %v", s.Name, st.sets.typeName(cmd.Type()), t.err)
	}
	if r.Status == StatusOK {
		t.commit()
	}
	return r
}

// decodeSetBody decodes the rest of d as the body of a command of a
// registered set, or fails as for an unknown type.
func decodeSetBody(d *decoder, t CommandType, sets *commandSets) (Command, error) {
	s := sets.set(t)
	if s == nil {
		return nil, fmt.Errorf("unknown command type %d; a newer node proposed it, upgrade this node", uint8(t))
	}
	body := d.b
	d.b = nil
	cmd, err := s.Decode(t, body)
	if err != nil {
		return nil, err
	}
	if cmd == nil || cmd.Type() != t {
		return nil, fmt.Errorf("command set %s decoded type %d into %T", s.Name, t, cmd)
	}
	return cmd, nil
}
