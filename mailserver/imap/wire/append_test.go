package wire

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// appendSession records what reaches its Appenders (a unit-test
// stand-in for the mailbox backend).
type appendSession struct {
	stubSession
	failAt   int  // the Add of this message (1-based) fails
	failRead bool // ... after reading its content (else before)

	mu        sync.Mutex
	got       []string
	committed int
	aborted   int
}

func (s *appendSession) BeginAppend(mb string) (Appender, error) {
	if mb == "nobox" {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
	}
	return &recAppender{s: s, mailbox: mb}, nil
}

type recAppender struct {
	s       *appendSession
	mailbox string
	n       int
	msgs    []string
}

func (a *recAppender) Add(m *AppendMessage) error {
	a.n++
	refuse := &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota, Text: "refused"}
	if a.n == a.s.failAt && !a.s.failRead {
		return refuse
	}
	var desc string
	switch {
	case m.Literal != nil:
		b, err := io.ReadAll(m.Literal)
		if err != nil {
			return err
		}
		desc = fmt.Sprintf("%v|%s|%s", m.Options.Flags, m.Options.Time.Format(time.RFC3339), b)
	case m.Catenate != nil:
		var parts []string
		for {
			p, err := m.Catenate.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if p.Text != nil {
				b, err := io.ReadAll(p.Text)
				if err != nil {
					return err
				}
				parts = append(parts, "TEXT:"+string(b))
			} else {
				u := p.URL
				parts = append(parts, fmt.Sprintf("URL:%s:%d:%d:%v:%d", u.Mailbox, u.UIDValidity, u.UID, u.Section.Part, len(u.Section.Specifier)))
			}
		}
		desc = fmt.Sprintf("%v|cat|%s", m.Options.Flags, strings.Join(parts, ","))
	}
	if a.n == a.s.failAt {
		return refuse
	}
	a.msgs = append(a.msgs, desc)
	return nil
}

func (a *recAppender) Commit() (*AppendResult, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	a.s.committed++
	a.s.got = append(a.s.got, a.msgs...)
	return &AppendResult{UIDValidity: 7, UIDs: imap.UIDSet{{Start: 4, Stop: imap.UID(3 + len(a.msgs))}}}, nil
}

func (a *recAppender) Abort() {
	a.s.mu.Lock()
	a.s.aborted++
	a.s.mu.Unlock()
}

// pipeClient is a client on one end of a pipe to a Conn.
type pipeClient struct {
	t     *testing.T
	w     net.Conn
	lines chan string
}

func startPipe(t *testing.T, sess Session) *pipeClient {
	t.Helper()
	s := New(Options{NewSession: func(*Conn) (Session, error) { return sess, nil }, InsecureAuth: true,
		Logger: slog.New(&panicLog{}), MaxAppend: 1 << 16})
	srvSide, cliSide := net.Pipe()
	c := &Conn{srv: s, raw: srvSide, nc: srvSide, state: imap.ConnStateNotAuthenticated}
	c.lr.src = srvSide
	done := make(chan struct{})
	go func() { c.serve(); close(done) }()
	pc := &pipeClient{t: t, w: cliSide, lines: make(chan string, 100)}
	go func() {
		r := bufio.NewReader(cliSide)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				close(pc.lines)
				return
			}
			pc.lines <- strings.TrimRight(l, "\r\n")
		}
	}()
	t.Cleanup(func() {
		cliSide.Close()
		<-done
	})
	pc.expect("* OK ")
	pc.send("a LOGIN u p\r\n")
	pc.expect("a OK ")
	return pc
}

func (pc *pipeClient) send(s string) {
	pc.t.Helper()
	pc.w.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(pc.w, s); err != nil {
		pc.t.Fatalf("sending %q: %v", s, err)
	}
}

// expect reads lines until one starts with prefix, returning it; lines
// before it are returned too.
func (pc *pipeClient) expect(prefix string) (string, []string) {
	pc.t.Helper()
	var before []string
	for {
		select {
		case l, ok := <-pc.lines:
			if !ok {
				pc.t.Fatalf("connection closed waiting for %q (after %q)", prefix, before)
			}
			if strings.HasPrefix(l, prefix) {
				return l, before
			}
			before = append(before, l)
		case <-time.After(5 * time.Second):
			pc.t.Fatalf("no %q (got %q)", prefix, before)
		}
	}
}

// TestMultiAppend: several messages in one APPEND (RFC 3502), in every
// literal form, reach the Appender in order and are committed at once;
// APPENDUID names them all.
func TestMultiAppend(t *testing.T) {
	sess := &appendSession{}
	pc := startPipe(t, sess)
	pc.send("c CAPABILITY\r\n")
	caps, _ := pc.expect("* CAPABILITY")
	if !strings.Contains(caps, " MULTIAPPEND") || !strings.Contains(caps, " CATENATE") {
		t.Errorf("capabilities %q lack MULTIAPPEND or CATENATE", caps)
	}
	pc.expect("c OK")
	pc.send("a APPEND INBOX (\\Seen) {3}\r\n")
	pc.expect("+ ")
	pc.send("one (\\Draft) \"01-Feb-2026 10:00:00 +0000\" {3+}\r\ntwo ~{5+}\r\nth\x00ee {0+}\r\n\r\n")
	got, _ := pc.expect("a ")
	// {0} reaches the Appender too (the backend refuses it).
	if got != "a OK [APPENDUID 7 4:7] APPEND completed" {
		t.Fatalf("answer %q", got)
	}
	want := []string{
		"[\\Seen]|0001-01-01T00:00:00Z|one",
		"[\\Draft]|2026-02-01T10:00:00Z|two",
		"[]|0001-01-01T00:00:00Z|th\x00ee",
		"[]|0001-01-01T00:00:00Z|",
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if fmt.Sprint(sess.got) != fmt.Sprint(want) || sess.committed != 1 || sess.aborted != 0 {
		t.Errorf("got %q (committed %d, aborted %d), want %q", sess.got, sess.committed, sess.aborted, want)
	}
}

// TestMultiAppendFailure: when one message is refused, the command
// answers the refusal, nothing is committed (Abort), the LITERAL+
// messages the client sends anyway are read and dropped, and the
// connection goes on.
func TestMultiAppendFailure(t *testing.T) {
	for _, c := range []struct {
		name     string
		failRead bool
		script   []string // sent in order; "<" waits for "+"
	}{
		// Refused before its literal is asked for: the client, waiting for
		// "+", gets the NO instead and sends nothing more.
		{"before read, sync", false, []string{"a APPEND INBOX {3+}\r\none {3}\r\n"}},
		// Refused with LITERAL+ messages after it on the way.
		{"before read, literal+", false, []string{"a APPEND INBOX {3+}\r\none {3+}\r\ntwo (\\Seen) {5+}\r\nthree CATENATE (TEXT {2+}\r\nxy URL \"/INBOX/;UID=1\") {1+}\r\nz\r\n"}},
		{"after read", true, []string{"a APPEND INBOX {3}\r\n", "<", "one {3}\r\n", "<", "two {5+}\r\nthree\r\n"}},
		{"after read, more sync", true, []string{"a APPEND INBOX {3}\r\n", "<", "one {3}\r\n", "<", "two {5}\r\n"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sess := &appendSession{failAt: 2, failRead: c.failRead}
			pc := startPipe(t, sess)
			for _, s := range c.script {
				if s == "<" {
					pc.expect("+ ")
					continue
				}
				pc.send(s)
			}
			got, before := pc.expect("a ")
			if got != "a NO [OVERQUOTA] refused" {
				t.Fatalf("answer %q", got)
			}
			for _, l := range before {
				if strings.HasPrefix(l, "+") && !strings.Contains(strings.Join(c.script, ""), "<") {
					t.Errorf("asked for a literal after the refusal: %q", before)
				}
			}
			pc.send("b NOOP\r\n")
			if l, before := pc.expect("b "); !strings.HasPrefix(l, "b OK") || len(before) > 0 && strings.Contains(strings.Join(before, "\n"), "BAD") {
				t.Fatalf("after the failed APPEND: %q then %q", before, l)
			}
			sess.mu.Lock()
			defer sess.mu.Unlock()
			if sess.committed != 0 || sess.aborted != 1 {
				t.Errorf("committed %d, aborted %d; want 0, 1", sess.committed, sess.aborted)
			}
		})
	}
}

// TestAppendErrors: answers of a failed APPEND before any message.
func TestAppendErrors(t *testing.T) {
	sess := &appendSession{}
	pc := startPipe(t, sess)
	for _, c := range []struct{ send, want string }{
		{"a APPEND nobox {3+}\r\nabc\r\n", "a NO [TRYCREATE] No such mailbox"},
		{"a APPEND nobox {3}\r\n", "a NO [TRYCREATE] No such mailbox"},
		{"a APPEND INBOX {70000}\r\n", "a NO [TOOBIG] "},
		{"a APPEND INBOX CATENATE ()\r\n", "a BAD "},
		{"a APPEND INBOX CATENATE (FOO x)\r\n", "a BAD "},
		{"a APPEND INBOX CATENATE (URL \"/INBOX\")\r\n", "a NO [BADURL /INBOX] "},
		{"a APPEND INBOX CATENATE (URL \"/INBOX/;UID=1;URLAUTH=x\" TEXT {2+}\r\nab)\r\n", "a NO [BADURL "},
		{"a APPEND INBOX {3+}\r\nabc {3+}\r\nabc junk\r\n", "a BAD "},
		{"a APPEND INBOX\r\n", "a BAD "},
	} {
		pc.send(c.send)
		got, _ := pc.expect("a ")
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("%q: answer %q, want %q", c.send, got, c.want)
		}
		pc.send("b NOOP\r\n")
		if l, _ := pc.expect("b "); !strings.HasPrefix(l, "b OK") {
			t.Fatalf("after %q: %q", c.send, l)
		}
	}
	if sess.committed != 0 {
		t.Errorf("%d commits", sess.committed)
	}
}

// TestCatenate: CATENATE parts (RFC 4469) reach the Appender in order,
// TEXT literals of every form and URLs parsed.
func TestCatenate(t *testing.T) {
	sess := &appendSession{}
	pc := startPipe(t, sess)
	pc.send("a APPEND Drafts (\\Draft) CATENATE (URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER\" TEXT {4}\r\n")
	pc.expect("+ ")
	pc.send("\r\nhi URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME\" TEXT {2+}\r\nyo) CATENATE (TEXT {1+}\r\nz)\r\n")
	got, _ := pc.expect("a ")
	if got != "a OK [APPENDUID 7 4:5] APPEND completed" {
		t.Fatalf("answer %q", got)
	}
	want := []string{
		"[\\Draft]|cat|URL:Drafts:385759045:20:[]:6,TEXT:\r\nhi,URL:Drafts:385759045:20:[1]:4,TEXT:yo",
		"[]|cat|TEXT:z",
	}
	if fmt.Sprint(sess.got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", sess.got, want)
	}
}

func TestParseMessageURL(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want string // Mailbox UIDValidity UID Part Specifier Fields Partial User, or "error"
	}{
		{"/INBOX;UIDVALIDITY=385759045/;UID=20", "INBOX 385759045 20 [] '' [] <nil> ''"},
		{"/inbox/;UID=20", "INBOX 0 20 [] '' [] <nil> ''"},
		{"/Drafts/Sub%20box;UIDVALIDITY=1/;UID=3/;SECTION=1.2.MIME", "Drafts/Sub box 1 3 [1 2] 'MIME' [] <nil> ''"},
		{"/Drafts/;uid=3/;section=TEXT/;partial=10.20", "Drafts 0 3 [] 'TEXT' [] &{10 20} ''"},
		{"/Drafts/;UID=3/;SECTION=HEADER.FIELDS%20(FROM%20TO)", "Drafts 0 3 [] 'HEADER' [FROM TO] <nil> ''"},
		{"/Entw%C3%BCrfe/;UID=3/;SECTION=2", "Entwürfe 0 3 [2] '' [] <nil> ''"},
		{"imap://joe@example.com/Drafts;UIDVALIDITY=1/;UID=3", "Drafts 1 3 [] '' [] <nil> 'joe'"},
		{"imap://joe%40example.com;AUTH=*@mail.example.com:143/INBOX/;UID=3", "INBOX 0 3 [] '' [] <nil> 'joe@example.com'"},
		{"/INBOX", "error"},
		{"/INBOX/;UID=0", "error"},
		{"/INBOX/;UID=x", "error"},
		{"/INBOX;UIDVALIDITY=0/;UID=1", "error"},
		{"INBOX/;UID=1", "error"},
		{"//host/INBOX/;UID=1", "error"},
		{"/INBOX/;UID=1/;SECTION=", "error"},
		{"/INBOX/;UID=1/;SECTION=BOGUS", "error"},
		{"/INBOX/;UID=1/;SECTION=1.2%5D", "error"},
		{"/INBOX/;UID=1/;SECTION=%7B3%7D", "error"},
		{"/INBOX/;UID=1/;URLAUTH=anonymous:internal:x", "error"},
		{"/INBOX/;UID=1/;PARTIAL=1.0", "error"},
		{"/INBOX/;UID=1/;PARTIAL=1/;SECTION=TEXT", "error"},
		{"/IN;BOX/;UID=1", "error"},
		{"/INBOX/;UID=1/;FOO=1", "error"},
	} {
		u, err := ParseMessageURL(c.raw)
		got := "error"
		if err == nil {
			got = fmt.Sprintf("%s %d %d %v '%s' %v %v '%s'", u.Mailbox, u.UIDValidity, u.UID, u.Section.Part, u.Section.Specifier, u.Section.HeaderFields, u.Section.Partial, u.User)
		}
		if got != c.want {
			t.Errorf("%q: %s (%v), want %s", c.raw, got, err, c.want)
		}
	}
}
