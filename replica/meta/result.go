package meta

import (
	"fmt"
)

// Status is the outcome of one applied command.
type Status uint8

const (
	statusUnknown Status = iota // zero value: never produced, rejected on decode
	// StatusOK means the command applied (or, for Purge, was evaluated:
	// see Result.Purged).
	StatusOK
	// StatusNotFound: the object, node or key does not exist.
	StatusNotFound
	// StatusConflict: a condition did not hold; nothing changed.
	StatusConflict
	// StatusInvalid: the command can never apply; nothing changed.
	StatusInvalid
	// StatusAborted: an atomic Batch rolled back; see Result.Batch.
	StatusAborted
	// StatusSkipped: the entry was at or below the FSM's applied index (a
	// replay after restart) and was ignored. Proposals never see it.
	StatusSkipped
	statusEnd
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNotFound:
		return "not found"
	case StatusConflict:
		return "conflict"
	case StatusInvalid:
		return "invalid"
	case StatusAborted:
		return "aborted"
	case StatusSkipped:
		return "skipped"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Result is what applying one command produced. Apply computes it on every
// node identically; the proposer gets it back from Propose.
type Result struct {
	// Index is the raft log index of the entry that carried the command;
	// wait for it with WaitApplied to read your own write on another node.
	Index   uint64
	Status  Status
	Message string // why the status is not OK
	// Object is the record after the command for PutObject, DecRef and
	// SetPlacement (on a conflict: the current record), and the removed
	// record for a successful Purge.
	Object Object
	// Created: PutObject made a new record with the caller's placement.
	// When false the ID existed: the caller must not write or keep shards of
	// its own but use Object.Placement.
	Created bool
	// Revived: PutObject found a tombstone (Refs 0) and made it live again.
	Revived bool
	// Purged: Purge removed the record; the caller deletes its shards.
	Purged bool
	// Found: TenantPut or TenantDelete found an existing value.
	Found bool
	// Batch holds one result per command of a Batch, in order. In an
	// aborted atomic batch they show what each command would have done.
	Batch []Result
	// Items holds a command set's per-item outcomes (see Item); the set
	// defines what they mean.
	Items []Item
}

// Err returns nil when the status is OK (or Skipped), and otherwise an error
// wrapping ErrNotFound, ErrConflict, ErrInvalid or ErrAborted.
func (r *Result) Err() error {
	var kind error
	switch r.Status {
	case StatusOK, StatusSkipped:
		return nil
	case StatusNotFound:
		kind = ErrNotFound
	case StatusConflict:
		kind = ErrConflict
	case StatusInvalid:
		kind = ErrInvalid
	case StatusAborted:
		kind = ErrAborted
	default:
		return fmt.Errorf("%w: result status %d unknown", ErrInvalid, r.Status)
	}
	if r.Message == "" {
		return kind
	}
	return fmt.Errorf("%w: %s", kind, r.Message)
}

func result(status Status, format string, args ...any) Result {
	return Result{Status: status, Message: fmt.Sprintf(format, args...)}
}

const resultFormatV1 = 1

// EncodeResult encodes r for the forwarding RPC (see Store.ApplyEncoded).
func EncodeResult(r Result) []byte {
	e := encoder{}
	e.u8(resultFormatV1)
	e.result(&r, 0)
	return e.b
}

// DecodeResult decodes what EncodeResult produced.
func DecodeResult(b []byte) (Result, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != resultFormatV1 {
		return Result{}, fmt.Errorf("%w: result format version %d unknown; upgrade this node", ErrInvalid, v)
	}
	r := d.result(0)
	if err := d.end(); err != nil {
		return Result{}, fmt.Errorf("%w: decode result: %v", ErrInvalid, err)
	}
	return r, nil
}

func (e *encoder) result(r *Result, depth int) {
	e.uvarint(r.Index)
	e.u8(uint8(r.Status))
	e.str(r.Message)
	e.object(&r.Object)
	var flags uint8
	for i, f := range []bool{r.Created, r.Revived, r.Purged, r.Found, len(r.Items) > 0} {
		if f {
			flags |= 1 << i
		}
	}
	e.u8(flags)
	if len(r.Items) > 0 {
		e.items(r.Items) // flag bit 4: only command sets' commands set it
	}
	if depth > 0 {
		return // batches do not nest
	}
	e.uvarint(uint64(len(r.Batch)))
	for i := range r.Batch {
		e.result(&r.Batch[i], depth+1)
	}
}

func (d *decoder) result(depth int) Result {
	var r Result
	r.Index = d.uvarint()
	r.Status = Status(d.u8())
	if d.err == nil && (r.Status == statusUnknown || r.Status >= statusEnd) {
		d.fail(fmt.Errorf("result status %d unknown", r.Status))
	}
	r.Message = d.str()
	r.Object = d.object()
	flags := d.u8()
	if flags >= 1<<5 {
		d.fail(fmt.Errorf("result flags %#x unknown", flags))
	}
	r.Created, r.Revived, r.Purged, r.Found = flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0
	if flags&16 != 0 {
		r.Items = d.items()
	}
	if depth > 0 {
		return r
	}
	if n := d.count(MaxBatchCommands, 1); n > 0 {
		r.Batch = make([]Result, n)
		for i := range r.Batch {
			r.Batch[i] = d.result(depth + 1)
		}
	}
	return r
}

func (e *encoder) items(items []Item) {
	e.uvarint(uint64(len(items)))
	for i := range items {
		it := &items[i]
		e.u8(it.Code)
		for _, n := range it.Nums {
			e.uvarint(n)
		}
		e.uvarint(uint64(len(it.Strs)))
		for _, s := range it.Strs {
			e.str(s)
		}
	}
}

func (d *decoder) items() []Item {
	n := d.count(MaxResultItems, 7)
	if n == 0 {
		return nil
	}
	out := make([]Item, n)
	for i := range out {
		it := &out[i]
		it.Code = d.u8()
		if d.err == nil && it.Code == 0 {
			d.fail(fmt.Errorf("result item code 0"))
		}
		for j := range it.Nums {
			it.Nums[j] = d.uvarint()
		}
		if m := d.count(MaxItemStrings, 1); m > 0 {
			it.Strs = make([]string, m)
			for j := range it.Strs {
				it.Strs[j] = d.str()
			}
		}
	}
	return out
}
