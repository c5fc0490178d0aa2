package meta

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"hastore/storage"
)

func allCommands() []Command {
	o := testObject("x")
	o.Refs, o.Created, o.Deleted = 3, 4, 5
	return []Command{
		PutObject{Object: o, Now: 1234567890123},
		PutObject{Object: Object{ID: blobID("r"), Size: 0, K: 1, M: 0, Layout: storage.LayoutReplica, Placement: []string{""}}, Now: 1},
		DecRef{ID: blobID("y"), Now: -5},
		SetPlacement{ID: blobID("z"), Index: 2, Old: "n1", New: ""},
		Purge{ID: blobID("z"), OlderThan: 1 << 62},
		NodeSet{ID: "n1", Address: "10.0.0.1:7000", State: NodeRemoved},
		TenantPut{Tenant: "acme", Key: "mbox/INBOX", Value: []byte{0, 1, 2}},
		TenantDelete{Tenant: "acme", Key: "k"},
		TenantCheck{Tenant: "acme", Key: "k", Want: []byte("v")},
		TenantCheck{Tenant: "acme", Key: "k", Want: []byte{}, Absent: true},
		Batch{Atomic: true, Cmds: []Command{DecRef{ID: blobID("y"), Now: 1}, TenantPut{Tenant: "t", Key: "k", Value: []byte("v")}}},
		Batch{},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range allCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("%T: %v", c, err)
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%T: decode: %v", c, err)
		}
		want := c
		if bt, ok := c.(Batch); ok && bt.Cmds == nil {
			bt.Cmds = []Command{}
			want = bt
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip of %T:\n got %#v\nwant %#v", c, got, want)
		}
	}
}

func TestEncodeCommandRejects(t *testing.T) {
	for name, c := range map[string]Command{
		"nil":          nil,
		"nested batch": Batch{Cmds: []Command{Batch{}}},
		"nil in batch": Batch{Cmds: []Command{nil}},
		"too large":    TenantPut{Tenant: "t", Key: "k", Value: make([]byte, MaxCommandSize)},
		"too many":     Batch{Cmds: make([]Command, MaxBatchCommands+1)},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: EncodeCommand error %v, want ErrInvalid", name, err)
		}
	}
}

func TestResultRoundTrip(t *testing.T) {
	rs := []Result{
		{Index: 7, Status: StatusOK, Object: testObject("a"), Created: true},
		{Index: 8, Status: StatusConflict, Message: "why", Revived: true, Purged: true, Found: true},
		{Index: 9, Status: StatusAborted, Batch: []Result{{Index: 9, Status: StatusOK}, {Index: 9, Status: StatusNotFound, Message: "m"}}},
	}
	for _, r := range rs {
		got, err := DecodeResult(EncodeResult(r))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
	if _, err := DecodeResult([]byte{resultFormatV1, 1, 0}); !errors.Is(err, ErrInvalid) {
		t.Errorf("truncated result: %v", err)
	}
}

// FuzzDecodeCommand: decoding hostile bytes never panics, and applying them
// gives the same result on two FSMs (determinism, no panic in Apply).
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range allCommands() {
		b, _ := EncodeCommand(c)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{1, 99})
	f.Add([]byte{1, byte(TypeBatch), 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	fa := openTestFSM(f, f.TempDir(), nil)
	fb := openTestFSM(f, f.TempDir(), nil)
	f.Cleanup(func() { fa.Close(); fb.Close() })
	var idx uint64
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err == nil {
			b2, err := EncodeCommand(c)
			if err != nil {
				t.Fatalf("decoded %#v but cannot re-encode: %v", c, err)
			}
			c2, err := DecodeCommand(b2)
			if err != nil || !reflect.DeepEqual(c, c2) {
				t.Fatalf("re-encoding changed the command: %#v vs %#v (%v)", c, c2, err)
			}
		}
		idx++
		l := &raft.Log{Index: idx, Type: raft.LogCommand, Data: b}
		ra, rb := fa.Apply(l), fb.Apply(l)
		if !reflect.DeepEqual(ra, rb) {
			t.Fatalf("two FSMs disagree: %+v vs %+v", ra, rb)
		}
	})
}

func TestPlanMembership(t *testing.T) {
	v := func(id string) raft.Server { return raft.Server{ID: raft.ServerID(id), Suffrage: raft.Voter} }
	n := func(id string) raft.Server { return raft.Server{ID: raft.ServerID(id), Suffrage: raft.Nonvoter} }
	ids := func(ss []raft.Server) []string {
		var out []string
		for _, s := range ss {
			out = append(out, string(s.ID))
		}
		return out
	}
	cases := []struct {
		name            string
		servers         []raft.Server
		promote, demote []string
	}{
		{"single voter", []raft.Server{v("a")}, nil, nil},
		{"second member stays non-voter", []raft.Server{v("a"), n("b")}, nil, nil},
		{"third member makes three voters", []raft.Server{v("a"), n("c"), n("b")}, []string{"b", "c"}, nil},
		{"fourth member stays non-voter", []raft.Server{v("a"), v("b"), v("c"), n("d")}, nil, nil},
		{"fifth member makes five voters", []raft.Server{v("a"), v("b"), v("c"), n("d"), n("e")}, []string{"d", "e"}, nil},
		{"sixth member stays non-voter", []raft.Server{v("a"), v("b"), v("c"), v("d"), v("e"), n("f")}, nil, nil},
		{"voter removed from five: promote", []raft.Server{v("a"), v("b"), v("c"), v("d"), n("f"), n("e")}, []string{"e"}, nil},
		{"four voters, nothing to promote: demote, never self", []raft.Server{v("a"), v("b"), v("c"), v("z")}, nil, []string{"c"}},
		{"two voters: demote one", []raft.Server{v("a"), v("b")}, nil, []string{"b"}},
	}
	for _, tc := range cases {
		p := planMembership(tc.servers, "z", nil)
		if tc.name == "two voters: demote one" {
			p = planMembership(tc.servers, "a", nil)
		}
		if !reflect.DeepEqual(ids(p.promote), tc.promote) || !reflect.DeepEqual(ids(p.demote), tc.demote) {
			t.Errorf("%s: promote %v demote %v, want %v %v", tc.name, ids(p.promote), ids(p.demote), tc.promote, tc.demote)
		}
	}
	// With members known to be down: never promoted, demoted first.
	down := func(ids ...string) func(raft.ServerID) bool {
		return func(id raft.ServerID) bool { return slices.Contains(ids, string(id)) }
	}
	for _, tc := range []struct {
		name            string
		servers         []raft.Server
		down            []string
		promote, demote []string
	}{
		{"dead non-voter sorted first is skipped", []raft.Server{v("a"), v("b"), v("c"), v("d"), n("n8"), n("n9")}, []string{"n8"}, []string{"n9"}, nil},
		{"only non-voter dead: nothing promoted", []raft.Server{v("a"), v("b"), v("c"), v("d"), n("n8")}, []string{"n8"}, nil, nil},
		{"four voters, one dead: the dead one demoted", []raft.Server{v("a"), v("b"), v("c"), v("z")}, []string{"a"}, nil, []string{"a"}},
		{"fifth member while a voter is dead", []raft.Server{v("a"), v("b"), v("c"), n("d"), n("e")}, []string{"b"}, []string{"d", "e"}, nil},
	} {
		p := planMembership(tc.servers, "z", down(tc.down...))
		if !reflect.DeepEqual(ids(p.promote), tc.promote) || !reflect.DeepEqual(ids(p.demote), tc.demote) {
			t.Errorf("%s: promote %v demote %v, want %v %v", tc.name, ids(p.promote), ids(p.demote), tc.promote, tc.demote)
		}
	}
	for n, want := range map[int]int{0: 0, 1: 1, 2: 1, 3: 3, 4: 3, 5: 5, 6: 5, 9: 5} {
		if got := desiredVoters(n); got != want {
			t.Errorf("desiredVoters(%d) = %d, want %d", n, got, want)
		}
	}
}
