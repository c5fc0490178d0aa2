package mailbox

import (
	"fmt"
	"io"
	"mime"
	"strings"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
)

// parseAddressList reads an address header field (RFC 5322 3.4) for an
// ENVELOPE as IMAP servers give it (RFC 3501 7.4.2), where the standard
// library's parser gives up on the whole field:
//
//   - groups ("undisclosed-recipients:;", "team: a@b, c@d;") become a
//     start marker (Mailbox the group name, no Host), the members, and an
//     end marker (all empty);
//   - a route ("<@relay1,@relay2:user@host>", RFC 5322 4.4 obs-route) is
//     dropped and the address kept;
//   - comments ("user@host (Name)", "user(c)@host") do not lose the
//     address; a comment names an address that has no display name;
//   - one malformed address does not drop the others.
//
// Addresses without a host are left out (they would read as group
// markers).
func parseAddressList(v string) []Address {
	v = strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(v)
	var out []Address
	var group string // the open group's name, "" if none
	inGroup := false
	for _, tok := range splitAddressField(v) {
		switch tok.kind {
		case tokGroupStart:
			name := decodePhrase(tok.text)
			if name == "" {
				continue // ": a@b;" — nothing to name it by: members only
			}
			if inGroup && group != "" { // a group not closed before the next
				out = append(out, Address{})
			}
			group, inGroup = name, true
			out = append(out, Address{Mailbox: name})
		case tokGroupEnd:
			if inGroup && group != "" {
				out = append(out, Address{})
			}
			group, inGroup = "", false
		case tokAddress:
			if a, ok := parseOneAddress(tok.text); ok {
				out = append(out, a)
			}
		}
	}
	if inGroup && group != "" {
		out = append(out, Address{}) // "team: a@b" with no ";"
	}
	return out
}

type addrTokKind int

const (
	tokAddress addrTokKind = iota
	tokGroupStart
	tokGroupEnd
)

type addrTok struct {
	kind addrTokKind
	text string
}

// splitAddressField cuts a field at the commas, colons and semicolons
// outside quoted strings, comments and angle brackets.
func splitAddressField(v string) []addrTok {
	var out []addrTok
	start, depth := 0, 0
	quoted, angle := false, false
	emit := func(end int, kind addrTokKind) {
		if t := strings.TrimSpace(v[start:end]); t != "" || kind != tokAddress {
			out = append(out, addrTok{kind: kind, text: t})
		}
		start = end + 1
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && (quoted || depth > 0):
			i++
		case quoted:
			if c == '"' {
				quoted = false
			}
		case depth > 0:
			if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case angle:
			if c == '>' {
				angle = false
			}
		case c == '<':
			angle = true
		case c == ',':
			emit(i, tokAddress)
		case c == ':':
			emit(i, tokGroupStart)
		case c == ';':
			emit(i, tokAddress)
			out = append(out, addrTok{kind: tokGroupEnd})
		}
	}
	emit(len(v), tokAddress)
	return out
}

var wordDecoder = &mime.WordDecoder{CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
	if gomessage.CharsetReader == nil {
		return nil, fmt.Errorf("unhandled charset %q", charset)
	}
	return gomessage.CharsetReader(charset, input)
}}

// decodePhrase is a group's display name: comments dropped, quotes
// removed, encoded words decoded.
func decodePhrase(s string) string {
	s = strings.TrimSpace(stripComments(s))
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(s[1 : len(s)-1])
	}
	if d, err := wordDecoder.DecodeHeader(s); err == nil {
		s = d
	}
	return strings.Join(strings.Fields(s), " ")
}

// stripComments removes the comments outside quoted strings, and returns
// them too (joined with spaces).
func stripComments(s string) string {
	out, _ := splitComments(s)
	return out
}

func splitComments(s string) (rest, comments string) {
	var b, cm strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case depth > 0:
			switch c {
			case '\\':
				if i+1 < len(s) {
					i++
					cm.WriteByte(s[i])
				}
				continue
			case '(':
				depth++
			case ')':
				depth--
				if depth == 0 {
					cm.WriteByte(' ')
					continue
				}
			}
			cm.WriteByte(c)
		case quoted:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			} else if c == '"' {
				quoted = false
			}
		case c == '(':
			depth++
		default:
			if c == '"' {
				quoted = true
			}
			b.WriteByte(c)
		}
	}
	return b.String(), strings.Join(strings.Fields(cm.String()), " ")
}

// stripRoute turns "<@a,@b:user@host>" into "<user@host>".
func stripRoute(s string) string {
	i := strings.LastIndexByte(s, '<')
	if i < 0 {
		return s
	}
	inner := strings.TrimLeft(s[i+1:], " \t")
	if !strings.HasPrefix(inner, "@") {
		return s
	}
	colon := strings.IndexByte(inner, ':')
	if colon < 0 {
		return s
	}
	return s[:i+1] + inner[colon+1:]
}

// parseOneAddress reads one mailbox (RFC 5322 name-addr or addr-spec).
func parseOneAddress(s string) (Address, bool) {
	s = stripRoute(s)
	a, err := mail.ParseAddress(s)
	if err != nil {
		// Comments where the strict parser does not take them (inside
		// the address), or a display name it rejects: try without the
		// comments, naming the address by them if it has no name.
		rest, comments := splitComments(s)
		if a, err = mail.ParseAddress(strings.TrimSpace(rest)); err != nil {
			return lenientAddress(rest, comments)
		}
		if a.Name == "" {
			a.Name = decodePhrase(comments)
		}
	}
	local, host, ok := strings.Cut(a.Address, "@")
	if !ok || local == "" || host == "" {
		return Address{}, false
	}
	return Address{Name: a.Name, Mailbox: local, Host: host}, true
}

// lenientAddress takes "local@host" from what no parser accepts (an
// unquoted display name with dots or brackets, say): the address inside
// the last <...>, else the last word with an "@"; what precedes it is the
// name.
func lenientAddress(s, comments string) (Address, bool) {
	var name, addr string
	if i := strings.LastIndexByte(s, '<'); i >= 0 {
		addr = s[i+1:]
		if j := strings.IndexByte(addr, '>'); j >= 0 {
			addr = addr[:j]
		}
		name = s[:i]
	} else {
		f := strings.Fields(s)
		for k := len(f) - 1; k >= 0; k-- {
			if strings.Contains(f[k], "@") {
				addr, name = f[k], strings.Join(f[:k], " ")
				break
			}
		}
	}
	local, host, ok := strings.Cut(strings.TrimSpace(addr), "@")
	if !ok || local == "" || host == "" || strings.ContainsAny(host, " \t<>@") {
		return Address{}, false
	}
	name = decodePhrase(name)
	if name == "" {
		name = decodePhrase(comments)
	}
	return Address{Name: name, Mailbox: strings.Trim(local, `"`), Host: host}, true
}
