package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"time"
	"unsafe"

	gosmtp "github.com/emersion/go-smtp"
)

// go-smtp (v0.25) hands Session.Data a reader that takes the message one
// byte at a time from the connection's bufio.Reader through a state
// machine (dot-unstuffing and the end-of-data line): on a 75 KB LMTP
// delivery that loop was about an eighth of a node's CPU. dotReader does
// the same work on whole buffered spans with bytes.IndexByte, reading
// from that same bufio.Reader, which go-smtp keeps unexported: it is found
// in go-smtp's reader by reflection (fastData), and when it is not there
// as expected (another go-smtp version, BDAT's pipe) go-smtp's reader is
// used as before. TestFastDataPath pins that the fast path is taken.
//
// The hand-over back to go-smtp: dotReader stops in front of the
// end-of-data line ".\r\n" and leaves it buffered. go-smtp's own reader
// (fresh, at the start of a line) then reads just those three bytes when
// it drains the message after Data returns, and the next command follows
// as usual. If Data returns before the end (a refusal, a too large
// message), finish reads on to that line first; if it cannot (the
// connection failed or timed out), it closes the connection, since
// go-smtp's reader would take the rest of a line for the start of one.
//
// Below that buffer go-smtp counts every byte read from the socket for
// its line length limit, a loop over each byte that cost as much again
// as the rest of reading DATA. While dotReader reads, that count is off
// (as go-smtp itself turns it off for BDAT chunks) and dotReader checks
// the line length instead, on the spans it finds anyway; finish turns it
// back on. A line over the limit is answered "500 5.4.0" and the
// connection closed, as go-smtp does.
type dotReader struct {
	br  *bufio.Reader
	max int64 // bytes allowed (Config.MaxMessageBytes); 0: any
	n   int64 // bytes returned

	// lineStart: the next byte starts a line (after CRLF, or the first
	// byte). lastCR: mid-line, the last byte taken was CR.
	lineStart, lastCR bool
	// lineMax: the longest line allowed, counted as go-smtp does from
	// any LF, that LF included; 0: go-smtp checks it. lineLen: bytes of
	// the current line so far.
	lineMax, lineLen int
	eof              bool // in front of the end-of-data line
	err              error
}

var bufioReaderType = reflect.TypeOf((*bufio.Reader)(nil))

// goSMTPBuffer returns the *bufio.Reader inside go-smtp's DATA reader r,
// or nil if r is not the reader this was written against (go-smtp's
// unexported dataReader{r *bufio.Reader; state int; ...}, fresh).
func goSMTPBuffer(r io.Reader) *bufio.Reader {
	t := reflect.TypeOf(r)
	if t == nil || t.Kind() != reflect.Pointer {
		return nil
	}
	e := t.Elem()
	if e.Kind() != reflect.Struct || e.Name() != "dataReader" || e.PkgPath() != "github.com/emersion/go-smtp" {
		return nil
	}
	fr, ok := e.FieldByName("r")
	if !ok || fr.Type != bufioReaderType {
		return nil
	}
	fs, ok := e.FieldByName("state")
	if !ok || fs.Type.Kind() != reflect.Int {
		return nil
	}
	v := reflect.ValueOf(r)
	if v.IsNil() || v.Elem().FieldByIndex(fs.Index).Int() != 0 {
		return nil // not at the start of the message: its state is not ours to take over
	}
	// The field is unexported: reflect reads it but will not hand out
	// the pointer, so take it at its offset.
	return *(**bufio.Reader)(unsafe.Add(v.UnsafePointer(), fr.Offset))
}

// goSMTPLineLimit returns the line length limit and count of go-smtp's
// connection c (its unexported lineLimitReader{R; LineLimit int;
// curLineLength int}), or nils if c has none such.
func goSMTPLineLimit(c *gosmtp.Conn) (limit, count *int) {
	if c == nil {
		return nil, nil
	}
	f, ok := reflect.TypeOf(c).Elem().FieldByName("lineLimitReader")
	if !ok || f.Type.Kind() != reflect.Pointer {
		return nil, nil
	}
	e := f.Type.Elem()
	if e.Kind() != reflect.Struct || e.Name() != "lineLimitReader" || e.PkgPath() != "github.com/emersion/go-smtp" {
		return nil, nil
	}
	fl, ok1 := e.FieldByName("LineLimit")
	fc, ok2 := e.FieldByName("curLineLength")
	if !ok1 || !ok2 || fl.Type.Kind() != reflect.Int || fc.Type.Kind() != reflect.Int {
		return nil, nil
	}
	p := *(*unsafe.Pointer)(unsafe.Add(unsafe.Pointer(c), f.Offset))
	if p == nil {
		return nil, nil
	}
	return (*int)(unsafe.Add(p, fl.Offset)), (*int)(unsafe.Add(p, fc.Offset))
}

// dataIn is what Data and LMTPData read the message through.
type dataIn struct {
	io.Reader
	dot *dotReader // nil: go-smtp's reader, as given
	// go-smtp's line limit and count, while dotReader checks lines.
	limit, count *int
	saved        int
	// failed is called when finish cannot reach the end-of-data line:
	// it must close the connection (err may be gosmtp.ErrTooLongLine).
	failed func(error)
}

// fastData returns r, or a dotReader over the same buffer when r is
// go-smtp's DATA reader. Call finish before Data returns.
func (s *session) fastData(r io.Reader) *dataIn {
	return newDataIn(r, s.conn, s.srv.cfg.MaxMessageBytes, func(err error) {
		if errors.Is(err, gosmtp.ErrTooLongLine) {
			s.srv.log.Info("line too long in a message: closing", "remote", s.remote, "max_line", s.srv.cfg.MaxLineLength)
			c := s.conn.Conn()
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, "500 5.4.0 Too long line, closing connection\r\n")
		} else {
			s.srv.log.Info("connection failed before the end of a message's data: closing", "err", err, "remote", s.remote)
		}
		_ = s.conn.Close()
	})
}

// newDataIn takes over r (go-smtp's DATA reader) and, if it finds it,
// the line length check of conn.
func newDataIn(r io.Reader, conn *gosmtp.Conn, maxBytes int64, failed func(error)) *dataIn {
	br := goSMTPBuffer(r)
	if br == nil {
		return &dataIn{Reader: r}
	}
	d := &dotReader{br: br, max: maxBytes, lineStart: true}
	in := &dataIn{Reader: d, dot: d, failed: failed}
	if limit, count := goSMTPLineLimit(conn); limit != nil && *limit > 0 {
		in.limit, in.count, in.saved = limit, count, *limit
		d.lineMax, d.lineLen = *limit, *count
		*limit = 0
	}
	return in
}

// finish reads on to the end-of-data line if Data stopped before it, so
// that go-smtp finds it next, and gives go-smtp its line check back; it
// closes the connection when the line is not found.
func (in *dataIn) finish() {
	d := in.dot
	if d == nil {
		return
	}
	defer func() {
		if in.limit != nil {
			// What go-smtp has buffered beyond the message was not
			// counted: at most a buffer more for that one line.
			*in.limit, *in.count = in.saved, 0
		}
	}()
	if d.eof {
		return
	}
	if errors.Is(d.err, gosmtp.ErrTooLongLine) {
		in.failed(d.err)
		return
	}
	d.max = 0
	d.err = nil
	if _, err := io.Copy(io.Discard, d); err != nil {
		in.failed(err)
	}
}

// Read returns the message's bytes dot-unstuffed, CRLF kept, and io.EOF
// in front of the end-of-data line. Bytes already buffered are returned
// without waiting for more.
func (d *dotReader) Read(p []byte) (int, error) {
	if d.eof {
		return 0, io.EOF
	}
	if d.err != nil {
		return 0, d.err
	}
	n := 0
	for n < len(p) {
		if d.max > 0 && d.n >= d.max {
			// As go-smtp: max bytes or more (the end-of-data line not
			// counted) are too many.
			d.err = gosmtp.ErrDataTooLarge
			return n, d.err
		}
		if n > 0 && (d.br.Buffered() == 0 || d.lineStart && d.br.Buffered() < 3) {
			return n, nil // no blocking while holding bytes for the caller
		}
		if d.lineStart {
			b, err := d.br.Peek(3)
			if len(b) > 0 && b[0] != '.' {
				d.lineStart = false
			} else if len(b) == 3 {
				if b[1] == '\r' && b[2] == '\n' {
					d.eof = true
					return n, io.EOF
				}
				// A leading dot is the sender's stuffing (RFC 5321
				// 4.5.2); ".\rX" keeps its CR.
				_, _ = d.br.Discard(1)
				d.lineStart = false
				d.lineLen++
			} else {
				if n > 0 {
					return n, nil
				}
				return 0, readErr(err)
			}
		}
		b, err := d.br.Peek(max(d.br.Buffered(), 1))
		if len(b) == 0 {
			if n > 0 {
				return n, nil
			}
			return 0, readErr(err)
		}
		room := len(p) - n
		if d.max > 0 {
			room = int(min(int64(room), d.max-d.n))
		}
		if len(b) > room {
			b = b[:room]
		}
		// Take up to the first line end (CRLF; a bare LF ends no line,
		// as in go-smtp): the next line may start with a dot. Line
		// lengths count from every LF, as go-smtp's limit does.
		take, piece, ended := len(b), 0, false
		for i := 0; i < len(b); {
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				break
			}
			i += j
			if d.lineMax > 0 && d.lineLen+i-piece > d.lineMax {
				d.err = gosmtp.ErrTooLongLine
				return n, d.err
			}
			d.lineLen, piece = 1, i+1 // go-smtp counts the LF in the next line
			if i > 0 && b[i-1] == '\r' || i == 0 && d.lastCR {
				take, ended = i+1, true
				break
			}
			i++
		}
		d.lineLen += take - piece
		if d.lineMax > 0 && d.lineLen > d.lineMax {
			d.err = gosmtp.ErrTooLongLine
			return n, d.err
		}
		copy(p[n:], b[:take])
		d.lineStart = ended
		d.lastCR = !ended && b[take-1] == '\r'
		_, _ = d.br.Discard(take)
		n += take
		d.n += int64(take)
	}
	return n, nil
}

// readErr is what a read that ended before the end-of-data line returns:
// a closed connection mid-message is unexpected.
func readErr(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
