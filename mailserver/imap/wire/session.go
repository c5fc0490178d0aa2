package wire

import (
	"io"
	"time"

	"github.com/emersion/go-imap/v2"
)

// NumKind says whether a command's numbers are sequence numbers or UIDs.
type NumKind int

const (
	NumKindSeq NumKind = iota
	NumKindUID
)

// Session is the mailbox side of one connection. Mailbox names are UTF-8
// (decoded from modified UTF-7 here). A method returning an *imap.Error
// has it written as the tagged answer; any other error is a server fault.
// Methods run on the connection's goroutine, one at a time.
type Session interface {
	// Close ends the session (connection closed or LOGOUT).
	Close() error

	// Login checks a user's password (LOGIN, AUTHENTICATE PLAIN).
	Login(username, password string) error

	// Authenticated state.
	Namespace() (*imap.NamespaceData, error)
	Select(mailbox string, options *imap.SelectOptions) (*imap.SelectData, error)
	Create(mailbox string, options *imap.CreateOptions) error
	Delete(mailbox string) error
	Rename(mailbox, newName string) error
	Subscribe(mailbox string) error
	Unsubscribe(mailbox string) error
	List(w *ListWriter, ref string, patterns []string, options *imap.ListOptions) error
	Status(mailbox string, options *imap.StatusOptions) (*imap.StatusData, error)
	Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error)
	// Poll writes what changed in the selected mailbox; it runs after
	// every command in the selected state (allowExpunge false after
	// FETCH, STORE and SEARCH by sequence number) and for NOOP.
	Poll(w *UpdateWriter, allowExpunge bool) error
	// Idle starts IDLE and returns at once: until the next call into the
	// session, it may write updates through w from any goroutine.
	Idle(w *UpdateWriter) error

	// Selected state.
	Unselect() error
	// Expunge removes \Deleted messages (only those in uids if set); w is
	// nil for CLOSE, which tells the client nothing.
	Expunge(w *ExpungeWriter, uids *imap.UIDSet) error
	Search(kind NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error)
	Fetch(w *FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error
	Store(w *FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error
	Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error)
	Move(w *MoveWriter, numSet imap.NumSet, dest string) error
}

// ListWriter writes LIST (or LSUB) responses.
type ListWriter struct {
	c    *Conn
	lsub bool
}

// LSUB reports whether this is LSUB (RFC 3501 6.3.9), which lists the
// unsubscribed parents of subscribed mailboxes a "%" stops at, \Noselect.
func (w *ListWriter) LSUB() bool { return w.lsub }

// WriteList writes one mailbox, and its STATUS if data.Status is set.
func (w *ListWriter) WriteList(data *imap.ListData) error {
	e := w.c.lock()
	defer w.c.unlock()
	if w.lsub {
		e.raw("* LSUB (")
	} else {
		e.raw("* LIST (")
	}
	n := 0
	for _, a := range data.Attrs {
		if w.lsub {
			// LSUB knows \Noselect only (RFC 3501 7.2.3): a subscribed
			// name that does not exist is one.
			if a == imap.MailboxAttrNonExistent {
				a = imap.MailboxAttrNoSelect
			}
			if a != imap.MailboxAttrNoSelect {
				continue
			}
		}
		if n > 0 {
			e.sp()
		}
		n++
		e.raw(string(a))
	}
	e.raw(") ")
	if data.Delim == 0 {
		e.raw("NIL")
	} else {
		e.str(string(data.Delim))
	}
	e.sp().mailbox(data.Mailbox)
	if data.ChildInfo != nil && data.ChildInfo.Subscribed {
		e.raw(` ("CHILDINFO" ("SUBSCRIBED"))`)
	}
	e.crlf()
	if data.Status != nil {
		writeStatus(e, data.Status)
	}
	return nil
}

// UpdateWriter writes unilateral updates about the selected mailbox.
type UpdateWriter struct {
	c    *Conn
	push bool // outside a command (IDLE): flush each response
}

func (w *UpdateWriter) done() error {
	if w.push {
		w.c.nc.SetWriteDeadline(time.Now().Add(WriteTimeout))
	}
	w.c.unlock()
	if w.push {
		return w.c.flush()
	}
	return nil
}

// WriteNumMessages writes "* n EXISTS".
func (w *UpdateWriter) WriteNumMessages(n uint32) error {
	w.c.lock().raw("* ").num(n).raw(" EXISTS").crlf()
	return w.done()
}

// WriteNumRecent writes "* n RECENT" (not to IMAP4rev2 clients).
func (w *UpdateWriter) WriteNumRecent(n uint32) error {
	if w.c.Enabled(imap.CapIMAP4rev2) {
		return nil
	}
	w.c.lock().raw("* ").num(n).raw(" RECENT").crlf()
	return w.done()
}

// WriteExpunge writes "* seq EXPUNGE", or "* VANISHED uid" to a client
// that enabled QRESYNC (RFC 7162 3.2.10).
func (w *UpdateWriter) WriteExpunge(seq uint32, uid imap.UID) error {
	if w.c.Enabled(imap.CapQResync) {
		w.c.lock().raw("* VANISHED ").num(uint32(uid)).crlf()
	} else {
		w.c.lock().raw("* ").num(seq).raw(" EXPUNGE").crlf()
	}
	return w.done()
}

// WriteVanishedEarlier writes "* VANISHED (EARLIER) uids" (QRESYNC): UIDs
// the client may know of that are gone.
func (w *UpdateWriter) WriteVanishedEarlier(uids imap.UIDSet) error {
	if len(uids) == 0 {
		return nil
	}
	w.c.lock().raw("* VANISHED (EARLIER) ").raw(uids.String()).crlf()
	return w.done()
}

// WriteMessage writes a FETCH response of UID, FLAGS and MODSEQ (QRESYNC's
// changes since the client's modseq).
func (w *UpdateWriter) WriteMessage(seq uint32, uid imap.UID, flags []imap.Flag, modSeq uint64) error {
	w.c.lock().raw("* ").num(seq).raw(" FETCH (UID ").num(uint32(uid)).raw(" FLAGS ").flags(flags).
		raw(" MODSEQ (").unum64(modSeq).raw("))").crlf()
	return w.done()
}

// WriteMailboxFlags writes "* FLAGS (...)".
func (w *UpdateWriter) WriteMailboxFlags(flags []imap.Flag) error {
	w.c.lock().raw("* FLAGS ").flags(flags).crlf()
	return w.done()
}

// WriteMessageFlags writes a message's new flags; modSeq (0: none) is
// added for CONDSTORE clients.
func (w *UpdateWriter) WriteMessageFlags(seq uint32, uid imap.UID, flags []imap.Flag, modSeq uint64) error {
	cond := modSeq != 0 && w.c.Enabled(imap.CapCondStore)
	e := w.c.lock().raw("* ").num(seq).raw(" FETCH (UID ").num(uint32(uid)).raw(" FLAGS ").flags(flags)
	if cond {
		e.raw(" MODSEQ (").unum64(modSeq).raw(")")
	}
	e.raw(")").crlf()
	return w.done()
}

// ExpungeWriter writes the EXPUNGE responses of EXPUNGE.
type ExpungeWriter struct{ c *Conn }

func (w *ExpungeWriter) WriteExpunge(seq uint32) error {
	w.c.lock().raw("* ").num(seq).raw(" EXPUNGE").crlf()
	w.c.unlock()
	return nil
}

// MoveWriter writes MOVE's COPYUID and EXPUNGE responses.
type MoveWriter struct{ c *Conn }

func (w *MoveWriter) WriteCopyData(d *imap.CopyData) error {
	if d == nil {
		return nil
	}
	w.c.lock().raw("* OK [COPYUID ").num(d.UIDValidity).sp().raw(d.SourceUIDs.String()).sp().raw(d.DestUIDs.String()).raw("] Moved").crlf()
	w.c.unlock()
	return nil
}

func (w *MoveWriter) WriteExpunge(seq uint32) error {
	w.c.lock().raw("* ").num(seq).raw(" EXPUNGE").crlf()
	w.c.unlock()
	return nil
}

// FetchWriter writes FETCH responses.
type FetchWriter struct {
	c        *Conn
	opts     *imap.FetchOptions
	names    map[any]string // RFC822, RFC822.HEADER, RFC822.TEXT items
	vanished bool
}

// Vanished reports whether a UID FETCH asked (CHANGEDSINCE n VANISHED):
// the UIDs of its set that are gone are to be written first with
// WriteVanishedEarlier (QRESYNC, RFC 7162 3.2.6).
func (w *FetchWriter) Vanished() bool { return w.vanished }

// WriteVanishedEarlier writes "* VANISHED (EARLIER) uids".
func (w *FetchWriter) WriteVanishedEarlier(uids imap.UIDSet) error {
	return (&UpdateWriter{c: w.c}).WriteVanishedEarlier(uids)
}

// CreateMessage starts "* seq FETCH (": nothing else may be written until
// the returned writer is closed.
func (w *FetchWriter) CreateMessage(seq uint32) *FetchResponseWriter {
	e := w.c.lock()
	e.raw("* ").num(seq).raw(" FETCH (")
	return &FetchResponseWriter{w: w, e: e}
}

// FetchResponseWriter writes the items of one FETCH response.
type FetchResponseWriter struct {
	w      *FetchWriter
	e      *enc
	n      int
	closed bool
}

func (rw *FetchResponseWriter) item(name string) *enc {
	if rw.n > 0 {
		rw.e.sp()
	}
	rw.n++
	return rw.e.raw(name)
}

func (rw *FetchResponseWriter) WriteUID(uid imap.UID) { rw.item("UID ").num(uint32(uid)) }
func (rw *FetchResponseWriter) WriteFlags(flags []imap.Flag) {
	rw.item("FLAGS ").flags(flags)
}
func (rw *FetchResponseWriter) WriteRFC822Size(n int64) { rw.item("RFC822.SIZE ").num64(n) }
func (rw *FetchResponseWriter) WriteInternalDate(t time.Time) {
	rw.item("INTERNALDATE ").dateTime(t)
}
func (rw *FetchResponseWriter) WriteEnvelope(env *imap.Envelope) {
	rw.item("ENVELOPE ").envelope(env)
}
func (rw *FetchResponseWriter) WriteModSeq(n uint64) { rw.item("MODSEQ (").unum64(n).raw(")") }

// WriteBodyStructure writes BODYSTRUCTURE, or BODY when the client asked
// for that (no extension data).
func (rw *FetchResponseWriter) WriteBodyStructure(bs imap.BodyStructure) {
	ext := rw.w.opts.BodyStructure == nil || rw.w.opts.BodyStructure.Extended
	if ext {
		rw.item("BODYSTRUCTURE ")
	} else {
		rw.item("BODY ")
	}
	rw.e.bodyStructure(bs, ext)
}

// WriteBodySection writes the name and literal header of a BODY[...] item;
// the caller writes exactly size bytes, then closes.
func (rw *FetchResponseWriter) WriteBodySection(bs *imap.FetchItemBodySection, size int64) io.WriteCloser {
	if name, ok := rw.w.names[bs]; ok {
		rw.item(name)
	} else {
		rw.item("BODY").section(bs.Part, bs.Specifier, bs.HeaderFields, bs.HeaderFieldsNot)
		if bs.Partial != nil {
			rw.e.raw("<").num64(bs.Partial.Offset).raw(">")
		}
	}
	rw.e.raw(" {").num64(size).raw("}\r\n")
	return nopCloser{rw.e.w}
}

// WriteBinarySection is WriteBodySection for BINARY[...] (a literal8).
func (rw *FetchResponseWriter) WriteBinarySection(bs *imap.FetchItemBinarySection, size int64) io.WriteCloser {
	rw.item("BINARY").section(bs.Part, "", nil, nil)
	if bs.Partial != nil {
		rw.e.raw("<").num64(bs.Partial.Offset).raw(">")
	}
	rw.e.raw(" ~{").num64(size).raw("}\r\n")
	return nopCloser{rw.e.w}
}

func (rw *FetchResponseWriter) WriteBinarySectionSize(bs *imap.FetchItemBinarySectionSize, size uint32) {
	rw.item("BINARY.SIZE").section(bs.Part, "", nil, nil)
	rw.e.sp().num(size)
}

// Close ends the response.
func (rw *FetchResponseWriter) Close() error {
	if rw.closed {
		return nil
	}
	rw.closed = true
	rw.e.raw(")").crlf()
	rw.w.c.unlock()
	return nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func writeStatus(e *enc, d *imap.StatusData) {
	e.raw("* STATUS ").mailbox(d.Mailbox).raw(" (")
	n := 0
	item := func(name string) *enc {
		if n > 0 {
			e.sp()
		}
		n++
		return e.raw(name).sp()
	}
	if d.NumMessages != nil {
		item("MESSAGES").num(*d.NumMessages)
	}
	if d.NumRecent != nil {
		item("RECENT").num(*d.NumRecent)
	}
	if d.UIDNext != 0 {
		item("UIDNEXT").num(uint32(d.UIDNext))
	}
	if d.UIDValidity != 0 {
		item("UIDVALIDITY").num(d.UIDValidity)
	}
	if d.NumUnseen != nil {
		item("UNSEEN").num(*d.NumUnseen)
	}
	if d.NumDeleted != nil {
		item("DELETED").num(*d.NumDeleted)
	}
	if d.Size != nil {
		item("SIZE").num64(*d.Size)
	}
	if d.AppendLimit != nil {
		item("APPENDLIMIT").num(*d.AppendLimit)
	}
	if d.DeletedStorage != nil {
		item("DELETED-STORAGE").num64(*d.DeletedStorage)
	}
	if d.HighestModSeq != 0 {
		item("HIGHESTMODSEQ").unum64(d.HighestModSeq)
	}
	e.raw(")").crlf()
}

// QuotaResource is one resource of a quota root (RFC 9208), in the
// resource's unit (KiB for STORAGE).
type QuotaResource struct {
	Name         string // "STORAGE", "MESSAGE"...
	Usage, Limit int64
}

// SessionQuota is implemented by sessions that report quotas (QUOTA, RFC
// 9208); the server offers QUOTA only then. Quotas are read-only here:
// SETQUOTA is refused NO [NOPERM].
type SessionQuota interface {
	// QuotaRoots returns the quota roots of a mailbox (none: no quota).
	QuotaRoots(mailbox string) ([]string, error)
	// Quota returns the resources of a quota root.
	Quota(root string) ([]QuotaResource, error)
}

// QResync is the QRESYNC parameter of SELECT (RFC 7162 3.2.5).
type QResync struct {
	UIDValidity uint32
	ModSeq      uint64
	KnownUIDs   imap.UIDSet // nil: all UIDs below UIDNEXT
}

// SessionQResync is implemented by sessions that resynchronize quickly
// (QRESYNC); the server offers it only then.
type SessionQResync interface {
	// SelectQResync runs after a successful SELECT with a QRESYNC
	// parameter: with a matching UIDVALIDITY, it writes VANISHED
	// (EARLIER) for the known UIDs that are gone and the UID, FLAGS and
	// MODSEQ of the messages changed since ModSeq.
	SelectQResync(w *UpdateWriter, q *QResync) error
}

// SessionUnauthenticate is implemented by sessions that can go back to
// the not authenticated state (UNAUTHENTICATE, RFC 8437); the server
// offers it only then.
type SessionUnauthenticate interface {
	// Unauthenticate forgets the user, and the selected mailbox without
	// expunging it; the client may log in again, as anyone.
	Unauthenticate() error
}
