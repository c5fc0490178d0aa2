package imap_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap"
)

// TestMultiAppendCatenate checks MULTIAPPEND (RFC 3502) and CATENATE (RFC
// 4469) over real connections to a node of an in-process cluster: all or
// nothing, APPENDUID with a UID set, streaming within the APPEND budget,
// and URLs limited to the user's own messages.
func TestMultiAppendCatenate(t *testing.T) {
	e := startGuardEnv(t)
	plain, _ := e.listen(t, imap.Config{})
	login := func(t *testing.T, user string) *rawClient {
		rc := dialFrom(t, "127.0.0.1", plain, false)
		rc.line()
		if l := rc.cmd("l", "LOGIN "+user+" pw"); !strings.HasPrefix(l, "l OK") || !strings.Contains(l, " MULTIAPPEND") || !strings.Contains(l, " CATENATE") {
			t.Fatalf("LOGIN: %q, want OK with MULTIAPPEND and CATENATE", l)
		}
		return rc
	}
	t.Run("multiappend", func(t *testing.T) { testMultiAppend(t, login(t, "g@guard.test")) })
	t.Run("all-or-nothing", func(t *testing.T) { testMultiAppendAllOrNothing(t, e, login) })
	t.Run("streamed", func(t *testing.T) { testMultiAppendStreamed(t, e) })
	t.Run("catenate", func(t *testing.T) { testCatenate(t, e, login) })
	t.Run("catenate-stalled", func(t *testing.T) { testCatenateStalled(t, e) })
}

// testCatenateStalled: CATENATE TEXT literals announcing much and then
// stalling hold about what they sent, as APPEND literals do.
func testCatenateStalled(t *testing.T, e *guardEnv) {
	plain, _ := e.listen(t, imap.Config{MaxMessageBytes: 64 << 20})
	const conns, announced = 4, 60 << 20
	var cs []*rawClient
	for range conns {
		rc := dialFrom(t, "127.0.0.1", plain, false)
		rc.line()
		rc.cmd("l", "LOGIN g@guard.test pw")
		cs = append(cs, rc)
	}
	before := heapAlloc()
	for _, rc := range cs {
		rc.send(fmt.Sprintf("a APPEND INBOX CATENATE (TEXT {%d}\r\n", announced))
		if l := rc.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("APPEND CATENATE: %q, want +", l)
		}
		rc.send("Subject: stalled\r\n")
	}
	time.Sleep(500 * time.Millisecond)
	grew := int64(heapAlloc()) - int64(before)
	t.Logf("%d CATENATEs announcing %d MiB each, stalled after a line: heap %+.1f MiB", conns, announced>>20, float64(grew)/(1<<20))
	if grew > 16<<20 {
		t.Fatalf("stalled CATENATEs grew the heap by %d MiB; they announced %d MiB in all but sent a line each", grew>>20, conns*announced>>20)
	}
}

var appendUIDRe = regexp.MustCompile(`^(\w+) OK \[APPENDUID (\d+) ([0-9:,]+)\]`)

func lit(s string) string { return fmt.Sprintf("{%d+}\r\n%s", len(s), s) }

func msgN(i int) string {
	return fmt.Sprintf("From: a@guard.test\r\nSubject: m%d\r\nDate: Fri, 02 Jan 2026 10:00:00 +0000\r\n\r\nbody %d\r\n", i, i)
}

func testMultiAppend(t *testing.T, rc *rawClient) {
	if l := rc.cmd("c", "CREATE Ma"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	// A synchronizing literal, LITERAL+ ones, flags and dates per message.
	rc.send(fmt.Sprintf("a APPEND Ma (\\Seen) {%d}\r\n", len(msgN(1))))
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("APPEND: %q, want +", l)
	}
	rc.send(msgN(1) + ` (\Flagged $Label1) "03-Jan-2026 11:00:00 +0100" ` + lit(msgN(2)) + " " + lit(msgN(3)) + "\r\n")
	l := rc.until("a ")
	m := appendUIDRe.FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("MULTIAPPEND: %q, want OK [APPENDUID v uids]", l)
	}
	lines, _ := rc.collect("s", "SELECT Ma")
	if find(lines, "* 3 EXISTS") == "" || find(lines, "* OK [UIDVALIDITY "+m[2]+"]") == "" {
		t.Fatalf("SELECT after MULTIAPPEND %q: %q", l, lines)
	}
	lines, _ = rc.collect("f", "UID FETCH "+m[3]+" (FLAGS INTERNALDATE)")
	if len(lines) != 3 || !strings.Contains(lines[0], `\Seen`) || !strings.Contains(lines[1], `\Flagged`) || !strings.Contains(lines[1], `$Label1`) ||
		!strings.Contains(lines[1], `"03-Jan-2026 11:00:00 +0100"`) || strings.Contains(lines[2], `\Seen`) {
		t.Errorf("UID FETCH %s: %q", m[3], lines)
	}
	for i := 1; i <= 3; i++ {
		got := rc.raw("b", fmt.Sprintf("FETCH %d BODY.PEEK[]", i))
		if !strings.Contains(got, fmt.Sprintf("{%d}\r\n%s)", len(msgN(i)), msgN(i))) {
			t.Errorf("message %d: %q", i, got)
		}
	}
	if l := rc.cmd("u", "UNSELECT"); !strings.HasPrefix(l, "u OK") {
		t.Fatal(l)
	}
	// Into a mailbox that does not exist: TRYCREATE, and the LITERAL+
	// bytes the client sent anyway are read, not taken for commands.
	if l := rc.cmd("a", "APPEND NoBox "+lit(msgN(1))+" "+lit("x NOOP\r\n")); !strings.HasPrefix(l, "a NO [TRYCREATE]") {
		t.Errorf("APPEND into no mailbox: %q", l)
	}
	// An empty message among others fails them all.
	if l := rc.cmd("a", "APPEND Ma "+lit(msgN(4))+" {0+}\r\n"); !strings.HasPrefix(l, "a NO [CANNOT]") {
		t.Errorf("MULTIAPPEND with an empty message: %q", l)
	}
	if lines, _ := rc.collect("s", "STATUS Ma (MESSAGES)"); find(lines, "* STATUS Ma (MESSAGES 3)") == "" {
		t.Errorf("STATUS after the failed APPENDs: %q", lines)
	}
}

// testMultiAppendAllOrNothing: a MULTIAPPEND whose last message does not
// fit the quota stores none of them, whether that shows while the
// messages arrive or only when they are committed (another session took
// the room meanwhile).
func testMultiAppendAllOrNothing(t *testing.T, e *guardEnv, login func(*testing.T, string) *rawClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.st.AddUser(ctx, "ma@guard.test", "pw", 8<<10); err != nil {
		t.Fatal(err)
	}
	a, b := login(t, "ma@guard.test"), login(t, "ma@guard.test")
	big := "Subject: big\r\n\r\n" + strings.Repeat("x", 3000) + "\r\n"
	// Seen while arriving: the third message is over the quota.
	if l := a.cmd("a", "APPEND INBOX "+lit(big)+" "+lit(big)+" "+lit(big)); !strings.HasPrefix(l, "a NO [OVERQUOTA]") {
		t.Fatalf("MULTIAPPEND over quota: %q", l)
	}
	if lines, _ := a.collect("s", "STATUS INBOX (MESSAGES)"); find(lines, "* STATUS INBOX (MESSAGES 0)") == "" {
		t.Fatalf("STATUS after a refused MULTIAPPEND: %q", lines)
	}
	// Seen at the commit: a waits for the "+" of its second message while
	// b fills the quota.
	a.send("a APPEND INBOX " + lit(big) + fmt.Sprintf(" {%d}\r\n", len(big)))
	if l := a.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("MULTIAPPEND: %q, want +", l)
	}
	if l := b.cmd("b", "APPEND INBOX "+lit(big)); !strings.HasPrefix(l, "b OK") {
		t.Fatalf("APPEND of b: %q", l)
	}
	a.send(big + "\r\n")
	if l := a.until("a "); !strings.HasPrefix(l, "a NO [OVERQUOTA]") {
		t.Fatalf("MULTIAPPEND past the quota at commit: %q", l)
	}
	if lines, _ := a.collect("s", "STATUS INBOX (MESSAGES)"); find(lines, "* STATUS INBOX (MESSAGES 1)") == "" {
		t.Errorf("STATUS: %q, want b's message alone", lines)
	}
}

// testMultiAppendStreamed: a MULTIAPPEND of more than the APPEND budget in
// all is stored one message at a time, within it.
func testMultiAppendStreamed(t *testing.T, e *guardEnv) {
	defer imap.SetAppendWait(500 * time.Millisecond)()
	const budget = 4 << 20
	plain, _ := e.listen(t, imap.Config{MaxMessageBytes: 3 << 20, MaxAppendBuffer: budget})
	rc := dialFrom(t, "127.0.0.1", plain, false)
	rc.line()
	rc.cmd("l", "LOGIN g@guard.test pw")
	if l := rc.cmd("c", "CREATE Streamed"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	var cmd strings.Builder
	cmd.WriteString("a APPEND Streamed")
	for i := range 4 {
		m := fmt.Sprintf("Subject: part %d\r\n\r\n", i) + strings.Repeat(fmt.Sprint(i), 5<<19) + "\r\n"
		cmd.WriteString(" " + lit(m))
	}
	rc.send(cmd.String() + "\r\n")
	if l := rc.until("a "); !strings.HasPrefix(l, "a OK [APPENDUID") {
		t.Fatalf("MULTIAPPEND of 4 × 2.5 MiB with a 4 MiB budget: %q", l)
	}
	if lines, _ := rc.collect("s", "STATUS Streamed (MESSAGES)"); find(lines, "* STATUS Streamed (MESSAGES 4)") == "" {
		t.Errorf("STATUS: %q", lines)
	}
}

// testCatenate: CATENATE puts a message together from TEXT literals and
// URLs of the user's own messages (whole, HEADER, TEXT, part numbers,
// PARTIAL); any other URL is NO [BADURL].
func testCatenate(t *testing.T, e *guardEnv, login func(*testing.T, string) *rawClient) {
	rc := login(t, "g@guard.test")
	if l := rc.cmd("c", "CREATE Cat"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	const (
		hdr  = "From: a@guard.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
		p1   = "Content-Type: text/plain\r\n\r\nfirst part\r\n"
		p2   = "Content-Type: text/plain\r\n\r\nsecond part\r\n"
		text = "--XX\r\n" + p1 + "--XX\r\n" + p2 + "--XX--\r\n"
		src  = hdr + text
	)
	l := rc.cmd("a", "APPEND Cat "+lit(src))
	m := appendUIDRe.FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("APPEND: %q", l)
	}
	v, uid := m[2], m[3]
	base := "/Cat;UIDVALIDITY=" + v + "/;UID=" + uid
	if l := rc.cmd("s", "EXAMINE Cat"); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("EXAMINE: %q", l)
	}
	cases := []struct{ parts, want string }{
		{`URL "` + base + `"`, src},
		{`URL "` + base + `/;SECTION=HEADER" TEXT ` + lit("new body\r\n"), hdr + "new body\r\n"},
		{`TEXT ` + lit("Subject: fwd\r\n\r\n") + ` URL "` + base + `/;SECTION=2"`, "Subject: fwd\r\n\r\nsecond part"},
		{`TEXT ` + lit("Subject: x\r\n\r\n") + ` URL "/Cat/;uid=` + uid + `/;section=1.MIME" URL "imap://g@example.com` + base + `/;SECTION=TEXT/;PARTIAL=0.4"`, "Subject: x\r\n\r\nContent-Type: text/plain\r\n\r\n--XX"},
	}
	for i, c := range cases {
		l := rc.cmd("a", "APPEND Cat CATENATE ("+c.parts+")")
		am := appendUIDRe.FindStringSubmatch(l)
		if am == nil {
			t.Errorf("CATENATE %d: %q", i, l)
			continue
		}
		got := rc.raw("f", "UID FETCH "+am[3]+" BODY.PEEK[]")
		if !strings.Contains(got, fmt.Sprintf("BODY[] {%d}\r\n%s)", len(c.want), c.want)) {
			t.Errorf("CATENATE %d: stored %q, want %q", i, got, c.want)
		}
	}
	// MULTIAPPEND of CATENATE and literal messages.
	l = rc.cmd("a", `APPEND Cat (\Draft) CATENATE (URL "`+base+`/;SECTION=HEADER" TEXT `+lit("one\r\n")+`) `+lit(msgN(7)))
	if am := appendUIDRe.FindStringSubmatch(l); am == nil || !strings.Contains(am[3], ":") {
		t.Errorf("MULTIAPPEND with CATENATE: %q, want two UIDs", l)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.st.AddUser(ctx, "other@guard.test", "pw", 0); err != nil {
		t.Fatal(err)
	}
	other := login(t, "other@guard.test")
	if l := other.cmd("c", "CREATE Cat"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("CREATE: %q", l)
	}
	lines, _ := rc.collect("s", "STATUS Cat (MESSAGES)")
	before := find(lines, "* STATUS Cat")
	for _, c := range []struct {
		client *rawClient
		url    string
	}{
		{rc, "/Cat;UIDVALIDITY=" + v + "1/;UID=" + uid},     // UIDVALIDITY changed
		{rc, "/Cat/;UID=999"},                               // no such message
		{rc, "/NoBox/;UID=1"},                               // no such mailbox
		{rc, base + "/;SECTION=7"},                          // no such part
		{rc, base + "/;SECTION=1.TEXT"},                     // part 1 is no message
		{rc, "imap://other@guard.test@host" + base},         // another user's
		{other, base},                                       // another user's (their Cat is empty)
		{rc, base + "/;URLAUTH=anonymous:internal:0123456"}, // URLAUTH not supported
	} {
		l := c.client.cmd("a", `APPEND Cat CATENATE (TEXT `+lit("Subject: x\r\n\r\n")+` URL "`+c.url+`" TEXT `+lit("more")+`)`)
		if !strings.HasPrefix(l, "a NO [BADURL ") {
			t.Errorf("CATENATE URL %s: %q, want NO [BADURL ...]", c.url, l)
		}
	}
	if lines, _ := rc.collect("s", "STATUS Cat (MESSAGES)"); find(lines, "* STATUS Cat") != before {
		t.Errorf("STATUS after refused CATENATEs: %q, want %q", lines, before)
	}
}
