package meta

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"hastore/storage"
)

type step struct {
	cmd    Command
	raw    []byte // applied instead of cmd when set
	status Status
	check  func(t *testing.T, r Result)
}

func refsAre(refs, deleted int64) func(*testing.T, Result) {
	return func(t *testing.T, r Result) {
		t.Helper()
		if r.Object.Refs != refs || r.Object.Deleted != deleted {
			t.Errorf("refs=%d deleted=%d, want refs=%d deleted=%d", r.Object.Refs, r.Object.Deleted, refs, deleted)
		}
	}
}

func TestApplyCommands(t *testing.T) {
	a := testObject("a")
	aOther := a
	aOther.Placement = []string{"x", "y", "z"}
	aBigger := a
	aBigger.Size++
	replica := Object{ID: blobID("r"), Size: 10, K: 1, M: 2, Layout: storage.LayoutReplica, Placement: []string{"n1", "n2", "n3"}}
	bad := func(mut func(*Object)) Command { o := testObject("bad"); mut(&o); return PutObject{Object: o, Now: 1} }
	nestedBatch := func() []byte {
		inner := mustEncode(t, Batch{Cmds: []Command{TenantPut{Tenant: "t", Key: "k"}}})
		e := encoder{}
		e.u8(commandFormatV1)
		e.u8(uint8(TypeBatch))
		e.bool(false)
		e.uvarint(1)
		e.bytes(inner[1:]) // type byte + body of the inner batch
		return e.b
	}()

	cases := []struct {
		name  string
		steps []step
		after func(t *testing.T, f *FSM)
	}{
		{name: "put creates with refs 1", steps: []step{
			{cmd: PutObject{Object: a, Now: 100}, status: StatusOK, check: func(t *testing.T, r Result) {
				if !r.Created || r.Revived || r.Object.Refs != 1 || r.Object.Created != 100 || r.Object.Deleted != 0 {
					t.Errorf("got %+v", r)
				}
			}},
			{cmd: PutObject{Object: replica, Now: 100}, status: StatusOK},
		}, after: func(t *testing.T, f *FSM) {
			if n, _ := f.ObjectCount(); n != 2 {
				t.Errorf("ObjectCount = %d, want 2", n)
			}
			o, ok, err := f.Object(a.ID)
			if !ok || err != nil || o.Refs != 1 || !reflect.DeepEqual(o.Placement, a.Placement) {
				t.Errorf("Object = %+v %v %v", o, ok, err)
			}
		}},
		{name: "put of known ID adds a reference and keeps the stored placement", steps: []step{
			{cmd: PutObject{Object: a, Now: 100}, status: StatusOK},
			{cmd: PutObject{Object: aOther, Now: 200}, status: StatusOK, check: func(t *testing.T, r Result) {
				if r.Created || r.Revived || r.Object.Refs != 2 || r.Object.Created != 100 || r.Object.Placement[0] != "n1" {
					t.Errorf("got %+v", r)
				}
			}},
		}, after: func(t *testing.T, f *FSM) {
			if n, _ := f.ObjectCount(); n != 1 {
				t.Errorf("ObjectCount = %d, want 1", n)
			}
		}},
		{name: "put during tombstone grace revives", steps: []step{
			{cmd: PutObject{Object: a, Now: 100}, status: StatusOK},
			{cmd: DecRef{ID: a.ID, Now: 200}, status: StatusOK, check: refsAre(0, 200)},
			{cmd: PutObject{Object: aOther, Now: 300}, status: StatusOK, check: func(t *testing.T, r Result) {
				if r.Created || !r.Revived || r.Object.Refs != 1 || r.Object.Deleted != 0 || r.Object.Created != 100 || r.Object.Placement[0] != "n1" {
					t.Errorf("got %+v", r)
				}
			}},
			{cmd: Purge{ID: a.ID, OlderThan: 1000}, status: StatusOK, check: func(t *testing.T, r Result) {
				if r.Purged {
					t.Error("purged a revived object")
				}
			}},
		}},
		{name: "put with another size for a known ID conflicts", steps: []step{
			{cmd: PutObject{Object: a, Now: 100}, status: StatusOK},
			{cmd: PutObject{Object: aBigger, Now: 200}, status: StatusConflict, check: refsAre(1, 0)},
		}},
		{name: "put rejects impossible records", steps: []step{
			{cmd: bad(func(o *Object) { o.ID = storage.BlobID{} }), status: StatusInvalid},
			{cmd: bad(func(o *Object) { o.Placement = o.Placement[:2] }), status: StatusInvalid},
			{cmd: bad(func(o *Object) { o.Layout = 7 }), status: StatusInvalid},
			{cmd: bad(func(o *Object) { o.Layout = storage.LayoutReplica }), status: StatusInvalid}, // k=2
			{cmd: bad(func(o *Object) { o.K = 0 }), status: StatusInvalid},
			{cmd: bad(func(o *Object) { o.Size = -1 }), status: StatusInvalid},
			{cmd: PutObject{Object: a, Now: 0}, status: StatusInvalid},
		}, after: func(t *testing.T, f *FSM) {
			if n, _ := f.ObjectCount(); n != 0 {
				t.Errorf("ObjectCount = %d, want 0", n)
			}
		}},
		{name: "decref to zero tombstones and never goes negative", steps: []step{
			{cmd: PutObject{Object: a, Now: 100}, status: StatusOK},
			{cmd: PutObject{Object: a, Now: 110}, status: StatusOK},
			{cmd: DecRef{ID: a.ID, Now: 200}, status: StatusOK, check: refsAre(1, 0)},
			{cmd: DecRef{ID: a.ID, Now: 300}, status: StatusOK, check: refsAre(0, 300)},
			{cmd: DecRef{ID: a.ID, Now: 400}, status: StatusConflict, check: refsAre(0, 300)},
			{cmd: DecRef{ID: a.ID, Now: 0}, status: StatusInvalid},
		}, after: func(t *testing.T, f *FSM) {
			o, ok, _ := f.Object(a.ID)
			if !ok || o.Refs != 0 || o.Deleted != 300 {
				t.Errorf("tombstone = %+v, %v", o, ok)
			}
		}},
		{name: "decref of unknown ID is not found", steps: []step{
			{cmd: DecRef{ID: a.ID, Now: 1}, status: StatusNotFound},
		}},
		{name: "set placement compare-and-set", steps: []step{
			{cmd: PutObject{Object: a, Now: 100}, status: StatusOK},
			{cmd: SetPlacement{ID: a.ID, Index: 1, Old: "n2", New: "n4"}, status: StatusOK, check: func(t *testing.T, r Result) {
				if !reflect.DeepEqual(r.Object.Placement, []string{"n1", "n4", "n3"}) {
					t.Errorf("placement %v", r.Object.Placement)
				}
			}},
			{cmd: SetPlacement{ID: a.ID, Index: 1, Old: "n2", New: "n5"}, status: StatusConflict, check: func(t *testing.T, r Result) {
				if r.Object.Placement[1] != "n4" {
					t.Errorf("conflict result shows %v, want current placement", r.Object.Placement)
				}
			}},
			{cmd: SetPlacement{ID: a.ID, Index: 0, Old: "n1", New: ""}, status: StatusOK}, // shard lost
			{cmd: SetPlacement{ID: a.ID, Index: 3, Old: "", New: "n1"}, status: StatusInvalid},
			{cmd: SetPlacement{ID: a.ID, Index: -1, Old: "", New: "n1"}, status: StatusInvalid},
			{cmd: SetPlacement{ID: blobID("none"), Index: 0, Old: "", New: "n1"}, status: StatusNotFound},
		}, after: func(t *testing.T, f *FSM) {
			o, _, _ := f.Object(a.ID)
			if !reflect.DeepEqual(o.Placement, []string{"", "n4", "n3"}) {
				t.Errorf("placement %v", o.Placement)
			}
		}},
		{name: "purge only unreferenced records past the grace period", steps: []step{
			{cmd: PutObject{Object: a, Now: 100}, status: StatusOK},
			{cmd: Purge{ID: a.ID, OlderThan: 1 << 62}, status: StatusOK, check: func(t *testing.T, r Result) {
				if r.Purged {
					t.Error("purged a referenced object")
				}
			}},
			{cmd: DecRef{ID: a.ID, Now: 500}, status: StatusOK},
			{cmd: Purge{ID: a.ID, OlderThan: 499}, status: StatusOK, check: func(t *testing.T, r Result) {
				if r.Purged {
					t.Error("purged inside the grace period")
				}
			}},
			{cmd: Purge{ID: a.ID, OlderThan: 500}, status: StatusOK, check: func(t *testing.T, r Result) {
				if !r.Purged || r.Object.ID != a.ID || len(r.Object.Placement) != 3 {
					t.Errorf("got %+v", r)
				}
			}},
			{cmd: Purge{ID: a.ID, OlderThan: 500}, status: StatusNotFound},
			{cmd: PutObject{Object: aOther, Now: 600}, status: StatusOK, check: func(t *testing.T, r Result) {
				if !r.Created || r.Object.Placement[0] != "x" {
					t.Errorf("put after purge: %+v", r)
				}
			}},
		}, after: func(t *testing.T, f *FSM) {
			if n, _ := f.ObjectCount(); n != 1 {
				t.Errorf("ObjectCount = %d, want 1", n)
			}
		}},
		{name: "node set", steps: []step{
			{cmd: NodeSet{ID: "n2", Address: "10.0.0.2:7000", State: NodeActive}, status: StatusOK},
			{cmd: NodeSet{ID: "n1", Address: "10.0.0.1:7000", State: NodeActive}, status: StatusOK},
			{cmd: NodeSet{ID: "n2", Address: "10.0.0.2:7000", State: NodeRemoved}, status: StatusOK},
			{cmd: NodeSet{ID: "n3", State: "gone"}, status: StatusInvalid},
			{cmd: NodeSet{ID: "", State: NodeActive}, status: StatusInvalid},
		}, after: func(t *testing.T, f *FSM) {
			nodes, err := f.Nodes()
			want := []Node{{"n1", "10.0.0.1:7000", NodeActive}, {"n2", "10.0.0.2:7000", NodeRemoved}}
			if err != nil || !reflect.DeepEqual(nodes, want) {
				t.Errorf("Nodes = %v, %v; want %v", nodes, err, want)
			}
		}},
		{name: "tenant key-value", steps: []step{
			{cmd: TenantPut{Tenant: "acme", Key: "mbox/INBOX", Value: []byte("1")}, status: StatusOK, check: func(t *testing.T, r Result) {
				if r.Found {
					t.Error("Found on first put")
				}
			}},
			{cmd: TenantPut{Tenant: "acme", Key: "mbox/INBOX", Value: []byte("2")}, status: StatusOK, check: func(t *testing.T, r Result) {
				if !r.Found {
					t.Error("not Found on overwrite")
				}
			}},
			{cmd: TenantPut{Tenant: "acme", Key: "mbox/Sent", Value: nil}, status: StatusOK},
			{cmd: TenantPut{Tenant: "acme", Key: "web/index", Value: []byte("x")}, status: StatusOK},
			{cmd: TenantPut{Tenant: "acmex", Key: "mbox/INBOX", Value: []byte("other")}, status: StatusOK},
			{cmd: TenantDelete{Tenant: "acme", Key: "web/index"}, status: StatusOK, check: func(t *testing.T, r Result) {
				if !r.Found {
					t.Error("delete of existing key: not Found")
				}
			}},
			{cmd: TenantDelete{Tenant: "acme", Key: "web/none"}, status: StatusOK, check: func(t *testing.T, r Result) {
				if r.Found {
					t.Error("delete of missing key: Found")
				}
			}},
			{cmd: TenantPut{Tenant: "a/b", Key: "k"}, status: StatusInvalid},
			{cmd: TenantPut{Tenant: "", Key: "k"}, status: StatusInvalid},
			{cmd: TenantPut{Tenant: "acme", Key: ""}, status: StatusInvalid},
			{cmd: TenantPut{Tenant: "acme", Key: "big", Value: make([]byte, MaxTenantValueSize+1)}, status: StatusInvalid},
		}, after: func(t *testing.T, f *FSM) {
			v, ok, err := f.TenantGet("acme", "mbox/INBOX")
			if string(v) != "2" || !ok || err != nil {
				t.Errorf("TenantGet = %q %v %v", v, ok, err)
			}
			if _, ok, _ := f.TenantGet("acme", "web/index"); ok {
				t.Error("deleted key still there")
			}
			var got []string
			err = f.TenantScan("acme", "mbox/", func(k string, v []byte) error {
				got = append(got, k+"="+string(v))
				return nil
			})
			if want := []string{"mbox/INBOX=2", "mbox/Sent="}; err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("TenantScan = %v, %v; want %v", got, err, want)
			}
			stop := errors.New("stop")
			n := 0
			if err := f.TenantScan("acme", "", func(string, []byte) error { n++; return stop }); err != stop || n != 1 {
				t.Errorf("TenantScan stop: %v after %d", err, n)
			}
			if _, _, err := f.TenantGet("a/b", "k"); !errors.Is(err, ErrInvalid) {
				t.Errorf("TenantGet with bad tenant: %v", err)
			}
		}},
		{name: "batch applies each command on its own", steps: []step{
			{cmd: Batch{Cmds: []Command{
				PutObject{Object: a, Now: 100},
				DecRef{ID: blobID("none"), Now: 100},
				PutObject{Object: a, Now: 100},
				TenantPut{Tenant: "acme", Key: "k", Value: []byte("v")},
			}}, status: StatusOK, check: func(t *testing.T, r Result) {
				var got []Status
				for _, s := range r.Batch {
					got = append(got, s.Status)
				}
				if want := []Status{StatusOK, StatusNotFound, StatusOK, StatusOK}; !reflect.DeepEqual(got, want) {
					t.Errorf("sub statuses %v, want %v", got, want)
				}
				if r.Batch[2].Object.Refs != 2 {
					t.Errorf("second put in the batch saw refs %d, want 2", r.Batch[2].Object.Refs)
				}
			}},
		}, after: func(t *testing.T, f *FSM) {
			if o, _, _ := f.Object(a.ID); o.Refs != 2 {
				t.Errorf("refs %d, want 2", o.Refs)
			}
		}},
		{name: "atomic batch rolls back on any failure", steps: []step{
			{cmd: Batch{Atomic: true, Cmds: []Command{
				PutObject{Object: a, Now: 100},
				TenantPut{Tenant: "acme", Key: "k", Value: []byte("v")},
				DecRef{ID: blobID("none"), Now: 100},
				TenantPut{Tenant: "acme", Key: "k2", Value: []byte("v")},
			}}, status: StatusAborted, check: func(t *testing.T, r Result) {
				var got []Status
				for _, s := range r.Batch {
					got = append(got, s.Status)
				}
				if want := []Status{StatusOK, StatusOK, StatusNotFound, StatusAborted}; !reflect.DeepEqual(got, want) {
					t.Errorf("sub statuses %v, want %v", got, want)
				}
			}},
			{cmd: Batch{Atomic: true, Cmds: []Command{
				PutObject{Object: replica, Now: 100},
				TenantPut{Tenant: "acme", Key: "ok", Value: []byte("v")},
			}}, status: StatusOK},
		}, after: func(t *testing.T, f *FSM) {
			if _, ok, _ := f.Object(a.ID); ok {
				t.Error("rolled-back put is visible")
			}
			if _, ok, _ := f.TenantGet("acme", "k"); ok {
				t.Error("rolled-back tenant put is visible")
			}
			if _, ok, _ := f.TenantGet("acme", "ok"); !ok {
				t.Error("committed atomic batch not visible")
			}
			if n, _ := f.ObjectCount(); n != 1 {
				t.Errorf("ObjectCount = %d, want 1", n)
			}
		}},
		{name: "undecodable entries are invalid and change nothing", steps: []step{
			{raw: []byte{commandFormatV1, 99, 1, 2, 3}, status: StatusInvalid, check: func(t *testing.T, r Result) {
				if !strings.Contains(r.Message, "unknown command type 99") {
					t.Errorf("message %q", r.Message)
				}
			}},
			{raw: []byte{2, byte(TypeDecRef)}, status: StatusInvalid},
			{raw: []byte{}, status: StatusInvalid},
			{raw: nestedBatch, status: StatusInvalid},
			{raw: func() []byte { b := mustEncode(t, PutObject{Object: a, Now: 1}); return b[:20] }(), status: StatusInvalid},
			{raw: append(mustEncode(t, DecRef{ID: a.ID, Now: 1}), 0), status: StatusInvalid},
			{raw: make([]byte, MaxCommandSize+1), status: StatusInvalid},
		}, after: func(t *testing.T, f *FSM) {
			if d := dump(t, f, false); len(d) != 0 {
				t.Errorf("state after invalid entries: %v", d)
			}
		}},
	}

	for _, tc := range cases {
		// Each case runs twice: one raft batch per entry, and all entries in
		// one raft batch. Results and state must not depend on how raft
		// groups entries.
		var perEntry []Result
		var perEntryDump []string
		for _, oneBatch := range []bool{false, true} {
			name := tc.name + "/entry-per-batch"
			if oneBatch {
				name = tc.name + "/one-batch"
			}
			t.Run(name, func(t *testing.T) {
				f := openTestFSM(t, t.TempDir(), nil)
				defer f.Close()
				logs := make([]*raft.Log, len(tc.steps))
				for i, s := range tc.steps {
					data := s.raw
					if data == nil {
						data = mustEncode(t, s.cmd)
					}
					logs[i] = entry(uint64(i+1), data)
				}
				var got []Result
				if oneBatch {
					got = results(f.ApplyBatch(logs))
				} else {
					for _, l := range logs {
						got = append(got, f.Apply(l).(Result))
					}
				}
				for i, s := range tc.steps {
					r := got[i]
					if r.Index != uint64(i+1) {
						t.Errorf("step %d: Index %d", i, r.Index)
					}
					if r.Status != s.status {
						t.Errorf("step %d (%T): status %v (%s), want %v", i, s.cmd, r.Status, r.Message, s.status)
						continue
					}
					if (r.Err() == nil) != (s.status == StatusOK) {
						t.Errorf("step %d: Err() = %v for status %v", i, r.Err(), r.Status)
					}
					if s.check != nil {
						s.check(t, r)
					}
				}
				if f.AppliedIndex() != uint64(len(tc.steps)) {
					t.Errorf("AppliedIndex = %d, want %d", f.AppliedIndex(), len(tc.steps))
				}
				if tc.after != nil {
					tc.after(t, f)
				}
				d := dump(t, f, true)
				if !oneBatch {
					perEntry, perEntryDump = got, d
					return
				}
				if !reflect.DeepEqual(got, perEntry) {
					t.Errorf("results differ between batchings:\n%+v\n%+v", got, perEntry)
				}
				equalDumps(t, "state by batching", perEntryDump, d)
			})
		}
	}
}

func TestResultErrKinds(t *testing.T) {
	for st, kind := range map[Status]error{StatusNotFound: ErrNotFound, StatusConflict: ErrConflict, StatusInvalid: ErrInvalid, StatusAborted: ErrAborted} {
		r := Result{Status: st, Message: "why"}
		if err := r.Err(); !errors.Is(err, kind) || !strings.Contains(err.Error(), "why") {
			t.Errorf("%v: Err() = %v", st, err)
		}
	}
	for _, st := range []Status{StatusOK, StatusSkipped} {
		r := Result{Status: st}
		if err := r.Err(); err != nil {
			t.Errorf("%v: Err() = %v", st, err)
		}
	}
}

// TestReplayAfterReopen re-delivers entries after a clean reopen, as raft
// does after a restart: nothing may be applied twice.
func TestReplayAfterReopen(t *testing.T) {
	dir := t.TempDir()
	f := openTestFSM(t, dir, nil)
	var logs []*raft.Log
	idx := uint64(0)
	add := func(c Command) {
		idx++
		logs = append(logs, entry(idx, mustEncode(t, c)))
	}
	for i := 0; i < 50; i++ {
		o := testObject(string(rune('A' + i)))
		add(PutObject{Object: o, Now: 1})
		add(PutObject{Object: o, Now: 2})
		if i%3 == 0 {
			add(DecRef{ID: o.ID, Now: 3})
		}
		add(TenantPut{Tenant: "t", Key: o.ID.String(), Value: []byte{byte(i)}})
	}
	// A configuration entry in between must count as applied too.
	logs = append(logs[:10:10], append([]*raft.Log{{Index: 0, Type: raft.LogConfiguration}}, logs[10:]...)...)
	for i := range logs {
		logs[i].Index = uint64(i + 1)
	}
	last := uint64(len(logs))
	f.ApplyBatch(logs[:last/2])
	f.ApplyBatch(logs[last/2:])
	before := dump(t, f, true)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	f = openTestFSM(t, dir, nil)
	defer f.Close()
	if f.Discarded() {
		t.Fatal("clean reopen discarded the state")
	}
	if f.AppliedIndex() != last {
		t.Fatalf("AppliedIndex after reopen = %d, want %d", f.AppliedIndex(), last)
	}
	// Raft re-delivers the log after the snapshot, in differently sized batches.
	for i := 0; i < len(logs); i += 7 {
		for _, r := range results(f.ApplyBatch(logs[i:min(i+7, len(logs))])) {
			if r.Status != StatusSkipped {
				t.Fatalf("replayed entry %d: status %v, want skipped", r.Index, r.Status)
			}
		}
	}
	equalDumps(t, "state after replay", before, dump(t, f, true))
	o, _, _ := f.Object(testObject("A").ID)
	if o.Refs != 1 {
		t.Fatalf("refs after replay = %d, want 1", o.Refs)
	}

	// A batch straddling the applied index applies only the new part.
	straddle := append([]*raft.Log{logs[last-2], logs[last-1]}, entry(last+1, mustEncode(t, PutObject{Object: testObject("A"), Now: 9})))
	rs := results(f.ApplyBatch(straddle))
	if rs[0].Status != StatusSkipped || rs[1].Status != StatusSkipped || rs[2].Status != StatusOK || rs[2].Object.Refs != 2 {
		t.Fatalf("straddling batch: %+v", rs)
	}
	if f.AppliedIndex() != last+1 {
		t.Fatalf("AppliedIndex = %d, want %d", f.AppliedIndex(), last+1)
	}
}

// TestUncleanOpenDiscardsState: after a crash the FSM cannot know which of
// its unsynced writes survived, so it must start empty for raft to rebuild.
func TestUncleanOpenDiscardsState(t *testing.T) {
	dir := t.TempDir()
	f := openTestFSM(t, dir, nil)
	applyAll(t, f, 1, PutObject{Object: testObject("a"), Now: 1})
	crashClose(f)

	f = openTestFSM(t, dir, nil)
	if !f.Discarded() || f.AppliedIndex() != 0 {
		t.Fatalf("after crash: Discarded=%v AppliedIndex=%d, want true, 0", f.Discarded(), f.AppliedIndex())
	}
	if _, ok, _ := f.Object(testObject("a").ID); ok {
		t.Fatal("state survived an unclean shutdown")
	}
	if g := genDirs(t, dir); len(g) != 1 {
		t.Fatalf("generation dirs %v, want one", g)
	}
	// The log replays from the start (or a snapshot restores) into it.
	applyAll(t, f, 1, PutObject{Object: testObject("a"), Now: 1})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = openTestFSM(t, dir, nil)
	defer f.Close()
	if f.Discarded() || f.AppliedIndex() != 1 {
		t.Fatalf("after clean close: Discarded=%v AppliedIndex=%d", f.Discarded(), f.AppliedIndex())
	}
}

func TestWaitApplied(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	done := make(chan error, 1)
	go func() { done <- f.WaitApplied(context.Background(), 3) }()
	applyAll(t, f, 1, TenantPut{Tenant: "t", Key: "1"}, TenantPut{Tenant: "t", Key: "2"})
	select {
	case err := <-done:
		t.Fatalf("WaitApplied(3) returned %v at index 2", err)
	case <-time.After(20 * time.Millisecond):
	}
	applyAll(t, f, 3, TenantPut{Tenant: "t", Key: "3"})
	if err := <-done; err != nil {
		t.Fatalf("WaitApplied: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := f.WaitApplied(ctx, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied past deadline: %v", err)
	}
	go func() { done <- f.WaitApplied(context.Background(), 10) }()
	f.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitApplied across Close: %v", err)
	}
}

func TestEventsInApplyOrder(t *testing.T) {
	var got []uint64
	f := openTestFSM(t, t.TempDir(), func(ev Event) { got = append(got, ev.Index) })
	defer f.Close()
	sub := f.Subscribe(100)
	small := f.Subscribe(1)
	applyAll(t, f, 1, TenantPut{Tenant: "t", Key: "a"}, DecRef{ID: blobID("x"), Now: 1})
	f.ApplyBatch([]*raft.Log{{Index: 3, Type: raft.LogConfiguration}})
	applyAll(t, f, 4, TenantPut{Tenant: "t", Key: "b"})
	applyAll(t, f, 1, TenantPut{Tenant: "t", Key: "a"}) // replay: no event
	if want := []uint64{1, 2, 4}; !reflect.DeepEqual(got, want) {
		t.Fatalf("OnApply indexes %v, want %v", got, want)
	}
	var subGot []uint64
	for len(subGot) < 3 {
		ev := <-sub.Events()
		subGot = append(subGot, ev.Index)
		if ev.Index == 2 && (ev.Cmd.Type() != TypeDecRef || ev.Result.Status != StatusNotFound) {
			t.Errorf("event 2 = %+v", ev)
		}
	}
	if want := []uint64{1, 2, 4}; !reflect.DeepEqual(subGot, want) {
		t.Fatalf("subscription indexes %v, want %v", subGot, want)
	}
	// The one-slot subscriber overflowed in the first batch and was cut off
	// rather than blocking Apply.
	n := 0
	for range small.Events() {
		n++
	}
	if n != 1 || !errors.Is(small.Err(), ErrLagged) {
		t.Fatalf("small subscriber: %d events, Err %v", n, small.Err())
	}
	sub.Close()
	if _, ok := <-sub.Events(); ok {
		t.Fatal("Events open after Close")
	}
}

func TestLargeBatchFallsBackToPerEntryTransactions(t *testing.T) {
	// 16 MiB memtables allow ~2.4 MB per badger transaction; this raft batch
	// writes ~6 MB, so it must be split by entry and still count right.
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	val := bytes.Repeat([]byte{7}, 300<<10)
	var cmds []Command
	for i := 0; i < 20; i++ {
		cmds = append(cmds, TenantPut{Tenant: "t", Key: string(rune('a' + i)), Value: val})
	}
	for _, r := range applyAll(t, f, 1, cmds...) {
		if r.Status != StatusOK {
			t.Fatalf("entry %d: %v %s", r.Index, r.Status, r.Message)
		}
	}
	if f.AppliedIndex() != 20 {
		t.Fatalf("AppliedIndex = %d", f.AppliedIndex())
	}
	n := 0
	if err := f.TenantScan("t", "", func(string, []byte) error { n++; return nil }); err != nil || n != 20 {
		t.Fatalf("scan: %d keys, %v", n, err)
	}
}
