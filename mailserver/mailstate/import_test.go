package mailstate

import (
	"reflect"
	"testing"

	"hastore/replica/meta"
)

func TestMailUserRehash(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	applyAll(t, f, 1, mailSetup()...)
	n := uint64(len(mailSetup()) + 1)
	cases := []struct {
		name string
		cmd  MailUserRehash
		want meta.Status
		hash string // alice's hash after
	}{
		{"stale old hash", MailUserRehash{Address: alice, OldHash: "$argon2id$other", NewHash: "$argon2id$new"}, meta.StatusConflict, "$argon2id$x"},
		{"plaintext new", MailUserRehash{Address: alice, OldHash: "$argon2id$x", NewHash: "secret"}, meta.StatusInvalid, "$argon2id$x"},
		{"empty new", MailUserRehash{Address: alice, OldHash: "$argon2id$x", NewHash: ""}, meta.StatusInvalid, "$argon2id$x"},
		{"no user", MailUserRehash{Address: "nobody@example.test", OldHash: "", NewHash: "$argon2id$n"}, meta.StatusNotFound, "$argon2id$x"},
		{"matching", MailUserRehash{Address: alice, OldHash: "$argon2id$x", NewHash: "$argon2id$new"}, meta.StatusOK, "$argon2id$new"},
		{"again with the old", MailUserRehash{Address: alice, OldHash: "$argon2id$x", NewHash: "$argon2id$newer"}, meta.StatusConflict, "$argon2id$new"},
	}
	for _, c := range cases {
		r := applyAll(t, f, n, c.cmd)[0]
		n++
		if r.Status != c.want {
			t.Fatalf("%s: status %v (%s), want %v", c.name, r.Status, r.Message, c.want)
		}
		u, _, _ := MailView{R: f}.User(alice)
		if u.PasswordHash != c.hash {
			t.Fatalf("%s: hash %q, want %q", c.name, u.PasswordHash, c.hash)
		}
	}
}

func importMsg(name, key string, uid uint32, flags ...string) MailImportMessage {
	return MailImportMessage{Key: key, UID: uid, Object: testObject(name).ID, Size: 1000, InternalDate: 1600000000e9, Zone: -7200, Info: []byte("info " + name), Flags: flags}
}

func TestMailImport(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	cmds := append(mailSetup(), put("m1"), put("m2"), put("m3"), put("m4"), put("m5"))
	applyAll(t, f, 1, cmds...)
	n := uint64(len(cmds) + 1)
	apply := func(c meta.Command) meta.Result {
		t.Helper()
		r := applyAll(t, f, n, c)[0]
		n++
		return r
	}

	// First run: the INBOX never held mail, so it takes the source's
	// UIDVALIDITY and the UIDs (with gaps) are kept.
	r := apply(MailImport{User: bob, Mailbox: "INBOX", UIDValidity: 77, Now: 9, Messages: []MailImportMessage{
		importMsg("m1", "1600000000.M1.host", 3, `\Seen`), importMsg("m2", "1600000001.M2.host", 10, `\Flagged`, "$Label1"),
	}})
	if r.Status != meta.StatusOK {
		t.Fatalf("import: %v %s", r.Status, r.Message)
	}
	outs := Outcomes(r)
	if len(outs) != 2 || outs[0].UID != 3 || outs[1].UID != 10 || outs[0].UIDValidity != 77 || outs[0].SrcUID != 0 {
		t.Fatalf("outcomes %+v", outs)
	}
	mb, msgs := inbox(t, f, bob)
	if mb.UIDValidity != 77 || mb.UIDNext != 11 || mb.Messages != 2 || mb.Unseen != 1 || len(msgs) != 2 {
		t.Fatalf("inbox %+v, %d messages", mb, len(msgs))
	}
	if !reflect.DeepEqual(msgs[1].Flags, []string{"$Label1", `\Flagged`}) && !reflect.DeepEqual(msgs[1].Flags, []string{`\Flagged`, "$Label1"}) {
		t.Fatalf("flags %v", msgs[1].Flags)
	}
	if msgs[0].InternalDate != 1600000000e9 || msgs[0].Zone != -7200 {
		t.Fatalf("date %+v", msgs[0])
	}
	if rf, _ := refs(t, f, "m1"); rf != 1 {
		t.Fatalf("m1 refs %d, want 1 (the proposer's, now the message's)", rf)
	}

	// Re-run (a new upload of the same bodies, so one more reference
	// each), plus one message new at the source: only that one is added,
	// the repeats release their reference.
	apply(put("m1"))
	apply(put("m2"))
	r = apply(MailImport{User: bob, Mailbox: "INBOX", UIDValidity: 77, Now: 9, Messages: []MailImportMessage{
		importMsg("m1", "1600000000.M1.host", 3), importMsg("m2", "1600000001.M2.host", 10), importMsg("m3", "1600000002.M3.host", 12),
	}})
	outs = Outcomes(r)
	if r.Status != meta.StatusOK || len(outs) != 3 || outs[0].SrcUID != 3 || outs[1].SrcUID != 10 || outs[2].UID != 12 || outs[2].SrcUID != 0 {
		t.Fatalf("re-run: %v %s %+v", r.Status, r.Message, outs)
	}
	if rf, _ := refs(t, f, "m1"); rf != 1 {
		t.Fatalf("m1 refs %d after a re-run, want 1", rf)
	}
	if u, _ := (MailView{R: f}).Usage(bob); u.Messages != 3 || u.Bytes != 3000 {
		t.Fatalf("usage %+v", u)
	}
	if uid, ok, err := (MailView{R: f}).Imported(bob, mb.ID, "1600000002.M3.host"); err != nil || !ok || uid != 12 {
		t.Fatalf("Imported = %d %v %v", uid, ok, err)
	}

	// Without messages: an empty mailbox takes the UIDVALIDITY, one that
	// held mail does not.
	if r := apply(MailImport{User: bob, Mailbox: "Sent", UIDValidity: 4242, Now: 9}); r.Status != meta.StatusOK {
		t.Fatalf("empty import: %v %s", r.Status, r.Message)
	}
	if sent, _, _ := (MailView{R: f}).Mailbox(bob, "Sent"); sent.UIDValidity != 4242 {
		t.Fatalf("Sent after an empty import: %+v", sent)
	}
	if r := apply(MailImport{User: bob, UIDValidity: 4243, Now: 9}); r.Status != meta.StatusOK {
		t.Fatalf("empty import into INBOX: %v %s", r.Status, r.Message)
	}
	if mb, _ := inbox(t, f, bob); mb.UIDValidity != 77 {
		t.Fatalf("a used INBOX took a new UIDVALIDITY: %+v", mb)
	}

	// A mailbox that held mail keeps its UIDVALIDITY; UIDs come next.
	apply(deliver("m4", alice))
	r = apply(MailImport{User: alice, UIDValidity: 55, Now: 9, Messages: []MailImportMessage{importMsg("m5", "k5", 1)}})
	outs = Outcomes(r)
	amb, _ := inbox(t, f, alice)
	if r.Status != meta.StatusOK || outs[0].UID != 2 || amb.UIDValidity == 55 {
		t.Fatalf("into a used mailbox: %v %+v, inbox %+v", r.Status, outs, amb)
	}

	for _, c := range []struct {
		name string
		cmd  MailImport
		want meta.Status
	}{
		{"no user", MailImport{User: "nobody@example.test", Now: 9, Messages: []MailImportMessage{importMsg("m1", "a", 0)}}, meta.StatusNotFound},
		{"no mailbox", MailImport{User: bob, Mailbox: "Nope", Now: 9, Messages: []MailImportMessage{importMsg("m1", "a", 0)}}, meta.StatusNotFound},
		{"UIDs descend", MailImport{User: bob, Now: 9, Messages: []MailImportMessage{importMsg("m1", "a", 5), importMsg("m2", "b", 4)}}, meta.StatusInvalid},
		{"key twice", MailImport{User: bob, Now: 9, Messages: []MailImportMessage{importMsg("m1", "a", 0), importMsg("m2", "a", 0)}}, meta.StatusInvalid},
		{"empty key", MailImport{User: bob, Now: 9, Messages: []MailImportMessage{importMsg("m1", "", 0)}}, meta.StatusInvalid},
		{"bad flag", MailImport{User: bob, Now: 9, Messages: []MailImportMessage{importMsg("m1", "a", 0, `\Recent`)}}, meta.StatusInvalid},
		{"unknown object", MailImport{User: bob, Now: 9, Messages: []MailImportMessage{importMsg("never", "a", 0)}}, meta.StatusConflict},
	} {
		if r := apply(c.cmd); r.Status != c.want {
			t.Errorf("%s: %v (%s), want %v", c.name, r.Status, r.Message, c.want)
		}
	}
}

// The new commands survive encoding: what a node proposes is what every
// node applies.
func TestMigrateCommandsRoundTrip(t *testing.T) {
	for _, c := range []meta.Command{
		MailUserRehash{Address: alice, OldHash: "$6$a$b", NewHash: "$argon2id$c"},
		MailImport{User: bob, Mailbox: "Sub/Folder", UIDValidity: 1234, Now: 7, Messages: []MailImportMessage{
			importMsg("m1", "k1", 9, `\Seen`, "$Forwarded"), importMsg("m2", "k2", 0)}},
	} {
		b := mustEncode(t, c)
		got, err := meta.DecodeCommand(b, CommandSet())
		if err != nil {
			t.Fatalf("%T: %v", c, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%T: decoded %+v, want %+v", c, got, c)
		}
	}
}
