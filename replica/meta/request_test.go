package meta

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

const t0 = int64(1_700_000_000_000_000_000) // a proposer clock reading

func req(id RequestID, at int64, cmd Command) Request { return Request{ID: id, At: at, Cmd: cmd} }

func TestRequestEncoding(t *testing.T) {
	id := NewRequestID()
	in := req(id, t0, Batch{Atomic: true, Cmds: []Command{TenantPut{Tenant: "a", Key: "k", Value: []byte("v")}}})
	b := mustEncode(t, in)
	out, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := out.(Request)
	if !ok || r.ID != id || r.At != t0 {
		t.Fatalf("decoded %#v", out)
	}
	if bt, ok := r.Cmd.(Batch); !ok || !bt.Atomic || len(bt.Cmds) != 1 {
		t.Fatalf("inner command %#v", r.Cmd)
	}
	// A command as big as a command may be still fits once wrapped.
	big := TenantPut{Tenant: "a", Key: "k", Value: make([]byte, MaxTenantValueSize)}
	if _, err := EncodeCommand(req(id, t0, big)); err != nil {
		t.Fatalf("wrapping a valid command: %v", err)
	}
	for name, bad := range map[string]Command{
		"nested":   req(id, t0, req(id, t0, TenantDelete{Tenant: "a", Key: "k"})),
		"in batch": Batch{Cmds: []Command{req(id, t0, TenantDelete{Tenant: "a", Key: "k"})}},
		"empty":    Request{ID: id, At: t0},
	} {
		if _, err := EncodeCommand(bad); err == nil {
			t.Errorf("%s: encoded, want an error", name)
		}
	}
	// Hand-made nesting is refused on decode too.
	inner := mustEncode(t, req(id, t0, TenantDelete{Tenant: "a", Key: "k"}))
	var e encoder
	e.u8(commandFormatV1)
	e.u8(uint8(TypeRequest))
	e.b = append(e.b, id[:]...)
	e.varint(t0)
	e.bytes(inner[1:])
	if _, err := DecodeCommand(e.b); err == nil {
		t.Error("decoded a nested request")
	}
}

// A request applied twice changes the state once and answers the second
// time with the first result; without the envelope the same DecRef twice
// would drop two references.
func TestRequestAppliedOnce(t *testing.T) {
	var events []Event
	f := openTestFSM(t, t.TempDir(), func(ev Event) { events = append(events, ev) })
	defer f.Close()
	o := testObject("x")
	applyAll(t, f, 1, PutObject{Object: o, Now: t0}, PutObject{Object: o, Now: t0})

	id := NewRequestID()
	dec := req(id, t0+1, DecRef{ID: o.ID, Now: t0 + 1})
	first := applyAll(t, f, 3, dec)[0]
	if first.Status != StatusOK || first.Object.Refs != 1 || first.Index != 3 {
		t.Fatalf("first application: %+v", first)
	}
	// The retry lands in a later entry (another leader, a later batch).
	again := applyAll(t, f, 4, dec, req(id, t0+2, DecRef{ID: o.ID, Now: t0 + 2}))
	for i, r := range again {
		if r.Status != StatusOK || r.Object.Refs != 1 || r.Index != 3 {
			t.Fatalf("repeat %d: %+v, want the first result (index 3, refs 1)", i, r)
		}
	}
	if cur, _, _ := f.Object(o.ID); cur.Refs != 1 {
		t.Fatalf("refs %d after one DecRef applied three times, want 1", cur.Refs)
	}
	if n := len(events); n != 5 || events[2].Cmd == nil || events[3].Cmd != nil || events[4].Cmd != nil {
		t.Fatalf("events: %+v; want the inner command for the first application and none for repeats", events)
	}
	if _, ok := events[2].Cmd.(DecRef); !ok {
		t.Fatalf("event command %T, want the inner DecRef", events[2].Cmd)
	}

	// A failed command is an answer too: the retry gets the same failure,
	// even after an atomic batch rolled back the entry's writes.
	cid := NewRequestID()
	chk := req(cid, t0+3, Batch{Atomic: true, Cmds: []Command{
		TenantPut{Tenant: "a", Key: "k", Value: []byte("v")},
		TenantCheck{Tenant: "a", Key: "nope", Want: []byte("x")},
	}})
	r1 := applyAll(t, f, 6, chk)[0]
	applyAll(t, f, 7, TenantCheck{Tenant: "a", Key: "k", Absent: true}, TenantPut{Tenant: "a", Key: "nope", Value: []byte("x")})
	r2 := applyAll(t, f, 9, chk)[0]
	if r1.Status != StatusAborted || r2.Status != StatusAborted || r2.Index != 6 || r2.Message != r1.Message {
		t.Fatalf("atomic batch: first %+v, repeat %+v; want the same abort", r1, r2)
	}
	if _, ok, _ := f.TenantGet("a", "k"); ok {
		t.Fatal("rolled back batch left its write")
	}
}

// Expiry follows the proposers' clocks carried in the commands, and gives
// the same state however raft grouped the entries into batches.
func TestRequestExpiryDeterministic(t *testing.T) {
	o := testObject("y")
	ids := make([]RequestID, 6)
	for i := range ids {
		ids[i] = NewRequestID()
	}
	win := int64(RequestWindow)
	cmds := []Command{
		PutObject{Object: o, Now: t0},
		req(ids[0], t0, PutObject{Object: o, Now: t0}),
		req(ids[1], t0+int64(time.Minute), PutObject{Object: o, Now: t0}),
		req(ids[2], t0+2*int64(time.Minute), PutObject{Object: o, Now: t0}),
		// Past the window of the first (and the pruning slack): it is
		// forgotten here.
		req(ids[3], t0+win+requestPruneSlack+1, PutObject{Object: o, Now: t0}),
		// A slow clock's request, already old: recorded, pruned by the next.
		req(ids[4], t0+int64(time.Second), PutObject{Object: o, Now: t0}),
		req(ids[5], t0+win+int64(time.Minute)+2, PutObject{Object: o, Now: t0}),
		// Retries: ids[0] and ids[4] were forgotten and apply again;
		// ids[2] is still remembered.
		req(ids[0], t0+win+int64(time.Minute)+3, PutObject{Object: o, Now: t0}),
		req(ids[2], t0+win+int64(time.Minute)+4, PutObject{Object: o, Now: t0}),
		req(ids[4], t0+win+int64(time.Minute)+5, PutObject{Object: o, Now: t0}),
	}
	groupings := map[string][]int{"one batch": {len(cmds)}, "one per entry": nil, "uneven": {3, 1, 4, 2}}
	var ref []string
	for name, sizes := range groupings {
		f := openTestFSM(t, filepath.Join(t.TempDir(), "fsm"), nil)
		var out []Result
		next := 0
		for next < len(cmds) {
			n := 1
			if len(sizes) > 0 {
				n, sizes = sizes[0], sizes[1:]
			}
			logs := make([]*raft.Log, n)
			for i := range logs {
				logs[i] = entry(uint64(next+i+1), mustEncode(t, cmds[next+i]))
			}
			out = append(out, results(f.ApplyBatch(logs))...)
			next += n
		}
		// 1 plain put, 6 first applications, 2 re-applications after expiry.
		if cur, _, _ := f.Object(o.ID); cur.Refs != 9 {
			t.Errorf("%s: refs %d, want 9", name, cur.Refs)
		}
		if out[8].Index != 4 {
			t.Errorf("%s: retry of a remembered request answered from index %d, want 4", name, out[8].Index)
		}
		if out[7].Index != 8 || out[9].Index != 10 {
			t.Errorf("%s: retries of forgotten requests at %d and %d, want applied anew at 8 and 10", name, out[7].Index, out[9].Index)
		}
		d := dump(t, f, true)
		if ref == nil {
			ref = d
		} else {
			equalDumps(t, name, ref, d)
		}
		f.Close()
	}
}

// The request memory is state like any other: a snapshot carries it, and a
// restored node answers a retry with the first result.
func TestRequestSurvivesSnapshotRestore(t *testing.T) {
	dir := t.TempDir()
	f := openTestFSM(t, filepath.Join(dir, "a"), nil)
	defer f.Close()
	o := testObject("z")
	id, old := NewRequestID(), NewRequestID()
	applyAll(t, f, 1,
		PutObject{Object: o, Now: t0},
		req(old, t0, PutObject{Object: o, Now: t0}),
		req(id, t0+int64(RequestWindow)/2, PutObject{Object: o, Now: t0}))
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "snap")
	persistToFile(t, snap, path)
	snap.Release()

	g := openTestFSM(t, filepath.Join(dir, "b"), nil)
	defer g.Close()
	if err := restoreFromFile(g, path); err != nil {
		t.Fatal(err)
	}
	equalDumps(t, "restored", dump(t, f, true), dump(t, g, true))
	r := applyAll(t, g, 4, req(id, t0+int64(RequestWindow), PutObject{Object: o, Now: t0}))[0]
	if r.Index != 3 || r.Object.Refs != 3 {
		t.Fatalf("retry after restore: %+v, want the first result (index 3, refs 3)", r)
	}
	// Expiry goes on from the restored state: a request past the window of
	// "old" (and the pruning slack) forgets it.
	late := t0 + int64(RequestWindow) + requestPruneSlack
	applyAll(t, g, 5, req(NewRequestID(), late+1, TenantPut{Tenant: "a", Key: "k"}))
	r = applyAll(t, g, 6, req(old, late+2, PutObject{Object: o, Now: t0}))[0]
	if r.Index != 6 || r.Object.Refs != 4 {
		t.Fatalf("expired request after restore: %+v, want applied anew at index 6 (refs 4)", r)
	}
}

// BenchmarkApply compares applying bare TenantPuts with enveloped ones (one
// request record, expiry index and pruning each), 64 entries per raft batch.
func BenchmarkApply(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		name := "bare"
		if wrapped {
			name = "request"
		}
		b.Run(name, func(b *testing.B) {
			f := openTestFSM(b, b.TempDir(), nil)
			defer f.Close()
			at := t0
			next := uint64(1)
			for b.Loop() {
				logs := make([]*raft.Log, 64)
				for i := range logs {
					var cmd Command = TenantPut{Tenant: "a", Key: fmt.Sprint(next), Value: []byte("v")}
					if wrapped {
						at += int64(time.Millisecond) // 64k requests a minute: pruning runs
						cmd = req(NewRequestID(), at, cmd)
					}
					logs[i] = entry(next, mustEncode(b, cmd))
					next++
				}
				f.ApplyBatch(logs)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(next-1), "ns/entry")
		})
	}
}
