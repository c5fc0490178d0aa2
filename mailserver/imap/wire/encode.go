package wire

import (
	"bufio"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// enc writes response syntax to a buffered writer; write errors are
// sticky in the bufio.Writer and seen at Flush.
type enc struct {
	w    *bufio.Writer
	utf8 bool // mailbox names in UTF-8 (IMAP4rev2), not modified UTF-7
}

func (e *enc) raw(s string) *enc  { e.w.WriteString(s); return e }
func (e *enc) sp() *enc           { e.w.WriteByte(' '); return e }
func (e *enc) crlf() *enc         { e.w.WriteString("\r\n"); return e }
func (e *enc) num(n uint32) *enc  { e.w.WriteString(strconv.FormatUint(uint64(n), 10)); return e }
func (e *enc) num64(n int64) *enc { e.w.WriteString(strconv.FormatInt(n, 10)); return e }
func (e *enc) unum64(n uint64) *enc {
	e.w.WriteString(strconv.FormatUint(n, 10))
	return e
}

func quotable(s string) bool {
	if len(s) > 1000 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 || c >= 0x80 {
			return false
		}
	}
	return true
}

// str writes a string, quoted when it can be, else a literal.
func (e *enc) str(s string) *enc {
	if !quotable(s) {
		e.w.WriteByte('{')
		e.num64(int64(len(s)))
		e.w.WriteString("}\r\n")
		e.w.WriteString(s)
		return e
	}
	e.w.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			e.w.WriteByte('\\')
		}
		e.w.WriteByte(s[i])
	}
	e.w.WriteByte('"')
	return e
}

// nstr writes NIL for "".
func (e *enc) nstr(s string) *enc {
	if s == "" {
		return e.raw("NIL")
	}
	return e.str(s)
}

// astr writes an atom when s is one, else a string.
func (e *enc) astr(s string) *enc {
	ok := s != "" && !strings.EqualFold(s, "NIL")
	for i := 0; ok && i < len(s); i++ {
		ok = isAStringChar(s[i])
	}
	if ok {
		return e.raw(s)
	}
	return e.str(s)
}

// astrOrEmpty is astr that writes "" for the empty string.
func (e *enc) astrOrEmpty(s string) *enc {
	if s == "" {
		return e.raw(`""`)
	}
	return e.astr(s)
}

func (e *enc) mailbox(name string) *enc {
	if strings.EqualFold(name, "INBOX") {
		return e.raw("INBOX")
	}
	if !e.utf8 {
		name = encodeUTF7(name)
	}
	return e.astr(name)
}

func (e *enc) flags(fl []imap.Flag) *enc {
	e.w.WriteByte('(')
	for i, f := range fl {
		if i > 0 {
			e.sp()
		}
		e.raw(string(f))
	}
	e.w.WriteByte(')')
	return e
}

func (e *enc) strList(l []string) *enc {
	if len(l) == 0 {
		return e.raw("NIL")
	}
	e.w.WriteByte('(')
	for i, s := range l {
		if i > 0 {
			e.sp()
		}
		e.str(s)
	}
	e.w.WriteByte(')')
	return e
}

func (e *enc) params(p map[string]string) *enc {
	if len(p) == 0 {
		return e.raw("NIL")
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sortStrings(keys)
	e.w.WriteByte('(')
	for i, k := range keys {
		if i > 0 {
			e.sp()
		}
		e.str(k).sp().str(p[k])
	}
	e.w.WriteByte(')')
	return e
}

const internalDateLayout = "02-Jan-2006 15:04:05 -0700"

func (e *enc) dateTime(t time.Time) *enc {
	return e.str(t.Format(internalDateLayout))
}

func (e *enc) envelope(env *imap.Envelope) *enc {
	if env == nil {
		env = &imap.Envelope{}
	}
	e.w.WriteByte('(')
	if env.Date.IsZero() {
		e.raw("NIL")
	} else {
		e.str(env.Date.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	}
	e.sp().nstr(env.Subject)
	from := env.From
	sender, replyTo := env.Sender, env.ReplyTo
	if len(sender) == 0 {
		sender = from
	}
	if len(replyTo) == 0 {
		replyTo = from
	}
	for _, l := range [][]imap.Address{from, sender, replyTo, env.To, env.Cc, env.Bcc} {
		e.sp().addrs(l)
	}
	e.sp()
	if len(env.InReplyTo) == 0 {
		e.raw("NIL")
	} else {
		ids := make([]string, len(env.InReplyTo))
		for i, id := range env.InReplyTo {
			ids[i] = "<" + id + ">"
		}
		e.str(strings.Join(ids, " "))
	}
	e.sp()
	if env.MessageID == "" {
		e.raw("NIL")
	} else {
		e.str("<" + env.MessageID + ">")
	}
	e.w.WriteByte(')')
	return e
}

// addrs writes an address list; group start and end markers (RFC 3501
// 7.4.2) are addresses with a mailbox but no host, and with neither.
func (e *enc) addrs(l []imap.Address) *enc {
	if len(l) == 0 {
		return e.raw("NIL")
	}
	e.w.WriteByte('(')
	for _, a := range l {
		e.w.WriteByte('(')
		e.nstr(a.Name).raw(" NIL ").nstr(a.Mailbox).sp().nstr(a.Host)
		e.w.WriteByte(')')
	}
	e.w.WriteByte(')')
	return e
}

func (e *enc) disposition(d *imap.BodyStructureDisposition) *enc {
	if d == nil {
		return e.raw("NIL")
	}
	e.w.WriteByte('(')
	e.str(d.Value).sp().params(d.Params)
	e.w.WriteByte(')')
	return e
}

// bodyStructure writes BODYSTRUCTURE (ext) or BODY (no extension data).
func (e *enc) bodyStructure(bs imap.BodyStructure, ext bool) *enc {
	e.w.WriteByte('(')
	switch bs := bs.(type) {
	case *imap.BodyStructureMultiPart:
		for _, c := range bs.Children {
			e.bodyStructure(c, ext)
		}
		e.sp().str(strings.ToUpper(bs.Subtype))
		if ext && bs.Extended != nil {
			x := bs.Extended
			e.sp().params(x.Params).sp().disposition(x.Disposition).sp().strList(x.Language).sp().nstr(x.Location)
		}
	case *imap.BodyStructureSinglePart:
		enc := bs.Encoding
		if enc == "" {
			enc = "7BIT"
		}
		e.str(strings.ToUpper(bs.Type)).sp().str(strings.ToUpper(bs.Subtype)).sp().params(bs.Params).sp().
			nstr(bs.ID).sp().nstr(bs.Description).sp().str(strings.ToUpper(enc)).sp().num(bs.Size)
		if m := bs.MessageRFC822; m != nil {
			e.sp().envelope(m.Envelope).sp()
			if m.BodyStructure != nil {
				e.bodyStructure(m.BodyStructure, ext)
			} else {
				e.raw(`("TEXT" "PLAIN" NIL NIL NIL "7BIT" 0 0)`)
			}
			e.sp().num64(m.NumLines)
		} else if t := bs.Text; t != nil {
			e.sp().num64(t.NumLines)
		}
		if ext && bs.Extended != nil {
			x := bs.Extended
			e.raw(" NIL ").disposition(x.Disposition).sp().strList(x.Language).sp().nstr(x.Location)
		}
	}
	e.w.WriteByte(')')
	return e
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// section writes a section spec: "[1.2.HEADER.FIELDS (A B)]".
func (e *enc) section(part []int, spec imap.PartSpecifier, fields, fieldsNot []string) *enc {
	e.w.WriteByte('[')
	for i, p := range part {
		if i > 0 {
			e.w.WriteByte('.')
		}
		e.num(uint32(p))
	}
	if spec != imap.PartSpecifierNone || len(fields) > 0 || len(fieldsNot) > 0 {
		if len(part) > 0 {
			e.w.WriteByte('.')
		}
		switch {
		case len(fields) > 0:
			e.raw("HEADER.FIELDS (")
		case len(fieldsNot) > 0:
			e.raw("HEADER.FIELDS.NOT (")
			fields = fieldsNot
		default:
			e.raw(string(spec))
		}
		if len(fields) > 0 {
			for i, f := range fields {
				if i > 0 {
					e.sp()
				}
				e.astr(f)
			}
			e.w.WriteByte(')')
		}
	}
	e.w.WriteByte(']')
	return e
}
