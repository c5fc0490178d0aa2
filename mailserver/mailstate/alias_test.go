package mailstate

import (
	"hastore/replica/meta"
	"reflect"
	"strings"
	"testing"
)

func TestMailAliases(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	idx := uint64(1)
	apply := func(cmds ...meta.Command) []meta.Result {
		t.Helper()
		rs := applyAll(t, f, idx, cmds...)
		idx += uint64(len(cmds))
		return rs
	}
	for i, r := range apply(mailSetup()...) {
		if r.Status != meta.StatusOK {
			t.Fatalf("setup %d: %v %s", i, r.Status, r.Message)
		}
	}
	cases := []struct {
		name string
		cmd  meta.Command
		want meta.Status
		msg  string // in Message
	}{
		{"alias", MailAliasAdd{Address: "team@example.test", Targets: []string{bob, alice}}, meta.StatusOK, ""},
		{"alias again, one more", MailAliasAdd{Address: "team@example.test", Targets: []string{alice, carol}}, meta.StatusOK, ""},
		{"catch-all", MailAliasAdd{Address: "@example.test", Targets: []string{bob}}, meta.StatusOK, ""},
		{"cluster-wide", MailAliasAdd{Address: "postmaster@*", Targets: []string{alice}}, meta.StatusOK, ""},
		{"alias of a user keeps a copy", MailAliasAdd{Address: bob, Targets: []string{bob, alice}}, meta.StatusOK, ""},
		{"remote target", MailAliasAdd{Address: "x@example.test", Targets: []string{"someone@gmail.test"}}, meta.StatusInvalid, "outbound queue"},
		{"no targets", MailAliasAdd{Address: "x@example.test"}, meta.StatusInvalid, "no targets"},
		{"domain not local", MailAliasAdd{Address: "x@nowhere.test", Targets: []string{bob}}, meta.StatusNotFound, "not local"},
		{"catch-all of everything", MailAliasAdd{Address: "@*", Targets: []string{bob}}, meta.StatusInvalid, ""},
		{"uppercase", MailAliasAdd{Address: "X@example.test", Targets: []string{bob}}, meta.StatusInvalid, ""},
		{"target not an address", MailAliasAdd{Address: "x@example.test", Targets: []string{"@example.test"}}, meta.StatusInvalid, ""},
		{"delete missing target", MailAliasDelete{Address: "team@example.test", Targets: []string{"zed@example.test"}}, meta.StatusNotFound, "no target zed@example.test"},
		{"delete missing alias", MailAliasDelete{Address: "nobody@example.test"}, meta.StatusNotFound, ""},
		{"delete one target", MailAliasDelete{Address: "team@example.test", Targets: []string{carol}}, meta.StatusOK, ""},
		{"both domain and address", MailAliasDelete{Address: "team@example.test", Domain: "example.test"}, meta.StatusInvalid, ""},
	}
	for _, c := range cases {
		r := apply(c.cmd)[0]
		if r.Status != c.want || !strings.Contains(r.Message, c.msg) {
			t.Errorf("%s: %v %q, want %v with %q", c.name, r.Status, r.Message, c.want, c.msg)
		}
	}
	v := MailView{R: f}
	if ts, ok, err := v.Alias("team@example.test"); err != nil || !ok || !reflect.DeepEqual(ts, []string{alice, bob}) {
		t.Fatalf("team = %v %v %v", ts, ok, err)
	}
	as, err := v.Aliases("example.test")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range as {
		got = append(got, a.Address+"="+strings.Join(a.Targets, ","))
	}
	want := []string{"@example.test=" + bob, bob + "=" + alice + "," + bob, "team@example.test=" + alice + "," + bob}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("aliases = %q, want %q", got, want)
	}
	if ts, ok, _ := v.Alias("postmaster@*"); !ok || !reflect.DeepEqual(ts, []string{alice}) {
		t.Fatalf("postmaster@* = %v %v", ts, ok)
	}
	// Removing the last target removes the alias.
	if r := apply(MailAliasDelete{Address: "postmaster@*", Targets: []string{alice}})[0]; r.Status != meta.StatusOK {
		t.Fatal(r.Message)
	}
	if _, ok, _ := v.Alias("postmaster@*"); ok {
		t.Fatal("postmaster@* still there")
	}
	// A domain's aliases go in the same atomic batch as the domain; the
	// batch fails while the domain has users, and keeps the aliases.
	r := apply(meta.Batch{Atomic: true, Cmds: []meta.Command{MailAliasDelete{Domain: "example.test"}, MailDomainDelete{Domain: "example.test"}}})[0]
	if r.Status != meta.StatusAborted {
		t.Fatalf("batch = %v %s", r.Status, r.Message)
	}
	if as, _ := v.Aliases("example.test"); len(as) != 3 {
		t.Fatalf("aliases after the failed batch: %v", as)
	}
	if r := apply(MailAliasDelete{Domain: "example.test"})[0]; r.Status != meta.StatusOK {
		t.Fatal(r.Message)
	}
	if as, _ := v.Aliases("example.test"); len(as) != 0 {
		t.Fatalf("aliases left: %v", as)
	}
}

func TestMailAliasCodec(t *testing.T) {
	for _, c := range []meta.Command{
		MailAliasAdd{Address: "a@b.test", Targets: []string{"c@b.test", "d@b.test"}},
		MailAliasDelete{Address: "@b.test", Targets: []string{"c@b.test"}},
		MailAliasDelete{Domain: "b.test"},
		MailAliasForward{Address: "a@b.test", Targets: []string{"c@b.test", "x@remote.test"}},
	} {
		b, err := meta.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := meta.DecodeCommand(b, CommandSet())
		if err != nil {
			t.Fatalf("%T: %v", c, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip %#v → %#v", c, got)
		}
		if got.Type().String() == "" || strings.HasPrefix(got.Type().String(), "meta.CommandType(") {
			t.Fatalf("no name for %d", got.Type())
		}
	}
}

// TestMailAliasForward: MailAliasForward takes targets outside the local
// domains (MailAliasAdd still refuses them, as the release that wrote
// older logs did), checks everything else as MailAliasAdd, and its targets
// are removed by MailAliasDelete like any.
func TestMailAliasForward(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	rs := applyAll(t, f, 1, mailSetup()...)
	for i, r := range rs {
		if r.Status != meta.StatusOK {
			t.Fatalf("setup %d: %v %s", i, r.Status, r.Message)
		}
	}
	idx := uint64(len(rs) + 1)
	for _, c := range []struct {
		name string
		cmd  meta.Command
		want meta.Status
	}{
		{"remote by MailAliasAdd", MailAliasAdd{Address: "fwd@example.test", Targets: []string{"x@remote.test"}}, meta.StatusInvalid},
		{"remote and local", MailAliasForward{Address: "fwd@example.test", Targets: []string{"x@remote.test", bob}}, meta.StatusOK},
		{"alias domain not local", MailAliasForward{Address: "fwd@nowhere.test", Targets: []string{"x@remote.test"}}, meta.StatusNotFound},
		{"target not an address", MailAliasForward{Address: "fwd@example.test", Targets: []string{"remote.test"}}, meta.StatusInvalid},
		{"delete the remote target", MailAliasDelete{Address: "fwd@example.test", Targets: []string{"x@remote.test"}}, meta.StatusOK},
	} {
		if r := applyAll(t, f, idx, c.cmd)[0]; r.Status != c.want {
			t.Errorf("%s: %v %q, want %v", c.name, r.Status, r.Message, c.want)
		}
		idx++
	}
	if ts, ok, err := (MailView{R: f}).Alias("fwd@example.test"); err != nil || !ok || !reflect.DeepEqual(ts, []string{bob}) {
		t.Fatalf("fwd = %v %v %v, want [%s]", ts, ok, err, bob)
	}
}
