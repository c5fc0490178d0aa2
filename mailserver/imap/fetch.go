package imap

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"mime/quotedprintable"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/imap/wire"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// FETCH is served from the message record (flags, date, size), the Info
// stored at delivery (ENVELOPE, BODYSTRUCTURE, the byte offsets of every
// MIME part) and ranged reads of the body: a BODY[1.2]<0.100> reads 100
// bytes, a header fetch reads the header bytes only.

func (s *session) Fetch(w *wire.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	s.touch()
	sel := s.mb
	s.fetchRev2 = s.rev2()
	if err := sel.checkSeq(numSet); err != nil {
		return err
	}
	idx := sel.resolve(numSet)
	markSeen := false
	for _, bs := range options.BodySection {
		if !bs.Peek {
			markSeen = !sel.readOnly
		}
	}
	for _, bs := range options.BinarySection {
		if !bs.Peek {
			markSeen = !sel.readOnly
		}
	}
	if set, ok := numSet.(imap.UIDSet); ok && w.Vanished() && !imap.IsSearchRes(numSet) {
		if err := w.WriteVanishedEarlier(gone(sel.uids, set, s.topUID())); err != nil {
			return err
		}
	}
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	seen := map[uint32][]string{}
	seenModSeq := map[uint32]uint64{}
	if markSeen {
		var unseen []uint32
		err := s.forRecords(idx, func(_ int, m mailstate.MailMessage) error {
			if !hasFlag(m.Flags, mailstate.FlagSeen) {
				unseen = append(unseen, m.UID)
			}
			return nil
		})
		if err != nil {
			return imapErr(err)
		}
		if len(unseen) > 0 {
			out, index, err := s.store().StoreFlagsIndex(c, s.user, sel.id, unseen, mailstate.MailFlagsAdd, []string{mailstate.FlagSeen})
			if err != nil {
				return imapErr(err)
			}
			for _, o := range out {
				if o.Code == mailstate.MailOK {
					seen[o.UID] = o.Flags
					seenModSeq[o.UID] = o.ModSeq
					sel.report(o.UID, o.ModSeq, index)
				}
			}
		}
	}
	return imapErr(s.forRecords(idx, func(i int, m mailstate.MailMessage) error {
		if f, ok := seen[m.UID]; ok {
			m.Flags, m.ModSeq = f, seenModSeq[m.UID]
		}
		if options.ChangedSince != 0 && m.ModSeq <= options.ChangedSince && seen[m.UID] == nil {
			return nil
		}
		create := func() *wire.FetchResponseWriter { return w.CreateMessage(uint32(i + 1)) }
		return s.fetchOne(c, create, m, options, seen[m.UID] != nil)
	}))
}

// fetchOne answers one message. Everything that can fail (the sections'
// reads, a part that cannot be decoded) is done before create starts the
// response: go-imap's writer puts out "* n FETCH (" at once, so a failure
// after it would leave an empty or truncated FETCH line before the NO.
// One message's sections are held at once, as one of them was before.
func (s *session) fetchOne(c context.Context, create func() *wire.FetchResponseWriter, m mailstate.MailMessage, options *imap.FetchOptions, flagsChanged bool) (err error) {
	var info *mailbox.Info
	if options.Envelope || options.BodyStructure != nil || len(options.BodySection) > 0 || len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0 {
		info, err = s.store().Info(s.user, s.mb.id, m.UID)
		if err != nil {
			// No info (should not happen): the whole message as one part.
			info = &mailbox.Info{Body: mailbox.Part{End: m.Size, Type: "text", Subtype: "plain"}}
		}
	}
	bodies := make([][]byte, len(options.BodySection))
	for i, bs := range options.BodySection {
		if bodies[i], err = s.section(c, m, info, bs); err != nil {
			return err
		}
	}
	binaries := make([][]byte, len(options.BinarySection))
	for i, bs := range options.BinarySection {
		b, err := s.binary(c, m, info, bs.Part)
		if err != nil {
			return err
		}
		binaries[i] = partial(b, bs.Partial)
	}
	binarySizes := make([]uint32, len(options.BinarySectionSize))
	for i, bs := range options.BinarySectionSize {
		b, err := s.binary(c, m, info, bs.Part)
		if err != nil {
			return err
		}
		binarySizes[i] = uint32(min(len(b), 1<<32-1))
	}

	w := create()
	defer func() {
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}()
	if options.UID {
		w.WriteUID(imap.UID(m.UID))
	}
	if options.Flags || flagsChanged {
		w.WriteFlags(s.flagsOf(m.UID, m.Flags, s.fetchRev2))
	}
	if options.InternalDate {
		w.WriteInternalDate(time.Unix(0, m.InternalDate).In(time.FixedZone("", int(m.Zone))))
	}
	if options.RFC822Size {
		w.WriteRFC822Size(m.Size)
	}
	if options.ModSeq {
		w.WriteModSeq(m.ModSeq)
	}
	if options.Envelope {
		w.WriteEnvelope(envelope(&info.Envelope))
	}
	if options.BodyStructure != nil {
		w.WriteBodyStructure(bodyStructure(&info.Body))
	}
	for i, bs := range options.BodySection {
		if err := writeLiteral(w.WriteBodySection(bs, int64(len(bodies[i]))), bodies[i]); err != nil {
			return err
		}
	}
	for i, bs := range options.BinarySection {
		if err := writeLiteral(w.WriteBinarySection(bs, int64(len(binaries[i]))), binaries[i]); err != nil {
			return err
		}
	}
	for i, bs := range options.BinarySectionSize {
		w.WriteBinarySectionSize(bs, binarySizes[i])
	}
	return nil
}

func writeLiteral(wc io.WriteCloser, b []byte) error {
	_, err := wc.Write(b)
	if cerr := wc.Close(); err == nil {
		err = cerr
	}
	return err
}

// binary returns a part with its content transfer encoding undone (RFC
// 3516); BINARY[] is the whole message as stored.
func (s *session) binary(c context.Context, m mailstate.MailMessage, info *mailbox.Info, path []int) ([]byte, error) {
	if len(path) == 0 {
		return s.read(c, m, 0, m.Size)
	}
	p := findPart(&info.Body, path)
	if p == nil {
		return []byte{}, nil
	}
	end := min(p.End, m.Size)
	raw, err := s.read(c, m, min(p.Body, end), end-min(p.Body, end))
	if err != nil || p.Type == "multipart" || isMessage(p) {
		return raw, err
	}
	var r io.Reader
	switch p.Encoding {
	case "", "7bit", "8bit", "binary":
		return raw, nil
	case "base64":
		// Spaces and tabs inside base64 lines occur in the wild and
		// other servers skip them; the decoder itself skips only CR/LF.
		r = base64.NewDecoder(base64.StdEncoding, bytes.NewReader(stripBlanks(raw)))
	case "quoted-printable":
		r = quotedprintable.NewReader(bytes.NewReader(raw))
	default:
		return nil, no(imap.ResponseCodeUnknownCTE, "Unknown Content-Transfer-Encoding %q", p.Encoding)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, no(imap.ResponseCodeParse, "Cannot decode part %v: %v", path, err)
	}
	return b, nil
}

// stripBlanks returns b without spaces and tabs (a copy only if it has
// any).
func stripBlanks(b []byte) []byte {
	if !bytes.ContainsAny(b, " \t") {
		return b
	}
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c != ' ' && c != '\t' {
			out = append(out, c)
		}
	}
	return out
}

// findPart resolves a part path (RFC 3501 6.4.5): a multipart's children
// are numbered from 1; a message/rfc822 part's children are its embedded
// message's; a non-multipart message has the one part 1, itself.
func findPart(root *mailbox.Part, path []int) *mailbox.Part {
	cur := root
	for step, k := range path {
		if k < 1 {
			return nil
		}
		switch {
		case cur.Type == "multipart":
			if k > len(cur.Parts) {
				return nil
			}
			cur = &cur.Parts[k-1]
		case step > 0 && isMessage(cur) && len(cur.Parts) == 1:
			inner := &cur.Parts[0]
			if inner.Type == "multipart" {
				if k > len(inner.Parts) {
					return nil
				}
				cur = &inner.Parts[k-1]
			} else if k == 1 {
				cur = inner
			} else {
				return nil
			}
		case k == 1:
			// part 1 of a non-multipart message (or body part) is itself
		default:
			return nil
		}
	}
	return cur
}

func isMessage(p *mailbox.Part) bool {
	return p.Type == "message" && (p.Subtype == "rfc822" || p.Subtype == "global")
}

// section returns the bytes of one BODY[...] item, partial range applied.
func (s *session) section(c context.Context, m mailstate.MailMessage, info *mailbox.Info, bs *imap.FetchItemBodySection) ([]byte, error) {
	start, end, ok := sectionRange(m.Size, info, bs)
	if !ok {
		return []byte{}, nil
	}
	if len(bs.HeaderFields) > 0 || len(bs.HeaderFieldsNot) > 0 {
		hdr, err := s.read(c, m, start, end-start)
		if err != nil {
			return nil, err
		}
		return partial(filterHeader(hdr, bs.HeaderFields, bs.HeaderFieldsNot), bs.Partial), nil
	}
	if p := bs.Partial; p != nil {
		start = min(start+p.Offset, end)
		end = min(end, start+p.Size)
	}
	return s.read(c, m, start, end-start)
}

// sectionRange returns the byte range [start, end) of a section (before
// any header filtering or partial range); ok is false if the message has
// no such part.
func sectionRange(size int64, info *mailbox.Info, bs *imap.FetchItemBodySection) (start, end int64, ok bool) {
	msg := &info.Body // the (possibly embedded) message whose HEADER/TEXT is meant
	if len(bs.Part) > 0 {
		p := findPart(&info.Body, bs.Part)
		if p == nil {
			return 0, 0, false
		}
		switch bs.Specifier {
		case imap.PartSpecifierNone:
			return min(p.Body, size), min(p.End, size), true
		case imap.PartSpecifierMIME:
			return min(p.Header, size), min(p.Body, size), true
		}
		// HEADER, HEADER.FIELDS, TEXT of an embedded message.
		if !isMessage(p) || len(p.Parts) != 1 {
			return 0, 0, false
		}
		msg = &p.Parts[0]
	}
	switch bs.Specifier {
	case imap.PartSpecifierNone:
		start, end = 0, size
	case imap.PartSpecifierHeader:
		start, end = msg.Header, msg.Body
	case imap.PartSpecifierText:
		start, end = msg.Body, msg.End
	default:
		return 0, 0, false
	}
	end = min(end, size)
	return min(start, end), end, true
}

func (s *session) read(c context.Context, m mailstate.MailMessage, off, n int64) ([]byte, error) {
	if n <= 0 {
		return []byte{}, nil
	}
	return s.store().ReadBody(c, m, off, n)
}

func partial(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset >= int64(len(b)) {
		return []byte{}
	}
	b = b[p.Offset:]
	if p.Size < int64(len(b)) {
		b = b[:p.Size]
	}
	return b
}

// filterHeader keeps (or drops) the named fields of a raw header, bytes
// unchanged, and ends it with the blank line.
func filterHeader(hdr []byte, keep, drop []string) []byte {
	want := func(name string) bool {
		if len(keep) > 0 {
			for _, k := range keep {
				if strings.EqualFold(k, name) {
					return true
				}
			}
			return false
		}
		for _, k := range drop {
			if strings.EqualFold(k, name) {
				return false
			}
		}
		return true
	}
	var out bytes.Buffer
	on := false
	for len(hdr) > 0 {
		nl := bytes.IndexByte(hdr, '\n')
		var line []byte
		if nl < 0 {
			line, hdr = hdr, nil
		} else {
			line, hdr = hdr[:nl+1], hdr[nl+1:]
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		if line[0] != ' ' && line[0] != '\t' {
			name, _, _ := bytes.Cut(line, []byte(":"))
			on = want(string(bytes.TrimSpace(name)))
		}
		if on {
			out.Write(line)
		}
	}
	out.WriteString("\r\n")
	return out.Bytes()
}

func envelope(e *mailbox.Envelope) *imap.Envelope {
	return &imap.Envelope{
		Date: e.Date, Subject: e.Subject,
		From: addrs(e.From), Sender: addrs(e.Sender), ReplyTo: addrs(e.ReplyTo),
		To: addrs(e.To), Cc: addrs(e.Cc), Bcc: addrs(e.Bcc),
		InReplyTo: e.InReplyTo, MessageID: e.MessageID,
	}
}

func addrs(l []mailbox.Address) []imap.Address {
	if len(l) == 0 {
		return nil
	}
	out := make([]imap.Address, len(l))
	for i, a := range l {
		out[i] = imap.Address{Name: a.Name, Mailbox: a.Mailbox, Host: a.Host}
	}
	return out
}

func disposition(p *mailbox.Part) *imap.BodyStructureDisposition {
	if p.Disposition == "" {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: p.Disposition, Params: p.DispositionParams}
}

// bodyStructure converts the stored structure, always with the extension
// data (BODY and BODYSTRUCTURE are written from the same value).
func bodyStructure(p *mailbox.Part) imap.BodyStructure {
	if p.Type == "multipart" && len(p.Parts) > 0 {
		mp := &imap.BodyStructureMultiPart{Subtype: p.Subtype, Extended: &imap.BodyStructureMultiPartExt{
			Params: p.Params, Disposition: disposition(p), Language: p.Language, Location: p.Location,
		}}
		for i := range p.Parts {
			mp.Children = append(mp.Children, bodyStructure(&p.Parts[i]))
		}
		return mp
	}
	typ, sub := p.Type, p.Subtype
	if typ == "multipart" { // no parseable parts: show it as opaque text
		typ, sub = "text", "plain"
	}
	sp := &imap.BodyStructureSinglePart{
		Type: typ, Subtype: sub, Params: p.Params, ID: p.ID, Description: p.Description,
		Encoding: p.Encoding, Size: uint32(min(p.Size(), 1<<32-1)),
		Extended: &imap.BodyStructureSinglePartExt{Disposition: disposition(p), Language: p.Language, Location: p.Location},
	}
	switch {
	case typ == "message" && sub == "rfc822":
		rfc := &imap.BodyStructureMessageRFC822{NumLines: p.Lines, Envelope: &imap.Envelope{}}
		if p.Envelope != nil {
			rfc.Envelope = envelope(p.Envelope)
		}
		if len(p.Parts) == 1 {
			rfc.BodyStructure = bodyStructure(&p.Parts[0])
		} else {
			rfc.BodyStructure = &imap.BodyStructureSinglePart{Type: "text", Subtype: "plain", Text: &imap.BodyStructureText{},
				Extended: &imap.BodyStructureSinglePartExt{}}
		}
		sp.MessageRFC822 = rfc
	case typ == "text":
		sp.Text = &imap.BodyStructureText{NumLines: p.Lines}
	}
	return sp
}
