package imap

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/imap/wire"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// APPEND of several messages (MULTIAPPEND, RFC 3502) and of messages put
// together from literals and URLs of the user's messages (CATENATE, RFC
// 4469), all or nothing.
//
// Each message is read into memory from the APPEND budget like a single
// APPEND's, then stored (mailbox.Appends.Add: durable on the write
// quorum, a reference held) and its memory given back before the next
// one is read; Commit appends them all in one Raft entry. A command of
// one message keeps it in memory until the command ends and takes the
// single APPEND's path (one Raft entry for body record and mailbox entry
// together). A failed command releases the bodies it stored.

// maxAppendMessages bounds the messages of one APPEND (they are
// appended by one command of the metadata).
const maxAppendMessages = mailstate.MaxMailMessages

var _ wire.SessionAppend = (*session)(nil)

func (s *session) BeginAppend(name string) (wire.Appender, error) {
	s.touch()
	mb, err := s.mailbox(name)
	if err != nil {
		return nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	return &appender{s: s, mb: mb}, nil
}

type appender struct {
	s    *session
	mb   mailstate.Mailbox
	n    int
	size int64 // bytes of the messages added, for the quota
	// first is the first message, held until the command shows whether
	// another follows.
	first *heldMessage
	multi *mailbox.Appends
}

type heldMessage struct {
	msg   []byte
	held  int64 // of the APPEND budget
	flags []string
	date  time.Time
}

func (a *appender) Add(m *wire.AppendMessage) error {
	s := a.s
	if a.n >= maxAppendMessages {
		return no(imap.ResponseCodeLimit, "At most %d messages in one APPEND", maxAppendMessages)
	}
	flags, err := storableFlags(m.Options.Flags)
	if err != nil {
		return err
	}
	// One message in memory at a time: the first is stored before the
	// second is read.
	if err := a.flush(); err != nil {
		return err
	}
	var msg []byte
	var held int64
	switch {
	case m.Literal != nil:
		if err := s.checkAppend(m.Literal.Size(), a.size); err != nil {
			return err
		}
		if msg, held, err = readLiteral(s.srv.append, m.Literal, m.Literal.Size()); err != nil {
			return err
		}
	case m.Catenate != nil:
		if msg, held, err = s.catenate(m.Catenate); err != nil {
			return err
		}
		if err := s.checkAppend(int64(len(msg)), a.size); err != nil {
			s.srv.append.give(held)
			return err
		}
	default:
		return no(imap.ResponseCodeServerBug, "append: a message without content")
	}
	a.n++
	a.size += int64(len(msg))
	h := &heldMessage{msg: msg, held: held, flags: flags, date: m.Options.Time}
	if a.n == 1 {
		a.first = h
		return nil
	}
	return a.store(h)
}

// flush stores the held first message.
func (a *appender) flush() error {
	if a.first == nil {
		return nil
	}
	h := a.first
	a.first = nil
	return a.store(h)
}

// store stores one message's body and gives its memory back.
func (a *appender) store(h *heldMessage) error {
	defer a.s.srv.append.give(h.held)
	if a.multi == nil {
		var err error
		if a.multi, err = a.s.store().NewAppends(a.s.user, a.mb.Name); err != nil {
			return imapErr(err)
		}
	}
	c, cancel := ctx()
	defer cancel()
	err := a.multi.Add(c, h.msg, h.flags, h.date)
	if errors.Is(err, mailbox.ErrInvalid) {
		return no(imap.ResponseCodeLimit, "%v", err)
	}
	return imapErr(err)
}

func (a *appender) Commit() (*wire.AppendResult, error) {
	s := a.s
	if h := a.first; h != nil && a.multi == nil {
		a.first = nil
		defer s.srv.append.give(h.held)
		d, err := s.appendOne(a.mb, h.msg, h.flags, h.date)
		if err != nil {
			return nil, err
		}
		return &wire.AppendResult{UIDValidity: d.UIDValidity, UIDs: imap.UIDSetNum(d.UID)}, nil
	}
	if err := a.flush(); err != nil {
		return nil, err
	}
	if a.multi == nil || a.multi.Len() == 0 {
		return nil, no(imap.ResponseCodeServerBug, "append: no message")
	}
	c, cancel := ctx()
	defer cancel()
	out, err := a.multi.Commit(c)
	if err != nil {
		return nil, imapErr(err)
	}
	res := &wire.AppendResult{}
	for _, o := range out {
		if o.Err != nil && !errors.Is(o.Err, mailbox.ErrAborted) {
			if errors.Is(o.Err, mailbox.ErrNotFound) {
				return nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
			}
			return nil, imapErr(o.Err)
		}
	}
	for _, o := range out {
		if o.Err != nil {
			return nil, imapErr(o.Err)
		}
		res.UIDValidity = o.UIDValidity
		res.UIDs.AddNum(imap.UID(o.UID))
		s.srv.recent.appended(recentKey{s.user, o.Mailbox}, o.UID)
	}
	if s.mb != nil && len(out) > 0 && s.mb.id == out[0].Mailbox {
		_ = s.store().SyncEvents() // the Poll after APPEND shows EXISTS
	}
	return res, nil
}

func (a *appender) Abort() {
	if h := a.first; h != nil {
		a.first = nil
		a.s.srv.append.give(h.held)
	}
	if a.multi != nil {
		a.multi.Abort(context.Background())
	}
}

// catenate puts a CATENATE message together in memory taken from the
// APPEND budget (a URL part's bytes are held a second time while they
// are copied), at most MaxMessageBytes.
func (s *session) catenate(ct *wire.Catenate) (msg []byte, held int64, err error) {
	b := s.srv.append
	defer func() {
		if err != nil {
			b.give(held)
			msg, held = nil, 0
		}
	}()
	limit := s.srv.cfg.MaxMessageBytes
	tooBig := func() error {
		return no(imap.ResponseCodeTooBig, "Message too large (at most %d bytes)", limit)
	}
	// grow makes room for n more bytes.
	grow := func(n int64) error {
		if int64(len(msg))+n > limit {
			return tooBig()
		}
		if need := int64(len(msg)) + n; need > int64(cap(msg)) {
			newCap := min(limit, max(need, 2*int64(cap(msg)), appendChunk))
			c, cancel := context.WithTimeout(context.Background(), appendWait)
			err := b.take(c, newCap-int64(cap(msg)))
			cancel()
			if err != nil {
				return no(imap.ResponseCodeLimit, "Too many messages being uploaded at once; try again later")
			}
			held += newCap - int64(cap(msg))
			nb := make([]byte, len(msg), newCap)
			copy(nb, msg)
			msg = nb
		}
		return nil
	}
	for {
		p, err := ct.Next()
		if err == io.EOF {
			return msg, held, nil
		}
		if err != nil {
			return msg, held, err
		}
		switch {
		case p.Text != nil:
			// Memory grows with the bytes that arrive, not by the size
			// announced (as readLiteral's).
			if int64(len(msg))+p.Text.Size() > limit {
				return msg, held, tooBig()
			}
			for left := p.Text.Size(); left > 0; {
				n := min(left, appendChunk)
				if err := grow(n); err != nil {
					return msg, held, err
				}
				start := len(msg)
				msg = msg[:start+int(n)]
				if _, err := io.ReadFull(p.Text, msg[start:]); err != nil {
					msg = msg[:start]
					if errors.Is(err, io.EOF) {
						err = io.ErrUnexpectedEOF
					}
					return msg, held, err
				}
				left -= n
			}
		case p.URL != nil:
			part, err := s.urlPart(p.URL, limit-int64(len(msg)))
			if err != nil {
				return msg, held, err
			}
			if err := grow(int64(len(part))); err != nil {
				return msg, held, err
			}
			msg = append(msg, part...)
		}
	}
}

// urlPart reads what a CATENATE URL names, at most max bytes (else NO
// [TOOBIG]); a URL that does not name one of this user's messages (or a
// part it has) is NO [BADURL].
func (s *session) urlPart(u *wire.MessageURL, max int64) ([]byte, error) {
	badURL := func(why string) error { return wire.BadURL(u.Raw, why) }
	if u.User != "" && !sameUser(u.User, s.user) {
		return nil, badURL("only this user's mailboxes can be read")
	}
	mb, err := s.mailbox(u.Mailbox)
	if err != nil {
		return nil, badURL("no such mailbox")
	}
	if u.UIDValidity != 0 && u.UIDValidity != mb.UIDValidity {
		return nil, badURL("the mailbox's UIDVALIDITY changed")
	}
	m, ok, err := s.store().Message(s.user, mb.ID, uint32(u.UID))
	if err != nil {
		return nil, imapErr(err)
	}
	if !ok {
		return nil, badURL("no such message")
	}
	info, err := s.store().Info(s.user, mb.ID, m.UID)
	if err != nil {
		return nil, imapErr(err)
	}
	start, end, ok := sectionRange(m.Size, info, u.Section)
	if !ok {
		return nil, badURL("the message has no such part")
	}
	if len(u.Section.HeaderFields) == 0 && len(u.Section.HeaderFieldsNot) == 0 {
		if p := u.Section.Partial; p != nil {
			start = min(start+p.Offset, end)
			end = min(end, start+p.Size)
		}
		if end-start > max {
			return nil, no(imap.ResponseCodeTooBig, "Message too large")
		}
	} else if end-start > max+64<<10 {
		return nil, no(imap.ResponseCodeTooBig, "Message too large")
	}
	c, cancel := ctx()
	defer cancel()
	return s.section(c, m, info, u.Section)
}

// sameUser says whether a URL's user is the logged-in one: the address,
// or its local part.
func sameUser(urlUser, user string) bool {
	if equalFoldASCII(urlUser, user) {
		return true
	}
	for i := len(user) - 1; i >= 0; i-- {
		if user[i] == '@' {
			return equalFoldASCII(urlUser, user[:i])
		}
	}
	return false
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
