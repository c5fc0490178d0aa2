package fuse

import (
	"errors"
	"io"
	"os"
	"slices"
	"time"

	"hastore/webfs"
)

// extent is a byte range [off, end) of a file.
type extent struct{ off, end int64 }

// dirty is a file's writes since its last commit. Written bytes are kept at
// their file offsets in memory while the highest written offset is at most
// memMax, then in an unlinked sparse temporary file. ext says which bytes
// are written; the rest of [0, size) is the committed content below
// minSize and zeros above it (the file was truncated to minSize, then
// extended).
type dirty struct {
	base    int64    // the committed size when the first change came
	minSize int64    // the smallest size the file had since
	size    int64    // its size now
	ext     []extent // written ranges: sorted, disjoint, not adjacent
	mem     []byte   // the written bytes at their offsets, until spilled
	tmp     *os.File // the written bytes once spilled
	changed bool     // anything to commit
	mtime   time.Time
	// attrs are attribute changes (mode, owner, times) made while writes
	// were buffered, applied by the commit: a futimens after the last
	// write gives the content its mtime, and chmod and chown of a file
	// being written cost no change of their own.
	attrs webfs.SetAttr

	// gen counts changes of the content, streamed is how far a streaming
	// upload has read it, and streamBroken that a change since was below
	// that: what was sent is stale (stream.go).
	gen          int64
	streamed     int64
	streamBroken bool

	memMax int64
	tmpDir string
}

func newDirty(size, memMax int64, tmpDir string) *dirty {
	return &dirty{base: size, minSize: size, size: size, memMax: memMax, tmpDir: tmpDir}
}

// close drops the backing temporary file.
func (d *dirty) close() {
	if d.tmp != nil {
		d.tmp.Close()
		d.tmp = nil
	}
	d.mem = nil
}

// write records data at off.
func (d *dirty) write(off int64, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	end := off + int64(len(data))
	if off < d.streamed {
		d.streamBroken = true
	}
	if d.tmp == nil && end > d.memMax {
		if err := d.spill(); err != nil {
			return err
		}
	}
	if d.tmp != nil {
		if _, err := d.tmp.WriteAt(data, off); err != nil {
			return err
		}
	} else {
		if int64(len(d.mem)) < end {
			if int64(cap(d.mem)) >= end {
				d.mem = d.mem[:end]
			} else {
				grown := make([]byte, end, min(max(end, 2*int64(cap(d.mem))), d.memMax))
				copy(grown, d.mem)
				d.mem = grown
			}
		}
		copy(d.mem[off:], data)
	}
	d.addExtent(off, end)
	d.size = max(d.size, end)
	d.touch()
	return nil
}

// touch notes a change of the content: its mtime is now.
func (d *dirty) touch() {
	d.gen++
	d.changed = true
	d.mtime = time.Now()
	d.attrs.Valid &^= webfs.SetMtime
}

// setAttrs records attribute changes for the commit.
func (d *dirty) setAttrs(sa webfs.SetAttr) {
	v := sa.Valid
	if v&webfs.SetMode != 0 {
		d.attrs.Mode = sa.Mode
	}
	if v&webfs.SetUid != 0 {
		d.attrs.Uid = sa.Uid
	}
	if v&webfs.SetGid != 0 {
		d.attrs.Gid = sa.Gid
	}
	if v&webfs.SetAtime != 0 {
		d.attrs.Atime = sa.Atime
	}
	if v&webfs.SetMtime != 0 {
		d.attrs.Mtime = sa.Mtime
	}
	d.attrs.Valid |= v &^ webfs.SetSize
	d.changed = true
}

// overlay applies the buffered changes to attributes a.
func (d *dirty) overlay(a *webfs.Attr) {
	if !d.changed {
		return
	}
	a.Size = d.size
	a.Mtime, a.Ctime = d.mtime, d.mtime
	v := d.attrs.Valid
	if v&webfs.SetMode != 0 {
		a.Mode = a.Mode&webfs.ModeType | d.attrs.Mode&webfs.ModePerm
	}
	if v&webfs.SetUid != 0 {
		a.Uid = d.attrs.Uid
	}
	if v&webfs.SetGid != 0 {
		a.Gid = d.attrs.Gid
	}
	if v&webfs.SetAtime != 0 {
		a.Atime = d.attrs.Atime
	}
	if v&webfs.SetMtime != 0 {
		a.Mtime = d.attrs.Mtime
	}
}

// spill moves the written bytes to a temporary file.
func (d *dirty) spill() error {
	f, err := os.CreateTemp(d.tmpDir, "hastore-mount-*")
	if err != nil {
		return err
	}
	os.Remove(f.Name())
	for _, e := range d.ext {
		if _, err := f.WriteAt(d.mem[e.off:e.end], e.off); err != nil {
			f.Close()
			return err
		}
	}
	d.tmp, d.mem = f, nil
	return nil
}

func (d *dirty) addExtent(off, end int64) {
	// The extents that touch [off, end) merge with it.
	i := 0
	for i < len(d.ext) && d.ext[i].end < off {
		i++
	}
	j := i
	for j < len(d.ext) && d.ext[j].off <= end {
		off = min(off, d.ext[j].off)
		end = max(end, d.ext[j].end)
		j++
	}
	d.ext = slices.Replace(d.ext, i, j, extent{off, end})
}

// truncate sets the size.
func (d *dirty) truncate(size int64) error {
	if size < d.streamed {
		d.streamBroken = true
	}
	if size < d.size {
		i := 0
		for i < len(d.ext) && d.ext[i].end <= size {
			i++
		}
		if i < len(d.ext) && d.ext[i].off < size {
			d.ext[i].end = size
			i++
		}
		d.ext = d.ext[:i]
		if d.tmp != nil {
			if err := d.tmp.Truncate(size); err != nil {
				return err
			}
		} else if int64(len(d.mem)) > size {
			clear(d.mem[size:])
			d.mem = d.mem[:size]
		}
	}
	d.minSize = min(d.minSize, size)
	d.size = size
	d.touch()
	return nil
}

// whole reports whether the content can be committed as a whole from what
// is here: the file was emptied, or every byte was written.
func (d *dirty) whole() bool {
	if d.minSize == 0 || d.size == 0 {
		return true
	}
	return len(d.ext) == 1 && d.ext[0].off == 0 && d.ext[0].end >= d.size
}

// readLocal reads written bytes of [off, off+len(p)) into p.
func (d *dirty) readLocal(p []byte, off int64) error {
	if d.tmp != nil {
		_, err := d.tmp.ReadAt(p, off)
		if errors.Is(err, io.EOF) {
			err = nil // a sparse tail: zeros, already in p
		}
		return err
	}
	if off < int64(len(d.mem)) {
		copy(p, d.mem[off:])
	}
	return nil
}

// pieces splits [off, off+n), clipped to the size, into what was written
// (local), what comes from the committed content (remote: below minSize),
// and zeros (the rest), in order.
type piece struct {
	off, n int64
	kind   int // pieceLocal, pieceRemote, pieceZero
}

const (
	pieceLocal = iota
	pieceRemote
	pieceZero
)

func (d *dirty) pieces(off, n int64) []piece {
	end := min(off+n, d.size)
	var out []piece
	gap := func(from, to int64) {
		if from >= to {
			return
		}
		if from < d.minSize {
			m := min(to, d.minSize)
			out = append(out, piece{from, m - from, pieceRemote})
			from = m
		}
		if from < to {
			out = append(out, piece{from, to - from, pieceZero})
		}
	}
	pos := off
	for _, e := range d.ext {
		if e.end <= pos {
			continue
		}
		if e.off >= end {
			break
		}
		gap(pos, min(e.off, end))
		lo, hi := max(e.off, pos), min(e.end, end)
		out = append(out, piece{lo, hi - lo, pieceLocal})
		pos = hi
	}
	gap(pos, end)
	return out
}

// wholeReader reads the file's whole new content, for a commit when
// whole() holds: written bytes, zeros elsewhere. It is an io.ReadSeeker,
// so a commit can be sent again from the start.
type wholeReader struct {
	d   *dirty
	pos int64
}

func (r *wholeReader) Read(p []byte) (int, error) {
	if r.pos >= r.d.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.d.size-r.pos)]
	clear(p)
	for _, pc := range r.d.pieces(r.pos, int64(len(p))) {
		if pc.kind == pieceLocal {
			if err := r.d.readLocal(p[pc.off-r.pos:pc.off-r.pos+pc.n], pc.off); err != nil {
				return 0, err
			}
		}
	}
	r.pos += int64(len(p))
	return len(p), nil
}

func (r *wholeReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.d.size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	r.pos = offset
	return offset, nil
}
