package imap_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap"
)

// TestUnauthenticate: UNAUTHENTICATE (RFC 8437) over a real connection
// to a node of an in-process cluster: back to the not authenticated
// state with the selected mailbox closed unexpunged and ENABLEd
// extensions forgotten; another user may log in; the login timeout
// applies again.
func TestUnauthenticate(t *testing.T) {
	e := startGuardEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.st.AddUser(ctx, "u2@guard.test", "pw", 0); err != nil {
		t.Fatal(err)
	}
	plain, _ := e.listen(t, imap.Config{LoginTimeout: 2 * time.Second})
	rc := dialFrom(t, "127.0.0.1", plain, false)
	if l := rc.line(); strings.Contains(l, "UNAUTHENTICATE") {
		t.Errorf("greeting offers UNAUTHENTICATE before login: %q", l)
	}
	if l := rc.cmd("u", "UNAUTHENTICATE"); !strings.HasPrefix(l, "u BAD") {
		t.Errorf("UNAUTHENTICATE before login: %q, want BAD", l)
	}
	if l := rc.cmd("l", "LOGIN g@guard.test pw"); !strings.HasPrefix(l, "l OK") || !strings.Contains(l, " UNAUTHENTICATE") {
		t.Fatalf("LOGIN: %q, want OK with UNAUTHENTICATE", l)
	}
	rc.appendMsg("INBOX", `\Deleted`, "doomed")
	rc.cmd("e", "ENABLE IMAP4rev2")
	if l := rc.cmd("s", "SELECT INBOX"); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("SELECT: %q", l)
	}
	if lines, done := rc.collect("u", "UNAUTHENTICATE"); !strings.HasPrefix(done, "u OK") || len(lines) != 0 {
		t.Fatalf("UNAUTHENTICATE: %q %q", lines, done)
	}
	for _, cmd := range []string{"FETCH 1 FLAGS", "SELECT INBOX", "LIST \"\" *"} {
		if l := rc.cmd("x", cmd); !strings.HasPrefix(l, "x BAD") {
			t.Errorf("%s after UNAUTHENTICATE: %q, want BAD", cmd, l)
		}
	}
	if caps, _ := rc.collect("c", "CAPABILITY"); len(caps) != 1 || !strings.Contains(caps[0], "AUTH=PLAIN") {
		t.Errorf("CAPABILITY after UNAUTHENTICATE: %q, want the not authenticated list", caps)
	}
	// Another user; IMAP4rev2 is no longer on (RECENT is sent again).
	if l := rc.cmd("l", "LOGIN u2@guard.test pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN as another user: %q", l)
	}
	if lines, _ := rc.collect("s", "SELECT INBOX"); find(lines, "* 0 EXISTS") == "" || find(lines, "* 0 RECENT") == "" {
		t.Errorf("u2's INBOX after g's UNAUTHENTICATE: %q, want 0 EXISTS and RECENT (rev1 again)", lines)
	}
	rc.cmd("u", "UNAUTHENTICATE")
	rc.cmd("l", "LOGIN g@guard.test pw")
	// The mailbox was closed without expunging.
	if lines, _ := rc.collect("s", "STATUS INBOX (MESSAGES)"); find(lines, "* STATUS INBOX (MESSAGES 1)") == "" {
		t.Errorf("STATUS after UNAUTHENTICATE of a selected mailbox: %q, want its \\Deleted message kept", lines)
	}
	// Not logged in again: the login timeout ends the connection.
	rc.cmd("u", "UNAUTHENTICATE")
	start := time.Now()
	if !rc.closed(6 * time.Second) {
		t.Fatal("connection open 6 s after UNAUTHENTICATE with a 2 s login timeout")
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("closed %v after UNAUTHENTICATE, before the 2 s login timeout", took)
	}
}
