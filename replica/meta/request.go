package meta

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"
)

// RequestID names one logical proposal, so that proposing it again — after
// leadership moved, a connection to the leader dropped or an answer was
// lost — applies it at most once. See Request.
type RequestID [16]byte

// NewRequestID returns a random request ID.
func NewRequestID() RequestID {
	var id RequestID
	if _, err := rand.Read(id[:]); err != nil {
		// crypto/rand does not fail on the platforms we build for; an ID
		// of zeros would make unrelated requests collide.
		panic(fmt.Sprintf("meta: no randomness for a request ID: %v", err))
	}
	return id
}

// Sub derives the ID of the seq-th proposal made on behalf of one logical
// call (an admin call that proposes several commands): the same base ID and
// sequence give the same ID on every node, so retrying the whole call on
// another node finds each command's first result.
func (id RequestID) Sub(seq uint64) RequestID {
	h := sha256.New()
	h.Write(id[:])
	h.Write(binary.AppendUvarint(nil, seq))
	var out RequestID
	copy(out[:], h.Sum(nil))
	return out
}

// IsZero reports whether id is the zero value (no ID).
func (id RequestID) IsZero() bool { return id == RequestID{} }

func (id RequestID) String() string { return hex.EncodeToString(id[:]) }

// RequestWindow is how long the FSM remembers a request ID and its result,
// measured on the proposers' clocks (the newest At seen, never the applying
// node's clock). A retry later than this applies again; retries come within
// seconds, so the window only has to outlast a client's patience and
// moderate clock skew between nodes. Part of the replicated semantics:
// every node must use the same value.
const RequestWindow = 10 * time.Minute

// requestPruneBatch bounds how many expired request records one entry
// removes, so pruning never makes a single Apply slow; each request adds
// one record and removes up to this many, so the backlog cannot grow.
const requestPruneBatch = 32

// requestPruneSlack lets expired records wait this much longer (proposer
// time), so pruning runs in bursts rather than looking for expired records
// at every entry: an ID is remembered for at least RequestWindow and
// forgotten within RequestWindow + requestPruneSlack.
const requestPruneSlack = int64(10 * time.Second)

// requestOverhead is the most a Request envelope adds to its command's
// encoding: a command that fits MaxCommandSize alone still fits wrapped.
const requestOverhead = 48

// Request wraps a command with a request ID. Applying it:
//   - if ID was applied within RequestWindow, changes nothing and returns the
//     first application's Result (with its Index);
//   - otherwise applies Cmd and remembers ID → Result in the same badger
//     transaction as Cmd's changes, so replay after a restart, snapshots and
//     restores keep the memory exactly as they keep the change.
//
// At is the proposer's clock (unix nanoseconds) when the ID was assigned;
// it orders expiry. Requests do not nest and do not go inside a Batch (a
// Batch goes inside a Request).
type Request struct {
	ID  RequestID
	At  int64
	Cmd Command
}

// TypeRequest is the type of Request. Propose it only once every node runs
// a release that knows it (see CommandType).
const TypeRequest CommandType = 10

func (Request) Type() CommandType { return TypeRequest }

func (c Request) encode(e *encoder) {
	e.b = append(e.b, c.ID[:]...)
	e.varint(c.At)
	var se encoder
	se.u8(uint8(c.Cmd.Type()))
	se.b = c.Cmd.AppendBody(se.b)
	e.bytes(se.b)
}

func decodeRequest(d *decoder, sets *commandSets) (Request, error) {
	var c Request
	if len(d.b) < len(c.ID) {
		d.fail(errTruncated)
		return c, d.err
	}
	copy(c.ID[:], d.b)
	d.b = d.b[len(c.ID):]
	c.At = d.varint()
	inner := d.bytes()
	if d.err != nil {
		return c, d.err
	}
	if len(inner) > MaxCommandSize {
		return c, fmt.Errorf("request %s: command of %d bytes exceeds %d", c.ID, len(inner), MaxCommandSize)
	}
	sd := decoder{b: inner}
	if t := CommandType(sd.u8()); sd.err == nil && t == TypeRequest {
		return c, fmt.Errorf("request %s: requests do not nest", c.ID)
	}
	sd = decoder{b: inner}
	cmd, err := decodeBody(&sd, false, sets)
	if err == nil {
		err = sd.end()
	}
	if err != nil {
		return c, fmt.Errorf("request %s: %w", c.ID, err)
	}
	c.Cmd = cmd
	return c, nil
}

// Keys of the request memory (under the bookkeeping prefix, so snapshots
// carry it like any other state):
//
//	m/rq/<16-byte ID>              → record: At, first index, encoded Result
//	m/rt/<8-byte BE At><16-byte ID> → empty; orders expiry
//	m/rq-high                      → newest At seen (8 bytes BE)
//	m/rq-low                       → no remembered At is older (8 bytes BE)
const (
	prefixReqID   = prefixMeta + "rq/"
	prefixReqTime = prefixMeta + "rt/"
)

var (
	keyReqHigh = []byte(prefixMeta + "rq-high")
	keyReqLow  = []byte(prefixMeta + "rq-low")
)

const requestRecordV1 = 1

func reqIDKey(id RequestID) []byte { return append([]byte(prefixReqID), id[:]...) }

func reqTimeKey(at int64, id RequestID) []byte {
	k := binary.BigEndian.AppendUint64([]byte(prefixReqTime), uint64(at))
	return append(k, id[:]...)
}

func encodeRequestRecord(at int64, r *Result) []byte {
	e := encoder{}
	e.u8(requestRecordV1)
	e.varint(at)
	e.bytes(EncodeResult(*r))
	return e.b
}

func decodeRequestRecord(b []byte) (at int64, r Result, err error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != requestRecordV1 {
		return 0, Result{}, fmt.Errorf("request record version %d unknown", v)
	}
	at = d.varint()
	rb := d.bytes()
	if err := d.end(); err != nil {
		return 0, Result{}, fmt.Errorf("decode request record: %w", err)
	}
	r, err = DecodeResult(rb)
	return at, r, err
}

// request applies an envelope at raft index index. It returns the command
// to report in the entry's Event: the inner command when it applied, nil
// for a repeat (nothing changed).
func (st *applyState) request(c Request, index uint64) (Command, Result) {
	if c.At <= 0 {
		return c.Cmd, result(StatusInvalid, "request %s: proposer time %d is not positive", c.ID, c.At)
	}
	if c.Cmd == nil {
		return nil, result(StatusInvalid, "request %s carries no command", c.ID)
	}
	if v, ok := st.get(reqIDKey(c.ID)); ok {
		_, first, err := decodeRequestRecord(v)
		if err != nil {
			// Only this code writes records: the database is corrupt.
			panic(fmt.Sprintf("meta: request record %s unreadable: %v", c.ID, err))
		}
		return nil, first
	}
	var res Result
	switch c.Cmd.(type) {
	case Request:
		res = result(StatusInvalid, "request %s: requests do not nest", c.ID)
	default:
		res = st.apply(c.Cmd, false)
	}
	// Written after the command: an atomic Batch that rolls back drops the
	// entry's writes so far, and the memory must survive that (a rolled
	// back batch is an answer too, and a retry must get the same one).
	res.Index = index
	for i := range res.Batch {
		res.Batch[i].Index = index
	}
	high, _ := st.count(keyReqHigh)
	high = max(high, c.At)
	st.put(keyReqHigh, encodeCount(high))
	cutoff := high - int64(RequestWindow)
	low, haveLow := st.count(keyReqLow)
	if haveLow && low < cutoff-requestPruneSlack {
		if st.pruneRequests(cutoff) < requestPruneBatch {
			low = cutoff // everything older is gone
		}
	}
	if !haveLow || c.At < low {
		low = c.At
	}
	st.put(keyReqLow, encodeCount(low))
	st.put(reqIDKey(c.ID), encodeRequestRecord(c.At, &res))
	st.put(reqTimeKey(c.At, c.ID), nil)
	return c.Cmd, res
}

// pruneRequests forgets up to requestPruneBatch requests proposed before
// cutoff (proposer time), oldest first, and returns how many it forgot.
func (st *applyState) pruneRequests(cutoff int64) int {
	if cutoff <= 0 {
		return 0
	}
	below := reqTimeKey(cutoff, RequestID{})
	keys := st.keysBelow(prefixReqTime, below, requestPruneBatch)
	for _, k := range keys {
		var id RequestID
		copy(id[:], k[len(prefixReqTime)+8:])
		st.del(reqIDKey(id))
		st.del(k)
	}
	return len(keys)
}

// count reads an 8-byte counter written with encodeCount.
func (st *applyState) count(key []byte) (int64, bool) {
	v, ok := st.get(key)
	if !ok {
		return 0, false
	}
	n, err := decodeCount(v)
	if err != nil {
		panic(fmt.Sprintf("meta: counter %q unreadable: %v", key, err))
	}
	return n, true
}
