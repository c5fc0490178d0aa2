package wire

import (
	"errors"
	"io"
	"sync"
)

// Limits of what one command may bring.
const (
	MaxLine    = 64 << 10 // one line of a command, without literals
	MaxLiteral = 64 << 10 // one literal, other than APPEND's message
	MaxCommand = 1 << 20  // all lines and literals of one command
	bufSize    = 4 << 10
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// errLineTooLong: the line was discarded up to its end.
var errLineTooLong = errors.New("line too long")

// lineReader reads lines and literals from a connection. Its buffer comes
// from bufPool and goes back whenever it is empty and the connection is
// waiting for a command (release), so an idle connection holds none.
type lineReader struct {
	src  io.Reader
	buf  *[]byte
	r, w int
	one  [1]byte
}

func (lr *lineReader) ensure() {
	if lr.buf == nil {
		lr.buf = bufPool.Get().(*[]byte)
		lr.r, lr.w = 0, 0
	}
}

// release gives the buffer back if nothing is buffered.
func (lr *lineReader) release() {
	if lr.buf != nil && lr.r == lr.w {
		bufPool.Put(lr.buf)
		lr.buf = nil
	}
}

// wait blocks until a byte arrives, holding no buffer meanwhile when none
// is buffered.
func (lr *lineReader) wait() error {
	if lr.buf != nil && lr.r < lr.w {
		return nil
	}
	lr.release()
	n, err := lr.src.Read(lr.one[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	lr.ensure()
	(*lr.buf)[0] = lr.one[0]
	lr.r, lr.w = 0, 1
	return nil
}

func (lr *lineReader) fill() error {
	lr.ensure()
	b := *lr.buf
	if lr.r > 0 {
		copy(b, b[lr.r:lr.w])
		lr.w -= lr.r
		lr.r = 0
	}
	if lr.w == len(b) {
		return nil
	}
	n, err := lr.src.Read(b[lr.w:])
	lr.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// readLine appends one line, without its CRLF (or bare LF), to dst. A line
// longer than max is read to its end and discarded: errLineTooLong.
func (lr *lineReader) readLine(dst []byte, max int) ([]byte, error) {
	over := false
	for {
		lr.ensure()
		b := (*lr.buf)[lr.r:lr.w]
		for i, c := range b {
			if c == '\n' {
				if !over {
					dst = append(dst, b[:i]...)
				}
				lr.r += i + 1
				if over || len(dst) > max+1 { // +1: the CR
					return dst, errLineTooLong
				}
				if n := len(dst); n > 0 && dst[n-1] == '\r' {
					dst = dst[:n-1]
				}
				return dst, nil
			}
		}
		if !over {
			dst = append(dst, b...)
			if len(dst) > max {
				over = true
			}
		}
		lr.r = lr.w
		if err := lr.fill(); err != nil {
			return dst, err
		}
	}
}

// Read reads literal bytes.
func (lr *lineReader) Read(p []byte) (int, error) {
	lr.ensure()
	if lr.r == lr.w {
		if len(p) >= bufSize {
			return lr.src.Read(p)
		}
		if err := lr.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*lr.buf)[lr.r:lr.w])
	lr.r += n
	return n, nil
}

// discardBuffered drops what was read ahead (after STARTTLS, where it
// would be plaintext injected into the TLS session).
func (lr *lineReader) discardBuffered() {
	lr.r, lr.w = 0, 0
	lr.release()
}
