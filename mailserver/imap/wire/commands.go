package wire

import (
	"io"
	"math"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// maxWildcards bounds the wildcards of a LIST pattern (matching is
// exponential in them).
const maxWildcards = 8

func (c *Conn) list(d *decoder, lsub bool) error {
	opts := &imap.ListOptions{}
	if err := d.sp(); err != nil {
		return err
	}
	if !lsub && d.peek() == '(' {
		err := d.list(true, func() error {
			a, err := d.atom()
			switch strings.ToUpper(a) {
			case "SUBSCRIBED":
				opts.SelectSubscribed = true
			case "REMOTE":
				opts.SelectRemote = true
			case "RECURSIVEMATCH":
				opts.SelectRecursiveMatch = true
			case "SPECIAL-USE":
				opts.SelectSpecialUse = true
			default:
				if err == nil {
					err = bad("Unknown LIST selection option %s", a)
				}
			}
			return err
		})
		if err != nil {
			return err
		}
		if opts.SelectRecursiveMatch && !opts.SelectSubscribed {
			return bad("RECURSIVEMATCH needs another selection option")
		}
		if err := d.sp(); err != nil {
			return err
		}
	}
	ref, err := d.astringOrEmpty()
	if err != nil {
		return err
	}
	if ref, err = c.mailboxNameKeepCase(ref); err != nil {
		return err
	}
	if err := d.sp(); err != nil {
		return err
	}
	var patterns []string
	pattern := func() error {
		p, err := d.listMailbox()
		if err != nil {
			return err
		}
		if strings.Count(p, "*")+strings.Count(p, "%") > maxWildcards {
			return bad("Too many wildcards in a LIST pattern (at most %d)", maxWildcards)
		}
		if p, err = c.mailboxNameKeepCase(p); err != nil {
			return err
		}
		patterns = append(patterns, p)
		return nil
	}
	if !lsub && d.peek() == '(' {
		if err := d.list(false, pattern); err != nil {
			return err
		}
	} else if err := pattern(); err != nil {
		return err
	}
	if !lsub && d.peek() == ' ' {
		d.pos++
		a, err := d.atom()
		if err != nil {
			return err
		}
		if !strings.EqualFold(a, "RETURN") {
			return bad("Expected RETURN, got %s", a)
		}
		if err := d.sp(); err != nil {
			return err
		}
		err = d.list(true, func() error {
			a, err := d.atom()
			if err != nil {
				return err
			}
			switch strings.ToUpper(a) {
			case "SUBSCRIBED":
				opts.ReturnSubscribed = true
			case "CHILDREN":
				opts.ReturnChildren = true
			case "SPECIAL-USE":
				opts.ReturnSpecialUse = true
			case "STATUS":
				if err := d.sp(); err != nil {
					return err
				}
				so, err := d.statusItems()
				opts.ReturnStatus = so
				return err
			default:
				return bad("Unknown LIST return option %s", a)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := d.end(); err != nil {
		return err
	}
	if lsub {
		opts.SelectSubscribed = true
	}
	return c.sess.List(&ListWriter{c: c, lsub: lsub}, ref, patterns, opts)
}

// astringOrEmpty is an astring that may be "" (quoted).
func (d *decoder) astringOrEmpty() (string, error) { return d.astring() }

// mailboxNameKeepCase decodes a name or pattern without turning "inbox"
// into INBOX (the session matches INBOX without case itself).
func (c *Conn) mailboxNameKeepCase(s string) (string, error) {
	if c.rev2.Load() {
		return s, nil
	}
	out, err := decodeUTF7(s)
	if err != nil {
		return "", bad("%v", err)
	}
	return out, nil
}

func (d *decoder) statusItems() (*imap.StatusOptions, error) {
	o := &imap.StatusOptions{}
	err := d.list(false, func() error {
		a, err := d.atom()
		if err != nil {
			return err
		}
		switch strings.ToUpper(a) {
		case "MESSAGES":
			o.NumMessages = true
		case "RECENT":
			o.NumRecent = true
		case "UIDNEXT":
			o.UIDNext = true
		case "UIDVALIDITY":
			o.UIDValidity = true
		case "UNSEEN":
			o.NumUnseen = true
		case "DELETED":
			o.NumDeleted = true
		case "SIZE":
			o.Size = true
		case "APPENDLIMIT":
			o.AppendLimit = true
		case "HIGHESTMODSEQ":
			o.HighestModSeq = true
		case "DELETED-STORAGE":
			o.DeletedStorage = true
		default:
			return bad("Unknown STATUS item %s", a)
		}
		return nil
	})
	return o, err
}

func (c *Conn) status(d *decoder) error {
	if err := d.sp(); err != nil {
		return err
	}
	mb, err := c.mailboxArg(d)
	if err != nil {
		return err
	}
	if err := d.sp(); err != nil {
		return err
	}
	opts, err := d.statusItems()
	if err != nil {
		return err
	}
	if err := d.end(); err != nil {
		return err
	}
	if opts.HighestModSeq {
		c.enableCap(imap.CapCondStore)
	}
	data, err := c.sess.Status(mb, opts)
	if err != nil {
		return err
	}
	if data.Mailbox == "" {
		data.Mailbox = mb
	}
	writeStatus(c.lock(), data)
	c.unlock()
	return nil
}

// appendLiteral streams APPEND's message literal to the Session; a
// synchronizing one is asked for ("+") at the first Read.
type appendLiteral struct {
	c       *Conn
	d       *decoder
	size    int64
	left    int64
	sync    bool
	started bool
	err     error
}

func (l *appendLiteral) Size() int64 { return l.size }

func (l *appendLiteral) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if !l.started {
		l.started = true
		if l.sync {
			if err := l.d.cont(); err != nil {
				l.err = err
				return 0, err
			}
		}
	}
	if l.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	l.c.nc.SetReadDeadline(time.Now().Add(CommandTimeout))
	n, err := l.d.lr.Read(p)
	l.left -= int64(n)
	if err != nil {
		l.err = err
		if err == io.EOF {
			l.err = io.ErrUnexpectedEOF
		}
		return n, l.err
	}
	return n, nil
}

func (c *Conn) appendCmd(d *decoder) error {
	if err := d.sp(); err != nil {
		return err
	}
	mb, err := c.mailboxArg(d)
	if err != nil {
		return err
	}
	if sa, okm := c.sess.(SessionAppend); okm {
		return c.appendMulti(d, mb, sa)
	}
	if err := d.sp(); err != nil {
		return err
	}
	opts := &imap.AppendOptions{}
	if d.peek() == '(' {
		if opts.Flags, err = d.flagList(); err != nil {
			return err
		}
		if err := d.sp(); err != nil {
			return err
		}
	}
	if d.peek() == '"' {
		if opts.Time, err = d.dateTime(); err != nil {
			return err
		}
		if err := d.sp(); err != nil {
			return err
		}
	}
	if d.peek() == '~' { // literal8 (BINARY)
		d.pos++
	}
	n, sync, err := d.literalSpec()
	if err != nil {
		return err
	}
	if n > c.srv.opts.MaxAppend {
		return &protoError{typ: imap.StatusResponseTypeNo, code: imap.ResponseCodeTooBig,
			text: "Message too large (at most " + uitoa(uint32(min(c.srv.opts.MaxAppend, 1<<32-1))) + " bytes)", fatal: !sync}
	}
	lit := &appendLiteral{c: c, d: d, size: n, left: n, sync: sync}
	data, err := c.sess.Append(mb, lit, opts)
	if lit.started || !sync {
		// The client sends the rest of the literal, then the end of the
		// command: read them.
		if lit.err == nil && lit.left > 0 {
			if _, cerr := io.CopyN(io.Discard, lit, lit.left); cerr != nil {
				return cerr
			}
		}
		if lit.err != nil {
			return lit.err
		}
		if cerr := d.nextLine(); cerr != nil {
			return cerr
		}
		if !d.eol() {
			return bad("Only one message per APPEND (no MULTIAPPEND)")
		}
	}
	if err != nil {
		return err
	}
	if data == nil || data.UID == 0 {
		return nil
	}
	return ok(imap.ResponseCode("APPENDUID "+uitoa(data.UIDValidity)+" "+uitoa(uint32(data.UID))), "APPEND completed")
}

// UnchangedSinceZero is STORE (UNCHANGEDSINCE 0) in imap.StoreOptions,
// whose 0 means no UNCHANGEDSINCE at all. RFC 7162 3.1.3 says that STORE
// fails for every message (each has a modseq above 0), so the session
// must answer [MODIFIED ...] for all of them and change nothing. The
// decoder caps numbers at 2^63-1, so no client value collides with it.
const UnchangedSinceZero = math.MaxUint64

func (c *Conn) store(d *decoder, uid bool) error {
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
	opts := &imap.StoreOptions{}
	if d.peek() == '(' {
		err := d.list(false, func() error {
			a, err := d.atom()
			if err != nil {
				return err
			}
			if !strings.EqualFold(a, "UNCHANGEDSINCE") || !c.offered(imap.CapCondStore) {
				return bad("Unknown STORE modifier %s", a)
			}
			if err := d.sp(); err != nil {
				return err
			}
			opts.UnchangedSince, err = d.number64()
			if err == nil && opts.UnchangedSince == 0 {
				opts.UnchangedSince = UnchangedSinceZero
			}
			return err
		})
		if err != nil {
			return err
		}
		if err := d.sp(); err != nil {
			return err
		}
		c.enableCap(imap.CapCondStore)
	}
	item, err := d.atom()
	if err != nil {
		return err
	}
	flags := &imap.StoreFlags{}
	item = strings.ToUpper(item)
	switch {
	case strings.HasPrefix(item, "+"):
		flags.Op, item = imap.StoreFlagsAdd, item[1:]
	case strings.HasPrefix(item, "-"):
		flags.Op, item = imap.StoreFlagsDel, item[1:]
	default:
		flags.Op = imap.StoreFlagsSet
	}
	switch item {
	case "FLAGS":
	case "FLAGS.SILENT":
		flags.Silent = true
	default:
		return bad("Unknown STORE item %s", item)
	}
	if err := d.sp(); err != nil {
		return err
	}
	if d.peek() == '(' {
		if flags.Flags, err = d.flagList(); err != nil {
			return err
		}
	} else {
		for {
			f, err := d.flag()
			if err != nil {
				return err
			}
			if f == imap.FlagWildcard {
				return bad(`\* is not a flag`)
			}
			flags.Flags = append(flags.Flags, f)
			if d.peek() != ' ' {
				break
			}
			d.pos++
		}
	}
	if err := d.end(); err != nil {
		return err
	}
	return c.sess.Store(&FetchWriter{c: c, opts: &imap.FetchOptions{}}, set, flags, opts)
}
