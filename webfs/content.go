package webfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"syscall"
	"time"

	"hastore/replica"
)

// newContent is content stored in the cluster but not yet committed to an
// inode. acquired are the object references it holds: they pass to the
// inode on commit, and must be released if the commit fails.
type newContent struct {
	inline   []byte
	chunks   []Chunk
	size     int64
	acquired []ObjectID
}

func (nc *newContent) apply(a *Attr) {
	a.Inline, a.Chunks, a.Size = nc.inline, nc.chunks, nc.size
	a.ContentID = contentID(a)
}

func bytesReader(p []byte) io.Reader { return bytes.NewReader(p) }

// putter stores chunks with bounded concurrency.
type putter struct {
	s      *Sites
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	ids    map[int]ObjectID
	err    error
}

func (s *Sites) newPutter(ctx context.Context) *putter {
	ctx, cancel := context.WithCancel(ctx)
	return &putter{s: s, ctx: ctx, cancel: cancel, sem: make(chan struct{}, 4), ids: map[int]ObjectID{}}
}

// put stores data as piece i.
func (p *putter) put(i int, data []byte) {
	select {
	case p.sem <- struct{}{}:
	case <-p.ctx.Done():
		p.fail(p.ctx.Err())
		return
	}
	p.wg.Add(1)
	go func() {
		defer func() { <-p.sem; p.wg.Done() }()
		id, err := p.s.c.Put(p.ctx, data)
		if err != nil {
			p.fail(err)
			return
		}
		p.mu.Lock()
		p.ids[i] = ObjectID(id)
		p.mu.Unlock()
	}()
}

func (p *putter) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.cancel()
}

// wait waits for every put and returns the pieces' IDs by index and the
// references taken. On error they have been released already.
func (p *putter) wait() (map[int]ObjectID, []ObjectID, error) {
	p.wg.Wait()
	p.cancel()
	refs := make([]ObjectID, 0, len(p.ids))
	for _, id := range p.ids {
		refs = append(refs, id)
	}
	if p.err != nil {
		p.s.release(refs)
		return nil, nil, p.err
	}
	return p.ids, refs, nil
}

func (p *putter) failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err != nil
}

// ingest stores what r yields as new content: inline if it is small,
// otherwise as ChunkSize chunks, a few stored at once.
func (s *Sites) ingest(ctx context.Context, r io.Reader) (newContent, error) {
	first, err := io.ReadAll(io.LimitReader(r, InlineMax+1))
	if err != nil {
		return newContent{}, err
	}
	if len(first) <= InlineMax {
		if len(first) == 0 {
			first = nil
		}
		return newContent{inline: first, size: int64(len(first))}, nil
	}
	var nc newContent
	p := s.newPutter(ctx)
	for i := 0; ; i++ {
		piece := first
		if i > 0 {
			piece = nil
		}
		rest, err := io.ReadAll(io.LimitReader(r, int64(ChunkSize-len(piece))))
		if err != nil {
			p.fail(err)
			break
		}
		if piece == nil {
			piece = rest
		} else {
			piece = append(piece, rest...)
		}
		if len(piece) == 0 {
			break
		}
		if i >= MaxChunks {
			p.fail(fmt.Errorf("%w: content over %d bytes", syscall.EFBIG, int64(MaxFileSize)))
			break
		}
		nc.chunks = append(nc.chunks, Chunk{Len: int64(len(piece))})
		nc.size += int64(len(piece))
		p.put(i, piece)
		if len(piece) < ChunkSize || p.failed() {
			break
		}
	}
	ids, refs, err := p.wait()
	if err != nil {
		return newContent{}, err
	}
	for i, id := range ids {
		nc.chunks[i].ID = id
	}
	nc.acquired = refs
	return nc, nil
}

// read returns bytes [off, off+n) of a's content (fewer at the end),
// reading only the chunks that cover them.
func (s *Sites) read(ctx context.Context, a *Attr, off, n int64) ([]byte, error) {
	if off < 0 || n < 0 {
		return nil, syscall.EINVAL
	}
	if off >= a.Size {
		return []byte{}, nil
	}
	n = min(n, a.Size-off)
	if len(a.Chunks) == 0 {
		return slices.Clone(a.Inline[off : off+n]), nil
	}
	out := make([]byte, n)
	if err := s.readInto(ctx, a, off, out); err != nil {
		return nil, err
	}
	return out, nil
}

// readInto fills p with a's content from off; the range must lie within
// the content. Each chunk's part lands in p directly from the shards
// (replica.Cluster.ReadInto): no whole-range buffer, no extra copy.
func (s *Sites) readInto(ctx context.Context, a *Attr, off int64, p []byte) error {
	n := int64(len(p))
	if off < 0 || off+n > a.Size {
		return syscall.EINVAL
	}
	if len(a.Chunks) == 0 {
		copy(p, a.Inline[off:off+n])
		return nil
	}
	var start int64
	for _, c := range a.Chunks {
		end := start + c.Len
		if end > off && start < off+n {
			lo := max(off, start) - start
			hi := min(off+n, end) - start
			dst := p[start+lo-off : start+hi-off]
			got, err := s.c.ReadInto(ctx, [32]byte(c.ID), lo, dst)
			if err != nil && !(err == io.EOF && got == len(dst)) {
				if err == io.EOF {
					err = fmt.Errorf("%w: chunk %s gave %d bytes for %d", syscall.EIO, c.ID, got, len(dst))
				}
				return err
			}
		}
		start = end
		if start >= off+n {
			break
		}
	}
	return nil
}

// ReadAt returns bytes [off, off+n) of a regular file, fewer at its end
// (none at or past it). Only the chunks covering the range are read, and
// of them only the shards covering it.
func (s *Site) ReadAt(ctx context.Context, ino uint64, off, n int64) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		a, err := s.getAttr(ctx, ino)
		if err == nil {
			err = contentType(&a)
		}
		if err != nil {
			return nil, pathErr("read", inoPath(ino), err)
		}
		b, err := s.sites.read(ctx, &a, off, n)
		if err == nil {
			return b, nil
		}
		if errors.Is(err, replica.ErrNotFound) && attempt < 3 {
			// The content was replaced and its chunks dropped since the
			// inode was read: read the new one.
			if err := s.sites.catchUp(ctx); err != nil {
				return nil, pathErr("read", inoPath(ino), err)
			}
			continue
		}
		return nil, pathErr("read", inoPath(ino), err)
	}
}

// errContentChanged ends a commit whose content edit was built on content
// that another writer has replaced since.
var errContentChanged = errors.New("webfs: content changed during the edit")

func sameContent(a, b *Attr) bool {
	return a.Size == b.Size && bytes.Equal(a.Inline, b.Inline) && slices.Equal(a.Chunks, b.Chunks)
}

// editContent changes part of a regular file's content: data written at
// off, and the size set to size (size < 0: the old size, extended to cover
// the write). Chunks the edit does not touch are kept with their
// references; the others are rebuilt. The commit checks that the content
// is still the one the edit started from, else the edit starts over.
func (s *Site) editContent(ctx context.Context, op string, ino uint64, size, off int64, data []byte, mutate func(*Attr, time.Time)) (Attr, error) {
	path := inoPath(ino)
	unlock := s.lock(ino)
	defer unlock()
	for attempt := 0; ; attempt++ {
		base, err := s.getAttr(ctx, ino)
		if err == nil {
			err = contentType(&base)
		}
		if err != nil {
			return Attr{}, pathErr(op, path, err)
		}
		newSize := size
		if newSize < 0 {
			newSize = max(base.Size, off+int64(len(data)))
		}
		nc, kept, err := s.sites.splice(ctx, &base, off, data, newSize)
		if err != nil {
			if errors.Is(err, replica.ErrNotFound) && attempt < 10 {
				if err := s.sites.catchUp(ctx); err != nil {
					return Attr{}, pathErr(op, path, err)
				}
				continue
			}
			return Attr{}, pathErr(op, path, err)
		}
		var out Attr
		err = s.mutate(ctx, op, path, nil, func(t *txn, now time.Time) error {
			a, err := s.mustInode(t, ino)
			if err != nil {
				return err
			}
			if !sameContent(&a, &base) {
				return errContentChanged
			}
			for j, c := range a.Chunks {
				if !kept[j] {
					t.drop = append(t.drop, c.ID)
				}
			}
			t.take = nc.acquired
			nc.apply(&a)
			mutate(&a, now)
			s.putInode(t, &a)
			out = a
			return nil
		})
		if err != nil {
			if !outcomeKnown(err) {
				return Attr{}, err
			}
			s.sites.release(nc.acquired)
			if errors.Is(err, errContentChanged) && attempt < 10 {
				continue
			}
			return Attr{}, err
		}
		return out, nil
	}
}

// splice builds base's content with data at off and the size set to
// newSize. kept marks the indexes of base chunks reused as they are.
func (s *Sites) splice(ctx context.Context, base *Attr, off int64, data []byte, newSize int64) (newContent, map[int]bool, error) {
	wEnd := off + int64(len(data))
	// build returns the new content's bytes [lo, hi).
	build := func(lo, hi int64) ([]byte, error) {
		buf := make([]byte, hi-lo)
		if lo < base.Size {
			old, err := s.read(ctx, base, lo, min(hi, base.Size)-lo)
			if err != nil {
				return nil, err
			}
			copy(buf, old)
		}
		if len(data) > 0 && off < hi && wEnd > lo {
			a, b := max(off, lo), min(wEnd, hi)
			copy(buf[a-lo:b-lo], data[a-off:b-off])
		}
		return buf, nil
	}
	if newSize <= InlineMax {
		buf, err := build(0, newSize)
		if err != nil || len(buf) == 0 {
			return newContent{}, nil, err
		}
		return newContent{inline: buf, size: newSize}, nil, nil
	}
	n := int((newSize + ChunkSize - 1) / ChunkSize)
	if n > MaxChunks {
		return newContent{}, nil, syscall.EFBIG
	}
	starts := make([]int64, len(base.Chunks))
	var pos int64
	for j, c := range base.Chunks {
		starts[j] = pos
		pos += c.Len
	}
	nc := newContent{chunks: make([]Chunk, n), size: newSize}
	kept := map[int]bool{}
	p := s.newPutter(ctx)
	for i := 0; i < n && !p.failed(); i++ {
		lo := int64(i) * ChunkSize
		hi := min(lo+ChunkSize, newSize)
		if i < len(base.Chunks) && starts[i] == lo && base.Chunks[i].Len == hi-lo && hi <= base.Size &&
			(len(data) == 0 || wEnd <= lo || off >= hi) {
			nc.chunks[i] = base.Chunks[i]
			kept[i] = true
			continue
		}
		buf, err := build(lo, hi)
		if err != nil {
			p.fail(err)
			break
		}
		nc.chunks[i].Len = hi - lo
		p.put(i, buf)
	}
	ids, refs, err := p.wait()
	if err != nil {
		return newContent{}, nil, err
	}
	for i, id := range ids {
		nc.chunks[i].ID = id
	}
	nc.acquired = refs
	return nc, kept, nil
}

// Open returns the regular file's current content for reading as an
// io.ReadSeeker and io.ReaderAt (for http.ServeContent): all reads see the
// version Open found, and fail with ESTALE if it has been replaced and its
// chunks dropped meanwhile. Sequential reads fetch ahead up to 1 MiB.
func (s *Site) Open(ctx context.Context, ino uint64) (*File, error) {
	a, err := s.getAttr(ctx, ino)
	if err == nil {
		err = contentType(&a)
	}
	if err != nil {
		return nil, pathErr("open", inoPath(ino), err)
	}
	return &File{s: s.sites, ctx: ctx, attr: a}, nil
}

// File is an open version of a regular file's content. It is not safe for
// concurrent use, except ReadAt.
type File struct {
	s      *Sites
	ctx    context.Context
	attr   Attr
	pos    int64
	buf    []byte
	bufOff int64
}

// readAhead is how much a sequential Read fetches at once.
const readAhead = 1 << 20

// Attr returns the attributes of the version being read.
func (f *File) Attr() Attr { return f.attr }

func (f *File) fetch(off, n int64) ([]byte, error) {
	b, err := f.s.read(f.ctx, &f.attr, off, n)
	return b, f.readErr(err)
}

func (f *File) readErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, replica.ErrNotFound) {
		err = fmt.Errorf("%w: the file was replaced while being read", syscall.ESTALE)
	}
	return pathErr("read", inoPath(f.attr.Ino), err)
}

// ReadAt implements io.ReaderAt. It reads into p directly.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, pathErr("read", inoPath(f.attr.Ino), syscall.EINVAL)
	}
	if off >= f.attr.Size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.attr.Size-off))
	if err := f.readErr(f.s.readInto(f.ctx, &f.attr, off, p[:n])); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Read implements io.Reader.
func (f *File) Read(p []byte) (int, error) {
	if f.pos >= f.attr.Size {
		return 0, io.EOF
	}
	if f.pos < f.bufOff || f.pos >= f.bufOff+int64(len(f.buf)) {
		b, err := f.fetch(f.pos, max(int64(len(p)), readAhead))
		if err != nil {
			return 0, err
		}
		f.buf, f.bufOff = b, f.pos
	}
	n := copy(p, f.buf[f.pos-f.bufOff:])
	f.pos += int64(n)
	return n, nil
}

// Seek implements io.Seeker.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.attr.Size
	default:
		return 0, pathErr("seek", inoPath(f.attr.Ino), syscall.EINVAL)
	}
	if offset < 0 {
		return 0, pathErr("seek", inoPath(f.attr.Ino), syscall.EINVAL)
	}
	f.pos = offset
	return offset, nil
}

// Close releases the file's read-ahead buffer.
func (f *File) Close() error {
	f.buf = nil
	return nil
}
