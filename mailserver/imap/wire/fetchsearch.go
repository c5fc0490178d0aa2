package wire

import (
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

func (c *Conn) fetch(d *decoder, uid bool) error {
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
	opts := &imap.FetchOptions{UID: uid}
	w := &FetchWriter{c: c, opts: opts, names: map[any]string{}}
	if d.peek() == '(' {
		if err := d.list(false, func() error { return d.fetchItem(opts, w.names, false) }); err != nil {
			return err
		}
	} else if err := d.fetchItem(opts, w.names, true); err != nil {
		return err
	}
	if d.peek() == ' ' {
		d.pos++
		err := d.list(false, func() error {
			a, err := d.atom()
			if err != nil {
				return err
			}
			switch {
			case strings.EqualFold(a, "CHANGEDSINCE") && c.offered(imap.CapCondStore):
				if err := d.sp(); err != nil {
					return err
				}
				opts.ChangedSince, err = d.number64()
				opts.ModSeq = true
				return err
			case strings.EqualFold(a, "VANISHED") && uid && c.Enabled(imap.CapQResync):
				w.vanished = true
				return nil
			}
			return bad("Unknown FETCH modifier %s", a)
		})
		if err != nil {
			return err
		}
	}
	if err := d.end(); err != nil {
		return err
	}
	if w.vanished && opts.ChangedSince == 0 {
		return bad("VANISHED needs CHANGEDSINCE")
	}
	if opts.ModSeq {
		c.enableCap(imap.CapCondStore)
	}
	return c.sess.Fetch(w, set, opts)
}

func isItemChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.'
}

func (d *decoder) fetchItem(o *imap.FetchOptions, names map[any]string, macros bool) error {
	name := strings.ToUpper(d.while(isItemChar))
	switch name {
	case "ALL", "FAST", "FULL":
		if !macros {
			return bad("%s is a macro, not an item", name)
		}
		o.Flags, o.InternalDate, o.RFC822Size = true, true, true
		if name != "FAST" {
			o.Envelope = true
		}
		if name == "FULL" {
			o.BodyStructure = &imap.FetchItemBodyStructure{}
		}
	case "UID":
		o.UID = true
	case "FLAGS":
		o.Flags = true
	case "INTERNALDATE":
		o.InternalDate = true
	case "RFC822.SIZE":
		o.RFC822Size = true
	case "ENVELOPE":
		o.Envelope = true
	case "BODYSTRUCTURE":
		o.BodyStructure = &imap.FetchItemBodyStructure{Extended: true}
	case "MODSEQ":
		o.ModSeq = true
	case "RFC822", "RFC822.HEADER", "RFC822.TEXT":
		bs := &imap.FetchItemBodySection{}
		switch name {
		case "RFC822.HEADER":
			bs.Specifier, bs.Peek = imap.PartSpecifierHeader, true
		case "RFC822.TEXT":
			bs.Specifier = imap.PartSpecifierText
		}
		names[bs] = name
		o.BodySection = append(o.BodySection, bs)
	case "BODY", "BODY.PEEK":
		if d.peek() != '[' {
			if name == "BODY.PEEK" {
				return bad("BODY.PEEK needs a section")
			}
			if o.BodyStructure == nil {
				o.BodyStructure = &imap.FetchItemBodyStructure{}
			}
			return nil
		}
		bs := &imap.FetchItemBodySection{Peek: name == "BODY.PEEK"}
		if err := d.section(bs); err != nil {
			return err
		}
		p, err := d.partial()
		if err != nil {
			return err
		}
		bs.Partial = p
		o.BodySection = append(o.BodySection, bs)
	case "BINARY", "BINARY.PEEK", "BINARY.SIZE":
		if d.peek() != '[' {
			return bad("%s needs a section", name)
		}
		bs := &imap.FetchItemBodySection{}
		if err := d.section(bs); err != nil {
			return err
		}
		if bs.Specifier != imap.PartSpecifierNone || len(bs.HeaderFields) > 0 || len(bs.HeaderFieldsNot) > 0 {
			return bad("BINARY sections are part numbers only")
		}
		if name == "BINARY.SIZE" {
			o.BinarySectionSize = append(o.BinarySectionSize, &imap.FetchItemBinarySectionSize{Part: bs.Part})
			return nil
		}
		p, err := d.partial()
		if err != nil {
			return err
		}
		o.BinarySection = append(o.BinarySection, &imap.FetchItemBinarySection{Part: bs.Part, Partial: p, Peek: name == "BINARY.PEEK"})
	default:
		if name == "" {
			return bad("Expected a FETCH item at %q", d.rest())
		}
		return bad("Unknown FETCH item %s", name)
	}
	return nil
}

// section parses "[" section-spec "]".
func (d *decoder) section(bs *imap.FetchItemBodySection) error {
	if err := d.expect('[', "["); err != nil {
		return err
	}
	for d.peek() >= '0' && d.peek() <= '9' {
		n, err := d.number()
		if err != nil {
			return err
		}
		if n == 0 {
			return bad("Part numbers start at 1")
		}
		bs.Part = append(bs.Part, int(n))
		if len(bs.Part) > 64 {
			return bad("Part path too deep")
		}
		if d.peek() != '.' {
			break
		}
		d.pos++
	}
	if d.peek() != ']' {
		spec := strings.ToUpper(d.while(func(c byte) bool { return isItemChar(c) }))
		switch spec {
		case "HEADER":
			bs.Specifier = imap.PartSpecifierHeader
		case "TEXT":
			bs.Specifier = imap.PartSpecifierText
		case "MIME":
			if len(bs.Part) == 0 {
				return bad("MIME needs a part number")
			}
			bs.Specifier = imap.PartSpecifierMIME
		case "HEADER.FIELDS", "HEADER.FIELDS.NOT":
			bs.Specifier = imap.PartSpecifierHeader
			if err := d.sp(); err != nil {
				return err
			}
			var fields []string
			err := d.list(false, func() error {
				f, err := d.astring()
				fields = append(fields, f)
				return err
			})
			if err != nil {
				return err
			}
			if spec == "HEADER.FIELDS" {
				bs.HeaderFields = fields
			} else {
				bs.HeaderFieldsNot = fields
			}
		default:
			return bad("Unknown section %q", spec)
		}
	}
	return d.expect(']', "]")
}

// partial parses an optional "<offset.size>".
func (d *decoder) partial() (*imap.SectionPartial, error) {
	if d.peek() != '<' {
		return nil, nil
	}
	d.pos++
	off, err := d.number()
	if err != nil {
		return nil, err
	}
	if err := d.expect('.', "."); err != nil {
		return nil, err
	}
	size, err := d.number()
	if err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, bad("A partial range needs a size of at least 1")
	}
	if err := d.expect('>', ">"); err != nil {
		return nil, err
	}
	return &imap.SectionPartial{Offset: int64(off), Size: int64(size)}, nil
}

func (c *Conn) search(d *decoder, tag string, kind NumKind) error {
	var opts *imap.SearchOptions
	if err := d.sp(); err != nil {
		return err
	}
	if d.peekWord("RETURN") {
		d.pos += len("RETURN")
		if err := d.sp(); err != nil {
			return err
		}
		opts = &imap.SearchOptions{}
		err := d.list(true, func() error {
			a, err := d.atom()
			if err != nil {
				return err
			}
			switch strings.ToUpper(a) {
			case "MIN":
				opts.ReturnMin = true
			case "MAX":
				opts.ReturnMax = true
			case "ALL":
				opts.ReturnAll = true
			case "COUNT":
				opts.ReturnCount = true
			case "SAVE":
				opts.ReturnSave = true
			default:
				return bad("Unknown SEARCH return option %s", a)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !opts.ReturnMin && !opts.ReturnMax && !opts.ReturnCount && !opts.ReturnAll && !opts.ReturnSave {
			opts.ReturnAll = true
		}
		if err := d.sp(); err != nil {
			return err
		}
	}
	if d.peekWord("CHARSET") {
		d.pos += len("CHARSET")
		if err := d.sp(); err != nil {
			return err
		}
		cs, err := d.astring()
		if err != nil {
			return err
		}
		if !strings.EqualFold(cs, "UTF-8") && !strings.EqualFold(cs, "US-ASCII") {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCode("BADCHARSET (UTF-8 US-ASCII)"), Text: "Unsupported charset"}
		}
		if err := d.sp(); err != nil {
			return err
		}
	}
	cr := &imap.SearchCriteria{}
	depth := 0
	for {
		if err := d.searchKey(cr, &depth); err != nil {
			return err
		}
		if d.eol() {
			break
		}
		if err := d.sp(); err != nil {
			return err
		}
	}
	if cr.ModSeq != nil {
		c.enableCap(imap.CapCondStore)
	}
	data, err := c.sess.Search(kind, cr, opts)
	if err != nil {
		return err
	}
	esearch := opts != nil || c.rev2.Load()
	if opts == nil {
		opts = &imap.SearchOptions{ReturnAll: true}
	}
	if esearch && opts.ReturnSave && !opts.ReturnMin && !opts.ReturnMax && !opts.ReturnCount && !opts.ReturnAll {
		return nil // RFC 5182: SAVE alone answers no result
	}
	e := c.lock()
	defer c.unlock()
	if !esearch {
		e.raw("* SEARCH")
		if data.All != nil {
			switch all := data.All.(type) {
			case imap.SeqSet:
				nums, _ := all.Nums()
				for _, n := range nums {
					e.sp().num(n)
				}
			case imap.UIDSet:
				nums, _ := all.Nums()
				for _, n := range nums {
					e.sp().num(uint32(n))
				}
			}
		}
		if data.ModSeq != 0 {
			e.raw(" (MODSEQ ").unum64(data.ModSeq).raw(")")
		}
		e.crlf()
		return nil
	}
	e.raw(`* ESEARCH (TAG `).str(tag).raw(")")
	if kind == NumKindUID {
		e.raw(" UID")
	}
	if data.Count > 0 {
		if opts.ReturnMin {
			e.raw(" MIN ").num(data.Min)
		}
		if opts.ReturnMax {
			e.raw(" MAX ").num(data.Max)
		}
		if opts.ReturnAll && data.All != nil {
			e.raw(" ALL ").raw(data.All.String())
		}
	}
	if opts.ReturnCount {
		e.raw(" COUNT ").num(data.Count)
	}
	if data.ModSeq != 0 && data.Count > 0 {
		e.raw(" MODSEQ ").unum64(data.ModSeq)
	}
	e.crlf()
	return nil
}

// peekWord reports whether the next atom is word (any case), followed by
// SP.
func (d *decoder) peekWord(word string) bool {
	r := d.line[d.pos:]
	return len(r) > len(word) && strings.EqualFold(string(r[:len(word)]), word) && r[len(word)] == ' '
}

const maxSearchDepth = 32

func (d *decoder) searchKey(cr *imap.SearchCriteria, depth *int) error {
	if *depth > maxSearchDepth {
		return bad("Search criteria nested too deep")
	}
	switch c := d.peek(); {
	case c == '(':
		*depth++
		defer func() { *depth-- }()
		return d.list(false, func() error { return d.searchKey(cr, depth) })
	case c >= '0' && c <= '9' || c == '*':
		set, err := d.numSet(false)
		if err != nil {
			return err
		}
		cr.SeqNum = append(cr.SeqNum, set.(imap.SeqSet))
		return nil
	case c == '$':
		d.pos++
		cr.UID = append(cr.UID, imap.SearchRes())
		return nil
	}
	key, err := d.atom()
	if err != nil {
		return err
	}
	key = strings.ToUpper(key)
	str := func() (string, error) {
		if err := d.sp(); err != nil {
			return "", err
		}
		return d.astring()
	}
	date := func() (time.Time, error) {
		if err := d.sp(); err != nil {
			return time.Time{}, err
		}
		return d.date()
	}
	flag := func(f imap.Flag, not bool) {
		if not {
			cr.NotFlag = append(cr.NotFlag, f)
		} else {
			cr.Flag = append(cr.Flag, f)
		}
	}
	switch key {
	case "ALL":
	case "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "RECENT":
		flag(imap.Flag(`\`+key[:1]+strings.ToLower(key[1:])), false)
	case "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN":
		flag(imap.Flag(`\`+key[2:3]+strings.ToLower(key[3:])), true)
	case "NEW":
		flag(`\Recent`, false)
		flag(imap.FlagSeen, true)
	case "OLD":
		flag(`\Recent`, true)
	case "KEYWORD", "UNKEYWORD":
		if err := d.sp(); err != nil {
			return err
		}
		f, err := d.flag()
		if err != nil {
			return err
		}
		flag(f, key == "UNKEYWORD")
	case "BCC", "CC", "FROM", "SUBJECT", "TO":
		s, err := str()
		if err != nil {
			return err
		}
		cr.Header = append(cr.Header, imap.SearchCriteriaHeaderField{Key: headerOf[key], Value: s})
	case "HEADER":
		k, err := str()
		if err != nil {
			return err
		}
		v, err := str()
		if err != nil {
			return err
		}
		cr.Header = append(cr.Header, imap.SearchCriteriaHeaderField{Key: k, Value: v})
	case "BODY", "TEXT":
		s, err := str()
		if err != nil {
			return err
		}
		if key == "BODY" {
			cr.Body = append(cr.Body, s)
		} else {
			cr.Text = append(cr.Text, s)
		}
	case "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE":
		t, err := date()
		if err != nil {
			return err
		}
		sub := imap.SearchCriteria{}
		switch key {
		case "BEFORE":
			sub.Before = t
		case "ON":
			sub.Since, sub.Before = t, t.AddDate(0, 0, 1)
		case "SINCE":
			sub.Since = t
		case "SENTBEFORE":
			sub.SentBefore = t
		case "SENTON":
			sub.SentSince, sub.SentBefore = t, t.AddDate(0, 0, 1)
		case "SENTSINCE":
			sub.SentSince = t
		}
		cr.And(&sub)
	case "LARGER", "SMALLER":
		if err := d.sp(); err != nil {
			return err
		}
		n, err := d.number64()
		if err != nil {
			return err
		}
		sub := imap.SearchCriteria{}
		if key == "LARGER" {
			sub.Larger = int64(n)
		} else {
			sub.Smaller = int64(n)
		}
		cr.And(&sub)
	case "UID":
		if err := d.sp(); err != nil {
			return err
		}
		set, err := d.numSet(true)
		if err != nil {
			return err
		}
		cr.UID = append(cr.UID, set.(imap.UIDSet))
	case "NOT":
		if err := d.sp(); err != nil {
			return err
		}
		*depth++
		defer func() { *depth-- }()
		var sub imap.SearchCriteria
		if err := d.searchKey(&sub, depth); err != nil {
			return err
		}
		cr.Not = append(cr.Not, sub)
	case "OR":
		*depth++
		defer func() { *depth-- }()
		var pair [2]imap.SearchCriteria
		for i := range pair {
			if err := d.sp(); err != nil {
				return err
			}
			if err := d.searchKey(&pair[i], depth); err != nil {
				return err
			}
		}
		cr.Or = append(cr.Or, pair)
	case "MODSEQ":
		if err := d.sp(); err != nil {
			return err
		}
		ms := &imap.SearchCriteriaModSeq{}
		if d.peek() == '"' {
			name, err := d.quoted()
			if err != nil {
				return err
			}
			ms.MetadataName = name
			if err := d.sp(); err != nil {
				return err
			}
			typ, err := d.atom()
			if err != nil {
				return err
			}
			ms.MetadataType = imap.SearchCriteriaMetadataType(strings.ToLower(typ))
			if err := d.sp(); err != nil {
				return err
			}
		}
		n, err := d.number64()
		if err != nil {
			return err
		}
		ms.ModSeq = n
		cr.ModSeq = ms
	default:
		return bad("Unknown search key %s", key)
	}
	return nil
}

var headerOf = map[string]string{"BCC": "Bcc", "CC": "Cc", "FROM": "From", "SUBJECT": "Subject", "TO": "To"}
