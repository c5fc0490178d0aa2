package fuse

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"hastore/webfs"
)

// Streaming uploads. A file being written from its start (created, opened
// with O_TRUNC, or truncated to 0) is sent to the cluster while it is
// written: once its first streamMin bytes are written, one Write stream
// (webfs SetContent) starts and carries every byte as soon as the bytes
// before it are written too, so that the cluster stores the chunks in the
// background; close or fsync then sends the rest and ends the stream,
// which commits the content — one metadata change, as before — and only
// then succeeds. Nothing is committed before that: until the stream ends
// the file keeps its committed content everywhere.
//
// If the file is changed where the stream has already been (a write or
// truncate below what was sent), the stream is cancelled and the commit
// sends the file as before. A cancelled stream, or one whose mount dies,
// commits nothing: the node stores nothing for it and releases the chunks
// it had stored (webfs ingest), so background uploads never leak
// references except when that node crashes too (as any write).
//
// Bounds: at most maxUploads streams per mount; a stream waiting longer
// than streamIdle for the application's next bytes is cancelled (the
// commit sends the file then); data is read from the file's buffer, so the
// stream adds no memory of its own beyond the messages in flight.
const (
	streamMin  = webfs.ChunkSize
	maxUploads = 4
	streamIdle = 30 * time.Second
)

var errStreamAborted = errors.New("the file was changed where its upload had been: sent again at commit")

// upload is a file's streaming upload; its fields but done, attr and err
// are guarded by the node's mu.
type upload struct {
	n      *node
	d      *dirty // the buffer it streams; another one means it is stale
	ctx    context.Context
	cancel context.CancelFunc
	cond   *sync.Cond // on n.mu: bytes written, finish or abort

	finish  bool      // commit asked: send through the size, then end
	aborted bool      // cancelled: its result is not used
	eofGen  int64     // d.gen when the stream read the end
	eof     bool      // it did
	moved   time.Time // the stream's last progress (or the app's)

	done chan struct{}
	attr webfs.Attr // the result, once done
	err  error
}

// maybeStreamLocked starts a streaming upload of n's buffered writes if
// they qualify; n.mu is held.
func (n *node) maybeStreamLocked() {
	d := n.d
	if n.up != nil || d == nil || n.fsys.opt.NoStream || d.minSize != 0 || d.streamBroken ||
		len(d.ext) == 0 || d.ext[0].off != 0 || d.ext[0].end < streamMin {
		return
	}
	select {
	case n.fsys.uploads <- struct{}{}:
	default:
		return // enough streams: this file is sent at commit
	}
	u := &upload{n: n, d: d, done: make(chan struct{}), moved: time.Now()}
	u.cond = sync.NewCond(&n.mu)
	u.ctx, u.cancel = context.WithCancel(n.fsys.ctx)
	n.up = u
	n.fsys.streams.Add(1)
	go u.run()
	go u.watch()
}

func (u *upload) run() {
	defer func() { <-u.n.fsys.uploads }()
	defer close(u.done)
	f := u.n.fsys
	_, u.err = f.callCtx(u.ctx, "write", 0, func(ctx context.Context) (err error) {
		u.attr, err = f.tree.SetContent(ctx, u.n.ino, &streamReader{u: u}, time.Time{})
		return err
	})
}

// watch cancels a stream that waited too long for the application, and
// one whose end takes far longer than sending the file should.
func (u *upload) watch() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-u.done:
			return
		case <-t.C:
		}
		u.n.mu.Lock()
		limit := streamIdle
		if u.finish {
			limit = commitTimeout(u.d.size)
		}
		if time.Since(u.moved) > limit {
			if u.finish {
				u.abortLocked("its end took longer than sending the file should")
			} else {
				u.abortLocked("no bytes came for " + limit.String())
			}
		}
		u.n.mu.Unlock()
	}
}

// abortLocked cancels the stream, for a reason to log ("" for none); n.mu
// is held.
func (u *upload) abortLocked(why string) {
	if !u.aborted {
		u.aborted = true
		u.cancel()
		u.cond.Broadcast()
		if why != "" {
			u.n.fsys.logf("streaming %s to the cluster: cancelled (%s); it is sent whole when it is closed or fsynced", u.n.name(), why)
		}
	}
}

// writtenLocked notes a change of the buffer: the stream may go on, or
// must stop if the change was where it had been. n.mu is held.
func (n *node) writtenLocked() {
	u := n.up
	if u == nil {
		n.maybeStreamLocked()
		return
	}
	if n.d != u.d || n.d.streamBroken {
		u.abortLocked("written below what was sent")
		return
	}
	u.moved = time.Now()
	u.cond.Broadcast()
}

// finishUploadLocked ends n's upload and reports whether it committed
// every buffered write (the buffer is then dropped). If it did not, any
// error it had is forgotten and the caller commits the usual way. n.mu is
// held; it is let go while the stream ends.
func (n *node) finishUploadLocked() (bool, error) {
	u := n.up
	if u == nil {
		return false, nil
	}
	if !u.aborted && n.d == u.d && !u.d.streamBroken {
		u.finish = true
		u.moved = time.Now()
		u.cond.Broadcast()
	} else {
		u.abortLocked("written below what was sent")
	}
	n.mu.Unlock()
	<-u.done
	n.mu.Lock()
	if n.up != u {
		// Another commit (a second handle's close) took the result.
		return n.d == nil, nil
	}
	n.up = nil
	d := n.d
	if u.aborted || u.err != nil || d != u.d || d.streamBroken || !u.eof {
		if u.err != nil && !u.aborted && d == u.d {
			n.fsys.logf("streaming %s to the cluster: %v; sending it again", n.name(), u.err)
		}
		if d != nil {
			d.streamed, d.streamBroken = 0, false
		}
		return false, nil
	}
	a := u.attr
	if u.eofGen != d.gen {
		// Written meanwhile (another handle, while this one's commit
		// waited): what was sent is committed, the rest is still to
		// send, as a whole (the buffer defines the file).
		d.streamed, d.streamBroken = 0, false
		n.attr, n.attrAt = a, time.Now()
		n.fsys.touched(n.ino)
		return false, nil
	}
	if sa := changedAttrs(d.attrs, &a); sa.Valid != 0 {
		var err error
		if a, err = n.setattr(sa); err != nil {
			return false, err
		}
	}
	n.dropDirtyLocked()
	n.attr, n.attrAt = a, time.Now()
	n.fsys.touched(n.ino)
	n.cachedID = a.ContentID
	return true, nil
}

// streamReader reads a file's buffered writes for its upload: the written
// bytes from the start as they come, and at the end (commit) through the
// size, zeros where nothing was written. It can seek back to the start,
// so that the stream can be sent again through another node.
type streamReader struct {
	u   *upload
	pos int64
}

func (r *streamReader) Read(p []byte) (int, error) {
	u := r.u
	n := u.n
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		d := u.d
		if u.aborted || n.d != d || d.streamBroken {
			u.abortLocked("written below what was sent")
			return 0, errStreamAborted
		}
		avail := int64(0)
		switch {
		case u.finish:
			avail = d.size
		case len(d.ext) > 0 && d.ext[0].off == 0:
			avail = min(d.ext[0].end, d.size)
		}
		if r.pos < avail {
			k := min(int64(len(p)), avail-r.pos)
			buf := p[:k]
			clear(buf)
			for _, pc := range d.pieces(r.pos, k) {
				if pc.kind == pieceLocal {
					if err := d.readLocal(buf[pc.off-r.pos:pc.off-r.pos+pc.n], pc.off); err != nil {
						return 0, err
					}
				}
			}
			r.pos += k
			d.streamed = max(d.streamed, r.pos)
			u.moved = time.Now()
			return int(k), nil
		}
		if u.finish {
			u.eof, u.eofGen = true, d.gen
			return 0, io.EOF
		}
		u.cond.Wait()
	}
}

func (r *streamReader) Seek(offset int64, whence int) (int64, error) {
	switch {
	case whence == io.SeekCurrent && offset == 0:
		return r.pos, nil
	case whence == io.SeekStart && offset == 0:
		r.pos = 0
		return 0, nil
	}
	return 0, errors.New("stream: seeks only to its start")
}
