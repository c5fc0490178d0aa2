package wire

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// protoError is an error in what the client sent: answered BAD (or NO
// with a code), never SERVERBUG. fatal ends the connection (the client is
// sending bytes this side will not read).
type protoError struct {
	typ   imap.StatusResponseType
	code  imap.ResponseCode
	text  string
	fatal bool
}

func (e *protoError) Error() string { return e.text }

func bad(format string, args ...any) *protoError {
	return &protoError{typ: imap.StatusResponseTypeBad, text: fmt.Sprintf(format, args...)}
}

// decoder parses one command: the current line, continued after each
// literal by the next line.
type decoder struct {
	lr    *lineReader
	cont  func() error // asks for a synchronizing literal ("+")
	line  []byte
	pos   int
	total int
}

func (d *decoder) eol() bool { return d.pos >= len(d.line) }
func (d *decoder) peek() byte {
	if d.eol() {
		return 0
	}
	return d.line[d.pos]
}

func (d *decoder) expect(c byte, what string) error {
	if d.peek() != c {
		if d.eol() {
			return bad("Expected %s, got end of line", what)
		}
		return bad("Expected %s at %q", what, d.rest())
	}
	d.pos++
	return nil
}

func (d *decoder) rest() string {
	r := d.line[d.pos:]
	if len(r) > 20 {
		r = r[:20]
	}
	return string(r)
}

func (d *decoder) sp() error { return d.expect(' ', "SP") }

// end checks that the command has no more arguments.
func (d *decoder) end() error {
	if !d.eol() {
		return bad("Unexpected argument %q", d.rest())
	}
	return nil
}

func isAtomChar(c byte) bool {
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return c > 0x20 && c < 0x7f
}

func (d *decoder) while(ok func(byte) bool) string {
	start := d.pos
	for !d.eol() && ok(d.line[d.pos]) {
		d.pos++
	}
	return string(d.line[start:d.pos])
}

func (d *decoder) atom() (string, error) {
	s := d.while(isAtomChar)
	if s == "" {
		if d.eol() {
			return "", bad("Expected an atom, got end of line")
		}
		return "", bad("Expected an atom at %q", d.rest())
	}
	return s, nil
}

func (d *decoder) number64() (uint64, error) {
	s := d.while(func(c byte) bool { return c >= '0' && c <= '9' })
	if s == "" {
		return 0, bad("Expected a number at %q", d.rest())
	}
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		return 0, bad("Number %s out of range", s)
	}
	return n, nil
}

func (d *decoder) number() (uint32, error) {
	n, err := d.number64()
	if err != nil {
		return 0, err
	}
	if n > 1<<32-1 {
		return 0, bad("Number %d out of range", n)
	}
	return uint32(n), nil
}

// literalSpec parses "{n}" or "{n+}" ending the line.
func (d *decoder) literalSpec() (n int64, sync bool, err error) {
	if err := d.expect('{', "{"); err != nil {
		return 0, false, err
	}
	v, err := d.number64()
	if err != nil {
		return 0, false, err
	}
	sync = true
	if d.peek() == '+' {
		d.pos++
		sync = false
	}
	if err := d.expect('}', "}"); err != nil {
		return 0, false, err
	}
	if !d.eol() {
		return 0, false, bad("A literal must end its line")
	}
	return int64(v), sync, nil
}

// nextLine continues the command after a literal.
func (d *decoder) nextLine() error {
	line, err := d.lr.readLine(d.line[:0], MaxLine)
	if err == errLineTooLong {
		return &protoError{typ: imap.StatusResponseTypeBad, text: "Line too long"}
	}
	if err != nil {
		return err
	}
	d.total += len(line)
	if d.total > MaxCommand {
		return &protoError{typ: imap.StatusResponseTypeBad, code: imap.ResponseCodeTooBig, text: "Command too long"}
	}
	d.line, d.pos = line, 0
	return nil
}

// literal reads a literal string into memory.
func (d *decoder) literal() (string, error) {
	n, sync, err := d.literalSpec()
	if err != nil {
		return "", err
	}
	if n > MaxLiteral || int64(d.total)+n > MaxCommand {
		// Synchronizing: the client sends nothing more, NO [TOOBIG] says
		// why. Non-synchronizing: its bytes are on the way, BAD and BYE.
		typ := imap.StatusResponseTypeNo
		if !sync {
			typ = imap.StatusResponseTypeBad
		}
		return "", &protoError{typ: typ, code: imap.ResponseCodeTooBig,
			text: fmt.Sprintf("Literal of %d bytes too large (at most %d here)", n, MaxLiteral), fatal: !sync}
	}
	if sync {
		if err := d.cont(); err != nil {
			return "", err
		}
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.lr, b); err != nil {
		return "", err
	}
	d.total += int(n)
	if err := d.nextLine(); err != nil {
		return "", err
	}
	return string(b), nil
}

func (d *decoder) quoted() (string, error) {
	if err := d.expect('"', `"`); err != nil {
		return "", err
	}
	var sb strings.Builder
	for {
		if d.eol() {
			return "", bad("Unclosed quoted string")
		}
		c := d.line[d.pos]
		d.pos++
		switch c {
		case '"':
			return sb.String(), nil
		case '\\':
			if d.eol() || d.line[d.pos] != '"' && d.line[d.pos] != '\\' {
				return "", bad("Bad escape in quoted string")
			}
			sb.WriteByte(d.line[d.pos])
			d.pos++
		case '\r', '\n', 0:
			return "", bad("Bad character in quoted string")
		default:
			sb.WriteByte(c)
		}
	}
}

// str parses a quoted string or literal.
func (d *decoder) str() (string, error) {
	switch d.peek() {
	case '"':
		return d.quoted()
	case '{':
		return d.literal()
	}
	return "", bad("Expected a string at %q", d.rest())
}

func isAStringChar(c byte) bool { return isAtomChar(c) || c == ']' }

func (d *decoder) astring() (string, error) {
	switch d.peek() {
	case '"', '{':
		return d.str()
	}
	s := d.while(isAStringChar)
	if s == "" {
		if d.eol() {
			return "", bad("Expected a string, got end of line")
		}
		return "", bad("Expected a string at %q", d.rest())
	}
	return s, nil
}

// nstring: NIL or a string ("" for NIL).
func (d *decoder) nstringOrNil() (string, bool, error) {
	if d.peek() != '"' && d.peek() != '{' {
		a, err := d.atom()
		if err != nil {
			return "", false, err
		}
		if !strings.EqualFold(a, "NIL") {
			return "", false, bad("Expected NIL or a string, got %q", a)
		}
		return "", true, nil
	}
	s, err := d.str()
	return s, false, err
}

// listMailbox parses a LIST pattern: list-chars (wildcards allowed) or a
// string.
func (d *decoder) listMailbox() (string, error) {
	switch d.peek() {
	case '"', '{':
		return d.str()
	}
	s := d.while(func(c byte) bool { return isAStringChar(c) || c == '%' || c == '*' })
	if s == "" {
		return "", bad("Expected a mailbox pattern at %q", d.rest())
	}
	return s, nil
}

// list parses "(" item *(SP item) ")", or "()" when empty is true.
func (d *decoder) list(empty bool, item func() error) error {
	if err := d.expect('(', "("); err != nil {
		return err
	}
	if d.peek() == ')' {
		d.pos++
		if !empty {
			return bad("Empty list")
		}
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		if d.peek() == ')' {
			d.pos++
			return nil
		}
		if err := d.sp(); err != nil {
			return err
		}
	}
}

func (d *decoder) flag() (imap.Flag, error) {
	if d.peek() == '\\' {
		d.pos++
		if d.peek() == '*' {
			d.pos++
			return imap.FlagWildcard, nil
		}
		a, err := d.atom()
		if err != nil {
			return "", err
		}
		return imap.Flag(`\` + a), nil
	}
	a, err := d.atom()
	return imap.Flag(a), err
}

func (d *decoder) flagList() ([]imap.Flag, error) {
	var out []imap.Flag
	err := d.list(true, func() error {
		f, err := d.flag()
		if f == imap.FlagWildcard {
			return bad(`\* is not a flag`)
		}
		out = append(out, f)
		return err
	})
	return out, err
}

// numSet parses a sequence set or UID set ("$" for the saved result).
func (d *decoder) numSet(uid bool) (imap.NumSet, error) {
	if d.peek() == '$' {
		d.pos++
		// The saved result is UIDs whatever the command (RFC 5182).
		return imap.SearchRes(), nil
	}
	s := d.while(func(c byte) bool { return c >= '0' && c <= '9' || c == ':' || c == ',' || c == '*' })
	if s == "" {
		return nil, bad("Expected a sequence set at %q", d.rest())
	}
	var seq imap.SeqSet
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, ":")
		start, err := seqNum(a)
		if err != nil {
			return nil, err
		}
		stop := start
		if isRange {
			if stop, err = seqNum(b); err != nil {
				return nil, err
			}
		}
		seq = append(seq, imap.SeqRange{Start: start, Stop: stop})
	}
	if !uid {
		return seq, nil
	}
	out := make(imap.UIDSet, len(seq))
	for i, r := range seq {
		out[i] = imap.UIDRange{Start: imap.UID(r.Start), Stop: imap.UID(r.Stop)}
	}
	return out, nil
}

// seqNum parses a nz-number or "*" (0).
func seqNum(s string) (uint32, error) {
	if s == "*" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || s[0] == '0' {
		return 0, bad("Invalid sequence number %q (numbers start at 1)", s)
	}
	return uint32(n), nil
}

// date parses a SEARCH date: d-Mon-yyyy, possibly quoted.
func (d *decoder) date() (time.Time, error) {
	var s string
	var err error
	if d.peek() == '"' {
		s, err = d.quoted()
	} else {
		s = d.while(func(c byte) bool { return isAtomChar(c) })
	}
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse("2-Jan-2006", s)
	if err != nil {
		return time.Time{}, bad("Invalid date %q (want e.g. 1-Feb-2026)", s)
	}
	return t, nil
}

// dateTime parses an APPEND date-time: "dd-Mon-yyyy hh:mm:ss +zzzz".
func (d *decoder) dateTime() (time.Time, error) {
	s, err := d.quoted()
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse("_2-Jan-2006 15:04:05 -0700", s)
	if err != nil {
		if t, err = time.Parse("2-Jan-2006 15:04:05 -0700", s); err != nil {
			return time.Time{}, bad("Invalid date-time %q", s)
		}
	}
	return t, nil
}
