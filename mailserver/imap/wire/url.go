package wire

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"
)

// MessageURL is an IMAP URL (RFC 5092) naming a message, or a part of
// one, as CATENATE takes them (RFC 4469 5):
//
//	/INBOX;UIDVALIDITY=385759045/;UID=20/;SECTION=1.2/;PARTIAL=0.100
//	imap://joe@example.com/Drafts;UIDVALIDITY=1/;UID=3/;SECTION=HEADER
//
// A server-relative or absolute URL; the server's host is not checked
// (the session reads only its own user's mailboxes, User says whose the
// URL claims to be). URLAUTH and EXPIRE are not supported.
type MessageURL struct {
	Raw         string
	User        string // from an absolute URL's userinfo; "" if none
	Mailbox     string // UTF-8
	UIDValidity uint32 // 0: not given
	UID         imap.UID
	// Section is the part named (Specifier, Part path, header fields) and
	// the PARTIAL range, as in a FETCH BODY[...]; never nil (the whole
	// message: an empty one).
	Section *imap.FetchItemBodySection
}

// ParseMessageURL parses an IMAP URL that names a message.
func ParseMessageURL(raw string) (*MessageURL, error) {
	u := &MessageURL{Raw: raw, Section: &imap.FetchItemBodySection{}}
	s := raw
	if len(s) >= 7 && strings.EqualFold(s[:7], "imap://") {
		s = s[7:]
		i := strings.IndexByte(s, '/')
		if i < 0 {
			return nil, errors.New("no mailbox in the URL")
		}
		auth := s[:i]
		s = s[i:]
		if at := strings.LastIndexByte(auth, '@'); at >= 0 {
			user := auth[:at]
			if j := indexFold(user, ";AUTH="); j >= 0 {
				user = user[:j]
			}
			var err error
			if u.User, err = url.PathUnescape(user); err != nil {
				return nil, fmt.Errorf("bad user in the URL: %v", err)
			}
		}
	}
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
		return nil, errors.New("want /mailbox;UIDVALIDITY=n/;UID=m or imap://host/... (a URL naming a message)")
	}
	s = s[1:]
	i := indexFold(s, "/;UID=")
	if i < 0 {
		return nil, errors.New("the URL names no message (;UID=)")
	}
	mb, rest := s[:i], s[i+len("/;UID="):]
	if j := indexFold(mb, ";UIDVALIDITY="); j >= 0 {
		v, err := strconv.ParseUint(mb[j+len(";UIDVALIDITY="):], 10, 32)
		if err != nil || v == 0 {
			return nil, errors.New("bad UIDVALIDITY in the URL")
		}
		u.UIDValidity, mb = uint32(v), mb[:j]
	}
	if strings.ContainsAny(mb, ";") || mb == "" {
		return nil, errors.New("bad mailbox name in the URL")
	}
	var err error
	if u.Mailbox, err = url.PathUnescape(mb); err != nil {
		return nil, fmt.Errorf("bad mailbox name in the URL: %v", err)
	}
	if strings.EqualFold(u.Mailbox, "INBOX") {
		u.Mailbox = "INBOX"
	}
	params := strings.Split(rest, "/;")
	uid, err := strconv.ParseUint(params[0], 10, 32)
	if err != nil || uid == 0 {
		return nil, errors.New("bad UID in the URL")
	}
	u.UID = imap.UID(uid)
	seen := map[string]bool{}
	for _, p := range params[1:] {
		k, v, ok := strings.Cut(p, "=")
		k = strings.ToUpper(k)
		if !ok || seen[k] {
			return nil, fmt.Errorf("bad URL parameter %q", p)
		}
		seen[k] = true
		switch k {
		case "SECTION":
			if seen["PARTIAL"] {
				return nil, errors.New("SECTION after PARTIAL in the URL")
			}
			sec, err := url.PathUnescape(v)
			if err != nil || sec == "" || strings.ContainsAny(sec, "{[]\r\n") {
				return nil, fmt.Errorf("bad SECTION %q in the URL", v)
			}
			d := &decoder{line: []byte("[" + sec + "]"), cont: func() error { return errors.New("no literals in a URL") }}
			if err := d.section(u.Section); err != nil || !d.eol() {
				return nil, fmt.Errorf("bad SECTION %q in the URL", sec)
			}
		case "PARTIAL":
			off, size, hasSize := strings.Cut(v, ".")
			o, err := strconv.ParseUint(off, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("bad PARTIAL %q in the URL", v)
			}
			n := uint64(math.MaxInt64)
			if hasSize {
				if n, err = strconv.ParseUint(size, 10, 32); err != nil || n == 0 {
					return nil, fmt.Errorf("bad PARTIAL %q in the URL", v)
				}
			}
			u.Section.Partial = &imap.SectionPartial{Offset: int64(o), Size: int64(n)}
		case "URLAUTH", "EXPIRE":
			return nil, errors.New("URLAUTH is not supported here")
		default:
			return nil, fmt.Errorf("unknown URL parameter %q", k)
		}
	}
	return u, nil
}

// indexFold is strings.Index ignoring ASCII case.
func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}
