package imap_test

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"hastore/mailserver/imap"
)

// raw sends a tagged command and returns everything up to and including
// its tagged answer, literals included byte for byte.
func (rc *rawClient) raw(tag, command string) string {
	rc.t.Helper()
	rc.send(tag + " " + command + "\r\n")
	var b strings.Builder
	for {
		l := rc.line()
		b.WriteString(l)
		if strings.HasPrefix(l, tag+" ") {
			return b.String()
		}
		if !strings.HasSuffix(l, "}\r\n") {
			continue
		}
		i := strings.LastIndexByte(l, '{')
		n, err := strconv.Atoi(strings.TrimSuffix(l[i+1:len(l)-3], "+"))
		if err != nil {
			rc.t.Fatalf("literal size in %q: %v", l, err)
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(rc.r, lit); err != nil {
			rc.t.Fatalf("reading a literal of %d bytes: %v", n, err)
		}
		b.Write(lit)
	}
}

// appendRaw APPENDs msg byte for byte to INBOX and returns its UID.
func (rc *rawClient) appendRaw(msg string) string {
	rc.t.Helper()
	rc.send(fmt.Sprintf("ap APPEND INBOX {%d+}\r\n%s\r\n", len(msg), msg))
	l := rc.until("ap ")
	if !strings.HasPrefix(l, "ap OK") {
		rc.t.Fatalf("APPEND: %q", l)
	}
	_, after, _ := strings.Cut(l, "APPENDUID ")
	f := strings.Fields(strings.TrimSuffix(after, "]"))
	if len(f) < 2 {
		rc.t.Fatalf("APPEND answer without APPENDUID: %q", l)
	}
	return strings.TrimSuffix(f[1], "]")
}

func TestEnvelopeAndAppend(t *testing.T) {
	e := startGuardEnv(t)
	plain, _ := e.listen(t, imap.Config{})
	rc := dialFrom(t, "127.0.0.1", plain, false)
	rc.line()
	if l := rc.cmd("l", "LOGIN g@guard.test pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN: %q", l)
	}
	if l := rc.cmd("c", "CREATE env"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	if l := rc.cmd("s", "SELECT INBOX"); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("SELECT: %q", l)
	}
	t.Run("envelope-groups-routes", func(t *testing.T) { testEnvelopeGroups(t, rc) })
	t.Run("search-addresses", func(t *testing.T) { testSearchAddresses(t, rc) })
	t.Run("append-bytes", func(t *testing.T) { testAppendBytes(t, rc) })
}

// testEnvelopeGroups: RFC 3501 7.4.2 group markers and route addresses.
func testEnvelopeGroups(t *testing.T, rc *rawClient) {
	uid := rc.appendRaw("From: Relay <@r1.test,@r2.test:u@d.test>\r\nTo: undisclosed-recipients:;\r\n" +
		"Cc: team: a@b.test, Carl <c@d.test>;, z@y.test\r\nSubject: groups\r\n\r\nbody\r\n")
	out := rc.raw("f", "UID FETCH "+uid+" ENVELOPE")
	for _, want := range []string{
		`(("Relay" NIL "u" "d.test"))`, // From (and Sender, Reply-To)
		`((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))`,
		`((NIL NIL "team" NIL)(NIL NIL "a" "b.test")("Carl" NIL "c" "d.test")(NIL NIL NIL NIL)(NIL NIL "z" "y.test"))`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ENVELOPE lacks %s:\n%s", want, out)
		}
	}
}

// testSearchAddresses: SEARCH FROM/TO/CC match the parsed addresses, not
// only the raw field: a comment inside the address does not hide it.
func testSearchAddresses(t *testing.T, rc *rawClient) {
	uid := rc.appendRaw("From: john(work)@x.test (John Smith)\r\nTo: team: ann@y.test;\r\nCc: J. R. <j(x)@z.test>\r\n" +
		"Subject: addresses\r\n\r\nbody\r\n")
	for _, q := range []string{
		`FROM "john@x.test"`, `FROM "John Smith"`, `TO "ann@y.test"`, `TO "team"`,
		`CC "j@z.test"`, `HEADER FROM "john@x.test"`,
	} {
		l := rc.until0("s", "UID SEARCH "+q)
		if !strings.Contains(" "+strings.TrimSpace(l)+" ", " "+uid+" ") {
			t.Errorf("UID SEARCH %s: %q, want UID %s", q, l, uid)
		}
	}
	if l := rc.until0("s", `UID SEARCH FROM "nobody@x.test"`); strings.Contains(" "+strings.TrimSpace(l)+" ", " "+uid+" ") {
		t.Errorf("SEARCH FROM of another address found it: %q", l)
	}
}

// until0 runs a SEARCH and returns its "* SEARCH" line ("" if none).
func (rc *rawClient) until0(tag, command string) string {
	rc.t.Helper()
	lines, done := rc.collect(tag, command)
	if !strings.HasPrefix(done, tag+" OK") {
		rc.t.Fatalf("%s: %q", command, done)
	}
	return strings.TrimPrefix(find(lines, "* SEARCH"), "* SEARCH")
}

// testAppendBytes: APPEND stores exactly what it was given (bare LF
// stays), and every size and section agrees with those bytes.
func testAppendBytes(t *testing.T, rc *rawClient) {
	header := "From: a@b.test\nSubject: bare LF\nX-Mixed: yes\r\n\n"
	body := "line one\nline two\r\nline three\n"
	msg := header + body
	uid := rc.appendRaw(msg)
	out := rc.raw("f", "UID FETCH "+uid+" (RFC822.SIZE BINARY.SIZE[] BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[]<5.12> BODY.PEEK[HEADER.FIELDS (SUBJECT)] BINARY.PEEK[1])")
	for _, want := range []string{
		fmt.Sprintf("RFC822.SIZE %d", len(msg)),
		fmt.Sprintf("BINARY.SIZE[] %d", len(msg)),
		fmt.Sprintf("BODY[] {%d}\r\n%s", len(msg), msg),
		fmt.Sprintf("BODY[HEADER] {%d}\r\n%s", len(header), header),
		fmt.Sprintf("BODY[TEXT] {%d}\r\n%s", len(body), body),
		fmt.Sprintf("BODY[]<5> {12}\r\n%s", msg[5:17]),
		"BODY[HEADER.FIELDS (SUBJECT)] {",
		"Subject: bare LF\n",
		fmt.Sprintf("BINARY[1] ~{%d}\r\n%s", len(body), body),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("FETCH lacks %q:\n%q", want, out)
		}
	}
}
