package wire

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// stubSession answers every command with a little data and no error: a
// unit-test stand-in, so that the fuzzer exercises the parser, encoder and
// state machine alone, fast.
type stubSession struct{}

func (stubSession) Close() error { return nil }
func (stubSession) Login(u, p string) error {
	if u == "u" && p == "p" {
		return nil
	}
	return ErrAuthFailed
}
func (stubSession) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Delim: '/'}}}, nil
}
func (stubSession) Select(string, *imap.SelectOptions) (*imap.SelectData, error) {
	return &imap.SelectData{NumMessages: 3, UIDNext: 4, UIDValidity: 1, HighestModSeq: 9, Flags: []imap.Flag{imap.FlagSeen}}, nil
}
func (stubSession) Create(string, *imap.CreateOptions) error { return nil }
func (stubSession) Delete(string) error                      { return nil }
func (stubSession) Rename(string, string) error              { return nil }
func (stubSession) Subscribe(string) error                   { return nil }
func (stubSession) Unsubscribe(string) error                 { return nil }
func (stubSession) List(w *ListWriter, ref string, pats []string, o *imap.ListOptions) error {
	for _, p := range pats {
		if err := w.WriteList(&imap.ListData{Mailbox: p, Delim: '/', Attrs: []imap.MailboxAttr{imap.MailboxAttrHasNoChildren}}); err != nil {
			return err
		}
	}
	return nil
}
func (stubSession) Status(mb string, o *imap.StatusOptions) (*imap.StatusData, error) {
	n := uint32(3)
	return &imap.StatusData{Mailbox: mb, NumMessages: &n}, nil
}
func (stubSession) Append(mb string, r imap.LiteralReader, o *imap.AppendOptions) (*imap.AppendData, error) {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, err
	}
	return &imap.AppendData{UID: 4, UIDValidity: 1}, nil
}
func (stubSession) Poll(w *UpdateWriter, allowExpunge bool) error {
	return w.WriteNumMessages(3)
}
func (stubSession) Idle(w *UpdateWriter) error { return w.WriteNumMessages(3) }
func (stubSession) Unselect() error            { return nil }
func (stubSession) Expunge(w *ExpungeWriter, uids *imap.UIDSet) error {
	if w != nil {
		return w.WriteExpunge(1)
	}
	return nil
}
func (stubSession) Search(NumKind, *imap.SearchCriteria, *imap.SearchOptions) (*imap.SearchData, error) {
	return &imap.SearchData{All: imap.SeqSetNum(1, 2), Min: 1, Max: 2, Count: 2}, nil
}
func (stubSession) Fetch(w *FetchWriter, set imap.NumSet, o *imap.FetchOptions) error {
	rw := w.CreateMessage(1)
	rw.WriteUID(1)
	rw.WriteFlags([]imap.Flag{imap.FlagSeen})
	rw.WriteEnvelope(&imap.Envelope{Subject: "s\"\\", From: []imap.Address{{Name: "é", Mailbox: "a", Host: "b"}}})
	for _, bs := range o.BodySection {
		wc := rw.WriteBodySection(bs, 2)
		wc.Write([]byte("ab"))
		wc.Close()
	}
	return rw.Close()
}
func (stubSession) Store(w *FetchWriter, set imap.NumSet, f *imap.StoreFlags, o *imap.StoreOptions) error {
	rw := w.CreateMessage(1)
	rw.WriteFlags(f.Flags)
	return rw.Close()
}
func (stubSession) Copy(imap.NumSet, string) (*imap.CopyData, error) {
	return &imap.CopyData{UIDValidity: 1, SourceUIDs: imap.UIDSetNum(1), DestUIDs: imap.UIDSetNum(5)}, nil
}
func (stubSession) Move(w *MoveWriter, set imap.NumSet, dest string) error {
	return w.WriteCopyData(&imap.CopyData{UIDValidity: 1, SourceUIDs: imap.UIDSetNum(1), DestUIDs: imap.UIDSetNum(5)})
}

type panicLog struct {
	mu     sync.Mutex
	panics []string
}

func (p *panicLog) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") || strings.HasPrefix(r.Message, "handling ") {
		p.mu.Lock()
		p.panics = append(p.panics, r.Message)
		p.mu.Unlock()
	}
	return nil
}
func (p *panicLog) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panicLog) WithGroup(string) slog.Handler      { return p }

// FuzzConn plays any bytes at one connection of the protocol layer over
// a stub session: nothing panics, nothing is a server error, every
// response line is an untagged, continuation or tagged one, and the
// connection ends soon after the client has said everything.
func FuzzConn(f *testing.F) {
	for _, s := range []string{
		"a LOGIN u p\r\nb SELECT INBOX\r\nc FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)]<0.10> BINARY[1] BODYSTRUCTURE)\r\nd LOGOUT\r\n",
		"a LOGIN {1}\r\nu {1+}\r\np\r\nb APPEND INBOX (\\Seen) \"01-Jan-2026 10:00:00 +0000\" {3+}\r\nabc\r\nc IDLE\r\nDONE\r\n",
		"a AUTHENTICATE PLAIN AHUAcA==\r\nb LIST (SUBSCRIBED) \"\" (\"*\" \"%\") RETURN (STATUS (MESSAGES))\r\nc SEARCH RETURN (MIN COUNT) OR FROM x NOT (SEEN 1:3) UID $\r\n",
		"a LOGIN u p\r\nb ENABLE QRESYNC CONDSTORE\r\nc SELECT x (QRESYNC (1 2 1:5 (1:2 3:4)))\r\nd UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\ne STORE 1 (UNCHANGEDSINCE 3) +FLAGS.SILENT (\\Deleted)\r\n",
		"x LOGIN \"unclosed\r\n(((\r\n",
		"a LOGIN u p\r\nb STATUS \"&Jjo\" (MESSAGES)\r\nc NAMESPACE\r\nd ID (\"name\" NIL)\r\ne UID EXPUNGE 1:*\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		playConn(t, in, func() Session { return stubSession{} })
	})
}

// FuzzAppend is FuzzConn for APPEND through a SessionAppend: MULTIAPPEND
// and CATENATE, refusals in the middle included.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{
		"a LOGIN u p\r\nb APPEND INBOX (\\Seen) {3+}\r\nabc \"01-Jan-2026 10:00:00 +0000\" ~{2+}\r\nxy\r\nc NOOP\r\n",
		"a LOGIN u p\r\nb APPEND INBOX CATENATE (URL \"/INBOX;UIDVALIDITY=1/;UID=2/;SECTION=1.MIME\" TEXT {2+}\r\nxy) {1+}\r\nz\r\n",
		"a LOGIN u p\r\nb APPEND nobox {3+}\r\nabc CATENATE (TEXT {1+}\r\nq URL \"/x\") {2}\r\nc NOOP\r\n",
		"a LOGIN u p\r\nb APPEND INBOX {3+}\r\nabc {3+}\r\nabc {3+}\r\nabc\r\nc APPEND INBOX CATENATE ()\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		playConn(t, in, func() Session { return &appendSession{failAt: 2, failRead: len(in)%2 == 0} })
	})
}

// playConn plays in at a connection to a session of newSession's and
// checks what came back (see FuzzConn).
func playConn(t *testing.T, in []byte, newSession func() Session) {
	{
		logs := &panicLog{}
		s := New(Options{NewSession: func(*Conn) (Session, error) { return newSession(), nil }, InsecureAuth: true,
			Logger: slog.New(logs), MaxAppend: 1 << 16})
		srvSide, cliSide := net.Pipe()
		c := &Conn{srv: s, raw: srvSide, nc: srvSide, state: imap.ConnStateNotAuthenticated}
		c.lr.src = srvSide
		done := make(chan struct{})
		go func() { c.serve(); close(done) }()
		go func() {
			cliSide.Write(in)
			time.Sleep(10 * time.Millisecond)
			cliSide.Close()
		}()
		cliSide.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(cliSide)
		// literal reads the bytes of a literal that ends line, if any;
		// false when the connection ended.
		literal := func(line string) bool {
			i := strings.LastIndex(line, "{")
			if i < 0 || !strings.HasSuffix(line, "}\r\n") {
				return true
			}
			n := 0
			for _, ch := range line[i+1 : len(line)-3] {
				if ch >= '0' && ch <= '9' {
					n = n*10 + int(ch-'0')
				}
			}
			_, err := io.CopyN(io.Discard, r, int64(n))
			return err == nil
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			if !(strings.HasPrefix(line, "* ") || strings.HasPrefix(line, "+") || strings.Contains(line, " ")) {
				t.Fatalf("malformed response line %q to %q", line, in)
			}
			// A literal's bytes, then the rest of the response.
			for ok := literal(line); ok && strings.HasSuffix(line, "}\r\n"); ok = literal(line) {
				if line, err = r.ReadString('\n'); err != nil {
					break
				}
			}
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("connection still open after the client closed: %q", in)
		}
		if len(logs.panics) > 0 {
			t.Fatalf("%v for %q", logs.panics, in)
		}
	}
}
