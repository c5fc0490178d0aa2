package imap_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

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
	t.Run("list-delimiter", func(t *testing.T) { testListDelimiter(t, login(t)) })
	t.Run("list-subscribed", func(t *testing.T) { testListSubscribed(t, login(t)) })
	t.Run("move-within", func(t *testing.T) { testMoveWithin(t, login(t)) })
	t.Run("keywords", func(t *testing.T) { testKeywords(t, login(t), login(t)) })
	t.Run("recent", func(t *testing.T) { testRecent(t, e, login(t), login(t), login(t)) })
	t.Run("binary", func(t *testing.T) { testBinary(t, login(t)) })
	t.Run("id", func(t *testing.T) { testID(t, dialFrom(t, "127.0.0.1", plain, false)) })
	t.Run("literal-plus", func(t *testing.T) { testLiteralPlus(t, dialFrom(t, "127.0.0.1", plain, false)) })
	t.Run("condstore", func(t *testing.T) { testCondStore(t, login(t), login(t)) })
	t.Run("quota", func(t *testing.T) { testQuota(t, e, plain, login(t)) })
	t.Run("esearch", func(t *testing.T) { testESearch(t, login(t)) })
	t.Run("selected-state", func(t *testing.T) { testSelectedState(t, login(t)) })
	t.Run("sort-thread", func(t *testing.T) { testSortThread(t, login(t)) })
	t.Run("qresync", func(t *testing.T) { testQResync(t, login(t), login(t), login(t)) })
}

// testQResync: QRESYNC (RFC 7162 3.2): VANISHED instead of EXPUNGE once
// enabled, SELECT (QRESYNC (uidvalidity modseq known-uids)) answering
// VANISHED (EARLIER) and the changed messages only, UID FETCH (CHANGEDSINCE
// n VANISHED), and [CLOSED] when a SELECT closes the previous mailbox.
func testQResync(t *testing.T, a, b, c *rawClient) {
	if l := a.cmd("c", "CREATE Qr"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	for range 4 {
		a.appendMsg("Qr", "", "q")
	}
	if l := c.cmd("s", "SELECT Qr (QRESYNC (1 1))"); !strings.HasPrefix(l, "s BAD") {
		t.Errorf("SELECT (QRESYNC) without ENABLE QRESYNC: %q, want BAD", l)
	}
	for _, rc := range []*rawClient{a, c} {
		if lines, done := rc.collect("e", "ENABLE QRESYNC"); !strings.HasPrefix(done, "e OK") || find(lines, "* ENABLED QRESYNC") == "" {
			t.Fatalf("ENABLE QRESYNC: %q %q", lines, done)
		}
	}
	lines, _ := a.collect("s", "SELECT Qr")
	high := modSeqOf(t, find(lines, "* OK [HIGHESTMODSEQ "))
	var uidValidity uint32
	fmt.Sscanf(find(lines, "* OK [UIDVALIDITY "), "* OK [UIDVALIDITY %d]", &uidValidity)
	if high == 0 || uidValidity == 0 {
		t.Fatalf("SELECT: %q", lines)
	}
	// Another session flags 2 and expunges 3.
	b.cmd("s", "SELECT Qr")
	b.cmd("st", `STORE 2 +FLAGS (\Flagged)`)
	b.cmd("st", `STORE 3 +FLAGS.SILENT (\Deleted)`)
	if l := b.cmd("x", "EXPUNGE"); !strings.HasPrefix(l, "x OK") {
		t.Fatalf("EXPUNGE: %q", l)
	}
	lines, _ = a.collect("n", "NOOP")
	if find(lines, "* VANISHED 3") == "" || find(lines, "* 3 EXPUNGE") != "" || find(lines, "* 2 FETCH") == "" {
		t.Errorf("NOOP of a QRESYNC session: %q, want * VANISHED 3 (no EXPUNGE) and * 2 FETCH", lines)
	}
	// A reconnecting client: only what changed since its modseq.
	lines, done := c.collect("s", fmt.Sprintf("SELECT Qr (QRESYNC (%d %d 1:4))", uidValidity, high))
	if !strings.HasPrefix(done, "s OK") || find(lines, "* VANISHED (EARLIER) 3") == "" || len(fetches(lines)) != 1 ||
		!strings.HasPrefix(fetches(lines)[0], `* 2 FETCH (UID 2 FLAGS (\Flagged`) || modSeqOf(t, fetches(lines)[0]) <= high {
		t.Errorf("SELECT (QRESYNC): %q %q, want VANISHED (EARLIER) 3 and message 2 alone", lines, done)
	}
	lines, _ = c.collect("f", fmt.Sprintf("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)", high))
	if find(lines, "* VANISHED (EARLIER) 3") == "" || len(fetches(lines)) != 1 || !strings.Contains(fetches(lines)[0], "UID 2") {
		t.Errorf("UID FETCH (CHANGEDSINCE VANISHED): %q", lines)
	}
	if l := c.cmd("f", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"); !strings.HasPrefix(l, "f BAD") {
		t.Errorf("FETCH (VANISHED) without UID: %q, want BAD", l)
	}
	// A UIDVALIDITY that does not match: nothing to resync from.
	lines, _ = c.collect("s", fmt.Sprintf("SELECT Qr (QRESYNC (%d %d))", uidValidity+1, high))
	if find(lines, "* OK [CLOSED]") == "" {
		t.Errorf("SELECT while selected: %q, want * OK [CLOSED]", lines)
	}
	if find(lines, "* VANISHED") != "" || len(fetches(lines)) != 0 {
		t.Errorf("SELECT (QRESYNC) with another UIDVALIDITY: %q, want no VANISHED or FETCH", lines)
	}
}

// testSortThread: SORT (RFC 5256, DISPLAY from RFC 5957) and THREAD
// ORDEREDSUBJECT and REFERENCES, as webmail uses them instead of
// downloading every header.
func testSortThread(t *testing.T, rc *rawClient) {
	caps, _ := rc.collect("c", "CAPABILITY")
	for _, c := range []string{" SORT ", " THREAD=REFERENCES ", " THREAD=ORDEREDSUBJECT "} {
		if len(caps) != 1 || !strings.Contains(caps[0]+" ", c) {
			t.Errorf("CAPABILITY: %q, want%s", caps, c)
		}
	}
	if l := rc.cmd("c", "CREATE St"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	for _, m := range []string{
		"From: Zed <zed@x.test>\r\nSubject: Beta\r\nDate: Fri, 02 Jan 2026 10:00:00 +0000\r\nMessage-ID: <b1@x>\r\n\r\nb\r\n",
		"From: amy@x.test\r\nSubject: Re: alpha\r\nDate: Sat, 03 Jan 2026 10:00:00 +0000\r\nMessage-ID: <m2@x>\r\nIn-Reply-To: <a1@x>\r\nReferences: <a1@x>\r\n\r\nlonger body\r\n",
		"From: Bob <bob@x.test>\r\nSubject: Alpha\r\nDate: Thu, 01 Jan 2026 10:00:00 +0000\r\nMessage-ID: <a1@x>\r\n\r\na\r\n",
		"From: carl@x.test\r\nSubject: [list] Re: Alpha (fwd)\r\nDate: Sun, 04 Jan 2026 10:00:00 +0000\r\nMessage-ID: <c4@x>\r\nReferences: <a1@x> <m2@x>\r\n\r\nc\r\n",
	} {
		rc.send(fmt.Sprintf("ap APPEND St {%d+}\r\n%s\r\n", len(m), m))
		if l := rc.until("ap "); !strings.HasPrefix(l, "ap OK") {
			t.Fatalf("APPEND: %q", l)
		}
	}
	rc.cmd("s", "SELECT St")
	for _, q := range []struct{ cmd, want string }{
		{"SORT (SUBJECT) UTF-8 ALL", "* SORT 2 3 4 1"},
		{"SORT (DATE) UTF-8 ALL", "* SORT 3 1 2 4"},
		{"SORT (REVERSE FROM) US-ASCII ALL", "* SORT 1 4 3 2"},
		{"SORT (DISPLAYFROM) UTF-8 ALL", "* SORT 2 3 4 1"},       // amy@x.test, Bob, carl@x.test, Zed
		{"SORT (REVERSE DISPLAYTO) UTF-8 ALL", "* SORT 1 2 3 4"}, // no To: all equal, by sequence
		{"SORT (SUBJECT REVERSE DATE) UTF-8 ALL", "* SORT 4 2 3 1"},
		{"SORT (DATE) UTF-8 FROM amy", "* SORT 2"},
		{"UID SORT (DATE) UTF-8 NOT FROM amy", "* SORT 3 1 4"},
		{"THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (3 (2)(4))(1)"},
		{"THREAD REFERENCES UTF-8 ALL", "* THREAD (3 2 4)(1)"},
		{"UID THREAD REFERENCES UTF-8 NOT SUBJECT beta", "* THREAD (3 2 4)"},
	} {
		lines, done := rc.collect("q", q.cmd)
		if !strings.HasPrefix(done, "q OK") || len(lines) != 1 || lines[0] != q.want {
			t.Errorf("%s: %q %q, want %q", q.cmd, lines, done, q.want)
		}
	}
	for _, q := range []struct{ cmd, want string }{
		{"SORT (FOO) UTF-8 ALL", "q BAD"},
		{"SORT (REVERSE) UTF-8 ALL", "q BAD"},
		{"SORT (DATE) KOI8-R ALL", "q NO [BADCHARSET"},
		{"THREAD FOO UTF-8 ALL", "q BAD"},
		{"SORT (DATE) UTF-8", "q BAD"},
	} {
		if lines, done := rc.collect("q", q.cmd); !strings.HasPrefix(done, q.want) || len(lines) != 0 {
			t.Errorf("%s: %q %q, want %s alone", q.cmd, lines, done, q.want)
		}
	}
}

// testSelectedState: NAMESPACE (RFC 2342), UNSELECT (RFC 3691), CLOSE,
// MOVE (RFC 6851) and UIDPLUS (RFC 4315: APPENDUID, COPYUID, UID EXPUNGE).
func testSelectedState(t *testing.T, rc *rawClient) {
	lines, done := rc.collect("n", "NAMESPACE")
	if !strings.HasPrefix(done, "n OK") || len(lines) != 1 || lines[0] != `* NAMESPACE (("" "/")) NIL NIL` {
		t.Errorf("NAMESPACE: %q %q", lines, done)
	}
	for _, c := range []string{"CREATE Sa", "CREATE Sb"} {
		if l := rc.cmd("c", c); !strings.HasPrefix(l, "c OK") {
			t.Fatalf("%s: %q", c, l)
		}
	}
	msg := "Subject: s\r\n\r\nx\r\n"
	rc.send(fmt.Sprintf("a APPEND Sa (\\Deleted) {%d+}\r\n%s\r\n", len(msg), msg))
	if l := rc.until("a "); !strings.HasPrefix(l, "a OK [APPENDUID ") || !strings.HasSuffix(strings.TrimSpace(l), "] APPEND completed") {
		t.Errorf("APPEND: %q, want OK [APPENDUID v 1]", l)
	}
	for range 3 {
		rc.appendMsg("Sa", "", "s")
	}
	rc.cmd("s", "SELECT Sa")
	// UNSELECT leaves \Deleted messages alone and says nothing.
	if lines, done = rc.collect("u", "UNSELECT"); !strings.HasPrefix(done, "u OK") || len(lines) != 0 {
		t.Errorf("UNSELECT: %q %q", lines, done)
	}
	if l := rc.cmd("f", "FETCH 1 (UID)"); !strings.HasPrefix(l, "f BAD") {
		t.Errorf("FETCH after UNSELECT: %q, want BAD", l)
	}
	if lines, _ = rc.collect("st", "STATUS Sa (MESSAGES)"); find(lines, "* STATUS") != "* STATUS Sa (MESSAGES 4)" {
		t.Errorf("STATUS after UNSELECT: %q, want 4 messages", lines)
	}
	rc.cmd("s", "SELECT Sa")
	// COPYUID on COPY; MOVE answers COPYUID before its EXPUNGE.
	if l := rc.cmd("c", "UID COPY 2 Sb"); !strings.HasPrefix(l, "c OK [COPYUID ") || !strings.Contains(l, " 2 1] ") {
		t.Errorf("UID COPY 2 Sb: %q, want OK [COPYUID v 2 1]", l)
	}
	lines, done = rc.collect("m", "MOVE 3 Sb")
	if !strings.HasPrefix(done, "m OK") || len(lines) != 2 || !strings.HasPrefix(lines[0], "* OK [COPYUID ") ||
		!strings.HasSuffix(strings.Fields(lines[0])[5], "2]") || lines[1] != "* 3 EXPUNGE" {
		t.Errorf("MOVE 3 Sb: %q %q, want * OK [COPYUID v 3 2], * 3 EXPUNGE, OK", lines, done)
	}
	// UID EXPUNGE removes only the \Deleted messages it names.
	rc.cmd("st", `STORE 2:3 +FLAGS.SILENT (\Deleted)`)
	// (Left: UIDs 1, 2, 4, all \Deleted.)
	if lines, done = rc.collect("x", "UID EXPUNGE 4"); !strings.HasPrefix(done, "x OK") || strings.Join(lines, "|") != "* 3 EXPUNGE" {
		t.Errorf("UID EXPUNGE 4: %q %q, want * 3 EXPUNGE alone", lines, done)
	}
	// CLOSE expunges the rest silently.
	if lines, done = rc.collect("cl", "CLOSE"); !strings.HasPrefix(done, "cl OK") || len(lines) != 0 {
		t.Errorf("CLOSE: %q %q, want OK alone", lines, done)
	}
	if lines, _ = rc.collect("st", "STATUS Sa (MESSAGES)"); find(lines, "* STATUS") != "* STATUS Sa (MESSAGES 0)" {
		t.Errorf("STATUS after CLOSE: %q, want 0 messages", lines)
	}
	if l := rc.cmd("cl", "CLOSE"); !strings.HasPrefix(l, "cl BAD") {
		t.Errorf("CLOSE without a mailbox: %q, want BAD", l)
	}
}

// testESearch: ESEARCH (RFC 4731) result options and SEARCHRES (RFC 5182):
// RETURN (SAVE) alone answers no result line, "$" names what it saved in
// FETCH, STORE, SEARCH and COPY.
func testESearch(t *testing.T, rc *rawClient) {
	caps, _ := rc.collect("c", "CAPABILITY")
	if len(caps) != 1 || !strings.Contains(caps[0]+" ", " SEARCHRES ") || !strings.Contains(caps[0]+" ", " ESEARCH ") {
		t.Errorf("CAPABILITY: %q, want SEARCHRES and ESEARCH", caps)
	}
	if l := rc.cmd("c", "CREATE Res"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	rc.appendMsg("Res", "", "one")
	rc.appendMsg("Res", `\Flagged`, "two")
	rc.appendMsg("Res", `\Flagged`, "three")
	rc.appendMsg("Res", "", "four")
	rc.cmd("s", "SELECT Res")
	for _, q := range []struct{ cmd, want string }{
		{"SEARCH RETURN (MIN MAX COUNT) FLAGGED", `* ESEARCH (TAG "q") MIN 2 MAX 3 COUNT 2`},
		{"UID SEARCH RETURN (ALL) FLAGGED", `* ESEARCH (TAG "q") UID ALL 2:3`},
		{"SEARCH RETURN () UNFLAGGED", `* ESEARCH (TAG "q") ALL 1,4`},
		{"SEARCH RETURN (COUNT) DELETED", `* ESEARCH (TAG "q") COUNT 0`},
		{"SEARCH RETURN (MIN) DELETED", `* ESEARCH (TAG "q")`},
		{"SEARCH FLAGGED", `* SEARCH 2 3`},
	} {
		lines, done := rc.collect("q", q.cmd)
		if !strings.HasPrefix(done, "q OK") || len(lines) != 1 || lines[0] != q.want {
			t.Errorf("%s: %q %q, want %q", q.cmd, lines, done, q.want)
		}
	}
	if lines, done := rc.collect("q", "UID SEARCH RETURN (SAVE) FLAGGED"); !strings.HasPrefix(done, "q OK") || len(lines) != 0 {
		t.Errorf("SEARCH RETURN (SAVE): %q %q, want OK and no result line", lines, done)
	}
	if lines, _ := rc.collect("f", "FETCH $ (UID)"); strings.Join(lines, "|") != "* 2 FETCH (UID 2)|* 3 FETCH (UID 3)" {
		t.Errorf("FETCH $: %q, want messages 2 and 3", lines)
	}
	if lines, _ := rc.collect("q", "SEARCH $ SUBJECT three"); find(lines, "* SEARCH") != "* SEARCH 3" {
		t.Errorf("SEARCH $ SUBJECT three: %q, want 3", lines)
	}
	if lines, _ := rc.collect("q", "SEARCH RETURN (SAVE MIN) SUBJECT four"); strings.Join(lines, "|") != `* ESEARCH (TAG "q") MIN 4` {
		t.Errorf("SEARCH RETURN (SAVE MIN): %q", lines)
	}
	// ("$" is UIDs whatever the command, so the reply may name the UID.)
	if lines, _ := rc.collect("st", `STORE $ +FLAGS (\Seen)`); len(lines) != 1 || !strings.HasPrefix(lines[0], "* 4 FETCH (") || !strings.Contains(lines[0], `\Seen`) {
		t.Errorf("STORE $: %q, want message 4", lines)
	}
	if lines, done := rc.collect("q", "SEARCH RETURN (FOO) ALL"); !strings.HasPrefix(done, "q BAD") || len(lines) != 0 {
		t.Errorf("SEARCH RETURN (FOO): %q %q, want BAD", lines, done)
	}
}

// testQuota: QUOTA (RFC 9208) from the user's storage limit: one root ""
// for all mailboxes, STORAGE in KiB (usage rounded up); no root for a user
// without a limit; SETQUOTA refused NO [NOPERM].
func testQuota(t *testing.T, e *guardEnv, plain string, unlimited *rawClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.st.AddUser(ctx, "q@guard.test", "pw", 100<<10); err != nil {
		t.Fatal(err)
	}
	rc := dialFrom(t, "127.0.0.1", plain, false)
	rc.line()
	if l := rc.cmd("l", "LOGIN q@guard.test pw"); !strings.HasPrefix(l, "l OK") || !strings.Contains(l, " QUOTA ") {
		t.Fatalf("LOGIN: %q, want OK with QUOTA in its capabilities", l)
	}
	caps, _ := rc.collect("c", "CAPABILITY")
	if len(caps) != 1 || !strings.Contains(caps[0]+" ", " QUOTA ") || !strings.Contains(caps[0]+" ", " QUOTA=RES-STORAGE ") {
		t.Errorf("CAPABILITY: %q, want QUOTA and QUOTA=RES-STORAGE", caps)
	}
	lines, done := rc.collect("q", "GETQUOTAROOT INBOX")
	if !strings.HasPrefix(done, "q OK") || len(lines) != 2 || lines[0] != `* QUOTAROOT INBOX ""` || lines[1] != `* QUOTA "" (STORAGE 0 100)` {
		t.Errorf("GETQUOTAROOT INBOX: %q %q", lines, done)
	}
	rc.appendMsg("INBOX", "", strings.Repeat("x", 3000))
	if lines, _ = rc.collect("q", `GETQUOTA ""`); len(lines) != 1 || lines[0] != `* QUOTA "" (STORAGE 3 100)` { // 3,037 bytes, rounded up
		t.Errorf(`GETQUOTA "" after a 3 KiB message: %q`, lines)
	}
	for _, c := range []struct{ cmd, want string }{
		{`GETQUOTA "other"`, "q NO [NONEXISTENT]"},
		{`GETQUOTAROOT NoSuchBox`, "q NO [NONEXISTENT]"},
		{`SETQUOTA "" (STORAGE 1000000)`, "q NO [NOPERM]"},
		{`GETQUOTA`, "q BAD"},
	} {
		if lines, done := rc.collect("q", c.cmd); !strings.HasPrefix(done, c.want) || len(lines) != 0 {
			t.Errorf("%s: %q %q, want %s alone", c.cmd, lines, done, c.want)
		}
	}
	// No limit: no root.
	if lines, done = unlimited.collect("q", "GETQUOTAROOT INBOX"); !strings.HasPrefix(done, "q OK") || len(lines) != 1 || lines[0] != "* QUOTAROOT INBOX" {
		t.Errorf("GETQUOTAROOT INBOX without a limit: %q %q", lines, done)
	}
	if _, done = unlimited.collect("q", `GETQUOTA ""`); !strings.HasPrefix(done, "q NO [NONEXISTENT]") {
		t.Errorf(`GETQUOTA "" without a limit: %q`, done)
	}
	// Before login there are no quotas.
	pre := dialFrom(t, "127.0.0.1", plain, false)
	pre.line()
	if l := pre.cmd("q", "GETQUOTAROOT INBOX"); !strings.HasPrefix(l, "q BAD") {
		t.Errorf("GETQUOTAROOT before login: %q", l)
	}
}

// fetches returns the FETCH responses among lines.
func fetches(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, " FETCH (") {
			out = append(out, l)
		}
	}
	return out
}

// modSeqOf returns the number in "MODSEQ (n)" or "[HIGHESTMODSEQ n]" or
// "HIGHESTMODSEQ n)" in l, or 0.
func modSeqOf(t *testing.T, l string) uint64 {
	t.Helper()
	for _, pre := range []string{"MODSEQ (", "HIGHESTMODSEQ "} {
		if i := strings.Index(l, pre); i >= 0 {
			var n uint64
			fmt.Sscan(strings.TrimLeft(l[i+len(pre):], " "), &n)
			if n == 0 {
				rest := l[i+len(pre):]
				j := strings.IndexAny(rest, ")]")
				if j > 0 {
					fmt.Sscan(rest[:j], &n)
				}
			}
			return n
		}
	}
	return 0
}

// testCondStore: ENABLE CONDSTORE and CONDSTORE (RFC 7162): HIGHESTMODSEQ
// in SELECT and STATUS, MODSEQ in FETCH, FETCH (CHANGEDSINCE), STORE
// (UNCHANGEDSINCE) with [MODIFIED], SEARCH MODSEQ, and MODSEQ in the
// updates another session gets.
func testCondStore(t *testing.T, a, b *rawClient) {
	if l := a.cmd("c", "CREATE Cs"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	a.appendMsg("Cs", "", "one")
	a.appendMsg("Cs", "", "two")
	lines, done := a.collect("e", "ENABLE CONDSTORE")
	if !strings.HasPrefix(done, "e OK") || find(lines, "* ENABLED CONDSTORE") == "" {
		t.Fatalf("ENABLE CONDSTORE: %q %q", lines, done)
	}
	lines, _ = a.collect("s", "SELECT Cs")
	high := modSeqOf(t, find(lines, "* OK [HIGHESTMODSEQ "))
	if high == 0 {
		t.Fatalf("SELECT: %q, want * OK [HIGHESTMODSEQ n]", lines)
	}
	lines, _ = a.collect("f", "FETCH 1:* (MODSEQ)")
	if len(lines) != 2 || modSeqOf(t, lines[0]) == 0 || modSeqOf(t, lines[1]) > high {
		t.Errorf("FETCH 1:* (MODSEQ): %q, want two MODSEQ at most %d", lines, high)
	}
	b.collect("e", "ENABLE CONDSTORE")
	b.collect("s", "SELECT Cs")

	// A STORE raises the modseq; its FETCH says so.
	lines, _ = a.collect("st", `STORE 1 +FLAGS (\Flagged)`)
	m1 := modSeqOf(t, find(lines, "* 1 FETCH"))
	if m1 <= high {
		t.Fatalf("STORE: %q, want MODSEQ above %d", lines, high)
	}
	// Only what changed since: message 1.
	lines, _ = a.collect("f", fmt.Sprintf("FETCH 1:* (FLAGS) (CHANGEDSINCE %d)", high))
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "* 1 FETCH") || modSeqOf(t, lines[0]) != m1 {
		t.Errorf("FETCH (CHANGEDSINCE %d): %q, want message 1 alone with MODSEQ (%d)", high, lines, m1)
	}
	// Message 2 changed after modseq 1: not stored, reported MODIFIED.
	lines, done = a.collect("u", `STORE 2 (UNCHANGEDSINCE 1) +FLAGS (\Seen)`)
	if done != "u OK [MODIFIED 2] Some messages changed since UNCHANGEDSINCE" || find(lines, "* 2 FETCH") != "" {
		t.Errorf("STORE 2 (UNCHANGEDSINCE 1): %q %q, want OK [MODIFIED 2] and no FETCH", lines, done)
	}
	if lines, _ = a.collect("f", "FETCH 2 (FLAGS)"); strings.Contains(strings.Join(lines, ""), `\Seen`) {
		t.Errorf("message 2 after a refused conditional STORE: %q", lines)
	}
	// Both unchanged since m1: stored; even .SILENT tells the new modseqs.
	lines, done = a.collect("u2", fmt.Sprintf(`UID STORE 1:* (UNCHANGEDSINCE %d) +FLAGS.SILENT ($Cs)`, m1))
	lines = fetches(lines) // and "* FLAGS" for the new keyword
	if done != "u2 OK STORE completed" || len(lines) != 2 {
		t.Errorf("UID STORE (UNCHANGEDSINCE %d): %q %q, want two FETCH and OK without MODIFIED", m1, lines, done)
	}
	var m2 uint64
	for _, l := range lines {
		if n := modSeqOf(t, l); n <= m1 || strings.Contains(l, "FLAGS") {
			t.Errorf("UID STORE .SILENT (UNCHANGEDSINCE): %q, want FETCH (UID n MODSEQ (>%d)) without FLAGS", l, m1)
		} else {
			m2 = max(m2, n)
		}
	}
	if lines, _ = a.collect("st", "STATUS Cs (HIGHESTMODSEQ MESSAGES)"); modSeqOf(t, find(lines, "* STATUS")) != m2 {
		t.Errorf("STATUS (HIGHESTMODSEQ): %q, want %d", lines, m2)
	}
	if lines, _ = a.collect("q", fmt.Sprintf("SEARCH MODSEQ %d", m2)); find(lines, "* SEARCH") != fmt.Sprintf("* SEARCH 2 (MODSEQ %d)", m2) {
		t.Errorf("SEARCH MODSEQ %d: %q, want * SEARCH 2 (MODSEQ %d)", m2, lines, m2)
	}
	// The other session hears of both changes with their modseq.
	lines, _ = b.collect("n", "NOOP")
	if l := find(lines, "* 1 FETCH"); modSeqOf(t, l) < m1 || !strings.Contains(l, `\Flagged`) {
		t.Errorf("other session's NOOP: %q, want * 1 FETCH with FLAGS and MODSEQ", lines)
	}
}

// testID: ID (RFC 2971) before and after login: one "* ID" line, OK, and
// the connection stays (Apple Mail and Outlook send it first).
func testID(t *testing.T, rc *rawClient) {
	if l := rc.line(); !strings.Contains(l, " ID") {
		t.Errorf("greeting %q does not offer ID", l)
	}
	for i, cmd := range []string{`ID ("name" "Mail" "version" "16.0" "os" NIL)`, "ID NIL"} {
		lines, done := rc.collect("i", cmd)
		if !strings.HasPrefix(done, "i OK") || len(lines) != 1 || !strings.HasPrefix(lines[0], `* ID ("name" "hastore"`) {
			t.Errorf("%s: %q %q, want one * ID line and OK", cmd, lines, done)
		}
		if i == 0 {
			if l := rc.cmd("l", "LOGIN g@guard.test pw"); !strings.HasPrefix(l, "l OK") {
				t.Fatalf("LOGIN after ID: %q", l)
			}
		}
	}
	for _, cmd := range []string{`ID`, `ID ("name")`, `ID ("name" "x"`, `ID (name "x")`} {
		if lines, done := rc.collect("b", cmd); !strings.HasPrefix(done, "b BAD") || len(lines) != 0 {
			t.Errorf("%s: %q %q, want BAD alone", cmd, lines, done)
		}
	}
	if l := rc.cmd("n", "NOOP"); !strings.HasPrefix(l, "n OK") {
		t.Errorf("NOOP after ID: %q", l)
	}
}

// testLiteralPlus: LITERAL+ (RFC 7888): non-synchronizing literals are
// taken without a "+" (in LOGIN, SELECT, APPEND, SEARCH), synchronizing
// ones with one.
func testLiteralPlus(t *testing.T, rc *rawClient) {
	if l := rc.line(); !strings.Contains(l, "LITERAL+") {
		t.Errorf("greeting %q does not offer LITERAL+", l)
	}
	// Everything sent at once: a "+" would be a continuation line before
	// the tagged answers.
	rc.send("l LOGIN {12+}\r\ng@guard.test {2+}\r\npw\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN with non-synchronizing literals: %q", l)
	}
	rc.send("c CREATE {3+}\r\nLit\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE with a non-synchronizing literal: %q", l)
	}
	msg := "From: a@guard.test\r\nSubject: lit+\r\n\r\nliteral plus body\r\n"
	rc.send(fmt.Sprintf("a APPEND Lit {%d+}\r\n%s\r\n", len(msg), msg))
	if l := rc.line(); !strings.HasPrefix(l, "a OK [APPENDUID ") {
		t.Fatalf("APPEND with a non-synchronizing literal: %q", l)
	}
	rc.send("s SELECT {3+}\r\nLit\r\n")
	if l := rc.until("s "); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("SELECT with a non-synchronizing literal: %q", l)
	}
	rc.send("q SEARCH BODY {4+}\r\nplus\r\n")
	lines := []string{rc.line()}
	if lines[0] != "* SEARCH 1\r\n" {
		t.Errorf("SEARCH BODY {4+}: %q, want * SEARCH 1", lines)
	}
	if l := rc.line(); !strings.HasPrefix(l, "q OK") {
		t.Errorf("SEARCH BODY {4+}: %q", l)
	}
	// A synchronizing literal still gets its "+".
	rc.send("q2 SEARCH SUBJECT {4}\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("SEARCH SUBJECT {4}: %q, want +", l)
	}
	rc.send("lit+\r\n")
	if l := rc.line(); l != "* SEARCH 1\r\n" {
		t.Errorf("SEARCH SUBJECT {4}: %q, want * SEARCH 1", l)
	}
	rc.until("q2 ")
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

// testListDelimiter: LIST "" "" is how clients learn the hierarchy
// delimiter (RFC 3501 6.3.8, RFC 9051 6.3.9).
func testListDelimiter(t *testing.T, rc *rawClient) {
	for _, cmd := range []string{`LIST "" ""`, `LIST "INBOX" ""`} {
		lines, done := rc.collect("a", cmd)
		if !strings.HasPrefix(done, "a OK") {
			t.Fatalf("%s: %q", cmd, done)
		}
		if len(lines) != 1 || lines[0] != `* LIST (\Noselect) "/" ""` {
			t.Errorf(`%s: %q, want one "* LIST (\Noselect) "/" """`, cmd, lines)
		}
	}
	// Other patterns still list mailboxes, not the delimiter line.
	lines, _ := rc.collect("b", `LIST "" "*"`)
	if len(lines) == 0 || !strings.Contains(strings.Join(lines, "\n"), `"INBOX"`) && !strings.Contains(strings.Join(lines, "\n"), ` INBOX`) {
		t.Errorf(`LIST "" "*": %q, want INBOX`, lines)
	}
	for _, l := range lines {
		if strings.HasSuffix(l, ` ""`) {
			t.Errorf(`LIST "" "*" lists the root: %q`, l)
		}
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

// testMoveWithin: MOVE to the selected mailbox itself (RFC 6851 allows it):
// new UIDs, the old ones expunged, flags kept.
func testMoveWithin(t *testing.T, rc *rawClient) {
	if l := rc.cmd("c", "CREATE Renum"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	rc.appendMsg("Renum", `\Flagged`, "one")
	rc.appendMsg("Renum", "", "two")
	if l := rc.cmd("s", "SELECT Renum"); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("SELECT: %q", l)
	}
	lines, done := rc.collect("m", "UID MOVE 1 Renum")
	t.Logf("UID MOVE 1 Renum: %q %q", lines, done)
	if !strings.HasPrefix(done, "m OK") {
		t.Fatalf("UID MOVE into the same mailbox: %q, want OK", done)
	}
	var copyUID, expunge, exists bool
	for _, l := range lines {
		copyUID = copyUID || strings.HasPrefix(l, "* OK [COPYUID ") && strings.HasSuffix(strings.Fields(l)[4], "1") && strings.Fields(l)[5] == "3]"
		expunge = expunge || l == "* 1 EXPUNGE"
		exists = exists || l == "* 3 EXISTS" && !expunge // the copy, before the original goes
	}
	if !copyUID || !expunge || !exists {
		t.Errorf("UID MOVE 1 Renum: %q, want COPYUID ... 1 3, * 3 EXISTS, * 1 EXPUNGE", lines)
	}
	lines, _ = rc.collect("f", "UID FETCH 1:* (UID FLAGS)")
	got := strings.Join(lines, "\n")
	if !strings.Contains(got, "UID 2 ") || !strings.Contains(got, "UID 3 ") || strings.Contains(got, "UID 1 ") ||
		!strings.Contains(got, `\Flagged`) || len(lines) != 2 {
		t.Errorf("after the move: %q, want UIDs 2 and 3, 3 \\Flagged", lines)
	}
	// Plain MOVE by sequence number, of everything.
	if _, done := rc.collect("m2", "MOVE 1:* Renum"); !strings.HasPrefix(done, "m2 OK") {
		t.Fatalf("MOVE 1:* Renum: %q", done)
	}
	lines, _ = rc.collect("f2", "UID FETCH 1:* (UID)")
	if got := strings.Join(lines, "\n"); len(lines) != 2 || !strings.Contains(got, "UID 4") || !strings.Contains(got, "UID 5") {
		t.Errorf("after MOVE 1:*: %q, want UIDs 4 and 5", lines)
	}
}

// testRecent: \Recent (RFC 3501 2.3.2): the first session to see a message
// (SELECT, or the one told of a new message first) has it \Recent, others
// do not; EXAMINE and STATUS only look; SEARCH RECENT/NEW/OLD follow.
func testRecent(t *testing.T, e *guardEnv, a, b, c *rawClient) {
	// APPENDed through this node, \Seen or not: no session was told of
	// them, so both are recent (RFC 3501 2.3.2).
	if l := c.cmd("c", "CREATE Rec"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	c.appendMsg("Rec", `\Seen`, "read")
	c.appendMsg("Rec", "", "unread")
	lines, _ := c.collect("st", "STATUS Rec (RECENT MESSAGES)")
	if l := find(lines, "* STATUS"); !strings.Contains(l, "RECENT 2") {
		t.Errorf("STATUS before any SELECT: %q, want RECENT 2", lines)
	}
	lines, _ = a.collect("s", "SELECT Rec")
	if find(lines, "* 2 RECENT") == "" {
		t.Errorf("first SELECT: %q, want * 2 RECENT", lines)
	}
	lines, _ = a.collect("f", "FETCH 1:* (FLAGS)")
	if len(lines) != 2 || !strings.Contains(lines[0], `\Recent`) || !strings.Contains(lines[1], `\Recent`) {
		t.Errorf("FETCH FLAGS: %q, want \\Recent on both", lines)
	}
	for _, q := range []struct{ key, want string }{{"RECENT", "* SEARCH 1 2"}, {"NEW", "* SEARCH 2"}, {"OLD", "* SEARCH"}} {
		if lines, _ = a.collect("q", "SEARCH "+q.key); find(lines, "* SEARCH") != q.want {
			t.Errorf("SEARCH %s: %q, want %q", q.key, lines, q.want)
		}
	}
	// A second session: the first claimed them.
	if lines, _ = b.collect("s", "SELECT Rec"); find(lines, "* 0 RECENT") == "" {
		t.Errorf("second SELECT: %q, want * 0 RECENT", lines)
	}
	if lines, _ = c.collect("st", "STATUS Rec (RECENT)"); !strings.Contains(find(lines, "* STATUS"), "RECENT 0") {
		t.Errorf("STATUS after SELECT: %q, want RECENT 0", lines)
	}
	// New mail: recent for the session told of it first.
	c.appendMsg("Rec", "", "new")
	if lines, _ = c.collect("st", "STATUS Rec (RECENT)"); !strings.Contains(find(lines, "* STATUS"), "RECENT 1") {
		t.Errorf("STATUS after new mail: %q, want RECENT 1", lines)
	}
	if lines, _ = c.collect("e", "EXAMINE Rec"); find(lines, "* 1 RECENT") == "" {
		t.Errorf("EXAMINE after new mail: %q, want * 1 RECENT", lines)
	}
	lines, _ = a.collect("n", "NOOP")
	if find(lines, "* 3 EXISTS") == "" || find(lines, "* 3 RECENT") == "" {
		t.Errorf("NOOP of the first session: %q, want * 3 EXISTS, * 3 RECENT", lines)
	}
	if lines, _ = a.collect("f", "FETCH 3 (FLAGS)"); !strings.Contains(find(lines, "* 3 FETCH"), `\Recent`) {
		t.Errorf("FETCH 3 FLAGS in the first session: %q, want \\Recent", lines)
	}
	lines, _ = b.collect("n", "NOOP")
	if find(lines, "* 3 EXISTS") == "" || find(lines, "RECENT") != "" && find(lines, "* 0 RECENT") == "" {
		t.Errorf("NOOP of the second session: %q, want * 3 EXISTS and nothing recent", lines)
	}
	if lines, _ = b.collect("f", "FETCH 1:* (FLAGS)"); strings.Contains(strings.Join(lines, " "), `\Recent`) {
		t.Errorf("FETCH FLAGS in the second session: %q, want no \\Recent", lines)
	}
	// \Recent cannot be stored.
	if _, done := b.collect("x", `STORE 1 +FLAGS (\Recent)`); !strings.HasPrefix(done, "x OK") {
		t.Errorf("STORE +FLAGS (\\Recent): %q", done)
	}
	if lines, _ = b.collect("f", "FETCH 1 (FLAGS)"); strings.Contains(strings.Join(lines, " "), `\Recent`) {
		t.Errorf("after STORE +FLAGS (\\Recent): %q", lines)
	}
}

// testBinary: BINARY (RFC 3516): base64 with blanks inside its lines
// decodes, a partial reply names its origin ("BINARY[1]<6>"), and a part
// that cannot be decoded answers NO without a FETCH line.
func testBinary(t *testing.T, rc *rawClient) {
	msg := "From: a@guard.test\r\nSubject: bin\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		"aGVs bG8g\td29y\r\nbGQ=\r\n" + // "hello world" with a space and a tab inside
		"--b--\r\n"
	if l := rc.cmd("c", "CREATE Bin"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	rc.send(fmt.Sprintf("ap APPEND Bin {%d+}\r\n%s\r\n", len(msg), msg))
	if l := rc.until("ap "); !strings.HasPrefix(l, "ap OK") {
		t.Fatalf("APPEND: %q", l)
	}
	rc.cmd("s", "SELECT Bin")
	for _, c := range []struct{ cmd, want string }{
		{"FETCH 1 (BINARY.PEEK[1])", "* 1 FETCH (BINARY[1] ~{11}\r\nhello world)"},
		{"FETCH 1 (BINARY.PEEK[1]<6.5>)", "* 1 FETCH (BINARY[1]<6> ~{5}\r\nworld)"},
		{"FETCH 1 (BINARY.SIZE[1])", "* 1 FETCH (BINARY.SIZE[1] 11)"},
	} {
		rc.send("f " + c.cmd + "\r\n")
		var got strings.Builder
		for {
			l := rc.line()
			if strings.HasPrefix(l, "f ") {
				if !strings.HasPrefix(l, "f OK") {
					t.Errorf("%s: %q", c.cmd, l)
				}
				break
			}
			got.WriteString(l)
		}
		if g := strings.TrimRight(got.String(), "\r\n"); g != c.want {
			t.Errorf("%s: %q, want %q", c.cmd, g, c.want)
		}
	}
	// A part that cannot be decoded: NO, and no empty "* 1 FETCH ()".
	bad := strings.Replace(msg, "aGVs bG8g", "aG@@", 1)
	rc.send(fmt.Sprintf("ap APPEND Bin {%d+}\r\n%s\r\n", len(bad), bad))
	rc.until("ap ")
	lines, done := rc.collect("f", "FETCH 2 (BINARY.PEEK[1])")
	if !strings.HasPrefix(done, "f NO [PARSE]") || len(lines) != 0 {
		t.Errorf("FETCH BINARY of bad base64: %q %q, want NO [PARSE] and no FETCH line", lines, done)
	}
}

// testListSubscribed: a mailbox not subscribed itself but with a subscribed
// descendant is listed by LIST (SUBSCRIBED RECURSIVEMATCH) with CHILDINFO
// ("SUBSCRIBED") (RFC 5258 3.5), not by LIST (SUBSCRIBED), and by LSUB
// \Noselect when a "%" stops at it (RFC 3501 6.3.9).
func testListSubscribed(t *testing.T, rc *rawClient) {
	for _, c := range []string{"CREATE Lp", "CREATE Lp/c1", "CREATE Lp/c1/deep", "CREATE Lq", "SUBSCRIBE Lp/c1/deep", "SUBSCRIBE Lq"} {
		if l := rc.cmd("c", c); !strings.HasPrefix(l, "c OK") {
			t.Fatalf("%s: %q", c, l)
		}
	}
	for _, q := range []struct {
		cmd  string
		want []string
	}{
		{`LIST (SUBSCRIBED) "" "L%"`, []string{`* LIST (\HasNoChildren \Subscribed) "/" Lq`}},
		{`LIST (SUBSCRIBED RECURSIVEMATCH) "" "L%"`, []string{
			`* LIST (\HasChildren) "/" Lp ("CHILDINFO" ("SUBSCRIBED"))`,
			`* LIST (\HasNoChildren \Subscribed) "/" Lq`}},
		// LSUB: a parent where "%" stops is \Noselect; "*" reaches the
		// subscribed mailbox itself.
		{`LSUB "" "Lp/%"`, []string{`* LSUB (\Noselect) "/" Lp/c1`}},
		{`LSUB "" "L%"`, []string{`* LSUB (\Noselect) "/" Lp`, `* LSUB () "/" Lq`}},
		{`LSUB "" "L*"`, []string{`* LSUB () "/" Lp/c1/deep`, `* LSUB () "/" Lq`}},
	} {
		lines, done := rc.collect("l", q.cmd)
		if !strings.HasPrefix(done, "l OK") {
			t.Errorf("%s: %q", q.cmd, done)
			continue
		}
		// Attributes other than those named are not checked: compare
		// with the attribute lists normalised.
		if strings.Join(norm(lines), "\n") != strings.Join(norm(q.want), "\n") {
			t.Errorf("%s:\n got %q\nwant %q", q.cmd, lines, q.want)
		}
	}
}

// norm drops quotes around mailbox names, so "Lq" and Lq compare equal.
func norm(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		if j := strings.LastIndex(l, `"/" `); j >= 0 {
			l = l[:j+4] + strings.ReplaceAll(l[j+4:], `"`, ``)
		}
		out[i] = l
	}
	return out
}
