package imap_test

import (
	"fmt"
	"strings"
	"testing"

	"hastore/mailserver/imap"
)

// TestProtocol checks protocol details clients rely on (issue 12) over a
// real connection to a node of an in-process cluster.
func TestProtocol(t *testing.T) {
	e := startGuardEnv(t)
	plain, _ := e.listen(t, imap.Config{})
	login := func(t *testing.T) *rawClient {
		rc := dialFrom(t, "127.0.0.1", plain, false)
		rc.line()
		if l := rc.cmd("l", "LOGIN g@guard.test pw"); !strings.HasPrefix(l, "l OK") {
			t.Fatalf("LOGIN: %q", l)
		}
		return rc
	}
	t.Run("keywords", func(t *testing.T) { testKeywords(t, login(t), login(t)) })
}

// collect sends a tagged command and returns its untagged responses and
// the tagged answer.
func (rc *rawClient) collect(tag, command string) (untagged []string, done string) {
	rc.t.Helper()
	rc.send(tag + " " + command + "\r\n")
	for {
		l := rc.line()
		if strings.HasPrefix(l, tag+" ") {
			return untagged, strings.TrimRight(l, "\r\n")
		}
		untagged = append(untagged, strings.TrimRight(l, "\r\n"))
	}
}

// appendMsg appends a small message to mailbox with flags.
func (rc *rawClient) appendMsg(mailbox, flags, subject string) {
	rc.t.Helper()
	msg := "From: a@guard.test\r\nSubject: " + subject + "\r\n\r\nbody\r\n"
	rc.send(fmt.Sprintf("ap APPEND %s (%s) {%d+}\r\n%s\r\n", mailbox, flags, len(msg), msg))
	if l := rc.until("ap "); !strings.HasPrefix(l, "ap OK") {
		rc.t.Fatalf("APPEND to %s: %q", mailbox, l)
	}
}

// find returns the first line with prefix, or "".
func find(lines []string, prefix string) string {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// testKeywords: FLAGS and PERMANENTFLAGS list the keywords in use in the
// mailbox (and \* to say any can be stored), and a new keyword, set by
// this session or another, or on a new message, is announced with FLAGS.
func testKeywords(t *testing.T, a, b *rawClient) {
	if l := a.cmd("c", "CREATE Kw"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	a.appendMsg("Kw", `$Label1 \Seen`, "one")
	a.appendMsg("Kw", "", "two")
	const sys = `\Seen \Answered \Flagged \Deleted \Draft`
	lines, done := a.collect("s", "SELECT Kw")
	if !strings.HasPrefix(done, "s OK") {
		t.Fatalf("SELECT: %q", done)
	}
	if l := find(lines, "* FLAGS "); l != `* FLAGS (`+sys+` $Label1)` {
		t.Errorf("SELECT: %q, want the keyword in FLAGS", l)
	}
	if l := find(lines, "* OK [PERMANENTFLAGS "); !strings.HasPrefix(l, `* OK [PERMANENTFLAGS (`+sys+` $Label1 \*)]`) {
		t.Errorf("SELECT: %q, want the keyword and \\* in PERMANENTFLAGS", l)
	}
	lines, _ = b.collect("e", "EXAMINE Kw")
	if l := find(lines, "* FLAGS "); l != `* FLAGS (`+sys+` $Label1)` {
		t.Errorf("EXAMINE: %q, want the keyword in FLAGS", l)
	}

	// A STORE of a new keyword announces it before its OK. go-imap's
	// server writes FLAGS only from the Poll after the command, so it
	// follows the FETCH; PERMANENTFLAGS already has \*.
	lines, done = a.collect("st", "STORE 2 +FLAGS ($Junk)")
	t.Logf("STORE 2 +FLAGS ($Junk): %q %q", lines, done)
	if l := find(lines, "* FLAGS "); l != `* FLAGS (`+sys+` $Label1 $Junk)` || find(lines, "* 2 FETCH") == "" {
		t.Errorf("STORE of a new keyword: %q, want its FETCH and FLAGS with it", lines)
	}
	// Once told, not again.
	if lines, _ = a.collect("st2", "STORE 1 +FLAGS ($junk)"); find(lines, "* FLAGS") != "" {
		t.Errorf("STORE of a known keyword: %q, FLAGS again", lines)
	}
	// The other session hears of it (no PERMANENTFLAGS: it is read-only).
	lines, _ = b.collect("n", "NOOP")
	if l := find(lines, "* FLAGS "); l != `* FLAGS (`+sys+` $Label1 $Junk)` {
		t.Errorf("other session after STORE: %q, want FLAGS with $Junk", lines)
	}
	if l := find(lines, "* OK [PERMANENTFLAGS"); l != "" {
		t.Errorf("read-only session: %q", l)
	}
	// A new message with a new keyword.
	b.appendMsg("Kw", "$Forwarded", "three")
	lines, _ = a.collect("n", "NOOP")
	if l := find(lines, "* FLAGS "); l != `* FLAGS (`+sys+` $Label1 $Junk $Forwarded)` {
		t.Errorf("after APPEND with $Forwarded: %q", lines)
	}
}
