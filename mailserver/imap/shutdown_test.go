package imap_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap"
)

// TestShutdown: Shutdown ends an IDLE session and one waiting for a
// command at once with "* BYE [UNAVAILABLE]" then EOF, lets an APPEND in
// progress finish (its OK comes before its BYE), and refuses new
// connections.
func TestShutdown(t *testing.T) {
	e := startGuardEnv(t)
	tlsCfg, _ := selfSigned(t)
	srv, err := imap.Listen(e.st, imap.Config{IMAP: "127.0.0.1:0", IMAPS: "127.0.0.1:0", TLS: tlsCfg, AllowInsecureAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	plain, implicit := srv.Addrs()["imap"].String(), srv.Addrs()["imaps"].String()
	login := func(addr string, useTLS bool) *rawClient {
		rc := dialFrom(t, "127.0.0.1", addr, useTLS)
		rc.line()
		if l := rc.cmd("l", "LOGIN g@guard.test pw"); !strings.HasPrefix(l, "l OK") {
			t.Fatalf("LOGIN: %q", l)
		}
		return rc
	}
	idling := login(implicit, true)
	if l := idling.cmd("s", "SELECT INBOX"); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("SELECT: %q", l)
	}
	idling.send("i IDLE\r\n")
	idling.until("+ ")
	waiting := login(plain, false)
	greeted := dialFrom(t, "127.0.0.1", plain, false) // not logged in
	greeted.line()
	appending := login(plain, false)
	msg := "From: a@guard.test\r\nSubject: during shutdown\r\n\r\nbody\r\n"
	appending.send(fmt.Sprintf("a APPEND INBOX {%d}\r\n", len(msg)))
	appending.until("+ ")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	for name, rc := range map[string]*rawClient{"IDLE": idling, "logged in": waiting, "not logged in": greeted} {
		if l := rc.until("* "); !strings.HasPrefix(l, "* BYE [UNAVAILABLE]") {
			t.Errorf("%s: %q, want * BYE [UNAVAILABLE]", name, l)
		}
		if !rc.closed(5 * time.Second) {
			t.Errorf("%s: not closed after BYE", name)
		}
	}
	// The APPEND started before the shutdown is stored and acknowledged.
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with an APPEND in progress", err)
	default:
	}
	appending.send(msg + "\r\n")
	if l := appending.line(); !strings.HasPrefix(l, "a OK") {
		t.Errorf("APPEND in progress at shutdown: %q, want a OK", l)
	}
	if l := appending.line(); !strings.HasPrefix(l, "* BYE [UNAVAILABLE]") {
		t.Errorf("after the APPEND: %q, want * BYE [UNAVAILABLE]", l)
	}
	if !appending.closed(5 * time.Second) {
		t.Error("appending connection not closed after BYE")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return once every connection ended")
	}
	if c, err := net.DialTimeout("tcp", plain, 2*time.Second); err == nil {
		c.Close()
		t.Error("a connection was accepted after Shutdown")
	}
}

// TestSetLimits: caps changed on a running server apply to the next
// connection.
func TestSetLimits(t *testing.T) {
	e := startGuardEnv(t)
	srv, err := imap.Listen(e.st, imap.Config{IMAP: "127.0.0.1:0", AllowInsecureAuth: true, MaxConnectionsPerIP: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	plain := srv.Addrs()["imap"].String()
	first := dialFrom(t, "127.0.0.1", plain, false)
	if l := first.line(); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("first connection: %q", l)
	}
	if l := dialFrom(t, "127.0.0.1", plain, false).line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("second connection over a per-IP cap of 1: %q, want * BYE", l)
	}
	srv.SetLimits(0, 2)
	if l := dialFrom(t, "127.0.0.1", plain, false).line(); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("second connection after raising the cap to 2: %q, want * OK", l)
	}
	srv.SetLimits(1, 5) // lowered total: those open stay, the next is refused
	if l := first.cmd("n", "NOOP"); !strings.HasPrefix(l, "n OK") {
		t.Errorf("open connection after lowering the cap: %q", l)
	}
	if l := dialFrom(t, "127.0.0.1", plain, false).line(); !strings.HasPrefix(l, "* BYE") {
		t.Errorf("connection over a lowered total cap: %q, want * BYE", l)
	}
}
