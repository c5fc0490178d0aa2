package fuse

import (
	"context"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"hastore/webfs"
)

// handle is an open regular file. Writes go to the node (shared by every
// handle of the file in this mount), reads of committed content through a
// window the handle fetched ahead.
type handle struct {
	n     *node
	write bool

	mu     sync.Mutex
	winID  string // content the window holds bytes of
	win    []byte // bytes [winOff, winOff+len(win)) of that content
	winOff int64
	whole  bool     // win is the whole content
	next   int64    // where the last read ended, to tell sequential reads
	ahead  int64    // how much to fetch on the next miss
	pfs    []*fetch // fetches ahead of the window, in order, while reads are sequential
}

// fetch is a read of committed content running in the background: the
// window after the one being read, so that a sequential reader finds its
// next bytes there instead of waiting for the cluster.
type fetch struct {
	id     string
	off, n int64
	done   chan struct{}
	b      []byte
	err    error
}

// Fetches ahead: at most maxAhead per handle beyond its window, and
// maxFetches per mount (each up to readAheadMax bytes: that bounds the
// memory they hold).
const (
	maxAhead   = 2
	maxFetches = 16
)

// prefetchLocked starts fetches ahead of the window of content a, if reads
// are sequential and there is room; h.mu is held.
func (h *handle) prefetchLocked(a webfs.Attr) {
	if h.whole || h.winID != a.ContentID || h.ahead < readAheadMax {
		return
	}
	for len(h.pfs) < maxAhead {
		from := h.winOff + int64(len(h.win))
		if k := len(h.pfs); k > 0 {
			from = h.pfs[k-1].off + h.pfs[k-1].n
		}
		if from >= a.Size {
			return
		}
		select {
		case h.n.fsys.fetches <- struct{}{}:
		default:
			return
		}
		pf := &fetch{id: a.ContentID, off: from, n: readAheadMax, done: make(chan struct{})}
		h.pfs = append(h.pfs, pf)
		f, ino := h.n.fsys, h.n.ino
		go func() {
			defer func() { <-f.fetches }()
			pf.b, pf.err = f.readAt(ino, pf.off, pf.n)
			close(pf.done)
		}()
	}
}

// takeFetchLocked returns the fetch ahead that holds off of content id,
// dropping those before it, or nil; h.mu is held.
func (h *handle) takeFetchLocked(id string, off int64) *fetch {
	for len(h.pfs) > 0 {
		pf := h.pfs[0]
		if pf.id != id || off < pf.off {
			h.pfs = nil // another content, or reads went back
			return nil
		}
		h.pfs = h.pfs[1:]
		if off < pf.off+pf.n {
			return pf
		}
	}
	return nil
}

var (
	_ fusefs.FileReader   = (*handle)(nil)
	_ fusefs.FileWriter   = (*handle)(nil)
	_ fusefs.FileFlusher  = (*handle)(nil)
	_ fusefs.FileReleaser = (*handle)(nil)
	_ fusefs.FileFsyncer  = (*handle)(nil)
)

// Read-ahead of a handle: it starts at readAheadMin on a sequential read
// and doubles up to readAheadMax.
const (
	readAheadMin = 256 << 10
	readAheadMax = 4 << 20
)

func writable(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY
}

// openLocked makes a handle; n.mu is held.
func (n *node) openLocked(flags uint32) *handle {
	if n.handles == 0 {
		n.fsys.opened(n, true)
	}
	n.handles++
	return &handle{n: n, write: writable(flags)}
}

func (n *node) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.attr.Ino != 0 && !n.attr.IsRegular() {
		return nil, 0, syscall.EISDIR
	}
	keep := true
	if n.d == nil {
		// Close-to-open consistency: an open sees what was committed
		// anywhere before it, up to the attribute timeout.
		if time.Since(n.attrAt) >= n.fsys.opt.AttrTimeout {
			a, err := n.fsys.getAttr(n.ino)
			if err != nil {
				return nil, 0, n.fsys.errno("open", err)
			}
			n.attr, n.attrAt = a, time.Now()
		}
		keep = n.cachedID != "" && n.cachedID == n.attr.ContentID
		if !keep && n.cachedID != "" {
			// Changed elsewhere: without FOPEN_KEEP_CACHE the kernel
			// drops the pages; have it ask for the size again too.
			// (Attributes only: safe from within a request.)
			n.NotifyContent(-1, 0)
		}
		n.cachedID = n.attr.ContentID
	}
	if flags&syscall.O_TRUNC != 0 && writable(flags) {
		if n.d == nil {
			n.d = newDirty(n.attr.Size, n.fsys.opt.MemPerFile, n.fsys.opt.TempDir)
			n.fsys.markDirty(n, true)
		}
		if err := n.d.truncate(0); err != nil {
			return nil, 0, n.fsys.errno("open", err)
		}
		n.writtenLocked()
	}
	var fl uint32
	if keep {
		fl = gofuse.FOPEN_KEEP_CACHE
	}
	return n.openLocked(flags), fl, 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n := h.n
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if off+int64(len(data)) > webfs.MaxFileSize {
		return 0, syscall.EFBIG
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.d == nil {
		n.d = newDirty(n.attr.Size, n.fsys.opt.MemPerFile, n.fsys.opt.TempDir)
		n.fsys.markDirty(n, true)
	}
	if err := n.d.write(off, data); err != nil {
		return 0, n.fsys.errno("write", err)
	}
	n.writtenLocked()
	return uint32(len(data)), 0
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	n := h.n
	n.mu.Lock()
	if n.d != nil {
		defer n.mu.Unlock()
		return n.readDirtyLocked(dest, off)
	}
	a := n.attr
	n.mu.Unlock()
	return h.readCommitted(dest, off, a)
}

// readDirtyLocked reads through the writes not committed yet.
func (n *node) readDirtyLocked(dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	d := n.d
	if off >= d.size {
		return gofuse.ReadResultData(nil), 0
	}
	out := dest[:min(int64(len(dest)), d.size-off)]
	clear(out)
	for _, p := range d.pieces(off, int64(len(out))) {
		buf := out[p.off-off : p.off-off+p.n]
		switch p.kind {
		case pieceLocal:
			if err := d.readLocal(buf, p.off); err != nil {
				return nil, n.fsys.errno("read", err)
			}
		case pieceRemote:
			b, err := n.fsys.readAt(n.ino, p.off, p.n)
			if err != nil {
				return nil, n.fsys.errno("read", err)
			}
			copy(buf, b) // short: the committed file is shorter now; zeros
		}
	}
	return gofuse.ReadResultData(out), 0
}

// readAt reads committed content, again if the content was replaced while
// it was read.
func (f *FS) readAt(ino uint64, off, n int64) ([]byte, error) {
	var b []byte
	var err error
	for range 5 {
		_, err = f.call("read", readTimeout, func(ctx context.Context) (err error) {
			b, err = f.tree.ReadAt(ctx, ino, off, n)
			return err
		})
		if webfs.Errno(err) != syscall.ESTALE {
			break
		}
	}
	return b, err
}

func (h *handle) readCommitted(dest []byte, off int64, a webfs.Attr) (gofuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	want := int64(len(dest))
	if h.winID != a.ContentID {
		h.win, h.winID, h.whole, h.pfs = nil, "", false, nil
	}
	if h.whole || (off >= h.winOff && off+want <= h.winOff+int64(len(h.win))) {
		if off == h.next {
			h.prefetchLocked(a)
		}
		h.next = off + want
		return h.fromWindow(dest, off), 0
	}
	if pf := h.takeFetchLocked(a.ContentID, off); pf != nil && off == h.next {
		// The next window was being fetched: wait for it, and start
		// the one after.
		<-pf.done
		// It must hold the whole read, unless the file ends in it: a
		// short answer is taken for the end of the file.
		end := pf.off + int64(len(pf.b))
		if pf.err == nil && (off+want <= end || int64(len(pf.b)) < pf.n) {
			h.win, h.winOff, h.winID, h.whole = pf.b, pf.off, pf.id, false
			h.n.fsys.ahead.Add(1)
			h.prefetchLocked(a)
			h.next = off + want
			return h.fromWindow(dest, off), 0
		}
	}
	// A miss: fetch the whole of a small file, or what is asked and,
	// when reading sequentially, more ahead.
	from, n := off, want
	switch {
	case a.Size < smallFile:
		// One byte more than the size it has: fewer bytes back say
		// the window is the whole file.
		from, n = 0, max(a.Size+1, off+want)
	case off == h.next:
		h.ahead = min(max(2*h.ahead, readAheadMin), readAheadMax)
		n = max(want, h.ahead)
	default:
		h.ahead = 0
	}
	b, err := h.n.fsys.readAt(h.n.ino, from, n)
	if err != nil {
		return nil, h.n.fsys.errno("read", err)
	}
	h.win, h.winOff, h.winID = b, from, a.ContentID
	h.whole = from == 0 && int64(len(b)) < n
	h.next = off + want
	if h.ahead >= readAheadMax {
		h.prefetchLocked(a)
	}
	return h.fromWindow(dest, off), 0
}

func (h *handle) fromWindow(dest []byte, off int64) gofuse.ReadResult {
	lo := off - h.winOff
	if lo < 0 || lo >= int64(len(h.win)) {
		return gofuse.ReadResultData(nil)
	}
	k := copy(dest, h.win[lo:])
	return gofuse.ReadResultData(dest[:k])
}

func (h *handle) Flush(ctx context.Context) syscall.Errno {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.commitLocked(); err != nil {
		return n.fsys.errno("close", err)
	}
	return 0
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.Flush(ctx)
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handles--
	if err := n.commitLocked(); err != nil {
		// The kernel does not wait for this answer: the writes stay
		// buffered and are tried again on the next close, fsync or
		// unmount.
		n.fsys.logf("committing %s when it was closed: %v", n.name(), err)
	}
	if n.handles == 0 {
		n.fsys.opened(n, false)
		// An orphan held for this mount is released once its writes
		// are in.
		n.fsys.release(n)
	}
	h.mu.Lock()
	h.win, h.pfs = nil, nil
	h.mu.Unlock()
	return 0
}

// commitLocked commits the node's buffered writes; n.mu is held. A commit
// replaces the content as a whole when the writes define it (a new or
// truncated file, or one written from start to end) — one change, sent
// again whole if the node it went to fails — and otherwise truncates and
// writes the changed ranges, each step repeatable.
func (n *node) commitLocked() error {
	if n.up != nil {
		// A streaming upload has sent most of it: end it.
		if done, err := n.finishUploadLocked(); done || err != nil {
			return err
		}
	}
	d := n.d
	if d == nil {
		return nil
	}
	if !d.changed {
		if n.handles == 0 {
			n.dropDirtyLocked()
		}
		return nil
	}
	var a webfs.Attr
	var err error
	if d.whole() {
		var mtime time.Time
		if d.attrs.Valid&webfs.SetMtime != 0 {
			mtime = d.attrs.Mtime
		}
		_, err = n.fsys.call("write", commitTimeout(d.size), func(ctx context.Context) (err error) {
			a, err = n.fsys.tree.SetContent(ctx, n.ino, &wholeReader{d: d}, mtime)
			return err
		})
		if sa := changedAttrs(d.attrs, &a); err == nil && sa.Valid&^webfs.SetMtime != 0 {
			a, err = n.setattr(sa)
		}
	} else {
		a, err = n.commitRangesLocked()
		if sa := changedAttrs(d.attrs, &a); err == nil && sa.Valid != 0 {
			a, err = n.setattr(sa)
		}
	}
	if err != nil {
		if e := webfs.Errno(err); e == syscall.ENOENT || e == syscall.ESTALE {
			// The file was removed (here or through another mount)
			// while it was open: as with a local file, what was
			// written to it goes with it, and close succeeds.
			n.fsys.logf("%s was removed while open and is gone; dropping the %d bytes written to it since", n.name(), d.size)
			n.dropDirtyLocked()
			return nil
		}
		return err
	}
	n.dropDirtyLocked()
	n.attr, n.attrAt = a, time.Now()
	n.fsys.touched(n.ino)
	// The kernel's pages are what was written through them.
	n.cachedID = a.ContentID
	return nil
}

// changedAttrs drops from sa the mode and owner a has already.
func changedAttrs(sa webfs.SetAttr, a *webfs.Attr) webfs.SetAttr {
	if sa.Valid&webfs.SetMode != 0 && sa.Mode == a.Mode&webfs.ModePerm {
		sa.Valid &^= webfs.SetMode
	}
	if sa.Valid&webfs.SetUid != 0 && sa.Uid == a.Uid {
		sa.Valid &^= webfs.SetUid
	}
	if sa.Valid&webfs.SetGid != 0 && sa.Gid == a.Gid {
		sa.Valid &^= webfs.SetGid
	}
	return sa
}

// setattr changes attributes in the cluster.
func (n *node) setattr(sa webfs.SetAttr) (webfs.Attr, error) {
	var a webfs.Attr
	_, err := n.fsys.call("setattr", metaTimeout, func(ctx context.Context) (err error) {
		a, err = n.fsys.tree.Setattr(ctx, n.ino, sa)
		return err
	})
	if err == nil {
		n.fsys.touched(n.ino)
	}
	return a, err
}

func (n *node) dropDirtyLocked() {
	if n.up != nil {
		n.up.abortLocked("") // its buffer is dropped: committed, or gone with the file
		n.up = nil
	}
	if n.d != nil {
		n.d.close()
		n.d = nil
	}
	n.fsys.markDirty(n, false)
}

// maxWriteAt bounds one WriteAt of a commit.
const maxWriteAt = 16 << 20

func (n *node) commitRangesLocked() (webfs.Attr, error) {
	d := n.d
	var a webfs.Attr
	setSize := func(size int64) error {
		_, err := n.fsys.call("truncate", metaTimeout, func(ctx context.Context) (err error) {
			a, err = n.fsys.tree.Setattr(ctx, n.ino, webfs.SetAttr{Valid: webfs.SetSize, Size: size})
			return err
		})
		return err
	}
	if d.minSize < d.base {
		if err := setSize(d.minSize); err != nil {
			return a, err
		}
	}
	for _, e := range d.ext {
		for off := e.off; off < e.end; off += maxWriteAt {
			buf := make([]byte, min(e.end-off, maxWriteAt))
			if err := d.readLocal(buf, off); err != nil {
				return a, err
			}
			_, err := n.fsys.call("write", commitTimeout(int64(len(buf))), func(ctx context.Context) (err error) {
				a, err = n.fsys.tree.WriteAt(ctx, n.ino, off, buf)
				return err
			})
			if err != nil {
				return a, err
			}
		}
	}
	if a.Ino == 0 || a.Size != d.size {
		if err := setSize(d.size); err != nil {
			return a, err
		}
	}
	return a, nil
}
