package mailbox

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	gomessage "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // decode non-UTF-8 encoded words in headers
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"hastore/mailserver/mailstate"
)

// Info is what IMAP needs of a message that is not in its flags: the
// ENVELOPE and the MIME structure with the byte offsets of every part, so
// that BODYSTRUCTURE, ENVELOPE and header fetches never read the body, and
// a BODY[1.2] fetch reads only that part's byte range. It is computed once,
// at delivery, and stored with each mailbox entry.
//
// The semantics follow go-imap v2's imapserver.ExtractEnvelope and
// ExtractBodyStructure (decoded UTF-8 subject and names), with RFC 2045's
// defaults filled in (text/plain; charset=us-ascii).
type Info struct {
	Envelope Envelope `json:"env"`
	Body     Part     `json:"body"`
}

// Envelope is a message's ENVELOPE.
type Envelope struct {
	Date      time.Time `json:"date,omitzero"`
	Subject   string    `json:"subject,omitempty"`
	From      []Address `json:"from,omitempty"`
	Sender    []Address `json:"sender,omitempty"`
	ReplyTo   []Address `json:"replyTo,omitempty"`
	To        []Address `json:"to,omitempty"`
	Cc        []Address `json:"cc,omitempty"`
	Bcc       []Address `json:"bcc,omitempty"`
	InReplyTo []string  `json:"inReplyTo,omitempty"`
	MessageID string    `json:"messageId,omitempty"`
}

// Address is one address of an envelope field. A group (RFC 5322
// "name: a@b, c@d;") is its members between two markers, as in IMAP's
// ENVELOPE (RFC 3501 7.4.2): the start has the group's name as Mailbox
// and no Host, the end is all empty. (Info stored before groups were kept
// has the members only.)
type Address struct {
	Name    string `json:"name,omitempty"`
	Mailbox string `json:"mailbox"`
	Host    string `json:"host"`
}

// Part is one MIME part (the whole message is the root part).
type Part struct {
	// Offsets in the message: the part's header is [Header, Body) (its
	// blank line included), its body [Body, End).
	Header int64 `json:"h"`
	Body   int64 `json:"b"`
	End    int64 `json:"e"`

	Type        string            `json:"type"`    // lowercase: "text", "multipart", ...
	Subtype     string            `json:"subtype"` // lowercase: "plain", "mixed", ...
	Params      map[string]string `json:"params,omitempty"`
	ID          string            `json:"id,omitempty"`
	Description string            `json:"desc,omitempty"`
	Encoding    string            `json:"enc,omitempty"` // Content-Transfer-Encoding, lowercase; "" means 7bit
	// Lines counts the body's lines, for text/* and message/rfc822.
	Lines int64 `json:"lines,omitempty"`

	Disposition       string            `json:"disp,omitempty"`
	DispositionParams map[string]string `json:"dispParams,omitempty"`
	Language          []string          `json:"lang,omitempty"`
	Location          string            `json:"loc,omitempty"`

	// Parts are a multipart's children, or for message/rfc822 (and
	// message/global) the one embedded message, whose Envelope is set.
	Parts    []Part    `json:"parts,omitempty"`
	Envelope *Envelope `json:"envelope,omitempty"`
}

// Size returns the part's body size in bytes.
func (p *Part) Size() int64 { return p.End - p.Body }

// MediaType returns "type/subtype".
func (p *Part) MediaType() string { return p.Type + "/" + p.Subtype }

const (
	maxPartDepth = 20
	maxParts     = 1000
	infoV1       = 1
)

// ParseInfo computes a message's Info. It never fails: malformed headers
// and MIME structure degrade to what could be read (go-imap's behaviour),
// with nesting and part counts bounded.
func ParseInfo(msg []byte) *Info {
	info, _ := parseSized(msg)
	return info
}

// parseSized is ParseInfo, also returning the info's JSON when it had to
// encode it to check its size (nil for the fallback).
func parseSized(msg []byte) (*Info, []byte) {
	for _, budget := range []int{maxParts, 64, 0} {
		info := parseInfo(msg, budget)
		if b, err := json.Marshal(info); err == nil && len(b)+1 <= mailstate.MaxMailInfo {
			return info, b
		}
	}
	// Even the root alone is too big (a monstrous header): keep offsets.
	return &Info{Body: Part{End: int64(len(msg)), Body: headerEnd(msg), Type: "application", Subtype: "octet-stream"}}, nil
}

// parseEncoded returns EncodeInfo(ParseInfo(msg)), encoding the info
// once (a delivery's second JSON encoding was a third of its parsing).
func parseEncoded(msg []byte) ([]byte, error) {
	info, b := parseSized(msg)
	if b == nil {
		return EncodeInfo(info)
	}
	out := make([]byte, 1+len(b))
	out[0] = infoV1
	copy(out[1:], b)
	return out, nil
}

func parseInfo(msg []byte, budget int) *Info {
	p := &parser{msg: msg, budget: budget}
	var info Info
	var hdr textproto.Header
	info.Body, hdr = p.part(0, int64(len(msg)), 0, "")
	info.Envelope = envelope(hdr)
	return &info
}

// EncodeInfo returns the stored form of info.
func EncodeInfo(info *Info) ([]byte, error) {
	b, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	return append([]byte{infoV1}, b...), nil
}

// DecodeInfo reads what EncodeInfo wrote.
func DecodeInfo(b []byte) (*Info, error) {
	if len(b) == 0 || b[0] != infoV1 {
		return nil, fmt.Errorf("message info: unknown format")
	}
	var info Info
	if err := json.Unmarshal(b[1:], &info); err != nil {
		return nil, fmt.Errorf("message info: %w", err)
	}
	return &info, nil
}

type parser struct {
	msg    []byte
	budget int
}

// headerEnd returns the offset where the body of msg starts: after the
// first empty line, or len(msg) if there is none.
func headerEnd(msg []byte) int64 {
	pos := 0
	for pos < len(msg) {
		nl := bytes.IndexByte(msg[pos:], '\n')
		if nl < 0 {
			return int64(len(msg))
		}
		line := msg[pos : pos+nl]
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return int64(pos + nl + 1)
		}
		pos += nl + 1
	}
	return int64(len(msg))
}

func (p *parser) part(start, end int64, depth int, parent string) (Part, textproto.Header) {
	pt := Part{Header: start, End: end}
	pt.Body = start + headerEnd(p.msg[start:end])
	hdr, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(p.msg[start:pt.Body])))
	h := gomessage.Header{Header: hdr}

	mediaType, params, err := h.ContentType()
	if err != nil || !strings.Contains(mediaType, "/") || h.Get("Content-Type") == "" {
		if parent == "multipart/digest" {
			mediaType, params = "message/rfc822", nil
		} else {
			mediaType, params = "text/plain", map[string]string{"charset": "us-ascii"}
		}
	}
	pt.Type, pt.Subtype, _ = strings.Cut(strings.ToLower(mediaType), "/")
	if len(params) > 0 {
		pt.Params = params
	}
	pt.ID = h.Get("Content-Id")
	pt.Description = h.Get("Content-Description")
	pt.Encoding = strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	if disp, dparams, err := h.ContentDisposition(); err == nil && disp != "" {
		pt.Disposition = strings.ToLower(disp)
		if len(dparams) > 0 {
			pt.DispositionParams = dparams
		}
	}
	if v := h.Get("Content-Language"); v != "" {
		for _, l := range strings.Split(v, ",") {
			if l = strings.TrimSpace(l); l != "" {
				pt.Language = append(pt.Language, l)
			}
		}
	}
	pt.Location = h.Get("Content-Location")

	body := p.msg[pt.Body:end]
	descend := depth < maxPartDepth && p.budget > 0
	switch {
	case pt.Type == "multipart":
		if b := params["boundary"]; b != "" && descend {
			for _, r := range splitMultipart(p.msg, pt.Body, end, b) {
				if p.budget <= 0 {
					break
				}
				p.budget--
				child, _ := p.part(r[0], r[1], depth+1, mediaType)
				pt.Parts = append(pt.Parts, child)
			}
		}
	case mediaType == "message/rfc822" || mediaType == "message/global":
		pt.Lines = int64(bytes.Count(body, []byte("\n")))
		if descend {
			p.budget--
			child, chdr := p.part(pt.Body, end, depth+1, "")
			env := envelope(chdr)
			pt.Envelope = &env
			pt.Parts = []Part{child}
		}
	case pt.Type == "text":
		pt.Lines = int64(bytes.Count(body, []byte("\n")))
	}
	return pt, hdr
}

// splitMultipart returns the [start, end) ranges of the parts of a
// multipart body msg[start:end] with the given boundary (RFC 2046 5.1.1):
// a delimiter is a line "--boundary" (optionally followed by white space),
// the CRLF before it belongs to it, "--boundary--" closes. A body without a
// closing delimiter ends its last part at end.
func splitMultipart(msg []byte, start, end int64, boundary string) [][2]int64 {
	delim := []byte("--" + boundary)
	nldelim := append([]byte{'\n'}, delim...)
	var parts [][2]int64
	partStart := int64(-1)
	pos := start
	for pos < end {
		var line int64
		if pos == start && bytes.HasPrefix(msg[start:end], delim) {
			line = start
		} else {
			i := bytes.Index(msg[pos:end], nldelim)
			if i < 0 {
				break
			}
			line = pos + int64(i) + 1
		}
		after := line + int64(len(delim))
		lineEnd := end
		if nl := bytes.IndexByte(msg[after:end], '\n'); nl >= 0 {
			lineEnd = after + int64(nl) + 1
		}
		rest := bytes.TrimRight(msg[after:lineEnd], "\r\n")
		closing := bytes.HasPrefix(rest, []byte("--"))
		if !closing && len(bytes.TrimRight(rest, " \t")) != 0 {
			pos = after // "--boundaryX": not a delimiter
			continue
		}
		if partStart >= 0 {
			pe := line
			if pe > partStart && msg[pe-1] == '\n' {
				pe--
				if pe > partStart && msg[pe-1] == '\r' {
					pe--
				}
			}
			parts = append(parts, [2]int64{partStart, pe})
		}
		if closing {
			return parts
		}
		partStart, pos = lineEnd, lineEnd
	}
	if partStart >= 0 {
		parts = append(parts, [2]int64{partStart, end})
	}
	return parts
}

func envelope(hdr textproto.Header) Envelope {
	mh := mail.Header{Header: gomessage.Header{Header: hdr}}
	var env Envelope
	env.Date, _ = mh.Date()
	env.Subject, _ = mh.Subject()
	env.InReplyTo, _ = mh.MsgIDList("In-Reply-To")
	env.MessageID, _ = mh.MessageID()
	env.From = addressList(mh, "From")
	env.Sender = addressList(mh, "Sender")
	env.ReplyTo = addressList(mh, "Reply-To")
	env.To = addressList(mh, "To")
	env.Cc = addressList(mh, "Cc")
	env.Bcc = addressList(mh, "Bcc")
	return env
}

// addressList reads an address field (addrlist.go): groups kept as RFC
// 3501's markers, routes dropped, comments and malformed neighbours not
// losing an address.
func addressList(mh mail.Header, key string) []Address {
	v := mh.Get(key)
	if v == "" {
		return nil
	}
	return parseAddressList(v)
}
