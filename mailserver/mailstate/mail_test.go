package mailstate

import (
	"fmt"
	"hastore/replica/meta"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
)

// mailLog collects mail commands as raft entries, so a scenario can be
// applied in different batchings and replayed.
type mailLog struct {
	t    *testing.T
	logs []*raft.Log
}

func (l *mailLog) add(cmds ...meta.Command) {
	for _, c := range cmds {
		l.logs = append(l.logs, entry(uint64(len(l.logs)+1), mustEncode(l.t, c)))
	}
}

const (
	alice = "alice@example.test"
	bob   = "bob@example.test"
	carol = "carol@other.test"
)

func defaultBoxes() []MailboxSpec {
	return []MailboxSpec{{Name: "INBOX"}, {Name: "Sent", SpecialUse: `\Sent`}, {Name: "Drafts", SpecialUse: `\Drafts`}, {Name: "Trash", SpecialUse: `\Trash`}, {Name: "Junk", SpecialUse: `\Junk`}}
}

// mailSetup creates example.test with alice (quota 2500) and bob, and
// other.test with carol (disabled).
func mailSetup() []meta.Command {
	return []meta.Command{
		MailDomainCreate{Domain: "example.test", Now: 1},
		MailDomainCreate{Domain: "other.test", Now: 1},
		MailUserCreate{User: MailUser{Address: alice, PasswordHash: "$argon2id$x", Quota: 2500}, Mailboxes: defaultBoxes(), UIDValidity: 1000, Now: 2},
		MailUserCreate{User: MailUser{Address: bob, PasswordHash: "$argon2id$y"}, Mailboxes: defaultBoxes(), UIDValidity: 500, Now: 2},
		MailUserCreate{User: MailUser{Address: carol}, Mailboxes: defaultBoxes()[:1], UIDValidity: 1, Now: 2},
		MailUserUpdate{Address: carol, SetDisabled: true, Disabled: true},
	}
}

func put(name string) meta.PutObject { return meta.PutObject{Object: testObject(name), Now: 1} }

func msg(name string) MailMessageSpec {
	return MailMessageSpec{Object: testObject(name).ID, Size: 1000, InternalDate: 1700000000e9, Zone: 3600, Info: []byte("info " + name)}
}

func deliver(name string, users ...string) MailDeliver {
	d := MailDeliver{Messages: []MailMessageSpec{msg(name)}, Now: 5}
	for _, u := range users {
		d.Entries = append(d.Entries, MailEntry{User: u})
	}
	return d
}

func codes(r meta.Result) []MailCode {
	var out []MailCode
	for _, o := range Outcomes(r) {
		out = append(out, o.Code)
	}
	return out
}

func refs(t *testing.T, f *meta.FSM, name string) (int64, int64) {
	t.Helper()
	o, ok, err := f.Object(testObject(name).ID)
	if err != nil || !ok {
		t.Fatalf("object %s: ok=%v err=%v", name, ok, err)
	}
	return o.Refs, o.Deleted
}

func inbox(t *testing.T, f *meta.FSM, user string) (Mailbox, []MailMessage) {
	t.Helper()
	v := MailView{R: f}
	mb, ok, err := v.Mailbox(user, "inbox")
	if err != nil || !ok {
		t.Fatalf("INBOX of %s: ok=%v err=%v", user, ok, err)
	}
	var msgs []MailMessage
	if err := v.Messages(user, mb.ID, func(m MailMessage) error { msgs = append(msgs, m); return nil }); err != nil {
		t.Fatal(err)
	}
	return mb, msgs
}

func TestMailAccounts(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	rs := applyAll(t, f, 1, mailSetup()...)
	for i, r := range rs {
		if r.Status != meta.StatusOK {
			t.Fatalf("setup %d: %v %s", i, r.Status, r.Message)
		}
	}
	// Mailboxes got ascending UIDVALIDITYs from the proposed one.
	if got := Outcomes(rs[2]); len(got) != 5 || got[0].UIDValidity != 1000 || got[4].UIDValidity != 1004 {
		t.Fatalf("alice's mailboxes: %+v", got)
	}
	v := MailView{R: f}
	boxes, err := v.Mailboxes(alice)
	if err != nil || len(boxes) != 5 {
		t.Fatalf("Mailboxes = %v, %v", boxes, err)
	}
	for _, b := range boxes {
		if b.UIDNext != 1 || b.HighestModSeq != 1 || (b.Name == "Sent") != (b.SpecialUse == `\Sent`) {
			t.Fatalf("new mailbox %+v", b)
		}
	}
	users, _ := v.Users("example.test")
	if len(users) != 2 || users[0].Address != alice || users[1].Address != bob || users[0].Quota != 2500 {
		t.Fatalf("Users = %+v", users)
	}
	d, ok, _ := v.Domain("example.test")
	if !ok || d.Users != 2 {
		t.Fatalf("domain = %+v %v", d, ok)
	}

	cases := []struct {
		name string
		cmd  meta.Command
		want meta.Status
	}{
		{"domain exists", MailDomainCreate{Domain: "example.test", Now: 1}, meta.StatusConflict},
		{"domain uppercase", MailDomainCreate{Domain: "Example.test", Now: 1}, meta.StatusInvalid},
		{"domain with users", MailDomainDelete{Domain: "example.test"}, meta.StatusConflict},
		{"domain missing", MailDomainDelete{Domain: "nowhere.test"}, meta.StatusNotFound},
		{"user exists", MailUserCreate{User: MailUser{Address: alice}, Now: 1}, meta.StatusConflict},
		{"user in unknown domain", MailUserCreate{User: MailUser{Address: "x@nowhere.test"}, Now: 1}, meta.StatusNotFound},
		{"user uppercase", MailUserCreate{User: MailUser{Address: "Dave@example.test"}, Now: 1}, meta.StatusInvalid},
		{"user slash", MailUserCreate{User: MailUser{Address: "a/b@example.test"}, Now: 1}, meta.StatusInvalid},
		{"plaintext password refused", MailUserCreate{User: MailUser{Address: "dave@example.test", PasswordHash: "secret"}, Now: 1}, meta.StatusInvalid},
		{"update missing user", MailUserUpdate{Address: "nobody@example.test", SetQuota: true}, meta.StatusNotFound},
		{"negative quota", MailUserUpdate{Address: alice, SetQuota: true, Quota: -1}, meta.StatusInvalid},
		{"mailbox exists", MailboxCreate{User: alice, Name: "Sent", Now: 1}, meta.StatusConflict},
		{"mailbox wildcard", MailboxCreate{User: alice, Name: "a*", Now: 1}, meta.StatusInvalid},
		{"mailbox empty level", MailboxCreate{User: alice, Name: "a//b", Now: 1}, meta.StatusInvalid},
		{"mailbox inbox case", MailboxCreate{User: alice, Name: "Inbox/x", Now: 1}, meta.StatusInvalid},
		{"mailbox bad special-use", MailboxCreate{User: alice, Name: "X", SpecialUse: `\Important`, Now: 1}, meta.StatusInvalid},
		{"mailbox of missing user", MailboxCreate{User: "nobody@example.test", Name: "X", Now: 1}, meta.StatusNotFound},
		{"delete INBOX", MailboxDelete{User: alice, Mailbox: boxes[1].ID, Now: 1}, meta.StatusInvalid}, // boxes sorted: Drafts, INBOX, ...
	}
	if boxes[1].Name != "INBOX" {
		t.Fatalf("mailbox order %v", boxes)
	}
	idx := uint64(len(rs))
	for _, c := range cases {
		before := dump(t, f, false)
		idx++
		r := applyAll(t, f, idx, c.cmd)[0]
		if r.Status != c.want {
			t.Errorf("%s: status %v (%s), want %v", c.name, r.Status, r.Message, c.want)
		}
		if r.Status != meta.StatusOK {
			equalDumps(t, c.name+": a failed command changed state", before, dump(t, f, false))
		}
	}
}

func TestMailDeliver(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	idx := uint64(0)
	apply := func(cmds ...meta.Command) []meta.Result {
		t.Helper()
		rs := applyAll(t, f, idx+1, cmds...)
		idx += uint64(len(cmds))
		return rs
	}
	apply(mailSetup()...)

	type step struct {
		cmd    meta.Command
		status meta.Status
		codes  []MailCode
		uids   []uint32 // of the outcomes, 0 where rejected
		refs   int64    // of the step's object afterwards (-1: not checked)
	}
	steps := []struct {
		name string
		put  string // object to put first (one reference held by the proposer)
		step
	}{
		{"one recipient", "m1", step{deliver("m1", alice), meta.StatusOK, []MailCode{MailOK}, []uint32{1}, 1}},
		{"three recipients share the body", "m2", step{deliver("m2", alice, bob, bob), meta.StatusOK, []MailCode{MailOK, MailOK, MailOK}, []uint32{2, 1, 2}, 3}},
		{"unknown, disabled and over quota are rejected per entry", "m3", step{deliver("m3", "nobody@example.test", carol, alice, bob), meta.StatusOK, []MailCode{MailNoUser, MailDisabled, MailOverQuota, MailOK}, []uint32{0, 0, 0, 3}, 1}},
		{"nobody accepted releases the reference", "m4", step{deliver("m4", alice), meta.StatusOK, []MailCode{MailOverQuota}, []uint32{0}, 0}},
		{"all or nothing", "m5", step{func() MailDeliver { d := deliver("m5", bob, alice); d.AllOrNothing = true; return d }(), meta.StatusOK, []MailCode{MailAborted, MailOverQuota}, []uint32{0, 0}, 0}},
		{"no such mailbox", "m6", step{MailDeliver{Messages: []MailMessageSpec{msg("m6")}, Entries: []MailEntry{{User: bob, Mailbox: "Nope"}, {User: bob, Mailbox: "Sent", Flags: []string{`\seen`, "$Label1", "$label1"}}}, Now: 5}, meta.StatusOK, []MailCode{MailNoMailbox, MailOK}, []uint32{0, 1}, 1}},
		{"object without the proposer's reference", "", step{deliver("m7", bob), meta.StatusConflict, nil, nil, -1}},
		{"size mismatch", "m8", step{func() MailDeliver { d := deliver("m8", bob); d.Messages[0].Size = 999; return d }(), meta.StatusConflict, nil, nil, 1}},
		{"invalid flag", "m9", step{MailDeliver{Messages: []MailMessageSpec{msg("m9")}, Entries: []MailEntry{{User: bob, Flags: []string{`\Recent`}}}, Now: 5}, meta.StatusInvalid, nil, nil, 1}},
	}
	for _, s := range steps {
		if s.put != "" {
			if r := apply(put(s.put))[0]; r.Status != meta.StatusOK {
				t.Fatalf("%s: put: %v", s.name, r.Message)
			}
		}
		before := dump(t, f, false)
		r := apply(s.cmd)[0]
		if r.Status != s.status {
			t.Fatalf("%s: status %v (%s), want %v", s.name, r.Status, r.Message, s.status)
		}
		if r.Status != meta.StatusOK {
			equalDumps(t, s.name+": failed delivery changed state", before, dump(t, f, false))
		}
		if !reflect.DeepEqual(codes(r), s.codes) {
			t.Fatalf("%s: codes %v, want %v", s.name, codes(r), s.codes)
		}
		for i, o := range Outcomes(r) {
			if o.UID != s.uids[i] {
				t.Fatalf("%s: entry %d got UID %d, want %d", s.name, i, o.UID, s.uids[i])
			}
		}
		if s.refs >= 0 {
			name := s.put
			if got, deleted := refs(t, f, name); got != s.refs || (got == 0) != (deleted == 5) {
				t.Fatalf("%s: refs %d deleted %d, want refs %d", s.name, got, deleted, s.refs)
			}
		}
	}

	mb, msgs := inbox(t, f, bob)
	if mb.UIDNext != 4 || mb.Messages != 3 || mb.Unseen != 3 || mb.Size != 3000 || mb.HighestModSeq != 4 {
		t.Fatalf("bob's INBOX %+v", mb)
	}
	for i, m := range msgs {
		if m.UID != uint32(i+1) || m.ModSeq != uint64(i+2) || m.InternalDate != 1700000000e9 || m.Zone != 3600 {
			t.Fatalf("bob's message %d: %+v", i, m)
		}
	}
	v := MailView{R: f}
	if info, ok, _ := v.Info(bob, mb.ID, 3); !ok || string(info) != "info m3" {
		t.Fatalf("info = %q %v", info, ok)
	}
	sent, _, _ := v.Mailbox(bob, "Sent")
	m, _, _ := v.Message(bob, sent.ID, 1)
	if !reflect.DeepEqual(m.Flags, []string{"$Label1", `\Seen`}) || sent.Unseen != 0 {
		t.Fatalf("flags %q, unseen %d", m.Flags, sent.Unseen)
	}
	if u, _ := v.Usage(alice); u.Bytes != 2000 || u.Messages != 2 {
		t.Fatalf("alice usage %+v", u)
	}
	if u, _ := v.Usage(bob); u.Bytes != 4000 || u.Messages != 4 {
		t.Fatalf("bob usage %+v", u)
	}
}

func TestMailRefcountsThroughLifecycle(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	idx := uint64(0)
	apply := func(cmds ...meta.Command) []meta.Result {
		t.Helper()
		rs := applyAll(t, f, idx+1, cmds...)
		idx += uint64(len(cmds))
		for i, r := range rs {
			if r.Status != meta.StatusOK {
				t.Fatalf("command %d (%s): %v %s", i, cmds[i].Type(), r.Status, r.Message)
			}
		}
		return rs
	}
	apply(mailSetup()...)
	apply(put("x"), deliver("x", bob, bob, bob))
	if n, _ := refs(t, f, "x"); n != 3 {
		t.Fatalf("after delivering to 3: refs %d", n)
	}
	mb, _ := inbox(t, f, bob)
	v := MailView{R: f}
	trash, _, _ := v.Mailbox(bob, "Trash")
	sent, _, _ := v.Mailbox(bob, "Sent")

	// Copy adds a reference; move transfers one.
	r := apply(MailCopy{User: bob, Mailbox: mb.ID, UIDs: []uint32{1, 9}, Dest: trash.ID, Now: 6})[0]
	if !reflect.DeepEqual(codes(r), []MailCode{MailOK, MailNoMessage}) || Outcomes(r)[0].UID != 1 || Outcomes(r)[0].SrcUID != 1 {
		t.Fatalf("copy outcomes %+v", Outcomes(r))
	}
	if n, _ := refs(t, f, "x"); n != 4 {
		t.Fatalf("after copy: refs %d", n)
	}
	apply(MailCopy{User: bob, Mailbox: mb.ID, UIDs: []uint32{2}, Dest: sent.ID, Move: true, Now: 6})
	if n, _ := refs(t, f, "x"); n != 4 {
		t.Fatalf("after move: refs %d", n)
	}
	// Copy within one mailbox.
	apply(MailCopy{User: bob, Mailbox: trash.ID, UIDs: []uint32{1}, Dest: trash.ID, Now: 6})
	if tr, _, _ := v.MailboxByID(bob, trash.ID); tr.Messages != 2 || tr.UIDNext != 3 {
		t.Fatalf("trash after copy into itself %+v", tr)
	}
	if n, _ := refs(t, f, "x"); n != 5 {
		t.Fatalf("after copy into itself: refs %d", n)
	}

	// Flags, then expunge: a UID twice or missing frees nothing twice.
	r = apply(MailStore{User: bob, Mailbox: mb.ID, UIDs: []uint32{1, 3}, Op: MailFlagsAdd, Flags: []string{`\Deleted`, `\Seen`}})[0]
	if Outcomes(r)[0].ModSeq == 0 || !reflect.DeepEqual(Outcomes(r)[0].Flags, []string{`\Deleted`, `\Seen`}) {
		t.Fatalf("store %+v", Outcomes(r))
	}
	hi := Outcomes(r)[0].ModSeq
	r = apply(MailStore{User: bob, Mailbox: mb.ID, UIDs: []uint32{1}, Op: MailFlagsRemove, Flags: []string{`\Seen`}, UnchangedSince: hi - 1})[0]
	if Outcomes(r)[0].Code != MailModified {
		t.Fatalf("UNCHANGEDSINCE below the modseq: %+v", Outcomes(r))
	}
	r = apply(MailExpunge{User: bob, Mailbox: mb.ID, UIDs: []uint32{1, 1, 3, 2}, Now: 7})[0]
	if !reflect.DeepEqual(codes(r), []MailCode{MailOK, MailNoMessage, MailOK, MailNoMessage}) {
		t.Fatalf("expunge outcomes %v", codes(r))
	}
	if n, _ := refs(t, f, "x"); n != 3 {
		t.Fatalf("after expunging 2: refs %d", n)
	}
	if got, _ := inbox(t, f, bob); got.Messages != 0 || got.UIDNext != 4 || got.Size != 0 || got.Unseen != 0 {
		t.Fatalf("INBOX after expunge %+v", got)
	}

	// Deleting a mailbox releases its messages; deleting the user the rest.
	apply(MailboxDelete{User: bob, Mailbox: trash.ID, Now: 8})
	if n, _ := refs(t, f, "x"); n != 1 {
		t.Fatalf("after deleting Trash: refs %d", n)
	}
	apply(MailUserDelete{Address: bob, Now: 9})
	if n, del := refs(t, f, "x"); n != 0 || del != 9 {
		t.Fatalf("after deleting bob: refs %d deleted %d", n, del)
	}
	if u, _ := v.Usage(bob); u != (MailUsage{}) {
		t.Fatalf("bob's usage survived: %+v", u)
	}
	n := 0
	_ = f.TenantScan(MailUserTenant(bob), "", func(string, []byte) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d keys of bob survived", n)
	}
	if d, _, _ := v.Domain("example.test"); d.Users != 1 {
		t.Fatalf("domain users %d", d.Users)
	}
}

func TestMailQuotaOnCopy(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	applyAll(t, f, 1, mailSetup()...)
	applyAll(t, f, 7, put("q"), deliver("q", alice, alice))
	mb, _ := inbox(t, f, alice)
	trash, _, _ := MailView{R: f}.Mailbox(alice, "Trash")
	before := dump(t, f, false)
	r := applyAll(t, f, 9, MailCopy{User: alice, Mailbox: mb.ID, UIDs: []uint32{1}, Dest: trash.ID, Now: 3})[0]
	if r.Status != meta.StatusConflict || codes(r)[0] != MailOverQuota {
		t.Fatalf("copy over quota: %v %v", r.Status, codes(r))
	}
	equalDumps(t, "refused copy", before, dump(t, f, false))
	// A move takes no more space.
	r = applyAll(t, f, 10, MailCopy{User: alice, Mailbox: mb.ID, UIDs: []uint32{1}, Dest: trash.ID, Move: true, Now: 3})[0]
	if r.Status != meta.StatusOK {
		t.Fatalf("move at quota: %v %s", r.Status, r.Message)
	}
}

func TestMailboxCreateRenameUIDValidity(t *testing.T) {
	f := openTestFSM(t, t.TempDir(), nil)
	defer f.Close()
	idx := uint64(0)
	apply := func(c meta.Command) meta.Result {
		t.Helper()
		idx++
		return applyAll(t, f, idx, c)[0]
	}
	for _, c := range mailSetup() {
		apply(c)
	}
	v := MailView{R: f}
	r := apply(MailboxCreate{User: bob, Name: "Work/2024/Q1", UIDValidity: 10, Now: 3})
	if r.Status != meta.StatusOK || len(Outcomes(r)) != 3 {
		t.Fatalf("create with parents: %v %s %+v", r.Status, r.Message, Outcomes(r))
	}
	q1, _, _ := v.Mailbox(bob, "Work/2024/Q1")
	work, _, _ := v.Mailbox(bob, "Work")
	if Outcomes(r)[0].Mailbox != q1.ID || work.ID == 0 || q1.UIDValidity <= 504 {
		t.Fatalf("created %+v, Work %+v, Q1 %+v", Outcomes(r), work, q1)
	}
	// Delete and recreate with a lower proposed UIDVALIDITY: still new.
	apply(MailboxCreate{User: bob, Name: "Tmp", UIDValidity: 2000, Now: 3})
	tmp, _, _ := v.Mailbox(bob, "Tmp")
	if tmp.UIDValidity != 2000 {
		t.Fatalf("Tmp UIDVALIDITY %d", tmp.UIDValidity)
	}
	apply(MailboxDelete{User: bob, Mailbox: tmp.ID, Now: 3})
	apply(MailboxCreate{User: bob, Name: "Tmp", UIDValidity: 5, Now: 3})
	tmp2, _, _ := v.Mailbox(bob, "Tmp")
	if tmp2.UIDValidity <= 2000 || tmp2.ID == tmp.ID {
		t.Fatalf("recreated Tmp %+v, old %+v", tmp2, tmp)
	}

	// Rename moves children; IDs and UIDVALIDITY stay.
	if r := apply(MailboxRename{User: bob, Mailbox: work.ID, NewName: "Tmp", Now: 3}); r.Status != meta.StatusConflict {
		t.Fatalf("rename over existing: %v", r.Status)
	}
	if r := apply(MailboxRename{User: bob, Mailbox: work.ID, NewName: "Work/x", Now: 3}); r.Status != meta.StatusInvalid {
		t.Fatalf("rename into itself: %v", r.Status)
	}
	if r := apply(MailboxRename{User: bob, Mailbox: work.ID, NewName: "Job", Now: 3}); r.Status != meta.StatusOK {
		t.Fatalf("rename: %v %s", r.Status, r.Message)
	}
	q1b, ok, _ := v.Mailbox(bob, "Job/2024/Q1")
	if !ok || q1b.ID != q1.ID || q1b.UIDValidity != q1.UIDValidity || q1b.Name != "Job/2024/Q1" {
		t.Fatalf("renamed child %+v", q1b)
	}
	if _, ok, _ := v.Mailbox(bob, "Work/2024"); ok {
		t.Fatal("old child name still resolves")
	}

	// Renaming INBOX moves its messages to a new mailbox and leaves an
	// empty INBOX with a new identity.
	idx++
	applyAll(t, f, idx, put("r"))
	idx++
	applyAll(t, f, idx, deliver("r", bob))
	old, _ := inbox(t, f, bob)
	r = apply(MailboxRename{User: bob, Mailbox: old.ID, NewName: "Old", UIDValidity: 1, Now: 3})
	if r.Status != meta.StatusOK || len(Outcomes(r)) != 2 {
		t.Fatalf("rename INBOX: %v %s", r.Status, r.Message)
	}
	nb, msgs := inbox(t, f, bob)
	moved, _, _ := v.Mailbox(bob, "Old")
	if len(msgs) != 0 || nb.ID == old.ID || nb.UIDValidity <= tmp2.UIDValidity || moved.ID != old.ID || moved.Messages != 1 {
		t.Fatalf("after INBOX rename: INBOX %+v (%d msgs), Old %+v", nb, len(msgs), moved)
	}
}

// TestMailDeterministicAndReplayed applies one scenario three ways — one
// entry per raft batch, all in one batch, and after a crash replayed from
// the log — and wants identical state each time; a clean reopen followed by
// a full replay must skip everything (UIDs and references unchanged).
func TestMailDeterministicAndReplayed(t *testing.T) {
	l := &mailLog{t: t}
	l.add(mailSetup()...)
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("obj%d", i%7) // some content repeats: dedup
		l.add(put(name))
		// Two bodies in one delivery cannot share an object; one per entry.
		l.add(deliver(name, alice, bob, "nobody@example.test"))
		if i%5 == 4 {
			l.add(MailExpunge{User: bob, Mailbox: 1, UIDs: []uint32{uint32(i - 2), uint32(i - 1)}, Now: 9})
		}
		if i%3 == 0 {
			l.add(MailStore{User: bob, Mailbox: 1, UIDs: []uint32{uint32(i + 1)}, Op: MailFlagsAdd, Flags: []string{`\Seen`}})
		}
	}
	l.add(MailboxCreate{User: bob, Name: "A/B", UIDValidity: 3, Now: 9})
	l.add(MailCopy{User: bob, Mailbox: 1, UIDs: []uint32{1, 2, 3, 4, 5}, Dest: 6, Now: 9})

	one := openTestFSM(t, t.TempDir(), nil)
	defer one.Close()
	for _, lg := range l.logs {
		one.ApplyBatch([]*raft.Log{lg})
	}
	dirAll := t.TempDir()
	all := openTestFSM(t, dirAll, nil)
	rs := results(all.ApplyBatch(l.logs))
	want := dump(t, one, true)
	equalDumps(t, "one batch vs one entry per batch", want, dump(t, all, true))

	// UIDs in bob's INBOX ascend without gaps from 1 (expunged ones gone).
	var last uint32
	for _, r := range rs {
		for _, o := range Outcomes(r) {
			if o.Code == MailOK && o.Mailbox == 1 && o.SrcUID == 0 && o.Flags == nil && o.UID > last {
				last = o.UID
			}
		}
	}
	if _, msgs := inbox(t, all, bob); msgs[len(msgs)-1].UID != 20 || last != 20 {
		t.Fatalf("bob's last UID %d / %d, want 20", msgs[len(msgs)-1].UID, last)
	}

	// Clean reopen, full replay: everything skipped.
	if err := all.Close(); err != nil {
		t.Fatal(err)
	}
	all = openTestFSM(t, dirAll, nil)
	for _, r := range results(all.ApplyBatch(l.logs)) {
		if r.Status != meta.StatusSkipped {
			t.Fatalf("replayed entry %d: %v", r.Index, r.Status)
		}
	}
	equalDumps(t, "after replay", want, dump(t, all, true))

	// Rebuilt from the log in other batches, identically (the host's own
	// tests cover discarding the state after a crash).
	all = openTestFSM(t, t.TempDir(), nil)
	for i := 0; i < len(l.logs); i += 11 {
		all.ApplyBatch(l.logs[i:min(i+11, len(l.logs))])
	}
	equalDumps(t, "rebuilt after crash", want, dump(t, all, true))
}

func TestMailCommandsRoundTrip(t *testing.T) {
	cmds := []meta.Command{
		MailDomainCreate{Domain: "example.test", Now: 1},
		MailDomainDelete{Domain: "example.test"},
		MailUserCreate{User: MailUser{Address: alice, PasswordHash: "$h", Quota: 5, Disabled: true, Created: 0}, Mailboxes: defaultBoxes(), UIDValidity: 7, Now: 3},
		MailUserUpdate{Address: alice, SetPassword: true, PasswordHash: "$x", SetQuota: true, Quota: 9, SetDisabled: true, Disabled: true},
		MailUserDelete{Address: alice, Now: 4},
		MailboxCreate{User: alice, Name: "Ünï/cödé", SpecialUse: `\Archive`, UIDValidity: 8, Now: 5},
		MailboxDelete{User: alice, Mailbox: 77, Now: 6},
		MailboxRename{User: alice, Mailbox: 1, NewName: "X", UIDValidity: 9, Now: 7},
		MailDeliver{Messages: []MailMessageSpec{msg("a"), msg("b")}, Entries: []MailEntry{{User: alice, Message: 1, Flags: []string{`\Seen`}}, {User: bob, Mailbox: "Sent"}}, AllOrNothing: true, Now: 8},
		MailStore{User: alice, Mailbox: 1, UIDs: []uint32{1, 4294967295}, Op: MailFlagsReplace, Flags: []string{"a"}, UnchangedSince: 3},
		MailExpunge{User: alice, Mailbox: 1, UIDs: []uint32{3}, Now: 9},
		MailCopy{User: alice, Mailbox: 1, UIDs: []uint32{3}, Dest: 2, Move: true, Now: 10},
	}
	for _, c := range cmds {
		b := mustEncode(t, c)
		got, err := meta.DecodeCommand(b, CommandSet())
		if err != nil {
			t.Fatalf("%s: %v", c.Type(), err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%s round trip:\n got %+v\nwant %+v", c.Type(), got, c)
		}
		if c.Type().String() == fmt.Sprintf("meta.CommandType(%d)", uint8(c.Type())) {
			t.Errorf("type %d has no name", c.Type())
		}
		// Truncations never panic.
		for i := 0; i < len(b); i++ {
			if _, err := meta.DecodeCommand(b[:i], CommandSet()); err == nil {
				t.Fatalf("%s truncated to %d bytes decoded", c.Type(), i)
			}
		}
	}
	r := meta.Result{Index: 3, Status: meta.StatusOK, Items: items([]MailOutcome{{Code: MailOK, Mailbox: 2, UIDValidity: 3, UID: 4, SrcUID: 5, ModSeq: 6, Flags: []string{`\Seen`}}, {Code: MailOverQuota}}),
		Batch: []meta.Result{{Status: meta.StatusOK, Items: items([]MailOutcome{{Code: MailAborted}})}}}
	got, err := meta.DecodeResult(meta.EncodeResult(r))
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("result round trip: %v\n got %+v\nwant %+v", err, got, r)
	}
	// A result without mail outcomes encodes as before.
	plain := meta.Result{Index: 1, Status: meta.StatusOK, Found: true}
	if b := meta.EncodeResult(plain); b[len(b)-2]&16 != 0 {
		t.Fatalf("plain result has the mail flag")
	}
}

func TestCanonicalNamesAndFlags(t *testing.T) {
	for in, want := range map[string]string{"inbox": "INBOX", "InBoX/a": "INBOX/a", "inboxes": "inboxes", "Sent": "Sent"} {
		if got := CanonicalMailboxName(in); got != want {
			t.Errorf("CanonicalMailboxName(%q) = %q, want %q", in, got, want)
		}
	}
	got, err := CanonicalFlags([]string{"$b", `\SEEN`, "$B", `\flagged`, "$a"})
	if err != nil || !reflect.DeepEqual(got, []string{"$a", "$b", `\Flagged`, `\Seen`}) {
		t.Fatalf("CanonicalFlags = %q, %v", got, err)
	}
	for _, bad := range [][]string{{`\Recent`}, {"a b"}, {""}, {"x("}} {
		if _, err := CanonicalFlags(bad); err == nil {
			t.Errorf("CanonicalFlags(%q) accepted", bad)
		}
	}
	for _, a := range []string{"a@b.c", "first.last+tag@example.test", "ü@bücher.test"} {
		if err := ValidMailAddress(a); err != nil {
			t.Errorf("ValidMailAddress(%q): %v", a, err)
		}
	}
	for _, a := range []string{"A@b.c", "a@B.c", "ab.c", "a@", "@b.c", ".a@b.c", "a b@c.d", "a@b..c"} {
		if err := ValidMailAddress(a); err == nil {
			t.Errorf("ValidMailAddress(%q) accepted", a)
		}
	}
}
