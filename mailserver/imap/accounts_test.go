package imap_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap"
)

// TestAccountChangedEndsSessions: disabling a user ends its open sessions
// with "* BYE" (one in IDLE, one waiting for a command) and closes them;
// another user's session stays; a new password does the same to the
// sessions opened with the old one.
func TestAccountChangedEndsSessions(t *testing.T) {
	e := startGuardEnv(t)
	plain, implicit := e.listen(t, imap.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, u := range []string{"gone@guard.test", "stays@guard.test", "newpw@guard.test"} {
		if err := e.st.AddUser(ctx, u, "pw", 0); err != nil {
			t.Fatal(err)
		}
	}
	login := func(user, addr string, useTLS bool) *rawClient {
		rc := dialFrom(t, "127.0.0.1", addr, useTLS)
		rc.line()
		if l := rc.cmd("l", "LOGIN "+user+" pw"); !strings.HasPrefix(l, "l OK") {
			t.Fatalf("LOGIN %s: %q", user, l)
		}
		return rc
	}
	idle := func(rc *rawClient) {
		if l := rc.cmd("s", "SELECT INBOX"); !strings.HasPrefix(l, "s OK") {
			t.Fatalf("SELECT: %q", l)
		}
		rc.send("i IDLE\r\n")
		rc.until("+ ")
	}
	ended := func(what string, rc *rawClient) {
		t.Helper()
		if l := rc.until("* "); !strings.HasPrefix(l, "* BYE") {
			t.Errorf("%s: %q, want * BYE", what, l)
		}
		if !rc.closed(10 * time.Second) {
			t.Errorf("%s: not closed after BYE", what)
		}
	}

	idling, waiting := login("gone@guard.test", implicit, true), login("gone@guard.test", plain, false)
	idle(idling)
	other := login("stays@guard.test", plain, false)
	idle(other)
	if err := e.st.SetDisabled(ctx, "gone@guard.test", true); err != nil {
		t.Fatal(err)
	}
	ended("disabled user's IDLE session", idling)
	ended("disabled user's session waiting for a command", waiting)
	other.send("DONE\r\n")
	if l := other.until("i "); !strings.HasPrefix(l, "i OK") {
		t.Errorf("another user's IDLE after the disable: %q", l)
	}
	if l := other.cmd("n", "NOOP"); !strings.HasPrefix(l, "n OK") {
		t.Errorf("another user's session after the disable: %q", l)
	}
	rc := dialFrom(t, "127.0.0.1", plain, false)
	rc.line()
	if l := rc.cmd("l", "LOGIN gone@guard.test pw"); !strings.HasPrefix(l, "l NO") {
		t.Errorf("LOGIN of the disabled user: %q, want NO", l)
	}

	pw := login("newpw@guard.test", plain, false)
	idle(pw)
	if err := e.st.SetPassword(ctx, "newpw@guard.test", "pw2"); err != nil {
		t.Fatal(err)
	}
	ended("session of a user given a new password", pw)
}
