package meta

import (
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
)

// TestTenantCheck runs each case's commands as raft entries, once one
// entry per raft batch and once all in one raft batch, and compares the
// statuses and the tenant's final keys.
func TestTenantCheck(t *testing.T) {
	put := func(k, v string) Command { return TenantPut{Tenant: "acme", Key: k, Value: []byte(v)} }
	del := func(k string) Command { return TenantDelete{Tenant: "acme", Key: k} }
	is := func(k, v string) Command { return TenantCheck{Tenant: "acme", Key: k, Want: []byte(v)} }
	absent := func(k string) Command { return TenantCheck{Tenant: "acme", Key: k, Absent: true} }
	atomic := func(cmds ...Command) Command { return Batch{Atomic: true, Cmds: cmds} }

	cases := []struct {
		name   string
		cmds   []Command
		status []Status
		found  []bool   // Result.Found of each top-level command; nil: not checked
		state  []string // "key=value" of tenant acme afterwards
	}{
		{
			name:   "alone it only reads",
			cmds:   []Command{put("a", "1"), is("a", "1"), is("a", "2"), absent("a"), absent("b"), is("b", "")},
			status: []Status{StatusOK, StatusOK, StatusConflict, StatusConflict, StatusOK, StatusConflict},
			found:  []bool{false, true, true, true, false, false},
			state:  []string{"a=1"},
		},
		{
			name:   "empty value is not absent",
			cmds:   []Command{put("e", ""), is("e", ""), absent("e"), is("e", "x")},
			status: []Status{StatusOK, StatusOK, StatusConflict, StatusConflict},
			state:  []string{"e="},
		},
		{
			name: "create exclusive: second create loses",
			cmds: []Command{
				atomic(absent("f"), put("f", "first")),
				atomic(absent("f"), put("f", "second")),
			},
			status: []Status{StatusOK, StatusAborted},
			state:  []string{"f=first"},
		},
		{
			name: "rename over existing guarded by what was read",
			cmds: []Command{
				put("src", "ino1"), put("dst", "ino2"),
				// Renamer read src=ino1 and dst=ino2.
				atomic(is("src", "ino1"), is("dst", "ino2"), del("src"), put("dst", "ino1")),
				// A second renamer read the same state: it must lose.
				atomic(is("src", "ino1"), is("dst", "ino2"), del("src"), put("dst", "ino1")),
			},
			status: []Status{StatusOK, StatusOK, StatusOK, StatusAborted},
			state:  []string{"dst=ino1"},
		},
		{
			name: "check sees earlier writes of the same batch",
			cmds: []Command{
				atomic(put("k", "v"), is("k", "v"), del("k"), absent("k"), put("done", "y")),
			},
			status: []Status{StatusOK},
			state:  []string{"done=y"},
		},
		{
			name: "failed check rolls back writes before it",
			cmds: []Command{
				atomic(put("x", "1"), is("y", "1")),
			},
			status: []Status{StatusAborted},
			state:  nil,
		},
		{
			name: "non-atomic batch: a failed check changes nothing else",
			cmds: []Command{
				Batch{Cmds: []Command{is("z", "1"), put("z", "2")}},
			},
			status: []Status{StatusOK},
			state:  []string{"z=2"},
		},
		{
			name: "other tenants and keys do not satisfy a check",
			cmds: []Command{
				TenantPut{Tenant: "acmex", Key: "k", Value: []byte("v")},
				is("k", "v"),
				TenantCheck{Tenant: "acmex", Key: "k", Want: []byte("v")},
				put("k2", "v"), is("k", "v"),
			},
			status: []Status{StatusOK, StatusConflict, StatusOK, StatusOK, StatusConflict},
			state:  []string{"k2=v"},
		},
		{
			name: "invalid checks",
			cmds: []Command{
				TenantCheck{Tenant: "a/b", Key: "k", Absent: true},
				TenantCheck{Tenant: "", Key: "k", Absent: true},
				TenantCheck{Tenant: "acme", Key: "", Absent: true},
				TenantCheck{Tenant: "acme", Key: "k", Want: []byte("v"), Absent: true},
				TenantCheck{Tenant: "acme", Key: "k", Want: make([]byte, MaxTenantValueSize+1)},
				atomic(put("p", "1"), TenantCheck{Tenant: "acme", Key: "k", Want: []byte("v"), Absent: true}),
			},
			status: []Status{StatusInvalid, StatusInvalid, StatusInvalid, StatusInvalid, StatusInvalid, StatusAborted},
			state:  nil,
		},
	}
	for _, tc := range cases {
		var first []Result
		for _, oneBatch := range []bool{false, true} {
			name := tc.name + "/entry-per-batch"
			if oneBatch {
				name = tc.name + "/one-batch"
			}
			t.Run(name, func(t *testing.T) {
				f := openTestFSM(t, t.TempDir(), nil)
				defer f.Close()
				var got []Result
				if oneBatch {
					got = applyAll(t, f, 1, tc.cmds...)
				} else {
					for i, c := range tc.cmds {
						got = append(got, f.Apply(entry(uint64(i+1), mustEncode(t, c))).(Result))
					}
				}
				for i, r := range got {
					if r.Status != tc.status[i] {
						t.Errorf("command %d (%s): status %v (%s), want %v", i, tc.cmds[i].Type(), r.Status, r.Message, tc.status[i])
					}
					if tc.found != nil && r.Found != tc.found[i] {
						t.Errorf("command %d: Found %v, want %v", i, r.Found, tc.found[i])
					}
				}
				var state []string
				if err := f.TenantScan("acme", "", func(k string, v []byte) error {
					state = append(state, k+"="+string(v))
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(state, tc.state) {
					t.Errorf("state %q, want %q", state, tc.state)
				}
				if !oneBatch {
					first = got
				} else if !reflect.DeepEqual(got, first) {
					t.Errorf("results differ between batchings:\n%+v\n%+v", got, first)
				}
			})
		}
	}
}

// TestTenantCheckReplayed: a check applied again after a restart (an entry
// at or below the applied index) is skipped like any other command.
func TestTenantCheckReplayed(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	b := mustEncode(t, Batch{Atomic: true, Cmds: []Command{TenantCheck{Tenant: "t", Key: "k", Absent: true}, TenantPut{Tenant: "t", Key: "k", Value: []byte("v")}}})
	if r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: b}).(Result); r.Status != StatusOK {
		t.Fatalf("first apply: %v %s", r.Status, r.Message)
	}
	if r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: b}).(Result); r.Status != StatusSkipped {
		t.Fatalf("replay: %v %s, want skipped", r.Status, r.Message)
	}
}
