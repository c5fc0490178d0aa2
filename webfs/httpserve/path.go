package httpserve

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// MaxPath is the longest request path accepted, in bytes as sent
// (percent-encoded); longer ones get 414.
const MaxPath = 8 << 10

var (
	errBadPath  = errors.New("malformed or escaping path")
	errLongPath = errors.New("path too long")
)

// decodePath checks the path of a request target exactly as sent —
// percent-encoded, without the query — and returns it decoded. It accepts
// only a canonical absolute path; see the package comment for the rules.
// The result starts with "/", may end with "/" (a directory), and holds no
// empty, "." or ".." segment, backslash, control character or invalid UTF-8.
func decodePath(raw string) (string, error) {
	if len(raw) > MaxPath {
		return "", errLongPath
	}
	if raw == "" || raw[0] != '/' {
		return "", errBadPath
	}
	var dec []byte // nil until the first escape
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", errBadPath
			}
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			// An encoded dot, slash or backslash only ever serves to
			// smuggle a segment past a check; an encoded control
			// character has no business in a file name.
			if c == '.' || c == '/' || forbidden(c) {
				return "", errBadPath
			}
			if dec == nil {
				dec = append(make([]byte, 0, len(raw)), raw[:i]...)
			}
			dec = append(dec, c)
			i += 2
			continue
		}
		if forbidden(c) {
			return "", errBadPath
		}
		if dec != nil {
			dec = append(dec, c)
		}
	}
	p := raw
	if dec != nil {
		p = string(dec)
	}
	if !utf8.ValidString(p) || doubleEncoded(p) {
		return "", errBadPath
	}
	// Every segment but a final empty one (the trailing slash) must be a
	// name: no "//", "/./" or "/../", wherever they appear.
	for rest := p[1:]; ; {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "." || seg == ".." || seg == "" && more {
			return "", errBadPath
		}
		if !more {
			break
		}
		rest = tail
	}
	return p, nil
}

// forbidden reports bytes refused anywhere in a path, raw or decoded: the
// backslash (a separator to some software) and ASCII control characters
// (NUL, CR, LF: truncation and header injection).
func forbidden(c byte) bool {
	return c == '\\' || c < 0x20 || c == 0x7f
}

// doubleEncoded reports whether the decoded path p still holds a
// percent-encoding of a dot, slash, backslash, control character or percent
// sign: something that a second decoding — by a proxy, a CDN or a careless
// backend — would turn into a path trick. Other percent-escapes ("a%20b")
// are literal file names and stay allowed.
func doubleEncoded(p string) bool {
	for i := strings.IndexByte(p, '%'); i >= 0 && i+2 < len(p); {
		if isHex(p[i+1]) && isHex(p[i+2]) {
			c := unhex(p[i+1])<<4 | unhex(p[i+2])
			if c == '.' || c == '/' || c == '%' || forbidden(c) {
				return true
			}
		}
		j := strings.IndexByte(p[i+1:], '%')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}
