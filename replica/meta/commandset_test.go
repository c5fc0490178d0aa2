package meta

import (
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// incr is a toy command set's command: it adds By to the counter at Key
// (a key inside "t/ctr/"), then, if Fail, reports a conflict; Escape
// makes it also write outside its prefix; Ref adds a reference to an
// object.
type incr struct {
	Key    string
	By     int64
	Fail   bool
	Escape bool
	Ref    BlobID
}

const typeIncr CommandType = 200

func (incr) Type() CommandType { return typeIncr }

func (c incr) AppendBody(b []byte) []byte {
	e := encoder{b: b}
	e.str(c.Key)
	e.varint(c.By)
	e.bool(c.Fail)
	e.bool(c.Escape)
	e.id(c.Ref)
	return e.b
}

func counterSet() CommandSet {
	return CommandSet{
		Name:     "counter",
		Types:    map[CommandType]string{typeIncr: "Incr"},
		Prefixes: []string{TenantKey("ctr", "")},
		Decode: func(t CommandType, body []byte) (Command, error) {
			d := decoder{b: body}
			c := incr{Key: d.str(), By: d.varint(), Fail: d.bool(), Escape: d.bool(), Ref: d.id()}
			return c, d.end()
		},
		Apply: func(tx *Txn, cmd Command) Result {
			c := cmd.(incr)
			k := TenantKey("ctr", c.Key)
			var n int64
			if v, ok := tx.Get(k); ok {
				n, _ = binary.Varint(v)
			}
			tx.Put(k, binary.AppendVarint(nil, n+c.By))
			if c.Escape {
				tx.Put(TenantKey("other", c.Key), []byte("x"))
			}
			if !c.Ref.IsZero() && !tx.AddRefs(c.Ref, 1, 1) {
				return Result{Status: StatusNotFound, Message: "no object"}
			}
			if c.Fail {
				return Result{Status: StatusConflict, Message: "asked to fail", Items: []Item{{Code: 2, Nums: [5]uint64{uint64(n)}}}}
			}
			return Result{Status: StatusOK, Items: []Item{{Code: 1, Nums: [5]uint64{uint64(n + c.By), 1 << 40}, Strs: []string{c.Key}}}}
		},
	}
}

func openSetFSM(t *testing.T, sets ...CommandSet) *FSM {
	t.Helper()
	f, err := OpenFSM(t.TempDir(), FSMOptions{Logger: testLogger(t), Badger: smallBadger, CommandSets: sets})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func counter(t *testing.T, f *FSM, key string) int64 {
	t.Helper()
	v, ok, err := f.TenantGet("ctr", key)
	if err != nil || !ok {
		return -1
	}
	n, _ := binary.Varint(v)
	return n
}

func TestCommandSetApply(t *testing.T) {
	f := openSetFSM(t, counterSet())
	obj := testObject("body")
	rs := applyAll(t, f, 1,
		incr{Key: "a", By: 2},
		incr{Key: "a", By: 3},
		incr{Key: "a", By: 100, Fail: true},   // not OK: its write is dropped
		incr{Key: "a", By: 100, Escape: true}, // outside its prefix: invalid, nothing kept
		PutObject{Object: obj, Now: 1},
		incr{Key: "b", By: 1, Ref: obj.ID},
		incr{Key: "c", By: 1, Ref: blobID("missing")},
		Batch{Atomic: true, Cmds: []Command{incr{Key: "a", By: 1}, incr{Key: "a", By: 1, Fail: true}}},
		Batch{Cmds: []Command{incr{Key: "a", By: 10}, TenantPut{Tenant: "ctr", Key: "z", Value: []byte{1}}}},
	)
	want := []Status{StatusOK, StatusOK, StatusConflict, StatusInvalid, StatusOK, StatusOK, StatusNotFound, StatusAborted, StatusOK}
	for i, r := range rs {
		if r.Status != want[i] {
			t.Errorf("entry %d: %v %q, want %v", i+1, r.Status, r.Message, want[i])
		}
	}
	if !strings.Contains(rs[3].Message, "outside its prefixes") {
		t.Errorf("escape message %q", rs[3].Message)
	}
	if !strings.Contains(rs[7].Message, "command 1 (Incr)") {
		t.Errorf("batch abort names the type by the set's name: %q", rs[7].Message)
	}
	if got := rs[1].Items; len(got) != 1 || got[0].Nums[0] != 5 || got[0].Nums[1] != 1<<40 || got[0].Strs[0] != "a" {
		t.Errorf("items %+v", got)
	}
	if n := counter(t, f, "a"); n != 15 {
		t.Errorf("counter a = %d, want 15", n)
	}
	if n := counter(t, f, "c"); n != -1 {
		t.Errorf("counter c = %d, want absent (its command failed)", n)
	}
	if _, ok, _ := f.TenantGet("other", "a"); ok {
		t.Error("a write outside the set's prefix was kept")
	}
	if o, _, _ := f.Object(obj.ID); o.Refs != 2 {
		t.Errorf("refs %d, want 2", o.Refs)
	}

	// Results with items survive the wire and the request memory.
	for _, r := range rs {
		got, err := DecodeResult(EncodeResult(r))
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("result round trip: %v\n got %+v\nwant %+v", err, got, r)
		}
	}
	req := Request{ID: RequestID{9}, At: 5, Cmd: incr{Key: "r", By: 1}}
	r1 := applyAll(t, f, 10, req)[0]
	r2 := applyAll(t, f, 11, req)[0]
	if !reflect.DeepEqual(r1, r2) || counter(t, f, "r") != 1 {
		t.Fatalf("repeated request: %+v then %+v, counter %d", r1, r2, counter(t, f, "r"))
	}
}

// A node without the set refuses its commands as invalid, the same way
// every time (the message an older release gave for a type it did not
// know), and a malformed body fails the whole entry, batch included.
func TestCommandSetUnknownAndMalformed(t *testing.T) {
	good := mustEncode(t, incr{Key: "a", By: 1})
	batch := mustEncode(t, Batch{Cmds: []Command{TenantPut{Tenant: "x", Key: "y"}, incr{Key: "a", By: 1}}})
	truncated := append([]byte(nil), good[:len(good)-1]...)
	for _, sets := range [][]CommandSet{nil, {counterSet()}} {
		f := openSetFSM(t, sets...)
		rs := results(f.ApplyBatch([]*raft.Log{entry(1, good), entry(2, batch), entry(3, truncated), entry(4, batch[:len(batch)-1])}))
		known := len(sets) > 0
		for i, r := range rs {
			wantOK := known && i < 2
			if wantOK != (r.Status == StatusOK) || !wantOK && r.Status != StatusInvalid {
				t.Errorf("sets=%v entry %d: %v %q", known, i+1, r.Status, r.Message)
			}
		}
		if !known && rs[0].Message != "decode command: unknown command type 200; a newer node proposed it, upgrade this node" {
			t.Errorf("unknown type message %q", rs[0].Message)
		}
		if _, ok, _ := f.TenantGet("x", "y"); ok != known {
			t.Errorf("sets=%v: the batch's TenantPut applied=%v", known, ok)
		}
		if _, err := DecodeCommand(good, sets...); (err == nil) != known || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("sets=%v: DecodeCommand: %v", known, err)
		}
	}
}

func TestCommandSetRegistration(t *testing.T) {
	base := counterSet()
	mod := func(f func(*CommandSet)) CommandSet { s := counterSet(); f(&s); return s }
	for _, c := range []struct {
		name string
		sets []CommandSet
		msg  string
	}{
		{"builtin type", []CommandSet{mod(func(s *CommandSet) { s.Types = map[CommandType]string{TypeTenantPut: "X"} })}, "built-in"},
		{"same type twice", []CommandSet{base, mod(func(s *CommandSet) { s.Name = "b"; s.Prefixes = []string{"t/b/"} })}, "both claim"},
		{"overlap", []CommandSet{base, mod(func(s *CommandSet) {
			s.Name = "b"
			s.Types = map[CommandType]string{201: "B"}
			s.Prefixes = []string{"t/ctr/x"}
		})}, "overlap"},
		{"outside tenants", []CommandSet{mod(func(s *CommandSet) { s.Prefixes = []string{"o/"} })}, "tenant keyspace"},
		{"no apply", []CommandSet{mod(func(s *CommandSet) { s.Apply = nil })}, "lacks"},
	} {
		_, err := OpenFSM(t.TempDir(), FSMOptions{Logger: testLogger(t), Badger: smallBadger, CommandSets: c.sets})
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.msg)
		}
	}
	if _, err := EncodeCommand(fakePut{}); err == nil {
		t.Error("a foreign type claiming a built-in type byte encoded")
	}
}

type fakePut struct{}

func (fakePut) Type() CommandType          { return TypePutObject }
func (fakePut) AppendBody(b []byte) []byte { return b }
