package wire

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

const unknownCommand = "Unknown command"

// ErrAuthFailed is what Login returns for a wrong name or password.
var ErrAuthFailed = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "Invalid credentials"}

// ok is a tagged OK with a response code, returned by handlers like an
// error (answer writes it after the Poll).
func ok(code imap.ResponseCode, text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeOK, Code: code, Text: text}
}

func (c *Conn) need(st imap.ConnState) error {
	switch {
	case c.state == imap.ConnStateNotAuthenticated && st != imap.ConnStateNotAuthenticated:
		return bad("Log in first")
	case st == imap.ConnStateNotAuthenticated && c.state != st:
		return bad("Already logged in")
	case st == imap.ConnStateSelected && c.state != st:
		return bad("No mailbox selected")
	}
	return nil
}

// mailboxArg reads a mailbox name: modified UTF-7 decoded (unless
// IMAP4rev2), INBOX in any case is INBOX.
func (c *Conn) mailboxArg(d *decoder) (string, error) {
	s, err := d.astring()
	if err != nil {
		return "", err
	}
	return c.mailboxName(s)
}

func (c *Conn) mailboxName(s string) (string, error) {
	if !c.rev2.Load() {
		var err error
		if s, err = decodeUTF7(s); err != nil {
			return "", bad("%v", err)
		}
	}
	if strings.EqualFold(s, "INBOX") {
		s = "INBOX"
	}
	return s, nil
}

func (c *Conn) dispatch(d *decoder, tag, name string, uid bool) (err error) {
	// A Poll after every command once logged in (SELECT included: the
	// backend counts on one after each command that reached it, to tell
	// a NOOP that did not, which then catches up with the cluster).
	poll, allowExpunge := true, true
	switch name {
	case "LOGIN", "AUTHENTICATE", "STARTTLS", "LOGOUT", "ID", "IDLE":
		poll = false
	}
	defer func() {
		if !poll || c.state != imap.ConnStateSelected && c.state != imap.ConnStateAuthenticated {
			return
		}
		if _, isProto := err.(*protoError); isProto {
			return
		}
		if perr := c.sess.Poll(&UpdateWriter{c: c}, allowExpunge); perr != nil && err == nil {
			err = perr
		}
	}()
	kind := NumKindSeq
	if uid {
		kind = NumKindUID
	}
	switch name {
	case "CAPABILITY":
		if err := d.end(); err != nil {
			return err
		}
		c.writeLine("* CAPABILITY " + strings.Join(c.caps(), " "))
		return nil
	case "NOOP", "CHECK":
		if err := d.end(); err != nil {
			return err
		}
		if name == "CHECK" {
			if err := c.need(imap.ConnStateSelected); err != nil {
				return err
			}
		}
		return nil
	case "LOGOUT":
		if err := d.end(); err != nil {
			return err
		}
		c.writeLine("* BYE Logging out")
		c.writeLine(tag + " OK LOGOUT completed")
		c.state = imap.ConnStateLogout
		return errDone
	case "ID":
		return c.id(d)
	case "STARTTLS":
		return c.startTLS(d, tag)
	case "LOGIN":
		if err := c.need(imap.ConnStateNotAuthenticated); err != nil {
			return err
		}
		if err := d.sp(); err != nil {
			return err
		}
		user, err := d.astring()
		if err != nil {
			return err
		}
		if err := d.sp(); err != nil {
			return err
		}
		pass, err := d.astring()
		if err != nil {
			return err
		}
		if err := d.end(); err != nil {
			return err
		}
		return c.login(user, pass)
	case "AUTHENTICATE":
		return c.authenticate(d)
	case "ENABLE":
		return c.enable(d)
	case "UNAUTHENTICATE":
		su, okU := c.sess.(SessionUnauthenticate)
		if !okU {
			break
		}
		if err := c.need(imap.ConnStateAuthenticated); err != nil && c.state != imap.ConnStateSelected {
			return err
		}
		if err := d.end(); err != nil {
			return err
		}
		if err := su.Unauthenticate(); err != nil {
			return err
		}
		// RFC 8437 3: back to the state after the greeting (TLS stays):
		// what was ENABLEd is forgotten.
		c.state = imap.ConnStateNotAuthenticated
		c.emu.Lock()
		c.enabled = nil
		c.rev2.Store(false)
		c.emu.Unlock()
		return nil
	}

	if c.state == imap.ConnStateNotAuthenticated {
		switch name {
		case "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS",
			"APPEND", "NAMESPACE", "IDLE", "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "CLOSE", "SORT", "THREAD", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE":
			return bad("Log in first")
		}
		return bad(unknownCommand)
	}

	switch name {
	case "SELECT", "EXAMINE":
		return c.selectCmd(d, name == "EXAMINE")
	case "CREATE":
		if err := d.sp(); err != nil {
			return err
		}
		mb, err := c.mailboxArg(d)
		if err != nil {
			return err
		}
		opts := &imap.CreateOptions{}
		if d.peek() == ' ' {
			d.pos++
			err := d.list(false, func() error {
				a, err := d.atom()
				if err != nil {
					return err
				}
				if !strings.EqualFold(a, "USE") {
					return bad("Unknown CREATE parameter %s", a)
				}
				if err := d.sp(); err != nil {
					return err
				}
				fl, err := d.flagList()
				for _, f := range fl {
					opts.SpecialUse = append(opts.SpecialUse, imap.MailboxAttr(f))
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		if err := d.end(); err != nil {
			return err
		}
		return c.sess.Create(mb, opts)
	case "DELETE", "SUBSCRIBE", "UNSUBSCRIBE":
		if err := d.sp(); err != nil {
			return err
		}
		mb, err := c.mailboxArg(d)
		if err != nil {
			return err
		}
		if err := d.end(); err != nil {
			return err
		}
		switch name {
		case "DELETE":
			return c.sess.Delete(mb)
		case "SUBSCRIBE":
			return c.sess.Subscribe(mb)
		}
		return c.sess.Unsubscribe(mb)
	case "RENAME":
		if err := d.sp(); err != nil {
			return err
		}
		from, err := c.mailboxArg(d)
		if err != nil {
			return err
		}
		if err := d.sp(); err != nil {
			return err
		}
		to, err := c.mailboxArg(d)
		if err != nil {
			return err
		}
		if err := d.end(); err != nil {
			return err
		}
		return c.sess.Rename(from, to)
	case "LIST", "LSUB":
		return c.list(d, name == "LSUB")
	case "STATUS":
		return c.status(d)
	case "APPEND":
		return c.appendCmd(d)
	case "NAMESPACE":
		if err := d.end(); err != nil {
			return err
		}
		ns, err := c.sess.Namespace()
		if err != nil {
			return err
		}
		e := c.lock().raw("* NAMESPACE")
		for _, l := range [][]imap.NamespaceDescriptor{ns.Personal, ns.Other, ns.Shared} {
			e.sp()
			if len(l) == 0 {
				e.raw("NIL")
				continue
			}
			e.raw("(")
			for _, n := range l {
				e.raw("(").str(n.Prefix).sp()
				if n.Delim == 0 {
					e.raw("NIL")
				} else {
					e.str(string(n.Delim))
				}
				e.raw(")")
			}
			e.raw(")")
		}
		e.crlf()
		c.unlock()
		return nil
	case "IDLE":
		return c.idle(d)
	case "GETQUOTA", "GETQUOTAROOT", "SETQUOTA":
		q, okq := c.sess.(SessionQuota)
		if !okq {
			return bad(unknownCommand)
		}
		return c.quota(d, q, name)
	}

	if err := c.need(imap.ConnStateSelected); err != nil {
		if name == "CLOSE" || name == "UNSELECT" || name == "EXPUNGE" || name == "SEARCH" || name == "FETCH" ||
			name == "STORE" || name == "COPY" || name == "MOVE" || name == "SORT" || name == "THREAD" {
			return err
		}
		return bad(unknownCommand)
	}
	switch name {
	case "CLOSE", "UNSELECT":
		if err := d.end(); err != nil {
			return err
		}
		if name == "CLOSE" {
			if err := c.sess.Expunge(nil, nil); err != nil {
				return err
			}
		}
		c.state = imap.ConnStateAuthenticated
		return c.sess.Unselect()
	case "EXPUNGE":
		var uids *imap.UIDSet
		if uid {
			if err := d.sp(); err != nil {
				return err
			}
			set, err := d.numSet(true)
			if err != nil {
				return err
			}
			u := set.(imap.UIDSet)
			uids = &u
		}
		if err := d.end(); err != nil {
			return err
		}
		return c.sess.Expunge(&ExpungeWriter{c: c}, uids)
	case "SEARCH":
		allowExpunge = uid
		return c.search(d, tag, kind)
	case "SORT", "THREAD":
		ss, okSort := c.sess.(SessionSort)
		if !okSort {
			return bad(unknownCommand)
		}
		allowExpunge = uid
		if name == "SORT" {
			return c.sortCmd(d, ss, kind)
		}
		return c.threadCmd(d, ss, kind)
	case "FETCH":
		allowExpunge = uid
		return c.fetch(d, uid)
	case "STORE":
		allowExpunge = uid
		return c.store(d, uid)
	case "COPY", "MOVE":
		if err := d.sp(); err != nil {
			return err
		}
		set, err := d.numSet(uid)
		if err != nil {
			return err
		}
		if err := d.sp(); err != nil {
			return err
		}
		dest, err := c.mailboxArg(d)
		if err != nil {
			return err
		}
		if err := d.end(); err != nil {
			return err
		}
		if name == "MOVE" {
			return c.sess.Move(&MoveWriter{c: c}, set, dest)
		}
		data, err := c.sess.Copy(set, dest)
		if err != nil {
			return err
		}
		if data == nil {
			return ok("", "COPY completed (no messages)")
		}
		return ok(imap.ResponseCode("COPYUID "+uitoa(data.UIDValidity)+" "+data.SourceUIDs.String()+" "+data.DestUIDs.String()), "COPY completed")
	}
	return bad(unknownCommand)
}

func uitoa(n uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func (c *Conn) id(d *decoder) error {
	if err := d.sp(); err != nil {
		return err
	}
	if d.peek() == '(' {
		n := 0
		err := d.list(false, func() error {
			if _, err := d.str(); err != nil {
				return err
			}
			if err := d.sp(); err != nil {
				return err
			}
			n++
			if n > 30 {
				return bad("Too many ID fields (at most 30)")
			}
			_, _, err := d.nstringOrNil()
			return err
		})
		if err != nil {
			return err
		}
	} else if a, err := d.atom(); err != nil || !strings.EqualFold(a, "NIL") {
		return bad("ID wants NIL or a list of fields")
	}
	if err := d.end(); err != nil {
		return err
	}
	c.writeLine(`* ID ("name" "hastore")`)
	return nil
}

func (c *Conn) startTLS(d *decoder, tag string) error {
	if err := c.need(imap.ConnStateNotAuthenticated); err != nil {
		return err
	}
	if err := d.end(); err != nil {
		return err
	}
	if c.tls || c.srv.opts.TLS == nil {
		return &imap.Error{Type: imap.StatusResponseTypeBad, Text: "STARTTLS not available"}
	}
	c.writeLine(tag + " OK Begin TLS negotiation now")
	if err := c.flush(); err != nil {
		return err
	}
	c.lr.discardBuffered() // anything sent before the handshake is not trusted
	tc := tls.Server(c.nc, c.srv.opts.TLS)
	c.nc.SetDeadline(time.Now().Add(CommandTimeout))
	if err := tc.Handshake(); err != nil {
		return io.ErrUnexpectedEOF
	}
	c.nc.SetDeadline(time.Time{})
	c.wmu.Lock()
	c.nc = tc
	c.wmu.Unlock()
	c.lr.src = tc
	c.tls = true
	return errDone
}

func (c *Conn) login(user, pass string) error {
	if !c.tls && !c.srv.opts.InsecureAuth {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired, Text: "TLS is required to log in (STARTTLS)"}
	}
	if err := c.sess.Login(user, pass); err != nil {
		return err
	}
	c.state = imap.ConnStateAuthenticated
	return ok(imap.ResponseCode("CAPABILITY "+strings.Join(c.caps(), " ")), "Logged in")
}

func (c *Conn) authenticate(d *decoder) error {
	if err := c.need(imap.ConnStateNotAuthenticated); err != nil {
		return err
	}
	if err := d.sp(); err != nil {
		return err
	}
	mech, err := d.atom()
	if err != nil {
		return err
	}
	var ir string
	hasIR := false
	if d.peek() == ' ' {
		d.pos++
		if ir, err = d.atom(); err != nil {
			return err
		}
		hasIR = true
	}
	if err := d.end(); err != nil {
		return err
	}
	if !strings.EqualFold(mech, "PLAIN") {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Unsupported mechanism (PLAIN only)"}
	}
	if !c.tls && !c.srv.opts.InsecureAuth {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired, Text: "TLS is required to log in (STARTTLS)"}
	}
	if !hasIR {
		c.writeLine("+ ")
		if err := c.flush(); err != nil {
			return err
		}
		line, err := c.lr.readLine(nil, MaxLine)
		if err == errLineTooLong {
			return bad("Response too long")
		}
		if err != nil {
			return err
		}
		ir = string(line)
		if ir == "*" {
			return bad("AUTHENTICATE cancelled")
		}
	}
	var raw []byte
	if ir != "=" {
		if raw, err = base64.StdEncoding.DecodeString(ir); err != nil {
			return bad("Invalid base64 in AUTHENTICATE")
		}
	}
	parts := bytes.Split(raw, []byte{0})
	if len(parts) != 3 {
		return bad("Invalid PLAIN response")
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if authz != "" && !strings.EqualFold(authz, user) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthorizationFailed, Text: "Cannot act as another user"}
	}
	return c.login(user, pass)
}

func (c *Conn) enable(d *decoder) error {
	if err := c.need(imap.ConnStateAuthenticated); err != nil && c.state != imap.ConnStateSelected {
		return err
	}
	var caps []imap.Cap
	for d.peek() == ' ' {
		d.pos++
		a, err := d.atom()
		if err != nil {
			return err
		}
		cp := imap.Cap(strings.ToUpper(a))
		for known := range enabler {
			if strings.EqualFold(string(known), a) {
				cp = known // names are case-insensitive; ours are spelt as CAPABILITY lists them
			}
		}
		caps = append(caps, cp)
	}
	if len(caps) == 0 {
		return bad("ENABLE needs a capability")
	}
	if err := d.end(); err != nil {
		return err
	}
	var done []string
	for _, cp := range caps {
		if c.offered(cp) && c.enableCap(cp) {
			done = append(done, string(cp))
		}
		if cp == imap.CapQResync && c.offered(cp) {
			c.enableCap(imap.CapCondStore) // QRESYNC implies it (RFC 7162 3.2.3)
		}
	}
	c.writeLine(strings.TrimSpace("* ENABLED " + strings.Join(done, " ")))
	return nil
}

// enabler is what ENABLE can turn on.
var enabler = map[imap.Cap]bool{imap.CapIMAP4rev2: true, imap.CapCondStore: true, imap.CapQResync: true}

func (c *Conn) offered(cp imap.Cap) bool {
	if !enabler[cp] {
		return false
	}
	for _, s := range c.caps() {
		if imap.Cap(s) == cp {
			return true
		}
	}
	return false
}

// enableCap turns cp on; false if it already was.
func (c *Conn) enableCap(cp imap.Cap) bool {
	c.emu.Lock()
	defer c.emu.Unlock()
	if _, on := c.enabled[cp]; on {
		return false
	}
	if c.enabled == nil {
		c.enabled = imap.CapSet{}
	}
	c.enabled[cp] = struct{}{}
	if cp == imap.CapIMAP4rev2 {
		c.rev2.Store(true)
	}
	return true
}

func (c *Conn) selectCmd(d *decoder, readOnly bool) error {
	if err := d.sp(); err != nil {
		return err
	}
	mb, err := c.mailboxArg(d)
	if err != nil {
		return err
	}
	opts := &imap.SelectOptions{ReadOnly: readOnly}
	var qr *QResync
	if d.peek() == ' ' {
		d.pos++
		err := d.list(false, func() error {
			a, err := d.atom()
			if err != nil {
				return err
			}
			switch {
			case strings.EqualFold(a, "CONDSTORE") && c.offered(imap.CapCondStore):
				opts.CondStore = true
				return nil
			case strings.EqualFold(a, "QRESYNC") && c.Enabled(imap.CapQResync):
				qr, err = d.qresyncParam()
				return err
			}
			return bad("Unknown SELECT parameter %s", a)
		})
		if err != nil {
			return err
		}
	}
	if err := d.end(); err != nil {
		return err
	}
	if opts.CondStore {
		c.enableCap(imap.CapCondStore)
	}
	if c.state == imap.ConnStateSelected {
		c.state = imap.ConnStateAuthenticated // even if this SELECT fails
		if c.Enabled(imap.CapQResync) || c.rev2.Load() {
			c.writeLine("* OK [CLOSED] Previous mailbox closed")
		}
	}
	data, err := c.sess.Select(mb, opts)
	if err != nil {
		return err
	}
	c.state = imap.ConnStateSelected
	rev2 := c.rev2.Load()
	e := c.lock()
	e.raw("* FLAGS ").flags(data.Flags).crlf()
	e.raw("* OK [PERMANENTFLAGS ").flags(data.PermanentFlags).raw("] Flags permitted").crlf()
	e.raw("* ").num(data.NumMessages).raw(" EXISTS").crlf()
	if !rev2 {
		e.raw("* ").num(data.NumRecent).raw(" RECENT").crlf()
		if data.FirstUnseenSeqNum != 0 {
			e.raw("* OK [UNSEEN ").num(data.FirstUnseenSeqNum).raw("] First unseen").crlf()
		}
	}
	e.raw("* OK [UIDVALIDITY ").num(data.UIDValidity).raw("] UIDs valid").crlf()
	e.raw("* OK [UIDNEXT ").num(uint32(data.UIDNext)).raw("] Predicted next UID").crlf()
	c.unlock()
	// With every SELECT once CONDSTORE is offered (RFC 7162 3.1.2.1).
	if data.HighestModSeq != 0 {
		c.lock().raw("* OK [HIGHESTMODSEQ ").unum64(data.HighestModSeq).raw("] Highest").crlf()
		c.unlock()
	} else if c.Enabled(imap.CapCondStore) {
		c.lock().raw("* OK [NOMODSEQ] No modseqs").crlf()
		c.unlock()
	}
	if qr != nil {
		if qs, okq := c.sess.(SessionQResync); okq {
			if err := qs.SelectQResync(&UpdateWriter{c: c}, qr); err != nil {
				return err
			}
		}
	}
	if readOnly {
		return ok("READ-ONLY", "EXAMINE completed")
	}
	return ok("READ-WRITE", "SELECT completed")
}

func (c *Conn) idle(d *decoder) error {
	if err := d.end(); err != nil {
		return err
	}
	c.writeLine("+ idling")
	if err := c.flush(); err != nil {
		return err
	}
	if err := c.sess.Idle(&UpdateWriter{c: c, push: true}); err != nil {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	if !c.startWait(time.Now().Add(c.srv.opts.IdleTimeout)) {
		c.sayEnd()
		return errEnded
	}
	err := c.lr.wait()
	if c.endWait() != "" {
		c.sayEnd()
		return errEnded
	}
	if err != nil {
		return err
	}
	c.setWriteDeadline() // IDLE may have lasted longer than WriteTimeout
	line, err := c.lr.readLine(nil, MaxLine)
	if err != nil && err != errLineTooLong {
		return err
	}
	perr := c.sess.Poll(&UpdateWriter{c: c}, true) // ends IDLE
	if err == errLineTooLong || !strings.EqualFold(string(line), "DONE") {
		return bad("Expected DONE to end IDLE")
	}
	return perr
}

func (c *Conn) quota(d *decoder, q SessionQuota, name string) error {
	if name == "SETQUOTA" {
		return &protoError{typ: imap.StatusResponseTypeNo, code: imap.ResponseCodeNoPerm, text: "Quotas are set by the administrator"}
	}
	if err := d.sp(); err != nil {
		return err
	}
	var roots []string
	writeQuota := func(root string) error {
		res, err := q.Quota(root)
		if err != nil {
			return err
		}
		e := c.lock().raw("* QUOTA ").astrOrEmpty(root).raw(" (")
		for i, r := range res {
			if i > 0 {
				e.sp()
			}
			e.raw(r.Name).sp().num64(r.Usage).sp().num64(r.Limit)
		}
		e.raw(")").crlf()
		c.unlock()
		return nil
	}
	if name == "GETQUOTA" {
		root, err := d.astring()
		if err != nil {
			return err
		}
		if err := d.end(); err != nil {
			return err
		}
		return writeQuota(root)
	}
	mb, err := c.mailboxArg(d)
	if err != nil {
		return err
	}
	if err := d.end(); err != nil {
		return err
	}
	if roots, err = q.QuotaRoots(mb); err != nil {
		return err
	}
	e := c.lock().raw("* QUOTAROOT ").mailbox(mb)
	for _, r := range roots {
		e.sp().astrOrEmpty(r)
	}
	e.crlf()
	c.unlock()
	for _, r := range roots {
		if err := writeQuota(r); err != nil {
			return err
		}
	}
	return nil
}

// qresyncParam parses SELECT's "(uidvalidity modseq [known-uids
// [(seq-match-data)]])" (the sequence match data is read and not used).
func (d *decoder) qresyncParam() (*QResync, error) {
	if err := d.sp(); err != nil {
		return nil, err
	}
	if err := d.expect('(', "("); err != nil {
		return nil, err
	}
	q := &QResync{}
	var err error
	if q.UIDValidity, err = d.number(); err != nil {
		return nil, err
	}
	if err := d.sp(); err != nil {
		return nil, err
	}
	if q.ModSeq, err = d.number64(); err != nil {
		return nil, err
	}
	if d.peek() == ' ' {
		d.pos++
		if d.peek() != '(' {
			set, err := d.numSet(true)
			if err != nil {
				return nil, err
			}
			if imap.IsSearchRes(set) {
				return nil, bad("$ is not a known-uids set")
			}
			q.KnownUIDs = set.(imap.UIDSet)
			if d.peek() == ' ' {
				d.pos++
			}
		}
		if d.peek() == '(' {
			d.pos++
			for i := 0; i < 2; i++ {
				if i > 0 {
					if err := d.sp(); err != nil {
						return nil, err
					}
				}
				if _, err := d.numSet(i == 1); err != nil {
					return nil, err
				}
			}
			if err := d.expect(')', ")"); err != nil {
				return nil, err
			}
		}
	}
	if err := d.expect(')', ")"); err != nil {
		return nil, err
	}
	return q, nil
}
