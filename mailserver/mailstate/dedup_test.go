package mailstate

import (
	"crypto/sha256"
	"hastore/replica/meta"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func once(name string, digest string, now int64, users ...string) MailDeliverOnce {
	d := deliver(name, users...)
	d.Now = now
	c := MailDeliverOnce{MailDeliver: d, Window: 100}
	if digest != "" {
		c.Digests = [][32]byte{sha256.Sum256([]byte(digest))}
	} else {
		c.Digests = [][32]byte{{}}
	}
	return c
}

func retryKeys(t *testing.T, f *meta.FSM, user string) []string {
	t.Helper()
	var keys []string
	err := f.TenantScan(MailUserTenant(user), "", func(k string, _ []byte) error {
		if strings.HasPrefix(k, "r/") || strings.HasPrefix(k, "x/") {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestMailDeliverOnce(t *testing.T) {
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

	steps := []struct {
		name   string
		obj    string
		cmd    MailDeliverOnce
		codes  []MailCode
		uids   []uint32
		src    []uint32 // SrcUID of each outcome
		refs   int64    // of the step's object afterwards
		bobMsg uint32   // bob's INBOX message count afterwards
	}{
		{"first delivery", "a1", once("a1", "hello", 10, bob), []MailCode{MailOK}, []uint32{1}, []uint32{0}, 1, 1},
		{"retry within the window is answered from memory", "a2", once("a2", "hello", 50, bob), []MailCode{MailOK}, []uint32{1}, []uint32{1}, 0, 1},
		{"another body is stored", "a3", once("a3", "other", 60, bob), []MailCode{MailOK}, []uint32{2}, []uint32{0}, 1, 2},
		{"same body to another user is stored", "a4", once("a4", "hello", 70, alice), []MailCode{MailOK}, []uint32{1}, []uint32{0}, 1, 2},
		{"retry to two users, both remembered", "a5", once("a5", "hello", 80, bob, alice), []MailCode{MailOK, MailOK}, []uint32{1, 1}, []uint32{1, 1}, 0, 2},
		{"no digest: no memory", "a6", once("a6", "", 85, bob), []MailCode{MailOK}, []uint32{3}, []uint32{0}, 1, 3},
		{"after the window a second copy is stored", "a7", once("a7", "hello", 110, bob), []MailCode{MailOK}, []uint32{4}, []uint32{0}, 1, 4},
		{"and is remembered anew", "a8", once("a8", "hello", 150, bob), []MailCode{MailOK}, []uint32{4}, []uint32{4}, 0, 4},
		{"all or nothing: a retry counts as accepted", "a9", func() MailDeliverOnce {
			c := once("a9", "hello", 160, bob, carol)
			c.AllOrNothing = true
			return c
		}(), []MailCode{MailAborted, MailDisabled}, []uint32{0, 0}, []uint32{0, 0}, 0, 4},
	}
	for _, s := range steps {
		if r := apply(put(s.obj))[0]; r.Status != meta.StatusOK {
			t.Fatalf("%s: put: %v", s.name, r.Message)
		}
		r := apply(s.cmd)[0]
		if r.Status != meta.StatusOK {
			t.Fatalf("%s: status %v (%s)", s.name, r.Status, r.Message)
		}
		if !reflect.DeepEqual(codes(r), s.codes) {
			t.Fatalf("%s: codes %v, want %v", s.name, codes(r), s.codes)
		}
		for i, o := range Outcomes(r) {
			if o.UID != s.uids[i] || o.SrcUID != s.src[i] {
				t.Fatalf("%s: entry %d UID %d SrcUID %d, want %d %d", s.name, i, o.UID, o.SrcUID, s.uids[i], s.src[i])
			}
		}
		if got, _ := refs(t, f, s.obj); got != s.refs {
			t.Fatalf("%s: refs %d, want %d", s.name, got, s.refs)
		}
		if mb, _ := inbox(t, f, bob); mb.Messages != s.bobMsg {
			t.Fatalf("%s: bob has %d messages, want %d", s.name, mb.Messages, s.bobMsg)
		}
	}

	// A later command removes bob's expired records ("hello" until 210,
	// "other" until 160) and keeps only its own.
	if r := apply(put("b1"), once("b1", "late", 300, bob))[1]; r.Status != meta.StatusOK {
		t.Fatal(r.Message)
	}
	if got := retryKeys(t, f, bob); len(got) != 2 || !strings.HasPrefix(got[0], "r/") || !strings.HasPrefix(got[1], "x/") {
		t.Fatalf("bob's retry records after expiry: %q", got)
	}

	// Invalid commands change nothing.
	for _, c := range []MailDeliverOnce{
		func() MailDeliverOnce { c := once("b1", "x", 300, bob); c.Window = 0; return c }(),
		func() MailDeliverOnce { c := once("b1", "x", 300, bob); c.Digests = nil; return c }(),
	} {
		before := dump(t, f, false)
		if r := apply(c)[0]; r.Status != meta.StatusInvalid {
			t.Fatalf("invalid command: %v %s", r.Status, r.Message)
		}
		equalDumps(t, "invalid deliver once", before, dump(t, f, false))
	}

	// The memory survives a snapshot and restore.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snap")
	persistToFile(t, snap, path)
	snap.Release()
	g := openTestFSM(t, t.TempDir(), nil)
	defer g.Close()
	if err := restoreFromFile(g, path); err != nil {
		t.Fatal(err)
	}
	r := applyAll(t, g, idx+1, put("b2"), once("b2", "late", 310, bob))[1]
	if r.Status != meta.StatusOK || Outcomes(r)[0].SrcUID == 0 {
		t.Fatalf("retry after restore: %v %+v", r.Status, Outcomes(r))
	}
}

func TestMailDeliverOnceEncoding(t *testing.T) {
	c := once("e1", "hello", 10, bob, alice)
	c.AllOrNothing = true
	b := mustEncode(t, c)
	got, err := meta.DecodeCommand(b, CommandSet())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, meta.Command(c)) {
		t.Fatalf("decoded %+v, want %+v", got, c)
	}
	if CommandSet().Types[got.Type()] != "MailDeliverOnce" {
		t.Fatalf("type name %q", got.Type())
	}
	// A digest of the wrong length does not decode.
	var e encoder
	e.u8(1) // command format v1
	e.u8(uint8(TypeMailDeliverOnce))
	c.MailDeliver.encode(&e)
	e.uvarint(1)
	e.bytes([]byte("short"))
	e.varint(100)
	if _, err := meta.DecodeCommand(e.b, CommandSet()); err == nil {
		t.Fatal("a short digest decoded")
	}
}
