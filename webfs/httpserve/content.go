package httpserve

import (
	"container/list"
	"errors"
	"io"
	"sync"
)

const (
	// window is the most a streamed response holds of a file at once, and
	// the size of the reads it issues once reading sequentially.
	window = 1 << 20
	// firstRead is the size of the first read after a seek; each further
	// sequential read doubles it up to window, so a small range of a large
	// file fetches little and a whole file is read in large pieces.
	firstRead = 64 << 10
)

var windows = sync.Pool{New: func() any { b := make([]byte, window); return &b }}

var errClosed = errors.New("httpserve: read after close")

// windowReader is an io.ReadSeeker over a File for http.ServeContent. It
// reads through one buffer of at most window bytes, so a response holds at
// most that much of the file whatever its size. It is safe for concurrent
// use — ServeContent reads multipart ranges from another goroutine — and
// Close waits for a read in progress, so the File is never read after or
// while it is closed.
type windowReader struct {
	mu     sync.Mutex
	f      File
	size   int64
	pos    int64  // the next byte Read returns
	buf    []byte // buf[:n] holds the file's bytes from bufOff
	pooled *[]byte
	bufOff int64
	n      int
	next   int // size of the next read from f
	closed bool
	err    error // the first error from f
}

func newWindowReader(f File, size int64) *windowReader {
	return &windowReader{f: f, size: size, next: firstRead}
}

func (r *windowReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errClosed
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.pos < r.bufOff || r.pos >= r.bufOff+int64(r.n) {
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf[r.pos-r.bufOff:r.n])
	r.pos += int64(n)
	return n, nil
}

// fill reads the window starting at pos.
func (r *windowReader) fill() error {
	if r.err != nil {
		return r.err
	}
	if r.pos != r.bufOff+int64(r.n) { // a seek: start small again
		r.next = firstRead
	}
	want := int64(r.next)
	if rest := r.size - r.pos; want > rest {
		want = rest
	}
	if r.buf == nil {
		if r.size >= window/2 {
			r.pooled = windows.Get().(*[]byte)
			r.buf = *r.pooled
		} else {
			r.buf = make([]byte, r.size) // the whole file fits
		}
	}
	n, err := r.f.ReadAt(r.buf[:want], r.pos)
	if int64(n) < want {
		r.n = 0
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF // shorter than its Entry said
		}
		r.err = err
		return err
	}
	r.bufOff, r.n = r.pos, n
	if r.next < window {
		r.next *= 2
	}
	return nil
}

func (r *windowReader) Seek(offset int64, whence int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("httpserve: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("httpserve: negative position")
	}
	r.pos = offset
	return offset, nil
}

// writeChunk bounds one write of a streamed response: large enough that a
// 10 MiB file takes few system calls, small enough that a slow client
// still accepts one within the write idle timeout.
const writeChunk = 128 << 10

// writeTo writes up to n bytes from the current position to w straight
// from the window — no intermediate copy buffer — and returns how many it
// wrote. ServeContent's io.CopyN reaches it through request.ReadFrom.
func (r *windowReader) writeTo(w io.Writer, n int64) (int64, error) {
	var written int64
	for written < n {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return written, errClosed
		}
		if r.pos >= r.size {
			r.mu.Unlock()
			return written, io.EOF
		}
		if r.pos < r.bufOff || r.pos >= r.bufOff+int64(r.n) {
			if err := r.fill(); err != nil {
				r.mu.Unlock()
				return written, err
			}
		}
		b := r.buf[r.pos-r.bufOff : r.n]
		b = b[:min(int64(len(b)), n-written, writeChunk)]
		// The lock is held while writing: Close must not recycle the
		// window under the write.
		m, err := w.Write(b)
		r.pos += int64(m)
		r.mu.Unlock()
		written += int64(m)
		if err != nil {
			return written, err
		}
		if m < len(b) {
			return written, io.ErrShortWrite
		}
	}
	return written, nil
}

// Err returns the first error reading the File, which ServeContent does not
// report.
func (r *windowReader) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close closes the File, after any read in progress.
func (r *windowReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.pooled != nil {
		windows.Put(r.pooled)
	}
	r.buf, r.pooled = nil, nil
	return r.f.Close()
}

// cache holds the bytes of hot small files in memory, least recently used
// first out. An entry is keyed by the ETag of the version it holds, and a
// lookup uses the ETag from a Stat made for the request, so an entry is
// found only while its bytes are still the file's: a changed file has a new
// ETag and misses; the old entry ages out. Safe for concurrent use.
type cache struct {
	mu   sync.Mutex
	max  int64
	used int64
	lru  list.List // of *cached, most recent first
	m    map[cacheKey]*list.Element
}

type cacheKey struct{ site, name, etag string }

type cached struct {
	key   cacheKey
	data  []byte // never modified
	ctype string
}

// entryOverhead approximates the memory of an entry beyond its strings.
const entryOverhead = 200

func (c *cached) cost() int64 {
	return int64(len(c.data)+len(c.key.site)+len(c.key.name)+len(c.key.etag)+len(c.ctype)) + entryOverhead
}

func newCache(max int64) *cache {
	return &cache{max: max, m: make(map[cacheKey]*list.Element)}
}

func (c *cache) get(k cacheKey) (*cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*cached), true
}

func (c *cache) put(v *cached) {
	cost := v.cost()
	if cost > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[v.key]; ok {
		c.lru.MoveToFront(e)
		return
	}
	for c.used+cost > c.max {
		e := c.lru.Back()
		old := e.Value.(*cached)
		c.lru.Remove(e)
		delete(c.m, old.key)
		c.used -= old.cost()
	}
	c.m[v.key] = c.lru.PushFront(v)
	c.used += cost
}
