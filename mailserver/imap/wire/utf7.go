package wire

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Mailbox names travel in modified UTF-7 (RFC 3501 5.1.3) to IMAP4rev1
// clients; the Session sees UTF-8.

var b64 = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").WithPadding(base64.NoPadding)

var errUTF7 = errors.New("invalid modified UTF-7 in mailbox name")

// decodeUTF7 turns a modified UTF-7 name into UTF-8.
func decodeUTF7(s string) (string, error) {
	if !strings.Contains(s, "&") {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] > 0x7e {
				return "", errUTF7
			}
		}
		return s, nil
	}
	var sb strings.Builder
	lastShiftEnd := -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return "", errUTF7
		}
		if c != '&' {
			sb.WriteByte(c)
			continue
		}
		j := strings.IndexByte(s[i+1:], '-')
		if j < 0 {
			return "", errUTF7
		}
		enc := s[i+1 : i+1+j]
		if enc == "" {
			sb.WriteByte('&')
			i++
			continue
		}
		if lastShiftEnd == i { // two encoded runs back to back
			return "", errUTF7
		}
		raw, err := b64.Strict().DecodeString(enc)
		if err != nil || len(raw)%2 != 0 {
			return "", errUTF7
		}
		u := make([]uint16, len(raw)/2)
		for k := range u {
			u[k] = uint16(raw[2*k])<<8 | uint16(raw[2*k+1])
		}
		for _, r := range utf16.Decode(u) {
			if r == utf8.RuneError || r >= 0x20 && r <= 0x7e {
				return "", errUTF7 // unpaired surrogate, or ASCII that must be direct
			}
			sb.WriteRune(r)
		}
		i += j + 1
		lastShiftEnd = i + 1
	}
	return sb.String(), nil
}

// encodeUTF7 turns a UTF-8 name into modified UTF-7.
func encodeUTF7(s string) string {
	plain := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e || s[i] == '&' {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	var sb strings.Builder
	var run []uint16
	flush := func() {
		if len(run) == 0 {
			return
		}
		b := make([]byte, 2*len(run))
		for k, u := range run {
			b[2*k], b[2*k+1] = byte(u>>8), byte(u)
		}
		sb.WriteByte('&')
		sb.WriteString(b64.EncodeToString(b))
		sb.WriteByte('-')
		run = run[:0]
	}
	for _, r := range s {
		switch {
		case r == '&':
			flush()
			sb.WriteString("&-")
		case r >= 0x20 && r <= 0x7e:
			flush()
			sb.WriteRune(r)
		default:
			run = append(run, utf16.Encode([]rune{r})...)
		}
	}
	flush()
	return sb.String()
}

// MatchList reports whether a mailbox name matches a LIST reference and
// pattern ("*" matches anything, "%" anything but the delimiter).
func MatchList(name string, delim rune, ref, pattern string) bool {
	if strings.HasPrefix(pattern, string(delim)) && strings.HasSuffix(ref, string(delim)) {
		pattern = pattern[1:]
	}
	return match(name, delim, ref+pattern)
}

func match(name string, delim rune, pattern string) bool {
	for len(pattern) > 0 {
		switch c := pattern[0]; c {
		case '*', '%':
			rest := pattern[1:]
			for i := 0; i <= len(name); i++ {
				if match(name[i:], delim, rest) {
					return true
				}
				if i < len(name) && c == '%' && rune(name[i]) == delim {
					return false
				}
			}
			return false
		default:
			if name == "" || name[0] != c {
				return false
			}
			name, pattern = name[1:], pattern[1:]
		}
	}
	return name == ""
}
