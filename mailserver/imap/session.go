package imap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/imap/wire"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

const opTimeout = 30 * time.Second

type session struct {
	srv    *Server
	conn   *wire.Conn
	remote net.IP
	user   string
	mb     *selected
	// fetchRev2: the FETCH under way is for an IMAP4rev2 client (no
	// \Recent).
	fetchRev2 bool
	// touched is set by every command that reaches the session; a Poll
	// that finds it unset followed NOOP/CHECK (or CAPABILITY...), which
	// gets a read-index catch-up (DESIGN-NOTES 5).
	touched bool
	// A session in IDLE keeps no goroutine of its own: Idle returns at
	// once, leaving idleW set and a notify function on the watcher that
	// starts a short-lived push (idlePush) per batch of events. The next
	// call into the session (Poll after DONE, any command, Close) ends it.
	idleMu     sync.Mutex
	idleW      *wire.UpdateWriter
	pushQueued atomic.Bool
	// watched: the session is among its user's (accounts.go), to be
	// ended when the account is disabled, removed or its password changes.
	watched bool
}

var _ wire.Session = (*authGuard)(nil)

func (s *Server) newSession(c *wire.Conn) (wire.Session, error) {
	sess := &session{srv: s, conn: c}
	if a, ok := c.NetConn().RemoteAddr().(*net.TCPAddr); ok {
		sess.remote = a.IP
	}
	return s.guardSession(sess, c), nil
}

func (s *session) store() *mailbox.Store { return s.srv.store }

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// touch marks a command reaching the session, which ends IDLE.
func (s *session) touch() {
	s.endIdle()
	s.touched = true
}

// endIdle stops pushing IDLE updates (waiting for a push under way).
func (s *session) endIdle() {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if s.idleW != nil {
		s.idleW = nil
		s.mb.w.SetNotify(nil)
	}
}

// schedulePush is the watcher's notify function during IDLE.
func (s *session) schedulePush() {
	if s.pushQueued.CompareAndSwap(false, true) {
		go s.idlePush()
	}
}

// idlePush tells an idling client what changed.
func (s *session) idlePush() {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	defer func() {
		// As the library does for its own IDLE goroutine: a bug ends
		// this connection, not the process.
		if v := recover(); v != nil {
			s.srv.log.Error("imap: panic pushing IDLE updates", "panic", v, "stack", string(debug.Stack()))
			s.idleW = nil
			_ = s.conn.NetConn().Close()
		}
	}()
	s.pushQueued.Store(false) // events from now on start another push
	if s.idleW == nil {
		return
	}
	select {
	case <-s.mb.w.C():
	default:
	}
	if err := s.poll(s.idleW, true); err != nil {
		// The client is gone or not reading: end the connection (its
		// goroutine is waiting for DONE).
		s.idleW = nil
		s.mb.w.SetNotify(nil)
		_ = s.conn.NetConn().Close()
	}
}

func (s *session) Close() error {
	s.srv.unwatchAccount(s)
	s.endIdle()
	if s.mb != nil {
		s.mb.w.Close()
		s.mb = nil
	}
	return nil
}

// imapErr maps the mail model's errors to IMAP responses.
func imapErr(err error) error {
	if err == nil {
		return nil
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		return err
	}
	code := imap.ResponseCodeServerBug
	switch {
	case errors.Is(err, mailbox.ErrNotFound):
		code = imap.ResponseCodeNonExistent
	case errors.Is(err, mailbox.ErrExists):
		code = imap.ResponseCodeAlreadyExists
	case errors.Is(err, mailbox.ErrOverQuota):
		code = imap.ResponseCodeOverQuota
	case errors.Is(err, mailbox.ErrInvalid), errors.Is(err, mailbox.ErrNotEmpty):
		code = imap.ResponseCodeCannot
	case errors.Is(err, mailbox.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		code = imap.ResponseCodeUnavailable
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: err.Error()}
}

func no(code imap.ResponseCode, format string, args ...any) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: fmt.Sprintf(format, args...)}
}

var errReadOnly = no("READ-ONLY", "Mailbox is read-only (EXAMINE)")

// ---------------------------------------------------------------------------
// Authentication.

func (s *session) Login(username, password string) error {
	s.touched = true
	c, cancel := ctx()
	defer cancel()
	addr, err := s.store().Authenticate(c, "imap", username, password, s.remote)
	switch {
	case err == nil:
		s.user = addr
		s.srv.watchAccount(s)
		return nil
	case errors.Is(err, mailbox.ErrAuthFailed):
		return wire.ErrAuthFailed
	case errors.Is(err, mailbox.ErrThrottled):
		return no(imap.ResponseCodeUnavailable, "Too many failed logins; try again later")
	case errors.Is(err, mailbox.ErrDisabled):
		return no(imap.ResponseCodeAuthorizationFailed, "Account disabled")
	}
	return no(imap.ResponseCodeUnavailable, "Authentication temporarily unavailable")
}

// Unauthenticate ends the login (UNAUTHENTICATE, RFC 8437): the selected
// mailbox is closed without expunging, the account no longer watched.
func (s *session) Unauthenticate() error {
	s.touch()
	s.endIdle()
	if s.mb != nil {
		s.mb.w.Close()
		s.mb = nil
	}
	s.srv.unwatchAccount(s)
	s.user = ""
	return nil
}

func (s *session) AppendLimit() uint32 {
	return uint32(min(s.srv.cfg.MaxMessageBytes, 1<<32-1))
}

// ---------------------------------------------------------------------------
// Mailboxes.

func (s *session) Namespace() (*imap.NamespaceData, error) {
	s.touch()
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: mailstate.MailboxDelim}}}, nil
}

// mailbox finds one of the user's mailboxes by name.
func (s *session) mailbox(name string) (mailstate.Mailbox, error) {
	mb, ok, err := s.store().Mailbox(s.user, strings.TrimSuffix(name, string(mailstate.MailboxDelim)))
	if err != nil {
		return mb, imapErr(err)
	}
	if !ok {
		return mb, no(imap.ResponseCodeNonExistent, "No such mailbox")
	}
	return mb, nil
}

func (s *session) Create(name string, options *imap.CreateOptions) error {
	s.touch()
	name = mailstate.CanonicalMailboxName(strings.TrimSuffix(name, string(mailstate.MailboxDelim)))
	if err := mailstate.ValidMailboxName(name); err != nil {
		return no(imap.ResponseCodeCannot, "%v", err)
	}
	su, err := createSpecialUse(options)
	if err != nil {
		return err
	}
	c, cancel := ctx()
	defer cancel()
	_, err = s.store().CreateMailbox(c, s.user, name, su)
	return imapErr(err)
}

// specialUses are the RFC 6154 attributes CREATE (USE (...)) can give,
// spelled as the metadata layer stores them.
var specialUses = []imap.MailboxAttr{imap.MailboxAttrAll, imap.MailboxAttrArchive, imap.MailboxAttrDrafts, imap.MailboxAttrFlagged, imap.MailboxAttrJunk, imap.MailboxAttrSent, imap.MailboxAttrTrash}

// createSpecialUse is the special use CREATE asks for. An attribute the
// server does not know, or more than the one a mailbox keeps, is refused
// with NO [USEATTR] before anything is created (RFC 6154 3).
func createSpecialUse(options *imap.CreateOptions) (string, error) {
	if options == nil || len(options.SpecialUse) == 0 {
		return "", nil
	}
	if len(options.SpecialUse) > 1 {
		return "", no("USEATTR", "A mailbox has at most one special use")
	}
	for _, u := range specialUses {
		if strings.EqualFold(string(options.SpecialUse[0]), string(u)) {
			return string(u), nil
		}
	}
	return "", no("USEATTR", "Unknown special use %s: use one of \\All \\Archive \\Drafts \\Flagged \\Junk \\Sent \\Trash", options.SpecialUse[0])
}

func (s *session) Delete(name string) error {
	s.touch()
	mb, err := s.mailbox(name)
	if err != nil {
		return err
	}
	if mb.Name == mailstate.InboxName {
		return no(imap.ResponseCodeCannot, "INBOX cannot be deleted")
	}
	c, cancel := ctx()
	defer cancel()
	err = s.store().DeleteMailbox(c, s.user, mb.ID)
	if err == nil {
		s.srv.recent.forget(recentKey{s.user, mb.ID})
	}
	return imapErr(err)
}

func (s *session) Rename(oldName, newName string) error {
	s.touch()
	mb, err := s.mailbox(oldName)
	if err != nil {
		return err
	}
	newName = mailstate.CanonicalMailboxName(strings.TrimSuffix(newName, string(mailstate.MailboxDelim)))
	if err := mailstate.ValidMailboxName(newName); err != nil {
		return no(imap.ResponseCodeCannot, "%v", err)
	}
	c, cancel := ctx()
	defer cancel()
	return imapErr(s.store().RenameMailbox(c, s.user, mb.ID, newName))
}

func (s *session) Subscribe(name string) error {
	s.touch()
	c, cancel := ctx()
	defer cancel()
	return imapErr(s.store().Subscribe(c, s.user, strings.TrimSuffix(name, string(mailstate.MailboxDelim))))
}

func (s *session) Unsubscribe(name string) error {
	s.touch()
	c, cancel := ctx()
	defer cancel()
	return imapErr(s.store().Unsubscribe(c, s.user, strings.TrimSuffix(name, string(mailstate.MailboxDelim))))
}

func (s *session) List(w *wire.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	s.touch()
	if len(patterns) == 0 || len(patterns) == 1 && patterns[0] == "" {
		// The hierarchy delimiter request, LIST "" "" (RFC 3501 6.3.8):
		// go-imap's parser drops an empty pattern, so LIST's comes as
		// none (a LIST-EXTENDED list of only empty ones is refused
		// there); LSUB's comes as one empty pattern.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: mailstate.MailboxDelim, Mailbox: ""})
	}
	boxes, err := s.store().Mailboxes(s.user)
	if err != nil {
		return imapErr(err)
	}
	subs, err := s.store().Subscriptions(s.user)
	if err != nil {
		return imapErr(err)
	}
	exists := map[string]*mailstate.Mailbox{}
	for i := range boxes {
		exists[boxes[i].Name] = &boxes[i]
	}
	var names, sortedSubs []string
	if options.SelectSubscribed {
		// The subscribed mailboxes and, for RECURSIVEMATCH, their
		// ancestors, listed with CHILDINFO (RFC 5258 3.5).
		anc := map[string]bool{}
		for n := range subs {
			names = append(names, n)
			if options.SelectRecursiveMatch {
				sortedSubs = append(sortedSubs, n)
			}
			for i := 0; options.SelectRecursiveMatch && i < len(n); i++ {
				if p := n[:i]; n[i] == mailstate.MailboxDelim && !subs[p] && !anc[p] {
					anc[p] = true
					names = append(names, p)
				}
			}
		}
	} else {
		// Every existing mailbox, and the missing parents of any (a
		// parent deleted while its children stay): \NonExistent.
		implied := map[string]bool{}
		for _, mb := range boxes {
			names = append(names, mb.Name)
			for i := 0; i < len(mb.Name); i++ {
				if p := mb.Name[:i]; mb.Name[i] == mailstate.MailboxDelim && exists[p] == nil && !implied[p] {
					implied[p] = true
					names = append(names, p)
				}
			}
		}
	}
	var lsubParents map[string]bool
	if w.LSUB() {
		// Parents of subscribed mailboxes where a pattern's "%" stops
		// (RFC 3501 6.3.9): listed \Noselect.
		lsubParents = map[string]bool{}
		for n := range subs {
			for i := 0; i < len(n); i++ {
				p := n[:i]
				if n[i] != mailstate.MailboxDelim || subs[p] || lsubParents[p] {
					continue
				}
				for _, pat := range patterns {
					if wire.MatchList(p, mailstate.MailboxDelim, ref, pat) && !wire.MatchList(n, mailstate.MailboxDelim, ref, pat) {
						lsubParents[p] = true
						names = append(names, p)
						break
					}
				}
			}
		}
	}
	sort.Strings(names)
	sort.Strings(sortedSubs)
	for _, name := range names {
		match := false
		for _, p := range patterns {
			if wire.MatchList(name, mailstate.MailboxDelim, ref, p) {
				match = true
				break
			}
		}
		if !match {
			continue
		}
		mb := exists[name]
		if options.SelectSpecialUse && (mb == nil || mb.SpecialUse == "") {
			continue
		}
		data := &imap.ListData{Delim: mailstate.MailboxDelim, Mailbox: name}
		if lsubParents[name] {
			data.Attrs = []imap.MailboxAttr{imap.MailboxAttrNoSelect}
			if err := w.WriteList(data); err != nil {
				return err
			}
			continue
		}
		if options.SelectRecursiveMatch && subscribedBelow(sortedSubs, name) {
			data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		if mb == nil {
			data.Attrs = append(data.Attrs, imap.MailboxAttrNonExistent)
			if hasChildren(boxes, name) {
				data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
			}
		} else {
			if hasChildren(boxes, name) {
				data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
			} else {
				data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
			}
			if mb.SpecialUse != "" {
				data.Attrs = append(data.Attrs, imap.MailboxAttr(mb.SpecialUse))
			}
		}
		if subs[name] && (options.SelectSubscribed || options.ReturnSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if options.ReturnStatus != nil && mb != nil {
			st, err := s.status(mb, options.ReturnStatus)
			if err != nil {
				return err
			}
			data.Status = st
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// subscribedBelow reports whether name has a subscribed descendant;
// sortedSubs is the subscribed names in order.
func subscribedBelow(sortedSubs []string, name string) bool {
	prefix := name + string(mailstate.MailboxDelim)
	i := sort.SearchStrings(sortedSubs, prefix)
	return i < len(sortedSubs) && strings.HasPrefix(sortedSubs[i], prefix)
}

func hasChildren(boxes []mailstate.Mailbox, name string) bool {
	prefix := name + string(mailstate.MailboxDelim)
	i := sort.Search(len(boxes), func(i int) bool { return boxes[i].Name >= prefix })
	return i < len(boxes) && strings.HasPrefix(boxes[i].Name, prefix)
}

func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	s.touch()
	mb, err := s.mailbox(name)
	if err != nil {
		return nil, err
	}
	return s.status(&mb, options)
}

// status answers from the mailbox record's counters; only DELETED scans.
func (s *session) status(mb *mailstate.Mailbox, options *imap.StatusOptions) (*imap.StatusData, error) {
	d := &imap.StatusData{Mailbox: mb.Name}
	if options.NumMessages {
		n := mb.Messages
		d.NumMessages = &n
	}
	if options.UIDNext {
		d.UIDNext = imap.UID(mb.UIDNext)
	}
	if options.UIDValidity {
		d.UIDValidity = mb.UIDValidity
	}
	if options.NumUnseen {
		n := mb.Unseen
		d.NumUnseen = &n
	}
	if options.NumRecent {
		n, err := s.statusRecent(mb)
		if err != nil {
			return nil, imapErr(err)
		}
		d.NumRecent = &n
	}
	if options.HighestModSeq {
		d.HighestModSeq = mb.HighestModSeq
	}
	if options.Size {
		n := mb.Size
		d.Size = &n
	}
	if options.AppendLimit {
		n := s.AppendLimit()
		d.AppendLimit = &n
	}
	if options.NumDeleted {
		var n uint32
		err := s.store().EachMessage(s.user, mb.ID, func(m mailstate.MailMessage) error {
			if hasFlag(m.Flags, mailstate.FlagDeleted) {
				n++
			}
			return nil
		})
		if err != nil {
			return nil, imapErr(err)
		}
		d.NumDeleted = &n
	}
	return d, nil
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if strings.EqualFold(x, f) {
			return true
		}
	}
	return false
}

// storableFlags turns client flags into the model's (\Recent is dropped:
// it is never stored).
func storableFlags(flags []imap.Flag) ([]string, error) {
	var out []string
	for _, f := range flags {
		if strings.EqualFold(string(f), `\Recent`) {
			continue
		}
		out = append(out, string(f))
	}
	out, err := mailstate.CanonicalFlags(out)
	if err != nil {
		return nil, no(imap.ResponseCodeCannot, "%v", err)
	}
	return out, nil
}

func imapFlags(flags []string) []imap.Flag {
	out := make([]imap.Flag, len(flags))
	for i, f := range flags {
		out[i] = imap.Flag(f)
	}
	return out
}

func (s *session) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	s.touch()
	mb, err := s.mailbox(name)
	if err != nil {
		return nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	flags, err := storableFlags(options.Flags)
	if err != nil {
		return nil, err
	}
	if err := s.checkAppend(r.Size(), 0); err != nil {
		return nil, err
	}
	// The literal is held in memory that grows with what arrives (the
	// size is only the client's word), within the server's budget; the
	// timeout for storing starts once it is all here.
	msg, held, err := readLiteral(s.srv.append, r, r.Size())
	if err != nil {
		return nil, err
	}
	defer s.srv.append.give(held)
	return s.appendOne(mb, msg, flags, options.Time)
}

// checkAppend refuses a message of size bytes before it is read: empty,
// or over the quota with the before bytes of the same APPEND.
func (s *session) checkAppend(size, before int64) error {
	if size == 0 {
		// No header, so no From or Date (RFC 5322 3.6): nothing a client
		// can show, only the trace of a client bug (Dovecot and Cyrus
		// refuse it too).
		return no(imap.ResponseCodeCannot, "Refusing a zero byte message: APPEND needs the message's header and body")
	}
	c, cancel := ctx()
	err := s.store().CheckRecipient(c, s.user, before+size)
	cancel()
	return imapErr(err)
}

// appendOne stores one message in one Raft entry (its body's record and
// its mailbox entry together where the cluster can stage bodies).
func (s *session) appendOne(mb mailstate.Mailbox, msg []byte, flags []string, date time.Time) (*imap.AppendData, error) {
	c, cancel := ctx()
	defer cancel()
	d := s.store().NewDelivery()
	// The bytes as the client sent them, bare LFs too (as Dovecot): its
	// cache, RFC822.SIZE and BINARY.SIZE then agree with the server.
	d.StoreAsGiven()
	if err := d.AddRecipient(mailbox.Recipient{Address: s.user, Mailbox: mb.Name, Flags: flags}); err != nil {
		return nil, imapErr(err)
	}
	if err := d.Body(c, msg, date); err != nil {
		return nil, imapErr(err)
	}
	out, err := d.Commit(c, true)
	if err != nil {
		return nil, imapErr(err)
	}
	if len(out) != 1 {
		return nil, no(imap.ResponseCodeServerBug, "append: no outcome")
	}
	if out[0].Err != nil {
		if errors.Is(out[0].Err, mailbox.ErrNotFound) {
			return nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
		}
		return nil, imapErr(out[0].Err)
	}
	s.srv.recent.appended(recentKey{s.user, out[0].Mailbox}, out[0].UID)
	if s.mb != nil && s.mb.id == out[0].Mailbox {
		_ = s.store().SyncEvents() // the Poll after APPEND shows EXISTS
	}
	return &imap.AppendData{UID: imap.UID(out[0].UID), UIDValidity: out[0].UIDValidity}, nil
}

// ---------------------------------------------------------------------------
// Selected state.

func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	s.touch()
	if s.mb != nil {
		s.Unselect()
	}
	c, cancel := ctx()
	defer cancel()
	if err := s.store().CatchUp(c); err != nil {
		return nil, imapErr(err)
	}
	mb, err := s.mailbox(name)
	if err != nil {
		return nil, err
	}
	sel, first, err := s.open(mb.ID, options.ReadOnly, mb.Messages)
	if err != nil {
		return nil, imapErr(err)
	}
	// The record is read after the messages: UIDNEXT is never below a UID
	// the client was shown.
	if rec, ok, err := s.store().MailboxByID(s.user, mb.ID); err == nil && ok {
		mb = rec
	}
	s.mb = sel
	sel.name, sel.uidValidity = mb.Name, mb.UIDValidity
	uidNext := mb.UIDNext
	if n := len(sel.uids); n > 0 && sel.uids[n-1] >= uidNext {
		uidNext = sel.uids[n-1] + 1
	}
	return &imap.SelectData{
		Flags:             sel.flags(),
		PermanentFlags:    sel.permanentFlags(),
		NumMessages:       uint32(len(sel.uids)),
		NumRecent:         sel.recent.told,
		FirstUnseenSeqNum: first,
		UIDNext:           imap.UID(uidNext),
		UIDValidity:       mb.UIDValidity,
		HighestModSeq:     mb.HighestModSeq,
	}, nil
}

// open starts watching a mailbox, then reads its UIDs.
// The UIDs are then shared with other sessions of the mailbox when they
// agree (selected.share); sizeHint is the message count of its record.
func (s *session) open(id uint64, readOnly bool, sizeHint uint32) (*selected, uint32, error) {
	w, err := s.store().Watch(s.user, id)
	if err != nil {
		return nil, 0, err
	}
	sel := &selected{id: id, readOnly: readOnly, w: w, uids: make([]uint32, 0, min(sizeHint+16, 1<<20))}
	var firstUnseen, lastSeen uint32
	floor := s.srv.recent.initialFloor(recentKey{s.user, id})
	err = s.store().EachMessage(s.user, id, func(m mailstate.MailMessage) error {
		sel.uids = append(sel.uids, m.UID)
		sel.addKeywords(m.Flags)
		if hasFlag(m.Flags, mailstate.FlagSeen) && (floor == 0 || m.UID < floor) {
			lastSeen = m.UID
		}
		if firstUnseen == 0 && !hasFlag(m.Flags, mailstate.FlagSeen) {
			firstUnseen = uint32(len(sel.uids))
		}
		return nil
	})
	if err != nil {
		w.Close()
		return nil, 0, err
	}
	// SELECT claims the messages above the node's \Recent boundary;
	// EXAMINE only looks (RFC 3501 6.3.2).
	var top uint32
	if n := len(sel.uids); n > 0 {
		top = sel.uids[n-1]
	}
	claim := top
	if readOnly {
		claim = 0
	}
	sel.recent.above = s.srv.recent.boundary(recentKey{s.user, id}, lastSeen, claim)
	sel.recent.top = top
	sel.recent.told = sel.recentCount()
	sel.share()
	return sel, firstUnseen, nil
}

func (s *session) Unselect() error {
	s.touch()
	if s.mb != nil {
		s.mb.w.Close()
		s.mb = nil
	}
	return nil
}

func (s *session) Poll(w *wire.UpdateWriter, allowExpunge bool) error {
	s.endIdle()
	if !s.touched {
		c, cancel := ctx()
		err := s.store().CatchUp(c)
		cancel()
		if err == nil {
			_ = s.store().SyncEvents()
		}
	}
	s.touched = false
	if s.mb == nil {
		return nil
	}
	return s.poll(w, allowExpunge)
}

// Idle catches up, tells the client what changed, and returns: updates
// during IDLE are pushed from the watcher's notifications (see idleW), so
// an idling connection holds no goroutine for it.
func (s *session) Idle(w *wire.UpdateWriter) error {
	s.endIdle()
	c, cancel := ctx()
	err := s.store().CatchUp(c)
	cancel()
	if err == nil {
		_ = s.store().SyncEvents()
	}
	if s.mb == nil {
		return nil
	}
	if err := s.poll(w, true); err != nil {
		return err
	}
	s.idleMu.Lock()
	s.idleW = w
	s.mb.w.SetNotify(s.schedulePush)
	s.idleMu.Unlock()
	if len(s.mb.w.C()) > 0 { // signalled between the poll and SetNotify
		s.schedulePush()
	}
	return nil
}

func (s *session) Expunge(w *wire.ExpungeWriter, uids *imap.UIDSet) error {
	s.touch()
	sel := s.mb
	if sel.readOnly {
		if w == nil {
			return nil // CLOSE after EXAMINE: nothing is expunged (RFC 3501 6.4.2)
		}
		return errReadOnly
	}
	var del []uint32
	err := s.forRecords(allIndexes(len(sel.uids)), func(_ int, m mailstate.MailMessage) error {
		if hasFlag(m.Flags, mailstate.FlagDeleted) && (uids == nil || uids.Contains(imap.UID(m.UID))) {
			del = append(del, m.UID)
		}
		return nil
	})
	if err != nil || len(del) == 0 {
		return imapErr(err)
	}
	c, cancel := ctx()
	defer cancel()
	_, idx, err := s.store().ExpungeIndex(c, s.user, sel.id, del)
	if err != nil {
		return imapErr(err)
	}
	// The EXPUNGE responses come from the Poll that follows the command,
	// in the apply order every session sees.
	return s.store().WaitEvents(c, idx)
}

func (s *session) Store(w *wire.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	s.touch()
	sel := s.mb
	if sel.readOnly {
		return errReadOnly
	}
	fl, err := storableFlags(flags.Flags)
	if err != nil {
		return err
	}
	if err := sel.checkSeq(numSet); err != nil {
		return err
	}
	idx := sel.resolve(numSet)
	if len(idx) == 0 {
		return nil
	}
	uids := make([]uint32, len(idx))
	for i, j := range idx {
		uids[i] = sel.uids[j]
	}
	op := map[imap.StoreFlagsOp]mailstate.MailStoreOp{imap.StoreFlagsAdd: mailstate.MailFlagsAdd, imap.StoreFlagsDel: mailstate.MailFlagsRemove, imap.StoreFlagsSet: mailstate.MailFlagsReplace}[flags.Op]
	var unchangedSince uint64
	if options != nil {
		unchangedSince = options.UnchangedSince
	}
	_, byUID := numSet.(imap.UIDSet)
	var modified imap.SeqSet // seq numbers or UIDs (RFC 7162 3.1.3)
	if unchangedSince == wire.UnchangedSinceZero {
		// Every message has a modseq above 0, so each one fails and
		// nothing is proposed.
		for i, j := range idx {
			if byUID {
				modified.AddNum(uids[i])
			} else {
				modified.AddNum(uint32(j + 1))
			}
		}
		return errModified(modified)
	}
	c, cancel := ctx()
	defer cancel()
	out, index, err := s.store().StoreFlagsUnchangedSince(c, s.user, sel.id, uids, op, fl, unchangedSince)
	if err != nil {
		return imapErr(err)
	}
	condStore := s.conn.Enabled(imap.CapCondStore)
	for _, o := range out {
		if o.Code == mailstate.MailOK && sel.addKeywords(o.Flags) {
			sel.keywordsUntold = true
		}
	}
	rev2 := s.rev2()
	for i, o := range out {
		if o.Code == mailstate.MailModified {
			if byUID {
				modified.AddNum(o.UID)
			} else {
				modified.AddNum(uint32(idx[i] + 1))
			}
			continue
		}
		if o.Code != mailstate.MailOK {
			continue
		}
		sel.report(o.UID, o.ModSeq, index)
		// A CONDSTORE client learns the new modseq even of a silent
		// STORE (RFC 7162 3.1.3).
		if flags.Silent && !(condStore && unchangedSince != 0) {
			continue
		}
		rw := w.CreateMessage(uint32(idx[i] + 1))
		if byUID {
			rw.WriteUID(imap.UID(o.UID))
		}
		if !flags.Silent {
			rw.WriteFlags(s.flagsOf(o.UID, o.Flags, rev2))
		}
		if condStore {
			rw.WriteModSeq(o.ModSeq)
		}
		if err := rw.Close(); err != nil {
			return err
		}
	}
	if len(modified) > 0 {
		return errModified(modified)
	}
	return nil
}

// errModified is the tagged OK of a STORE some messages of which failed
// their UNCHANGEDSINCE test (RFC 7162 3.1.3).
func errModified(set imap.SeqSet) error {
	return &imap.Error{Type: imap.StatusResponseTypeOK, Code: imap.ResponseCode("MODIFIED " + set.String()), Text: "Some messages changed since UNCHANGEDSINCE"}
}

func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	s.touch()
	return s.copy(numSet, dest, false)
}

func (s *session) Move(w *wire.MoveWriter, numSet imap.NumSet, dest string) error {
	s.touch()
	if s.mb.readOnly {
		return errReadOnly
	}
	dst, err := s.mailbox(dest)
	if err != nil {
		return no(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	if dst.ID == s.mb.id {
		return s.moveWithin(w, numSet)
	}
	data, err := s.copy(numSet, dest, true)
	if err != nil {
		return err
	}
	// The EXPUNGEs follow from the Poll after the command.
	return w.WriteCopyData(data)
}

// moveWithin moves messages to the mailbox they are in: new UIDs at the
// end, the old ones expunged (RFC 6851 allows it; clients use it to
// renumber). The metadata's move refuses one mailbox, so it is a copy then
// an expunge of the originals; if the expunge fails, the copies are
// expunged instead, so the mailbox is as before and the answer NO. The
// copies count against the quota until the originals go.
func (s *session) moveWithin(w *wire.MoveWriter, numSet imap.NumSet) error {
	sel := s.mb
	data, err := s.copy(numSet, sel.name, false)
	if err != nil || data == nil {
		return err
	}
	srcUIDs, _ := data.SourceUIDs.Nums()
	c, cancel := ctx()
	defer cancel()
	out, index, err := s.store().ExpungeIndex(c, s.user, sel.id, uidList(srcUIDs))
	if err == nil {
		for _, o := range out {
			if o.Code != mailstate.MailOK && o.Code != mailstate.MailNoMessage {
				err = fmt.Errorf("expunging message %d after copying it: %v", o.UID, o.Code)
				break
			}
		}
	}
	if err != nil {
		dstUIDs, _ := data.DestUIDs.Nums()
		uc, ucancel := context.WithTimeout(context.Background(), opTimeout)
		defer ucancel()
		if _, idx, uerr := s.store().ExpungeIndex(uc, s.user, sel.id, uidList(dstUIDs)); uerr != nil {
			s.srv.log.Error("imap: MOVE within a mailbox left copies behind", "user", s.user, "mailbox", sel.name, "copies", data.DestUIDs.String(), "err", uerr)
		} else {
			_ = s.store().WaitEvents(uc, idx)
		}
		return imapErr(err)
	}
	if err := s.store().WaitEvents(c, index); err != nil {
		return imapErr(err)
	}
	// The EXPUNGEs and EXISTS follow from the Poll after the command.
	return w.WriteCopyData(data)
}

func uidList(uids []imap.UID) []uint32 {
	out := make([]uint32, len(uids))
	for i, u := range uids {
		out[i] = uint32(u)
	}
	return out
}

func (s *session) copy(numSet imap.NumSet, dest string, move bool) (*imap.CopyData, error) {
	sel := s.mb
	dst, err := s.mailbox(dest)
	if err != nil {
		return nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	if move && dst.ID == sel.id {
		return nil, no(imap.ResponseCodeCannot, "Source and destination are the same mailbox")
	}
	if err := sel.checkSeq(numSet); err != nil {
		return nil, err
	}
	idx := sel.resolve(numSet)
	if len(idx) == 0 {
		return nil, nil
	}
	data := &imap.CopyData{UIDValidity: dst.UIDValidity}
	uids := make([]uint32, len(idx))
	for i, j := range idx {
		uids[i] = sel.uids[j]
	}
	c, cancel := ctx()
	defer cancel()
	out, index, err := s.store().Copy(c, s.user, sel.id, uids, dst.ID, move)
	if err != nil {
		return nil, imapErr(err)
	}
	for _, o := range out {
		if o.Code == mailstate.MailOK {
			data.SourceUIDs.AddNum(imap.UID(o.SrcUID))
			data.DestUIDs.AddNum(imap.UID(o.UID))
		}
	}
	if err := s.store().WaitEvents(c, index); err != nil {
		return nil, imapErr(err)
	}
	if len(data.SourceUIDs) == 0 {
		return nil, nil
	}
	return data, nil
}
