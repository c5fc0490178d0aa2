package sieve

import (
	"fmt"
	"strconv"
	"strings"
)

// Pos is a place in a script: 1-based line and column (in bytes), as an
// editor shows them.
type Pos struct {
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("line %d, column %d", p.Line, p.Col) }

// ParseError is a script that cannot be run: where, and what is wrong, in
// words meant for the script's author.
type ParseError struct {
	Pos Pos
	Msg string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("sieve: %d:%d: %s", e.Pos.Line, e.Pos.Col, e.Msg)
}

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokTag
	tokNumber
	tokString
	tokLBracket
	tokRBracket
	tokLParen
	tokRParen
	tokLBrace
	tokRBrace
	tokComma
	tokSemicolon
)

func (k tokKind) String() string {
	switch k {
	case tokEOF:
		return "end of script"
	case tokIdent:
		return "identifier"
	case tokTag:
		return "tag"
	case tokNumber:
		return "number"
	case tokString:
		return "string"
	case tokLBracket:
		return `"["`
	case tokRBracket:
		return `"]"`
	case tokLParen:
		return `"("`
	case tokRParen:
		return `")"`
	case tokLBrace:
		return `"{"`
	case tokRBrace:
		return `"}"`
	case tokComma:
		return `","`
	case tokSemicolon:
		return `";"`
	}
	return "token"
}

type token struct {
	kind tokKind
	pos  Pos
	text string // identifier/tag name (lower case), string value
	num  int64
}

func (t token) describe() string {
	switch t.kind {
	case tokIdent:
		return "identifier " + strconv.Quote(t.text)
	case tokTag:
		return "tag :" + t.text
	case tokNumber:
		return "number " + strconv.FormatInt(t.num, 10)
	case tokString:
		s := t.text
		if len(s) > 30 {
			s = s[:30] + "…"
		}
		return "string " + strconv.Quote(s)
	}
	return t.kind.String()
}

// lexer turns script bytes into tokens. It never backtracks, so its cost is
// linear in the script's size.
type lexer struct {
	src  string
	off  int
	line int
	col  int
}

func newLexer(src string) *lexer { return &lexer{src: src, line: 1, col: 1} }

func (l *lexer) pos() Pos { return Pos{l.line, l.col} }

func (l *lexer) errf(p Pos, format string, args ...any) error {
	return &ParseError{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// advance moves over n bytes, keeping line and column.
func (l *lexer) advance(n int) {
	for i := 0; i < n && l.off < len(l.src); i++ {
		if l.src[l.off] == '\n' {
			l.line++
			l.col = 1
		} else {
			l.col++
		}
		l.off++
	}
}

func (l *lexer) skipSpaceAndComments() error {
	for l.off < len(l.src) {
		c := l.src[l.off]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			l.advance(1)
		case c == '#':
			for l.off < len(l.src) && l.src[l.off] != '\n' {
				l.advance(1)
			}
		case c == '/' && strings.HasPrefix(l.src[l.off:], "/*"):
			start := l.pos()
			end := strings.Index(l.src[l.off+2:], "*/")
			if end < 0 {
				return l.errf(start, `comment started with "/*" is never closed with "*/"`)
			}
			l.advance(end + 4)
		default:
			return nil
		}
	}
	return nil
}

func isIdentStart(c byte) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || ('0' <= c && c <= '9') }

var punctuation = map[byte]tokKind{'[': tokLBracket, ']': tokRBracket, '(': tokLParen, ')': tokRParen,
	'{': tokLBrace, '}': tokRBrace, ',': tokComma, ';': tokSemicolon}

func (l *lexer) next() (token, error) {
	if err := l.skipSpaceAndComments(); err != nil {
		return token{}, err
	}
	p := l.pos()
	if l.off >= len(l.src) {
		return token{kind: tokEOF, pos: p}, nil
	}
	c := l.src[l.off]
	if k, ok := punctuation[c]; ok {
		l.advance(1)
		return token{kind: k, pos: p}, nil
	}
	switch {
	case c == '"':
		s, err := l.quoted()
		return token{kind: tokString, pos: p, text: s}, err
	case c == ':':
		l.advance(1)
		if l.off >= len(l.src) || !isIdentStart(l.src[l.off]) {
			return token{}, l.errf(p, `":" must be followed by a tag name, as in ":is"`)
		}
		name := l.ident()
		return token{kind: tokTag, pos: p, text: strings.ToLower(name)}, nil
	case '0' <= c && c <= '9':
		return l.number(p)
	case isIdentStart(c):
		name := l.ident()
		if strings.EqualFold(name, "text") && l.off < len(l.src) && l.src[l.off] == ':' {
			l.advance(1)
			s, err := l.multiline(p)
			return token{kind: tokString, pos: p, text: s}, err
		}
		return token{kind: tokIdent, pos: p, text: strings.ToLower(name)}, nil
	}
	return token{}, l.errf(p, "unexpected character %q", rune(c))
}

func (l *lexer) ident() string {
	start := l.off
	for l.off < len(l.src) && isIdentChar(l.src[l.off]) {
		l.advance(1)
	}
	return l.src[start:l.off]
}

func (l *lexer) number(p Pos) (token, error) {
	start := l.off
	for l.off < len(l.src) && '0' <= l.src[l.off] && l.src[l.off] <= '9' {
		l.advance(1)
	}
	digits := l.src[start:l.off]
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > 1<<53 {
		return token{}, l.errf(p, "number %s is too large", digits)
	}
	mult := int64(1)
	if l.off < len(l.src) {
		switch l.src[l.off] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult != 1 {
			l.advance(1)
		}
	}
	if l.off < len(l.src) && isIdentChar(l.src[l.off]) {
		return token{}, l.errf(p, "number %s is followed by %q; only K, M or G may follow a number", digits, rune(l.src[l.off]))
	}
	if n > (1<<53)/mult {
		return token{}, l.errf(p, "number %s is too large", l.src[start:l.off])
	}
	return token{kind: tokNumber, pos: p, num: n * mult}, nil
}

// quoted reads a "..." string. A backslash takes the next character
// literally (RFC 5228 §2.4.2: only \" and \\ are defined; other escapes
// drop the backslash).
func (l *lexer) quoted() (string, error) {
	start := l.pos()
	l.advance(1)
	var b strings.Builder
	for {
		if l.off >= len(l.src) {
			return "", l.errf(start, "string is never closed with a double quote")
		}
		c := l.src[l.off]
		switch c {
		case '"':
			l.advance(1)
			return b.String(), nil
		case '\\':
			if l.off+1 >= len(l.src) {
				return "", l.errf(start, "string is never closed with a double quote")
			}
			b.WriteByte(l.src[l.off+1])
			l.advance(2)
		default:
			b.WriteByte(c)
			l.advance(1)
		}
	}
}

// multiline reads the body of "text:" up to a line holding only ".";
// a leading ".." on a line stands for "." (RFC 5228 §2.4.2).
func (l *lexer) multiline(start Pos) (string, error) {
	// Rest of the "text:" line: white space and an optional hash comment.
	for l.off < len(l.src) && (l.src[l.off] == ' ' || l.src[l.off] == '\t') {
		l.advance(1)
	}
	if l.off < len(l.src) && l.src[l.off] == '#' {
		for l.off < len(l.src) && l.src[l.off] != '\n' {
			l.advance(1)
		}
	}
	if l.off < len(l.src) && l.src[l.off] == '\r' {
		l.advance(1)
	}
	if l.off >= len(l.src) || l.src[l.off] != '\n' {
		return "", l.errf(l.pos(), `"text:" must be followed by the end of the line`)
	}
	l.advance(1)
	var b strings.Builder
	for {
		if l.off >= len(l.src) {
			return "", l.errf(start, `multi-line "text:" string is never ended by a line holding only "."`)
		}
		end := strings.IndexByte(l.src[l.off:], '\n')
		var line string
		if end < 0 {
			line = l.src[l.off:]
			end = len(line)
		} else {
			line = l.src[l.off : l.off+end]
			end++
		}
		l.advance(end)
		line = strings.TrimSuffix(line, "\r")
		if line == "." {
			return b.String(), nil
		}
		if strings.HasPrefix(line, "..") {
			line = line[1:]
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
}
