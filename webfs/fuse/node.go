package fuse

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"hastore/webfs"
)

// node is one inode of the site: directory, regular file or symlink.
type node struct {
	fusefs.Inode
	fsys *FS
	ino  uint64

	mu     sync.Mutex
	attr   webfs.Attr // as last seen (or made) by this mount
	attrAt time.Time  // when
	// cachedID is the content whose pages the kernel's page cache may
	// hold ("" for none): an open that finds the same content keeps the
	// cache, and a change seen elsewhere drops it.
	cachedID string
	d        *dirty  // writes not committed yet
	up       *upload // d's streaming upload, if one runs (stream.go)
	handles  int     // open file handles
	// held: the cluster keeps this file, which lost its last name, for
	// this mount's handles (posix.go).
	held atomic.Bool
	// lastPath is the path n had when a change through this mount
	// removed a name of it, for log lines once it has none (name).
	lastPath atomic.Value
}

var (
	_ fusefs.NodeLookuper       = (*node)(nil)
	_ fusefs.NodeGetattrer      = (*node)(nil)
	_ fusefs.NodeSetattrer      = (*node)(nil)
	_ fusefs.NodeOpendirHandler = (*node)(nil)
	_ fusefs.NodeMkdirer        = (*node)(nil)
	_ fusefs.NodeRmdirer        = (*node)(nil)
	_ fusefs.NodeCreater        = (*node)(nil)
	_ fusefs.NodeOpener         = (*node)(nil)
	_ fusefs.NodeUnlinker       = (*node)(nil)
	_ fusefs.NodeRenamer        = (*node)(nil)
	_ fusefs.NodeSymlinker      = (*node)(nil)
	_ fusefs.NodeReadlinker     = (*node)(nil)
	_ fusefs.NodeStatfser       = (*node)(nil)
	_ fusefs.NodeFsyncer        = (*node)(nil)
)

func (f *FS) getAttr(ino uint64) (webfs.Attr, error) {
	var a webfs.Attr
	_, err := f.call("getattr", metaTimeout, func(ctx context.Context) (err error) {
		a, err = f.tree.GetAttr(ctx, ino)
		return err
	})
	return a, err
}

func typeBits(mode uint32) uint32 { return mode & webfs.ModeType }

// fillAttr converts a's attributes for the kernel.
func fillAttr(a *webfs.Attr, out *gofuse.Attr) {
	out.Ino = a.Ino
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Rdev = a.Rdev
	out.Owner = gofuse.Owner{Uid: a.Uid, Gid: a.Gid}
	out.Size = uint64(a.Size)
	if a.IsSymlink() {
		out.Size = uint64(len(a.Target))
	}
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 128 << 10
	setTime := func(t time.Time, sec *uint64, nsec *uint32) {
		if !t.IsZero() {
			*sec, *nsec = uint64(t.Unix()), uint32(t.Nanosecond())
		}
	}
	setTime(a.Atime, &out.Atime, &out.Atimensec)
	setTime(a.Mtime, &out.Mtime, &out.Mtimensec)
	setTime(a.Ctime, &out.Ctime, &out.Ctimensec)
}

// currentLocked returns the node's attributes as this mount sees them: with the
// size and mtime of writes not committed yet. n.mu is held.
func (n *node) currentLocked() webfs.Attr {
	a := n.attr
	if n.d != nil {
		n.d.overlay(&a)
	}
	return a
}

// update records attributes fetched from the cluster, and drops the
// kernel's cached pages of the file if its content changed elsewhere.
func (n *node) update(a webfs.Attr) webfs.Attr {
	return n.updateAt(a, time.Now())
}

// updateAt is update with attributes that were current at the time at,
// kept only if they are newer than the node's.
func (n *node) updateAt(a webfs.Attr, at time.Time) webfs.Attr {
	n.mu.Lock()
	defer n.mu.Unlock()
	if at.After(n.attrAt) {
		n.updateLocked(a)
		n.attrAt = at
	}
	return n.currentLocked()
}

func (n *node) updateLocked(a webfs.Attr) {
	if n.d == nil && a.IsRegular() && n.cachedID != "" && a.ContentID != n.cachedID {
		n.cachedID = ""
		n.fsys.notifyContent(n)
	}
	n.attr, n.attrAt = a, time.Now()
}

// notifyContent tells the kernel to drop its cached pages and attributes
// of n. It runs apart from the request being served: the kernel may hold
// locks that the request's caller waits for.
func (f *FS) notifyContent(n *node) {
	go n.NotifyContent(0, 0)
}

// notifyEntry tells the kernel to forget the name in dir.
func (f *FS) notifyEntry(dir *node, name string) {
	go dir.NotifyEntry(name)
}

// child returns the Inode for a (named name in n), reusing the one the
// kernel knows if it is the same inode.
func (n *node) child(ctx context.Context, name string, a webfs.Attr, out *gofuse.EntryOut) *fusefs.Inode {
	return n.childAt(ctx, name, a, time.Now(), out)
}

// childAt is child with attributes that were current at the time at: a
// node that has newer ones keeps them.
func (n *node) childAt(ctx context.Context, name string, a webfs.Attr, at time.Time, out *gofuse.EntryOut) *fusefs.Inode {
	if ch := n.GetChild(name); ch != nil && ch.StableAttr().Ino == a.Ino {
		if cn, ok := ch.Operations().(*node); ok {
			cur := cn.updateAt(a, at)
			fillAttr(&cur, &out.Attr)
			return ch
		}
	}
	cn := &node{fsys: n.fsys, ino: a.Ino, attr: a, attrAt: at}
	fillAttr(&a, &out.Attr)
	return n.NewInode(ctx, cn, fusefs.StableAttr{Mode: typeBits(a.Mode), Ino: a.Ino})
}

func (n *node) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if len(name) > webfs.NameMax {
		return nil, syscall.ENAMETOOLONG
	}
	for try := 0; try < 2; try++ {
		if e, found, left, ok := n.fsys.listLookup(n.ino, name); ok {
			// Kept by the kernel only as long as the listing is good.
			out.SetEntryTimeout(left)
			if !found {
				return nil, syscall.ENOENT
			}
			out.SetAttrTimeout(left)
			return n.childAt(ctx, name, e.a, e.at, out), 0
		}
		if try > 0 {
			break
		}
		n.mu.Lock()
		entries := n.attr.Entries
		n.mu.Unlock()
		if !n.fsys.wantListing(n.ino, entries) {
			break
		}
		n.fsys.fetchListing(n.ino)
	}
	var a webfs.Attr
	_, err := n.fsys.call("lookup", metaTimeout, func(ctx context.Context) (err error) {
		a, err = n.fsys.tree.Lookup(ctx, n.ino, name)
		return err
	})
	if err != nil {
		return nil, n.fsys.errno("lookup "+name, err)
	}
	return n.child(ctx, name, a, out), 0
}

func (n *node) Getattr(ctx context.Context, fh fusefs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	if n.d != nil {
		// This mount is writing the file: its view is the newest.
		a := n.currentLocked()
		n.mu.Unlock()
		fillAttr(&a, &out.Attr)
		return 0
	}
	n.mu.Unlock()
	a, err := n.fsys.getAttr(n.ino)
	if err != nil {
		return n.fsys.errno("getattr", err)
	}
	a = n.update(a)
	fillAttr(&a, &out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fusefs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	var sa webfs.SetAttr
	if m, ok := in.GetMode(); ok {
		sa.Valid |= webfs.SetMode
		sa.Mode = m
	}
	if uid, ok := in.GetUID(); ok {
		sa.Valid |= webfs.SetUid
		sa.Uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		sa.Valid |= webfs.SetGid
		sa.Gid = gid
	}
	if t, ok := in.GetATime(); ok {
		sa.Valid |= webfs.SetAtime
		sa.Atime = t
	}
	mtimeNow := in.Valid&gofuse.FATTR_MTIME_NOW != 0
	if t, ok := in.GetMTime(); ok {
		sa.Valid |= webfs.SetMtime
		sa.Mtime = t
	}
	size, hasSize := in.GetSize()

	n.mu.Lock()
	defer n.mu.Unlock()
	open := fh != nil || n.d != nil || n.handles > 0
	if hasSize {
		if size > webfs.MaxFileSize {
			return syscall.EFBIG
		}
		if n.attr.Ino != 0 && !n.attr.IsRegular() {
			return syscall.EISDIR
		}
		if open {
			// An open file: truncation is a write like others,
			// committed with them.
			if n.d == nil {
				n.d = newDirty(n.attr.Size, n.fsys.opt.MemPerFile, n.fsys.opt.TempDir)
				n.fsys.markDirty(n, true)
			}
			if err := n.d.truncate(int64(size)); err != nil {
				return n.fsys.errno("truncate", err)
			}
			n.writtenLocked()
			if mtimeNow {
				sa.Valid &^= webfs.SetMtime // the commit sets it
			}
		} else {
			sa.Valid |= webfs.SetSize
			sa.Size = int64(size)
		}
	}
	switch {
	case sa.Valid == 0:
	case n.d != nil:
		// Writes are buffered: the changes go with their commit, after
		// them (a futimens after writing must not be undone by the
		// commit's mtime).
		if mtimeNow {
			sa.Valid &^= webfs.SetMtime
			n.d.touch()
		}
		n.d.setAttrs(sa)
	case n.noopLocked(sa):
	default:
		var a webfs.Attr
		_, err := n.fsys.call("setattr", metaTimeout, func(ctx context.Context) (err error) {
			a, err = n.fsys.tree.Setattr(ctx, n.ino, sa)
			return err
		})
		if err != nil {
			return n.fsys.errno("setattr", err)
		}
		if sa.Valid&webfs.SetSize != 0 {
			// A truncate changes the content: the kernel drops its own
			// pages; this mount keeps what it knows.
			n.cachedID = a.ContentID
		}
		n.updateLocked(a)
		n.fsys.touched(n.ino)
	}
	a := n.currentLocked()
	fillAttr(&a, &out.Attr)
	out.SetTimeout(n.fsys.opt.AttrTimeout)
	return 0
}

// noopLocked reports whether sa would leave the attributes as this mount
// saw them within the attribute timeout (tar and rsync chown and chmod
// files to what they are).
func (n *node) noopLocked(sa webfs.SetAttr) bool {
	a := &n.attr
	if sa.Valid&^(webfs.SetMode|webfs.SetUid|webfs.SetGid) != 0 || a.Ino == 0 ||
		time.Since(n.attrAt) >= n.fsys.opt.AttrTimeout {
		return false
	}
	return (sa.Valid&webfs.SetMode == 0 || sa.Mode == a.Mode&webfs.ModePerm) &&
		(sa.Valid&webfs.SetUid == 0 || sa.Uid == a.Uid) &&
		(sa.Valid&webfs.SetGid == 0 || sa.Gid == a.Gid)
}

// newIno picks the inode number of a new file, so that retrying its
// creation through another node finds the first attempt as its own.
func newIno() uint64 { return max(rand.Uint64()>>1, webfs.RootIno+1) }

// checkNew checks a new name: NAME_MAX. PATH_MAX bounds each path handed
// to a system call (the kernel checks it), not a file's path from the
// site's root: as on a local file system, a tree may grow deeper through
// relative paths (*at calls, chdir), and renames make deep trees anyway.
// Files whose path from the root is over PATH_MAX exist for the mount
// only (HTTP paths and Walk are bounded by it).
func (n *node) checkNew(name string) syscall.Errno {
	if len(name) > webfs.NameMax {
		return syscall.ENAMETOOLONG
	}
	return 0
}

// newAttr is the owner and mode of a new inode made by the caller, with
// BSD group semantics under a set-group-ID directory.
func (n *node) newAttr(ctx context.Context, mode uint32, dir bool) webfs.NewAttr {
	na := webfs.NewAttr{Mode: mode & webfs.ModePerm, Ino: newIno()}
	if c, ok := ctx.(*gofuse.Context); ok {
		na.Uid, na.Gid = c.Uid, c.Gid
	}
	n.mu.Lock()
	pa := n.attr
	n.mu.Unlock()
	if pa.Mode&0o2000 != 0 {
		na.Gid = pa.Gid
		if dir {
			na.Mode |= 0o2000
		}
	}
	return na
}

// create runs a create-like call with a fixed inode number: repeating it
// finds the first attempt's inode, not EEXIST.
func (n *node) create(op, name string, fn func(ctx context.Context) (webfs.Attr, error)) (webfs.Attr, error) {
	var a webfs.Attr
	_, err := n.fsys.call(op, metaTimeout, func(ctx context.Context) (err error) {
		a, err = fn(ctx)
		return err
	})
	if err == nil {
		// The parent's entry count and mtime changed.
		n.mu.Lock()
		n.attrAt = time.Time{}
		n.mu.Unlock()
		n.fsys.listPut(n.ino, name, a)
	}
	return a, err
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *gofuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if e := n.checkNew(name); e != 0 {
		return nil, e
	}
	na := n.newAttr(ctx, mode, true)
	a, err := n.create("mkdir", name, func(ctx context.Context) (webfs.Attr, error) {
		return n.fsys.tree.Mkdir(ctx, n.ino, name, na)
	})
	if err != nil {
		return nil, n.fsys.errno("mkdir "+name, err)
	}
	return n.child(ctx, name, a, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *gofuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if e := n.checkNew(name); e != 0 {
		return nil, e
	}
	if len(target) > webfs.PathMax {
		return nil, syscall.ENAMETOOLONG
	}
	na := n.newAttr(ctx, 0o777, false)
	a, err := n.create("symlink", name, func(ctx context.Context) (webfs.Attr, error) {
		return n.fsys.tree.Symlink(ctx, n.ino, name, target, na)
	})
	if err != nil {
		return nil, n.fsys.errno("symlink "+name, err)
	}
	return n.child(ctx, name, a, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	n.mu.Lock()
	target := n.attr.Target // a symlink's target never changes
	n.mu.Unlock()
	if target != "" {
		return []byte(target), 0
	}
	_, err := n.fsys.call("readlink", metaTimeout, func(ctx context.Context) (err error) {
		target, err = n.fsys.tree.Readlink(ctx, n.ino)
		return err
	})
	if err != nil {
		return nil, n.fsys.errno("readlink", err)
	}
	return []byte(target), 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *gofuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	if e := n.checkNew(name); e != 0 {
		return nil, nil, 0, e
	}
	na := n.newAttr(ctx, mode, false)
	a, err := n.create("create", name, func(ctx context.Context) (webfs.Attr, error) {
		return n.fsys.tree.Create(ctx, n.ino, name, na)
	})
	if err != nil {
		if webfs.Errno(err) == syscall.EEXIST && flags&syscall.O_EXCL == 0 {
			// Made meanwhile through another mount: open it.
			return n.openExisting(ctx, name, flags, out)
		}
		return nil, nil, 0, n.fsys.errno("create "+name, err)
	}
	ch := n.child(ctx, name, a, out)
	cn := ch.Operations().(*node)
	cn.mu.Lock()
	defer cn.mu.Unlock()
	cn.cachedID = a.ContentID
	h := cn.openLocked(flags)
	return ch, h, gofuse.FOPEN_KEEP_CACHE, 0
}

// openExisting opens name (which Create found taken) as open(2) without
// O_CREAT would.
func (n *node) openExisting(ctx context.Context, name string, flags uint32, out *gofuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	ch, e := n.Lookup(ctx, name, out)
	if e != 0 {
		return nil, nil, 0, e
	}
	cn, ok := ch.Operations().(*node)
	if !ok || ch.IsDir() {
		return nil, nil, 0, syscall.EISDIR
	}
	fh, fl, e := cn.Open(ctx, flags)
	if e != 0 {
		return nil, nil, 0, e
	}
	cn.mu.Lock()
	a := cn.currentLocked()
	cn.mu.Unlock()
	fillAttr(&a, &out.Attr)
	return ch, fh, fl, 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove("unlink", name, n.fsys.tree.Unlink)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove("rmdir", name, n.fsys.tree.Rmdir)
}

func (n *node) remove(op, name string, fn func(ctx context.Context, parent uint64, name string) error) syscall.Errno {
	victim := n.GetChild(name)
	if victim != nil {
		if cn, ok := victim.Operations().(*node); ok {
			cn.notePath()
		}
	}
	maybeDone, err := n.fsys.call(op, metaTimeout, func(ctx context.Context) error {
		return fn(ctx, n.ino, name)
	})
	if err != nil && maybeDone && webfs.Errno(err) == syscall.ENOENT {
		// An earlier attempt, through a node that went away before it
		// answered, did it.
		err = nil
	}
	if err != nil {
		return n.fsys.errno(op+" "+name, err)
	}
	n.fsys.listDel(n.ino, name)
	if victim != nil {
		n.fsys.touched(victim.StableAttr().Ino)
	}
	n.mu.Lock()
	n.attrAt = time.Time{}
	n.mu.Unlock()
	if ch := victim; ch != nil {
		if cn, ok := ch.Operations().(*node); ok {
			n.fsys.lostName(cn)
		}
	}
	return 0
}

// lostName updates cn, which lost a name through this mount: one link
// less; with the last one gone, writes buffered for it are dropped if no
// handle can commit them, and if it is open here the cluster is asked to
// keep it for the handles.
func (f *FS) lostName(cn *node) {
	cn.mu.Lock()
	if cn.attr.Nlink > 0 {
		cn.attr.Nlink--
	}
	cn.attrAt = time.Time{}
	last := cn.attr.Nlink == 0
	open := cn.handles > 0
	if last && cn.d != nil && !open {
		// Nothing can commit these writes any more.
		cn.dropDirtyLocked()
	}
	cn.mu.Unlock()
	if open && !cn.IsDir() {
		// The count here may be stale (links made elsewhere): ask
		// whether it is an orphan now; the cluster holds it if so.
		f.holdNow(cn)
	}
}

// RENAME_NOREPLACE and RENAME_WHITEOUT, flags of renameat2(2).
const (
	renameNoreplace = 1
	renameWhiteout  = 4
)

func (n *node) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags&(renameNoreplace|fusefs.RENAME_EXCHANGE|renameWhiteout) != 0 {
		// renameat2 with flags: the site's rename only replaces.
		// ENOSYS makes the kernel answer EINVAL from now on without
		// asking, which callers (mv) take as "not supported here" and
		// fall back to rename(2).
		return syscall.ENOSYS
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if e := np.checkNew(newName); e != 0 {
		return e
	}
	var srcIno uint64
	victim := np.GetChild(newName)
	if victim != nil {
		if vn, ok := victim.Operations().(*node); ok {
			vn.notePath()
		}
	}
	if ch := n.GetChild(name); ch != nil {
		srcIno = ch.StableAttr().Ino
		if cn, ok := ch.Operations().(*node); ok {
			// Writes buffered for the file go with it, but commit
			// them first: a rename is how editors and rsync publish a
			// finished file, and it must be there when the name is.
			cn.mu.Lock()
			err := cn.commitLocked()
			cn.mu.Unlock()
			if err != nil {
				return n.fsys.errno("rename "+name, err)
			}
		}
	}
	maybeDone, err := n.fsys.call("rename", metaTimeout, func(ctx context.Context) error {
		return n.fsys.tree.Rename(ctx, n.ino, name, np.ino, newName)
	})
	if err != nil && maybeDone && webfs.Errno(err) == syscall.ENOENT && srcIno != 0 {
		// Did the attempt through a node that went away move it?
		var a webfs.Attr
		_, lerr := n.fsys.call("lookup", metaTimeout, func(ctx context.Context) (err error) {
			a, err = n.fsys.tree.Lookup(ctx, np.ino, newName)
			return err
		})
		if lerr == nil && a.Ino == srcIno {
			err = nil
		}
	}
	if err != nil {
		return n.fsys.errno("rename "+name, err)
	}
	n.fsys.listDrop(n.ino, np.ino)
	n.fsys.touched(srcIno)
	if victim != nil {
		n.fsys.touched(victim.StableAttr().Ino)
	}
	for _, p := range []*node{n, np} {
		p.mu.Lock()
		p.attrAt = time.Time{}
		p.mu.Unlock()
	}
	if victim != nil && victim.StableAttr().Ino != srcIno && !victim.IsDir() {
		if vn, ok := victim.Operations().(*node); ok {
			// Replaced: the old file lost this name (the atomic
			// deploy: readers of the old file keep reading it).
			n.fsys.lostName(vn)
		}
	}
	return 0
}

func (n *node) Fsync(ctx context.Context, fh fusefs.FileHandle, flags uint32) syscall.Errno {
	// Metadata changes are durable when they return; only buffered
	// writes need committing.
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.commitLocked(); err != nil {
		return n.fsys.errno("fsync", err)
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	const bsize = 4096
	out.Bsize = bsize
	out.Frsize = bsize
	out.NameLen = webfs.NameMax
	out.Files = 1 << 40
	out.Ffree = 1 << 40
	c, err := n.fsys.capacity()
	if err != nil {
		n.fsys.logf("statfs: %v", err)
	}
	out.Blocks = c.Total / bsize
	out.Bfree = c.Free / bsize
	out.Bavail = c.Free / bsize
	return 0
}

// capacity answers statfs, asking at most every few seconds.
func (f *FS) capacity() (Capacity, error) {
	if f.opt.Statfs == nil {
		return Capacity{}, nil
	}
	f.statMu.Lock()
	defer f.statMu.Unlock()
	if time.Since(f.statAt) < 5*time.Second {
		return f.statLast, nil
	}
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	c, err := f.opt.Statfs(ctx)
	if err != nil {
		return f.statLast, err
	}
	f.statLast, f.statAt = c, time.Now()
	return c, nil
}

// dirHandle lists a directory: one ReadDirPlus call when the listing
// starts, whose attributes also answer the kernel's lookups of the
// entries (readdirplus).
type dirHandle struct {
	n       *node
	mu      sync.Mutex
	loaded  bool
	entries []webfs.Entry
	pos     int // next entry; 0 and 1 are "." and ".."
}

var (
	_ fusefs.FileReaddirenter = (*dirHandle)(nil)
	_ fusefs.FileLookuper     = (*dirHandle)(nil)
	_ fusefs.FileSeekdirer    = (*dirHandle)(nil)
	_ fusefs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{n: n}, 0, 0
}

func (h *dirHandle) load() syscall.Errno {
	at := time.Now()
	var es []webfs.Entry
	_, err := h.n.fsys.call("readdir", readTimeout, func(ctx context.Context) (err error) {
		es, err = h.n.fsys.tree.ReadDirPlus(ctx, h.n.ino)
		return err
	})
	if err != nil {
		return h.n.fsys.errno("readdir", err)
	}
	h.entries, h.loaded = es, true
	h.n.fsys.storeListing(h.n.ino, at, es)
	// Names the kernel knows that are gone or now another inode were
	// changed elsewhere: have the kernel look them up again.
	byName := make(map[string]uint64, len(es))
	for i := range es {
		byName[es[i].Name] = es[i].Attr.Ino
	}
	for name, ch := range h.n.Children() {
		if ino, ok := byName[name]; !ok || ino != ch.StableAttr().Ino {
			h.n.fsys.notifyEntry(h.n, name)
		}
	}
	return 0
}

func (h *dirHandle) Readdirent(ctx context.Context) (*gofuse.DirEntry, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.loaded {
		if e := h.load(); e != 0 {
			return nil, e
		}
	}
	i := h.pos
	if i >= len(h.entries)+2 {
		return nil, 0
	}
	h.pos++
	de := &gofuse.DirEntry{Off: uint64(i + 1), Mode: syscall.S_IFDIR}
	switch i {
	case 0:
		de.Name, de.Ino = ".", h.n.ino
	case 1:
		de.Name = ".."
		h.n.mu.Lock()
		de.Ino = h.n.attr.Parent
		h.n.mu.Unlock()
	default:
		e := &h.entries[i-2]
		de.Name, de.Ino, de.Mode = e.Name, e.Attr.Ino, typeBits(e.Attr.Mode)
	}
	return de, 0
}

func (h *dirHandle) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	h.mu.Lock()
	var a *webfs.Attr
	if i := h.pos - 3; i >= 0 && i < len(h.entries) && h.entries[i].Name == name {
		a = &h.entries[i].Attr
	} else {
		for i := range h.entries {
			if h.entries[i].Name == name {
				a = &h.entries[i].Attr
				break
			}
		}
	}
	h.mu.Unlock()
	if a == nil {
		return h.n.Lookup(ctx, name, out)
	}
	return h.n.child(ctx, name, *a, out), 0
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off == 0 {
		h.loaded = false // rewinddir: list afresh
	}
	h.pos = int(off)
	return 0
}

func (h *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno { return 0 }
