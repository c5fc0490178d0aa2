package sieve

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
)

// BodyMessage is a Message whose body the "body" test (RFC 5173) can read.
// A Message without it fails every body test, as a message without a
// body does.
type BodyMessage interface {
	Message
	// Body returns the raw body: the octets after the blank line that ends
	// the header; nil if the message has no body.
	Body() []byte
}

// Bounds on the MIME walk of one body test; beyond them parts are not
// searched.
const (
	maxMIMEDepth = 10
	maxMIMEParts = 200
)

// bodyValues extracts the strings a body test compares (RFC 5173 §5):
// the raw body, or the decoded parts whose type :content names (":text"
// is :content "text", which §5.3 allows). The body is split and decoded
// once per run, however many body tests there are.
func (r *run) bodyValues(n *node) ([]string, bool) {
	if !r.bodyRead {
		r.bodyRead = true
		bm, ok := r.in.Message.(BodyMessage)
		if !ok || bm.Body() == nil {
			return nil, false
		}
		body := bm.Body()
		if len(body) > r.s.limits.MaxBodyBytes {
			body = body[:r.s.limits.MaxBodyBytes]
		}
		if !spend(&r.matchBudget, int64(len(body))) {
			return nil, false
		}
		w := &mimeWalk{budget: &r.matchBudget}
		w.walk(r.in.Message.Header, body, 0)
		r.body = &bodyParts{raw: string(body), entries: w.entries}
	}
	if r.body == nil {
		return nil, false
	}
	if _, raw := n.tags["raw"]; raw {
		return []string{r.body.raw}, true
	}
	types := []string{"text"}
	if a, ok := n.tags["content"]; ok {
		types = a.strs
	}
	var values []string
	for _, e := range r.body.entries {
		if wantsType(types, e.ctype) {
			values = append(values, e.values...)
		}
	}
	return values, true
}

// bodyParts is a body taken apart: its raw text and, per MIME part, what
// a :content match on that part's type searches.
type bodyParts struct {
	raw     string
	entries []mimeEntry
}

type mimeEntry struct {
	ctype  string
	values []string // decoded leaf; container prologue+epilogue; rfc822 header
}

type mimeWalk struct {
	entries []mimeEntry
	parts   int
	budget  *int64 // each level's scan is charged, so deep nesting is too
}

func wantsType(types []string, ctype string) bool {
	for _, t := range types {
		switch {
		case t == "":
			return true
		case strings.HasPrefix(t, "/") || strings.HasSuffix(t, "/") || strings.Count(t, "/") > 1:
			// matches nothing (RFC 5173 §5.2)
		case strings.Contains(t, "/"):
			if strings.EqualFold(t, ctype) {
				return true
			}
		default:
			if main, _, _ := strings.Cut(ctype, "/"); strings.EqualFold(t, main) {
				return true
			}
		}
	}
	return false
}

func first(get func(string) []string, name string) string {
	if v := get(name); len(v) > 0 {
		return strings.TrimSpace(strings.NewReplacer("\r", "", "\n", "").Replace(v[0]))
	}
	return ""
}

func (w *mimeWalk) walk(get func(string) []string, body []byte, depth int) {
	w.parts++
	if depth > maxMIMEDepth || w.parts > maxMIMEParts {
		return
	}
	ctype, params, err := mime.ParseMediaType(first(get, "Content-Type"))
	if err != nil || ctype == "" {
		ctype, params = "text/plain", map[string]string{"charset": "us-ascii"}
	}
	switch {
	case strings.HasPrefix(ctype, "multipart/") && params["boundary"] != "":
		if depth > 0 && !spend(w.budget, int64(len(body))) {
			return
		}
		prologue, parts, epilogue := splitMultipart(body, params["boundary"])
		// Only the prologue and epilogue belong to a container.
		w.entries = append(w.entries, mimeEntry{ctype, []string{string(prologue), string(epilogue)}})
		for _, p := range parts {
			h, b := splitPart(p)
			w.walk(h, b, depth+1)
		}
	case ctype == "message/rfc822":
		w.entries = append(w.entries, mimeEntry{ctype, []string{string(body[:headerEnd(body)])}})
		h, b := splitPart(body)
		w.walk(h, b, depth+1)
	default:
		w.entries = append(w.entries, mimeEntry{ctype, []string{
			decodePart(first(get, "Content-Transfer-Encoding"), params["charset"], body)}})
	}
}

// splitMultipart cuts a multipart body at its boundary lines (RFC 2046
// §5.1.1); the line break before a boundary belongs to the boundary. The
// pieces are slices of body: nothing is copied.
func splitMultipart(body []byte, boundary string) (prologue []byte, parts [][]byte, epilogue []byte) {
	delim := []byte("--" + boundary)
	segStart := 0 // start of the current prologue or part
	started := false
	for off := 0; off < len(body); {
		lineEnd := len(body)
		if i := bytes.IndexByte(body[off:], '\n'); i >= 0 {
			lineEnd = off + i + 1
		}
		line := bytes.TrimRight(body[off:lineEnd], " \t\r\n")
		isClose := len(line) == len(delim)+2 && bytes.HasPrefix(line, delim) && bytes.HasSuffix(line, []byte("--"))
		if isClose || bytes.Equal(line, delim) {
			seg := trimLineEnd(body[segStart:off])
			if started {
				parts = append(parts, seg)
			} else {
				prologue = seg
			}
			started = true
			if isClose {
				return prologue, parts, body[lineEnd:]
			}
			segStart = lineEnd
		}
		off = lineEnd
	}
	if !started {
		return body, nil, nil
	}
	return prologue, append(parts, body[segStart:]), nil // unterminated: keep what is there
}

func trimLineEnd(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// headerEnd is the length of a part's header including the blank line.
func headerEnd(p []byte) int {
	if bytes.HasPrefix(p, []byte("\r\n")) {
		return 2
	}
	if bytes.HasPrefix(p, []byte("\n")) {
		return 1
	}
	for _, sep := range []string{"\r\n\r\n", "\n\n"} {
		if i := bytes.Index(p, []byte(sep)); i >= 0 {
			return i + len(sep)
		}
	}
	return len(p)
}

func splitPart(p []byte) (func(string) []string, []byte) {
	end := headerEnd(p)
	hdr := p[:end]
	if !bytes.HasSuffix(hdr, []byte("\n\n")) && !bytes.HasSuffix(hdr, []byte("\r\n\r\n")) {
		hdr = append(append([]byte(nil), hdr...), "\r\n\r\n"...)
	}
	h, _ := textproto.NewReader(bufio.NewReader(bytes.NewReader(hdr))).ReadMIMEHeader()
	return func(name string) []string { return h.Values(name) }, p[end:]
}

// decodePart removes the transfer encoding and converts text to UTF-8
// (RFC 5173 §5.2); what cannot be decoded is compared as it is.
func decodePart(cte, charset string, body []byte) string {
	switch strings.ToLower(cte) {
	case "base64":
		clean := bytes.Map(func(r rune) rune {
			if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, body)
		if d, err := base64.StdEncoding.DecodeString(string(clean)); err == nil {
			body = d
		}
	case "quoted-printable":
		if d, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body))); err == nil {
			body = d
		}
	}
	switch strings.ToLower(charset) {
	case "iso-8859-1", "latin1", "iso_8859-1", "windows-1252", "cp1252":
		rs := make([]rune, len(body))
		for i, b := range body {
			rs[i] = rune(b)
		}
		return string(rs)
	}
	return string(body)
}
