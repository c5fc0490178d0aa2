package fuse

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"hastore/webfs"
)

var (
	_ fusefs.NodeMknoder = (*node)(nil)
	_ fusefs.NodeLinker  = (*node)(nil)
)

// Mknod makes FIFOs, UNIX sockets (bind(2) on the mount) and device nodes
// — stored in the site as what they are, metadata only — and regular
// files. The kernel serves FIFOs and sockets itself; the mount is nodev,
// so device nodes cannot be opened through it.
func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *gofuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if e := n.checkNew(name); e != 0 {
		return nil, e
	}
	typ := mode & syscall.S_IFMT
	if typ == 0 {
		typ = syscall.S_IFREG
	}
	if typ != syscall.S_IFREG && !webfs.IsSpecialType(typ) {
		return nil, syscall.EINVAL
	}
	na := n.newAttr(ctx, mode, false)
	na.Rdev = dev
	a, err := n.create("mknod", name, func(ctx context.Context) (webfs.Attr, error) {
		return n.fsys.tree.Mknod(ctx, n.ino, name, typ, na)
	})
	if err != nil {
		return nil, n.fsys.errno("mknod "+name, err)
	}
	return n.child(ctx, name, a, out), 0
}

// Link makes a hard link: the site keeps one inode with a link count, so
// the kernel gets the same node under the new name.
func (n *node) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *gofuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if e := n.checkNew(name); e != 0 {
		return nil, e
	}
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	var a webfs.Attr
	maybeDone, err := n.fsys.call("link", metaTimeout, func(ctx context.Context) (err error) {
		a, err = n.fsys.tree.Link(ctx, tn.ino, n.ino, name)
		return err
	})
	if err != nil && maybeDone && webfs.Errno(err) == syscall.EEXIST {
		// Did the attempt through a node that went away make it?
		_, lerr := n.fsys.call("lookup", metaTimeout, func(ctx context.Context) (err error) {
			a, err = n.fsys.tree.Lookup(ctx, n.ino, name)
			return err
		})
		if lerr == nil && a.Ino == tn.ino {
			err = nil
		}
	}
	if err != nil {
		return nil, n.fsys.errno("link "+name, err)
	}
	n.fsys.listPut(n.ino, name, a)
	n.fsys.touched(tn.ino)
	n.mu.Lock()
	n.attrAt = time.Time{}
	n.mu.Unlock()
	tn.mu.Lock()
	tn.updateLocked(a)
	cur := tn.currentLocked()
	tn.mu.Unlock()
	fillAttr(&cur, &out.Attr)
	return tn.EmbeddedInode(), 0
}

// Open files whose names go away.
//
// A regular file that loses its last name while a mount is alive stays in
// the site as an orphan until no mount holds it (webfs/orphans.go). The
// mount keeps the set of inodes it has open; it renews its lease every
// webfs.MountRenew with that set (the cluster holds those that are
// orphans for it), holds an open file at once when its own unlink or
// rename removed the file's last name, and releases an orphan when its
// last handle here closes.

// opened records that n got its first handle (or lost its last); n.mu is
// held.
func (f *FS) opened(n *node, open bool) {
	f.mu.Lock()
	if open {
		f.open[n] = true
	} else {
		delete(f.open, n)
	}
	f.mu.Unlock()
}

// holdLoop renews the mount's lease until the mount ends.
func (f *FS) holdLoop() {
	tick := time.NewTicker(f.opt.RenewEvery)
	defer tick.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-tick.C:
		}
		f.mu.Lock()
		inos := make([]uint64, 0, len(f.open))
		for n := range f.open {
			inos = append(inos, n.ino)
		}
		f.mu.Unlock()
		if err := f.hold(inos); err != nil {
			f.logf("renewing the mount's lease (it keeps files that are removed while open here): %v", err)
		}
	}
}

// hold renews the lease and holds those of inos that are orphans.
func (f *FS) hold(inos []uint64) error {
	ctx, cancel := context.WithTimeout(f.ctx, metaTimeout)
	defer cancel()
	held, err := f.tree.Hold(ctx, f.holder, inos)
	if err != nil {
		return err
	}
	if len(held) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for n := range f.open {
		for _, ino := range held {
			if n.ino == ino {
				n.held.Store(true)
			}
		}
	}
	return nil
}

// holdNow holds n at once if it is open here (its last name was just
// removed through this mount): the periodic renewal would do it too, but
// this way the orphan never depends on the renewal's timing.
func (f *FS) holdNow(n *node) {
	n.mu.Lock()
	open := n.handles > 0
	n.mu.Unlock()
	if !open {
		return
	}
	if _, err := f.call("hold", metaTimeout, func(ctx context.Context) error {
		held, err := f.tree.Hold(ctx, f.holder, []uint64{n.ino})
		if err == nil && len(held) == 1 {
			n.held.Store(true)
		}
		return err
	}); err != nil {
		f.logf("holding %s, removed while open: %v (the periodic renewal tries again)", n.name(), err)
	}
}

// release ends this mount's hold on orphan n (its last handle closed).
func (f *FS) release(n *node) {
	if !n.held.CompareAndSwap(true, false) {
		return
	}
	go func() {
		if _, err := f.call("release", metaTimeout, func(ctx context.Context) error {
			return f.tree.Release(ctx, f.holder, n.ino)
		}); err != nil {
			f.logf("releasing inode %d, closed after it was removed: %v (the cluster collects it when the lease ends)", n.ino, err)
		}
	}()
}

// releaseAll releases every hold at unmount (best effort: the leases end
// anyway).
func (f *FS) releaseAll() {
	f.mu.Lock()
	nodes := make([]*node, 0, len(f.open))
	for n := range f.open {
		nodes = append(nodes, n)
	}
	f.mu.Unlock()
	for _, n := range nodes {
		if n.held.CompareAndSwap(true, false) {
			ctx, cancel := context.WithTimeout(context.Background(), metaTimeout)
			if err := f.tree.Release(ctx, f.holder, n.ino); err != nil {
				f.logf("releasing inode %d at unmount: %v", n.ino, err)
			}
			cancel()
		}
	}
}

// name names n for a log line: its path in the mount (as the kernel last
// told it) and its inode number.
func (n *node) name() string {
	if p := n.Path(nil); p != "" || n.ino == webfs.RootIno {
		return fmt.Sprintf("/%s (inode %d)", p, n.ino)
	}
	// No name left in the kernel's tree: the one it had when it lost it.
	if p, _ := n.lastPath.Load().(string); p != "" {
		return fmt.Sprintf("/%s (inode %d, removed)", p, n.ino)
	}
	return fmt.Sprintf("inode %d", n.ino)
}

// notePath remembers n's path before it may lose its last name, for the
// log lines about it afterwards.
func (n *node) notePath() {
	if p := n.Path(nil); p != "" {
		n.lastPath.Store(p)
	}
}

func newHolder() uint64 {
	for {
		if h := rand.Uint64(); h != 0 {
			return h
		}
	}
}
