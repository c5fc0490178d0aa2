package wire

import (
	"errors"
	"io"
	"strings"

	"github.com/emersion/go-imap/v2"
)

// SessionAppend is implemented by sessions that take several messages in
// one APPEND (MULTIAPPEND, RFC 3502) and messages put together from parts
// (CATENATE, RFC 4469). The server then offers both and sends every
// APPEND here instead of Session.Append.
type SessionAppend interface {
	// BeginAppend starts an APPEND into mailbox (NO [TRYCREATE] if there
	// is none); nothing after the mailbox name has been read yet.
	BeginAppend(mailbox string) (Appender, error)
}

// Appender takes the messages of one APPEND as they arrive, and keeps
// them all or none.
type Appender interface {
	// Add takes one message; exactly one of m.Literal and m.Catenate is
	// set. It should store the message (or hold it within the session's
	// budgets) before returning, so that the next message does not find
	// it in memory. An error fails the whole APPEND: Abort follows.
	Add(m *AppendMessage) error
	// Commit makes every message added visible at once; it answers only
	// once all of them are durable.
	Commit() (*AppendResult, error)
	// Abort drops what Add stored (a failed Add or Commit, or an error in
	// what the client sent). It is called at most once, never after a
	// successful Commit.
	Abort()
}

// AppendMessage is one message of an APPEND.
type AppendMessage struct {
	Options imap.AppendOptions
	// Literal is the message, asked for ("+") at its first Read. What is
	// left unread is skipped.
	Literal imap.LiteralReader
	// Catenate gives the parts of a CATENATE message, in order.
	Catenate *Catenate
}

// AppendResult is what Commit appended: APPENDUID's UIDVALIDITY and UIDs
// (RFC 4315; none: no APPENDUID).
type AppendResult struct {
	UIDValidity uint32
	UIDs        imap.UIDSet
}

// Limits of one APPEND beyond each message's own.
const (
	// MaxCatenateParts bounds the parts of one CATENATE message.
	MaxCatenateParts = 256
	// maxAppendMessages bounds the messages read (or skipped) of one
	// APPEND; the Appender refuses far fewer.
	maxAppendMessages = 1000
)

// Catenate reads the parts of one CATENATE message off the wire.
type Catenate struct {
	st   *appendState
	n    int
	done bool
}

// CatenatePart is one part of a CATENATE message: a URL or a TEXT
// literal.
type CatenatePart struct {
	URL  *MessageURL
	Text imap.LiteralReader // asked for at its first Read; the rest is skipped
}

// Next returns the next part; io.EOF after the last. A URL that is not
// one this server can read is a NO [BADURL] error; the caller fails the
// message with it.
func (ct *Catenate) Next() (CatenatePart, error) {
	if ct.done {
		return CatenatePart{}, io.EOF
	}
	st := ct.st
	d := st.d
	if _, err := st.finishLit(false); err != nil {
		return CatenatePart{}, err
	}
	if d.peek() == ')' {
		if ct.n == 0 {
			return CatenatePart{}, bad("CATENATE needs at least one part")
		}
		d.pos++
		ct.done = true
		st.ct = nil
		return CatenatePart{}, io.EOF
	}
	if ct.n > 0 {
		if err := d.sp(); err != nil {
			return CatenatePart{}, err
		}
	}
	ct.n++
	if ct.n > MaxCatenateParts {
		return CatenatePart{}, &protoError{typ: imap.StatusResponseTypeNo, code: imap.ResponseCodeLimit, text: "Too many CATENATE parts (at most " + uitoa(MaxCatenateParts) + ")"}
	}
	a, err := d.atom()
	if err != nil {
		return CatenatePart{}, err
	}
	switch strings.ToUpper(a) {
	case "TEXT":
		if err := d.sp(); err != nil {
			return CatenatePart{}, err
		}
		lit, err := st.literal()
		if err != nil {
			return CatenatePart{}, err
		}
		return CatenatePart{Text: lit}, nil
	case "URL":
		if err := d.sp(); err != nil {
			return CatenatePart{}, err
		}
		raw, err := d.astring()
		if err != nil {
			return CatenatePart{}, err
		}
		u, err := ParseMessageURL(raw)
		if err != nil {
			return CatenatePart{}, BadURL(raw, err.Error())
		}
		return CatenatePart{URL: u}, nil
	}
	return CatenatePart{}, bad("Expected TEXT or URL in CATENATE, got %s", a)
}

// BadURL is the NO [BADURL url] answer for a CATENATE URL (RFC 4469 5).
func BadURL(raw, why string) error {
	// url-resp-text: no "]", CR or LF.
	raw = strings.Map(func(r rune) rune {
		switch r {
		case ']', '\r', '\n', 0:
			return -1
		}
		return r
	}, raw)
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCode("BADURL " + raw), Text: "Bad CATENATE URL: " + why}
}

// appendState is where one APPEND's parsing is: the literal being read
// and the CATENATE list being parsed, if any.
type appendState struct {
	c   *Conn
	d   *decoder
	lit *appendLiteral
	ct  *Catenate
}

// literal parses a message's or TEXT part's literal spec and makes its
// reader; over MaxAppend it is refused before the "+" (and ends the
// connection if non-synchronizing: its bytes are on the way).
func (st *appendState) literal() (*appendLiteral, error) {
	d := st.d
	if d.peek() == '~' { // literal8 (BINARY)
		d.pos++
	}
	n, sync, err := d.literalSpec()
	if err != nil {
		return nil, err
	}
	if max := st.c.srv.opts.MaxAppend; n > max {
		return nil, &protoError{typ: imap.StatusResponseTypeNo, code: imap.ResponseCodeTooBig,
			text: "Message too large (at most " + uitoa(uint32(min(max, 1<<32-1))) + " bytes)", fatal: !sync}
	}
	st.lit = &appendLiteral{c: st.c, d: d, size: n, left: n, sync: sync}
	return st.lit, nil
}

// finishLit reads what is left of the current literal and the line after
// it. With stopAtSync, a synchronizing literal not asked for yet is left
// alone (stopped): the client waits for a "+" that will not come.
func (st *appendState) finishLit(stopAtSync bool) (stopped bool, err error) {
	l := st.lit
	if l == nil {
		return false, nil
	}
	if stopAtSync && l.sync && !l.started {
		st.lit = nil
		return true, nil
	}
	if !l.started && l.left == 0 {
		_, _ = l.Read(nil) // a {0} is asked for too
	}
	if l.err == nil && l.left > 0 {
		if _, err := io.CopyN(io.Discard, l, l.left); err != nil {
			return false, err
		}
	}
	if l.err != nil {
		return false, l.err
	}
	st.lit = nil
	return false, st.d.nextLine()
}

// message parses one message's options and its literal spec or the start
// of its CATENATE list.
func (st *appendState) message() (*AppendMessage, error) {
	d := st.d
	m := &AppendMessage{}
	var err error
	if d.peek() == '(' {
		if m.Options.Flags, err = d.flagList(); err != nil {
			return nil, err
		}
		if err := d.sp(); err != nil {
			return nil, err
		}
	}
	if d.peek() == '"' {
		if m.Options.Time, err = d.dateTime(); err != nil {
			return nil, err
		}
		if err := d.sp(); err != nil {
			return nil, err
		}
	}
	if c := d.peek(); c == 'C' || c == 'c' {
		a, err := d.atom()
		if err != nil {
			return nil, err
		}
		if !strings.EqualFold(a, "CATENATE") {
			return nil, bad("Expected a literal or CATENATE, got %s", a)
		}
		if err := d.sp(); err != nil {
			return nil, err
		}
		if err := d.expect('(', "("); err != nil {
			return nil, err
		}
		st.ct = &Catenate{st: st}
		m.Catenate = st.ct
		return m, nil
	}
	if m.Literal, err = st.literal(); err != nil {
		return nil, err
	}
	return m, nil
}

// finish reads what the Appender left of the message just added.
func (st *appendState) finish() error {
	for st.ct != nil {
		if _, err := st.ct.Next(); err != nil && err != io.EOF {
			return err
		}
	}
	_, err := st.finishLit(false)
	return err
}

// skip reads the rest of a failed APPEND as the client sends it anyway:
// LITERAL+ literals and the lines between them, up to the first
// synchronizing literal (the client waits for its "+") or the end of the
// command. Nothing of it is kept.
func (st *appendState) skip() error {
	d := st.d
	for n := 0; ; n++ {
		if n > maxAppendMessages*MaxCatenateParts {
			return &protoError{typ: imap.StatusResponseTypeBad, text: "APPEND too long", fatal: true}
		}
		if stopped, err := st.finishLit(true); stopped || err != nil {
			return err
		}
		if st.ct != nil {
			_, err := st.ct.Next()
			var ie *imap.Error
			if err != nil && err != io.EOF && !errors.As(err, &ie) {
				return err
			}
			continue
		}
		if d.eol() {
			return nil
		}
		if err := d.sp(); err != nil {
			return err
		}
		if _, err := st.message(); err != nil {
			return err
		}
	}
}

// appendMulti runs APPEND through a SessionAppend: each message goes to
// the Appender as it arrives; OK only when Commit says all are stored.
func (c *Conn) appendMulti(d *decoder, mb string, sa SessionAppend) (err error) {
	st := &appendState{c: c, d: d}
	// A verdict of the session's (not the client's syntax): read what the
	// client sends regardless, then answer with the verdict.
	fail := func(err error) error {
		var pe *protoError
		if errors.As(err, &pe) {
			return err // answer skips the rest of the line, or ends the connection
		}
		serr := st.skip()
		if serr == nil {
			// All read: nothing is left for answer to skip.
			d.line, d.pos = d.line[:0], 0
			return err
		}
		if !errors.As(serr, &pe) || pe.fatal {
			return serr // the connection failed, or is to end
		}
		// What followed did not parse: the verdict stands, and answer
		// skips the rest of this line like after a syntax error.
		var ie *imap.Error
		if errors.As(err, &ie) {
			return &protoError{typ: ie.Type, code: ie.Code, text: ie.Text}
		}
		return serr
	}
	ap, err := sa.BeginAppend(mb)
	if err != nil {
		return fail(err)
	}
	committed := false
	defer func() {
		if !committed {
			ap.Abort()
		}
	}()
	for n := 0; ; n++ {
		if n >= maxAppendMessages {
			return fail(&imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "Too many messages in one APPEND"})
		}
		if err := d.sp(); err != nil {
			return err
		}
		m, err := st.message()
		if err != nil {
			return fail(err)
		}
		if err := ap.Add(m); err != nil {
			return fail(err)
		}
		if err := st.finish(); err != nil {
			return fail(err)
		}
		if d.eol() {
			break
		}
	}
	res, err := ap.Commit()
	committed = err == nil
	if err != nil {
		return err
	}
	if res == nil || len(res.UIDs) == 0 || res.UIDValidity == 0 {
		return nil
	}
	return ok(imap.ResponseCode("APPENDUID "+uitoa(res.UIDValidity)+" "+res.UIDs.String()), "APPEND completed")
}
