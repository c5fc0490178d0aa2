package mailbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// TestAppendsAllOrNothing: Appends (IMAP MULTIAPPEND) on a 3-node
// in-process cluster appends every message in one command, with one
// reference per entry (the same bytes twice included), and a command
// that does not commit (aborted, or refused) leaves no reference behind.
func TestAppendsAllOrNothing(t *testing.T) {
	e := startCommitEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	one := []byte("Subject: one\r\n\r\nfirst\r\n")
	two := []byte("Subject: two\r\n\r\nsecond, sent twice\r\n")
	refs := func(t *testing.T, msg []byte) int64 {
		t.Helper()
		// Delivering the same bytes again finds the object: its count
		// then is 1 plus what was there before.
		d, outs, err := deliver(ctx, e.st, msg, "bob@example.test")
		if err != nil || len(outs) != 1 || outs[0].Err != nil {
			t.Fatalf("delivery: %v %+v", err, outs)
		}
		o, ok, err := e.c.Nodes[0].Meta.Object(d.Object())
		if err != nil || !ok {
			t.Fatalf("object of a delivered message: %+v %v %v", o, ok, err)
		}
		return o.Refs - 1
	}

	t.Run("commit", func(t *testing.T) {
		a, err := e.st.NewAppends("bob@example.test", "INBOX")
		if err != nil {
			t.Fatal(err)
		}
		date := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600))
		for i, m := range [][]byte{one, two, two} {
			if err := a.Add(ctx, m, []string{[]string{`\Seen`, `\Flagged`, "$Label1"}[i]}, date); err != nil {
				t.Fatalf("Add %d: %v", i, err)
			}
		}
		outs, err := a.Commit(ctx)
		if err != nil || len(outs) != 3 {
			t.Fatalf("Commit: %v %+v", err, outs)
		}
		for i, o := range outs {
			if o.Err != nil || o.UID != outs[0].UID+uint32(i) {
				t.Fatalf("outcome %d: %+v, want UID %d", i, o, outs[0].UID+uint32(i))
			}
		}
		a.Abort(ctx) // after Commit: nothing to release
		var got []mailstate.MailMessage
		err = e.st.EachMessage("bob@example.test", outs[0].Mailbox, func(m mailstate.MailMessage) error {
			if m.UID >= outs[0].UID {
				got = append(got, m)
			}
			return nil
		})
		if err != nil || len(got) != 3 || got[2].Flags[0] != "$Label1" || got[0].InternalDate != date.UnixNano() {
			t.Fatalf("messages: %+v %v", got, err)
		}
		for i, m := range got {
			o, ok, err := e.c.Nodes[0].Meta.Object(m.Object)
			want := int64(1)
			if i > 0 {
				want = 2 // the same bytes twice: one body, an entry each
			}
			if err != nil || !ok || o.Refs != want {
				t.Errorf("message %d: object %+v %v %v, want %d references", i, o, ok, err, want)
			}
		}
	})

	t.Run("abort", func(t *testing.T) {
		three := []byte("Subject: three\r\n\r\naborted\r\n")
		a, _ := e.st.NewAppends("bob@example.test", "INBOX")
		for _, m := range [][]byte{three, three} {
			if err := a.Add(ctx, m, nil, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		a.Abort(ctx)
		a.Abort(ctx)
		if n := refs(t, three); n != 0 {
			t.Errorf("aborted appends left %d references", n)
		}
	})

	t.Run("refused", func(t *testing.T) {
		four := []byte("Subject: four\r\n\r\nrefused\r\n")
		a, _ := e.st.NewAppends("bob@example.test", "Nothere")
		for _, m := range [][]byte{four, one} {
			if err := a.Add(ctx, m, nil, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		outs, err := a.Commit(ctx)
		if err != nil || len(outs) != 2 || !errors.Is(outs[0].Err, mailbox.ErrNotFound) || outs[1].Err == nil {
			t.Fatalf("Commit into no mailbox: %v %+v", err, outs)
		}
		a.Abort(ctx)
		if n := refs(t, four); n != 0 {
			t.Errorf("refused appends left %d references", n)
		}
	})

	t.Run("limit", func(t *testing.T) {
		a, _ := e.st.NewAppends("bob@example.test", "INBOX")
		defer a.Abort(ctx)
		var err error
		for i := 0; i <= mailstate.MaxMailMessages && err == nil; i++ {
			err = a.Add(ctx, one, nil, time.Time{})
		}
		if !errors.Is(err, mailbox.ErrInvalid) || a.Len() != mailstate.MaxMailMessages {
			t.Errorf("message %d: %v, want ErrInvalid after %d", a.Len()+1, err, mailstate.MaxMailMessages)
		}
	})
}
