package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
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
type dotReader struct {
	br  *bufio.Reader
	max int64 // bytes allowed (Config.MaxMessageBytes); 0: any
	n   int64 // bytes returned

	// lineStart: the next byte starts a line (after CRLF, or the first
	// byte). lastCR: mid-line, the last byte taken was CR.
	lineStart, lastCR bool
	eof               bool // in front of the end-of-data line
	err               error
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

// dataIn is what Data and LMTPData read the message through.
type dataIn struct {
	io.Reader
	dot *dotReader // nil: go-smtp's reader, as given
	// failed is called when finish cannot reach the end-of-data line:
	// it must close the connection.
	failed func(error)
}

// fastData returns r, or a dotReader over the same buffer when r is
// go-smtp's DATA reader. Call finish before Data returns.
func (s *session) fastData(r io.Reader) *dataIn {
	return newDataIn(r, s.srv.cfg.MaxMessageBytes, func(err error) {
		s.srv.log.Info("connection failed before the end of a message's data: closing", "err", err, "remote", s.remote)
		_ = s.conn.Close()
	})
}

func newDataIn(r io.Reader, maxBytes int64, failed func(error)) *dataIn {
	br := goSMTPBuffer(r)
	if br == nil {
		return &dataIn{Reader: r}
	}
	d := &dotReader{br: br, max: maxBytes, lineStart: true}
	return &dataIn{Reader: d, dot: d, failed: failed}
}

// finish reads on to the end-of-data line if Data stopped before it, so
// that go-smtp finds it next; it closes the connection when that fails.
func (in *dataIn) finish() {
	d := in.dot
	if d == nil || d.eof {
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
		// Up to the first line end (CRLF; a bare LF ends no line, as in
		// go-smtp): the next line may start with a dot.
		take := len(b)
		for i := 0; i < len(b); {
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				break
			}
			i += j
			if i > 0 && b[i-1] == '\r' || i == 0 && d.lastCR {
				take = i + 1
				d.lineStart = true
				break
			}
			i++
		}
		copy(p[n:], b[:take])
		if !d.lineStart {
			d.lastCR = b[take-1] == '\r'
		} else {
			d.lastCR = false
		}
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
