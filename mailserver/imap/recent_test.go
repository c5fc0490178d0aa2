package imap_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// TestRecentNotSelected: \Recent of mailboxes no session on this node
// selected since the server started, over a real connection to a node
// of an in-process cluster: of the mail there before the start, that
// after the last \Seen message; of the mail that came since (by any
// path, as another node's would), all of it, except up to the last
// message whose flags a client changed.
func TestRecentNotSelected(t *testing.T) {
	e := startGuardEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const user = "g@guard.test"
	for _, name := range []string{"Before", "Since", "Touched"} {
		if _, err := e.st.CreateMailbox(ctx, user, name, ""); err != nil {
			t.Fatal(err)
		}
	}
	deliver := func(mbox string, flags ...string) {
		t.Helper()
		d := e.st.NewDelivery()
		if err := d.AddRecipient(mailbox.Recipient{Address: user, Mailbox: mbox, Flags: flags}); err != nil {
			t.Fatal(err)
		}
		if err := d.Body(ctx, []byte("From: z@x.test\r\nSubject: r\r\n\r\nr\r\n"), time.Time{}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Commit(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	// Before the server starts: a read message, then an unread one.
	deliver("Before", mailstate.FlagSeen)
	deliver("Before")
	plain, _ := e.listen(t, imap.Config{})
	// Since: a \Seen copy among new mail.
	deliver("Since")
	deliver("Since", mailstate.FlagSeen)
	deliver("Since")
	// Since, and a client elsewhere flagged the second of three.
	for range 3 {
		deliver("Touched")
	}
	mb, ok, err := e.st.Mailbox(user, "Touched")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := e.st.StoreFlags(ctx, user, mb.ID, []uint32{2}, mailstate.MailFlagsAdd, []string{mailstate.FlagFlagged}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.SyncEvents(); err != nil {
		t.Fatal(err)
	}
	rc := dialFrom(t, "127.0.0.1", plain, false)
	rc.line()
	rc.cmd("l", "LOGIN "+user+" pw")
	for _, c := range []struct {
		mbox   string
		recent string
	}{{"Before", "1"}, {"Since", "3"}, {"Touched", "1"}} {
		lines, _ := rc.collect("st", "STATUS "+c.mbox+" (RECENT)")
		if l := find(lines, "* STATUS"); !strings.Contains(l, "(RECENT "+c.recent+")") {
			t.Errorf("STATUS %s: %q, want RECENT %s", c.mbox, lines, c.recent)
		}
		lines, _ = rc.collect("s", "SELECT "+c.mbox)
		if find(lines, "* "+c.recent+" RECENT") == "" {
			t.Errorf("SELECT %s: %q, want * %s RECENT", c.mbox, lines, c.recent)
		}
	}
}
