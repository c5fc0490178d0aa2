package mailbox

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"hastore/mailserver/mailstate"
)

// Reading an mbox file (mboxrd or mboxo, as Dovecot, mutt and Thunderbird
// write them) for `hastore admin import --mbox`. Messages are streamed one
// at a time, so a file of any size is read in the memory of its largest
// message, itself bounded by the reader's limit.

// MboxMessage is one message of an mbox file.
type MboxMessage struct {
	// Offset is where its "From " line starts in the file.
	Offset int64
	// Key names it for the import's memory of what it brought in: a
	// digest of the body and how many identical bodies came before it in
	// the file. Not the offset: Dovecot rewrites an mbox when flags change
	// or mail is expunged, moving the messages after; a re-run over the
	// rewritten file (or with mail appended) still imports nothing twice.
	Key string
	// Body is the message with CRLF line ends, ">From " lines unquoted and
	// the headers mbox keeps its state in removed; nil if TooBig.
	Body         []byte
	Flags        []string
	InternalDate time.Time // from the "From " line; zero if unreadable
	// TooBig says the message was over the reader's limit; Size is then
	// at least the limit and the body was skipped.
	TooBig bool
	Size   int64
	pseudo bool // it has an X-IMAP header
}

// mboxStateHeaders are the headers Dovecot keeps mbox state in and hides
// from IMAP clients (src/lib-storage/index/mbox/mbox-storage.c); they are
// not part of the message.
var mboxStateHeaders = []string{"status", "x-status", "x-keywords", "x-uid", "x-imap", "x-imapbase", "content-length"}

// MboxReader reads the messages of an mbox file one by one.
type MboxReader struct {
	br      *bufio.Reader
	max     int64
	off     int64  // offset of the next line to read
	from    []byte // a "From " line read but not yet used
	fromOff int64
	seen    map[[12]byte]int // digests of the bodies read, how many of each
	started bool
}

// NewMboxReader reads r; a message over max bytes is reported TooBig.
func NewMboxReader(r io.Reader, max int64) *MboxReader {
	return &MboxReader{br: bufio.NewReaderSize(r, 64<<10), max: max, seen: map[[12]byte]int{}}
}

// line reads one line with its end; a line longer than the buffer comes
// in pieces (only the first may be a "From " line, which is short).
func (r *MboxReader) line() ([]byte, bool, error) {
	b, err := r.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		err = nil
		r.off += int64(len(b))
		return b, false, nil
	}
	r.off += int64(len(b))
	return b, true, err
}

// isFromLine says whether line (prevBlank: the line before it was empty,
// or it is the file's first) separates messages. A writer puts an empty
// line before each "From " line, and a body's own "From " lines are quoted;
// an unquoted one after text is taken as a separator only if it carries a
// date, as a real one does.
func isFromLine(line []byte, prevBlank bool) bool {
	if !bytes.HasPrefix(line, []byte("From ")) {
		return false
	}
	if prevBlank {
		return true
	}
	_, ok := parseFromLineDate(string(line))
	return ok
}

// Next returns the next message, or io.EOF after the last.
func (r *MboxReader) Next() (*MboxMessage, error) {
	first := !r.started
	m, err := r.next()
	if err == nil && first && m.pseudo {
		// UW-IMAP's "DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA":
		// state, not mail (Dovecot skips it too).
		return r.next()
	}
	return m, err
}

func (r *MboxReader) next() (*MboxMessage, error) {
	if !r.started {
		r.started = true
		// Skip to the first "From " line; anything before it is no message.
		prevBlank := true
		for {
			start := r.off
			b, whole, err := r.line()
			if len(b) > 0 && isFromLine(b, prevBlank) {
				r.from, r.fromOff = append([]byte(nil), b...), start
				break
			}
			if err == io.EOF {
				return nil, io.EOF
			}
			if err != nil {
				return nil, err
			}
			if whole {
				prevBlank = isBlank(b)
			}
		}
	}
	if r.from == nil {
		return nil, io.EOF
	}
	m := &MboxMessage{Offset: r.fromOff}
	m.InternalDate, _ = parseFromLineDate(string(r.from))
	r.from = nil
	var body []byte
	var size int64
	prevBlank, atLineStart := false, true
	// The empty line before the next "From " belongs to the separator; it
	// is held back until we know the line after it.
	var held []byte
	for {
		start := r.off
		b, whole, err := r.line()
		if len(b) > 0 && atLineStart && isFromLine(b, prevBlank) {
			r.from, r.fromOff = append([]byte(nil), b...), start
			held = nil
			break
		}
		if len(b) > 0 {
			if held != nil {
				body, size = r.add(body, size, held, m)
				held = nil
			}
			piece := b
			if atLineStart {
				piece = unquoteFrom(piece)
			}
			if whole && isBlank(b) && atLineStart {
				held = append([]byte(nil), b...)
			} else {
				body, size = r.add(body, size, piece, m)
			}
			if whole {
				prevBlank = atLineStart && isBlank(b)
			} else {
				prevBlank = false
			}
			atLineStart = whole && b[len(b)-1] == '\n'
		}
		if err == io.EOF {
			// The last message: a final empty line is the writer's too.
			break
		}
		if err != nil {
			return nil, err
		}
	}
	m.Size = size
	if m.TooBig {
		return m, nil
	}
	body = NormalizeCRLF(stripMboxHeaders(body, m))
	if body == nil {
		body = []byte{}
	}
	m.Body = body
	m.Size = int64(len(body))
	sum := sha256.Sum256(body)
	d := [12]byte(sum[:12])
	m.Key = fmt.Sprintf("mbox:%s:%d", hex.EncodeToString(d[:]), r.seen[d])
	r.seen[d]++
	return m, nil
}

// add appends piece to body unless that passes the limit.
func (r *MboxReader) add(body []byte, size int64, piece []byte, m *MboxMessage) ([]byte, int64) {
	size += int64(len(piece))
	if m.TooBig || size > r.max {
		m.TooBig = true
		return nil, size
	}
	return append(body, piece...), size
}

func isBlank(line []byte) bool {
	return len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n'
}

// unquoteFrom undoes mboxrd quoting: ">From ", ">>From " … lose one '>'.
// (mboxo quotes only "From ", so only its ">>From " lines, rare and
// ambiguous in that format anyway, read differently.)
func unquoteFrom(line []byte) []byte {
	i := 0
	for i < len(line) && line[i] == '>' {
		i++
	}
	if i > 0 && bytes.HasPrefix(line[i:], []byte("From ")) {
		return line[1:]
	}
	return line
}

// stripMboxHeaders removes the state headers from body's header section
// and turns them into m.Flags.
func stripMboxHeaders(body []byte, m *MboxMessage) []byte {
	var out []byte
	skipping, cur := false, ""
	rest := body
	for len(rest) > 0 {
		n := bytes.IndexByte(rest, '\n') + 1
		if n == 0 {
			n = len(rest)
		}
		line := rest[:n]
		rest = rest[n:]
		if isBlank(line) || len(bytes.TrimRight(line, "\r\n")) == 0 {
			out = append(out, line...)
			out = append(out, rest...)
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if skipping {
				applyMboxHeader(m, cur, line)
				continue
			}
			out = append(out, line...)
			continue
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		skipping = false
		if ok {
			n := strings.ToLower(strings.TrimSpace(string(name)))
			for _, h := range mboxStateHeaders {
				if n == h {
					skipping, cur = true, n
					applyMboxHeader(m, n, line[len(name)+1:])
				}
			}
		}
		if !skipping {
			out = append(out, line...)
		}
	}
	if out == nil && len(body) > 0 {
		return []byte{}
	}
	return out
}

// applyMboxHeader adds the flags a state header (or a continuation line
// of one) names.
func applyMboxHeader(m *MboxMessage, name string, value []byte) {
	v := strings.TrimSpace(string(value))
	add := func(f string) {
		for _, g := range m.Flags {
			if g == f {
				return
			}
		}
		m.Flags = append(m.Flags, f)
	}
	switch name {
	case "x-imap":
		m.pseudo = true
	case "status":
		// R: read; O: old (seen by a client, so not \Recent, which an
		// import never sets anyway).
		if strings.ContainsRune(v, 'R') {
			add(mailstate.FlagSeen)
		}
	case "x-status":
		for _, c := range v {
			switch c {
			case 'A':
				add(mailstate.FlagAnswered)
			case 'F':
				add(mailstate.FlagFlagged)
			case 'D':
				add(mailstate.FlagDeleted)
			case 'T':
				add(mailstate.FlagDraft)
			}
		}
	case "x-keywords":
		for _, kw := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
			if !strings.HasPrefix(kw, `\`) {
				add(kw)
			}
		}
	}
}

// fromLineLayouts are the dates "From " lines carry: asctime, with a zone
// after the time or after the year (some writers), or without seconds.
var fromLineLayouts = []string{
	"Mon Jan _2 15:04:05 2006",
	"Mon Jan _2 15:04:05 2006 -0700",
	"Mon Jan _2 15:04:05 MST 2006",
	"Mon Jan _2 15:04:05 -0700 2006",
	"Mon Jan _2 15:04 2006",
}

// parseFromLineDate reads the date of a "From sender date" line. The
// sender may be missing or hold spaces, so the date is found from its
// weekday.
func parseFromLineDate(line string) (time.Time, bool) {
	f := strings.Fields(strings.TrimPrefix(line, "From "))
	for i := range f {
		switch f[i] {
		case "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun":
		default:
			continue
		}
		for n := min(len(f)-i, 6); n >= 4; n-- {
			s := strings.Join(f[i:i+n], " ")
			for _, l := range fromLineLayouts {
				if t, err := time.Parse(l, s); err == nil {
					return t, true
				}
			}
		}
	}
	return time.Time{}, false
}

// WriteMboxMessage writes one message in mboxrd form, as Dovecot and mutt
// read it: a "From " line with date, LF line ends, Status/X-Status/
// X-Keywords headers for flags, "From " lines quoted with one more '>',
// and an empty line after it. NewMboxReader gives back body (with CRLF
// line ends and a final line end), flags and date.
func WriteMboxMessage(w io.Writer, body []byte, flags []string, date time.Time) error {
	lf := bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
	if len(lf) > 0 && lf[len(lf)-1] != '\n' {
		lf = append(lf, '\n')
	}
	hdrEnd := len(lf)
	if bytes.HasPrefix(lf, []byte("\n")) {
		hdrEnd = 0
	} else if i := bytes.Index(lf, []byte("\n\n")); i >= 0 {
		hdrEnd = i + 1
	}
	status, xstatus := "O", ""
	var kws []string
	for _, f := range flags {
		switch f {
		case mailstate.FlagSeen:
			status = "RO"
		case mailstate.FlagAnswered:
			xstatus += "A"
		case mailstate.FlagFlagged:
			xstatus += "F"
		case mailstate.FlagDeleted:
			xstatus += "D"
		case mailstate.FlagDraft:
			xstatus += "T"
		default:
			if !strings.HasPrefix(f, `\`) {
				kws = append(kws, f)
			}
		}
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "From MAILER-DAEMON %s\n", date.UTC().Format("Mon Jan _2 15:04:05 2006"))
	writeQuoted := func(b []byte) {
		for len(b) > 0 {
			n := bytes.IndexByte(b, '\n') + 1
			if n == 0 {
				n = len(b)
			}
			line := b[:n]
			i := 0
			for i < len(line) && line[i] == '>' {
				i++
			}
			if bytes.HasPrefix(line[i:], []byte("From ")) {
				bw.WriteByte('>')
			}
			bw.Write(line)
			b = b[n:]
		}
	}
	writeQuoted(lf[:hdrEnd])
	fmt.Fprintf(bw, "Status: %s\n", status)
	if xstatus != "" {
		fmt.Fprintf(bw, "X-Status: %s\n", xstatus)
	}
	if len(kws) > 0 {
		fmt.Fprintf(bw, "X-Keywords: %s\n", strings.Join(kws, " "))
	}
	writeQuoted(lf[hdrEnd:])
	bw.WriteByte('\n')
	return bw.Flush()
}
