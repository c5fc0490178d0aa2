package webfs

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Site is one site's tree, served by a Sites. Methods name inodes by
// number (the shape of a FUSE inode API); Walk resolves paths. It is safe
// for concurrent use.
type Site struct {
	sites  *Sites
	name   string
	tenant string
	// locks serialize this node's mutations of the same inodes, so that
	// concurrent requests through one node queue instead of conflicting in
	// Raft. Other nodes' mutations are handled by the checks.
	locks [64]sync.Mutex
}

// Name returns the site's name.
func (s *Site) Name() string { return s.name }

func (s *Site) lock(inos ...uint64) func() {
	idx := make([]int, 0, len(inos))
	for _, ino := range inos {
		idx = append(idx, int(ino%uint64(len(s.locks))))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s.locks[i].Lock()
	}
	return func() {
		for _, i := range idx {
			s.locks[i].Unlock()
		}
	}
}

func inoPath(ino uint64) string { return "#" + strconv.FormatUint(ino, 10) }

// mutate runs one change of the tree as a txn (see Sites.update), with
// this node's locks on the inodes named and a check that the site still
// exists.
func (s *Site) mutate(ctx context.Context, op, path string, inos []uint64, plan func(t *txn, now time.Time) error) error {
	unlock := s.lock(inos...)
	defer unlock()
	err := s.sites.update(ctx, func(t *txn) error {
		if _, ok := t.get(RegistryTenant, "s/"+s.name); !ok {
			return fmt.Errorf("%w: site %s does not exist", syscall.ENOENT, s.name)
		}
		return plan(t, s.sites.now())
	})
	if err != nil {
		return pathErr(op, path, err)
	}
	return nil
}

// Records as a txn sees them.

func (s *Site) inode(t *txn, ino uint64) (Attr, bool, error) {
	v, ok := t.get(s.tenant, inoKey(ino))
	if !ok {
		return Attr{}, false, nil
	}
	a, err := decodeInode(ino, v)
	return a, err == nil, err
}

// mustInode is inode with absence as ENOENT.
func (s *Site) mustInode(t *txn, ino uint64) (Attr, error) {
	a, ok, err := s.inode(t, ino)
	if err == nil && !ok {
		err = syscall.ENOENT
	}
	return a, err
}

// dirInode is mustInode for a directory: ENOTDIR if it is not one.
func (s *Site) dirInode(t *txn, ino uint64) (Attr, error) {
	a, err := s.mustInode(t, ino)
	if err == nil && !a.IsDir() {
		err = syscall.ENOTDIR
	}
	return a, err
}

func (s *Site) putInode(t *txn, a *Attr) { t.put(s.tenant, inoKey(a.Ino), encodeInode(a)) }

func (s *Site) delInode(t *txn, a *Attr) {
	t.del(s.tenant, inoKey(a.Ino))
	for _, c := range a.Chunks {
		t.drop = append(t.drop, c.ID)
	}
}

func (s *Site) dentry(t *txn, parent uint64, name string) (ino uint64, mode uint32, ok bool, err error) {
	v, ok := t.get(s.tenant, dentryKey(parent, name))
	if !ok {
		return 0, 0, false, nil
	}
	ino, mode, err = decodeDentry(v)
	return ino, mode, err == nil, err
}

func (s *Site) putDentry(t *txn, parent uint64, name string, child *Attr) {
	t.put(s.tenant, dentryKey(parent, name), encodeDentry(child.Ino, child.Mode))
}

// newIno picks an unused inode number: want if not zero, else random
// 63-bit. The txn checks that it is still unused when it commits.
func (s *Site) newIno(t *txn, want uint64) (uint64, error) {
	if want != 0 {
		if want <= RootIno || want >= 1<<63 {
			return 0, fmt.Errorf("%w: inode number %d out of range", syscall.EINVAL, want)
		}
		if _, ok := t.get(s.tenant, inoKey(want)); ok {
			return 0, fmt.Errorf("%w: inode number %d in use", syscall.EEXIST, want)
		}
		return want, nil
	}
	for {
		ino := rand.Uint64() >> 1
		if ino <= RootIno {
			continue
		}
		if _, ok := t.get(s.tenant, inoKey(ino)); !ok {
			return ino, nil
		}
	}
}

// addEntry updates directory p for a new entry of child.
func addEntry(p *Attr, child *Attr, now time.Time) {
	p.Entries++
	if child.IsDir() {
		p.Nlink++
	}
	p.Mtime, p.Ctime = now, now
}

// removeEntry updates directory p for the removal of an entry of child.
func removeEntry(p *Attr, child *Attr, now time.Time) {
	p.Entries--
	if child.IsDir() {
		p.Nlink--
	}
	p.Mtime, p.Ctime = now, now
}

// Reads. They serve this node's replica; a miss is confirmed with the
// cluster (Sync) before it is reported.

// GetAttr returns an inode's attributes.
func (s *Site) GetAttr(ctx context.Context, ino uint64) (Attr, error) {
	a, err := s.getAttr(ctx, ino)
	if err != nil {
		return Attr{}, pathErr("getattr", inoPath(ino), err)
	}
	return a, nil
}

func (s *Site) getAttr(ctx context.Context, ino uint64) (Attr, error) {
	return s.getAttrAfter(ctx, ino, false)
}

// getAttrAfter is getAttr for a caller that may have passed a read barrier
// already (caughtUp): then a miss is final.
func (s *Site) getAttrAfter(ctx context.Context, ino uint64, caughtUp bool) (Attr, error) {
	for ; ; caughtUp = true {
		v, ok, err := s.sites.md.TenantGet(s.tenant, inoKey(ino))
		if err != nil {
			return Attr{}, err
		}
		if ok {
			return decodeInode(ino, v)
		}
		if caughtUp {
			return Attr{}, syscall.ENOENT
		}
		if err := s.sites.catchUp(ctx); err != nil {
			return Attr{}, err
		}
	}
}

// Lookup returns the attributes of name in directory parent.
func (s *Site) Lookup(ctx context.Context, parent uint64, name string) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, pathErr("lookup", name, err)
	}
	a, err := s.lookup(ctx, parent, name, false)
	if err != nil {
		return Attr{}, pathErr("lookup", name, err)
	}
	return a, nil
}

func (s *Site) lookup(ctx context.Context, parent uint64, name string, caughtUp bool) (Attr, error) {
	for ; ; caughtUp = true {
		a, err := s.lookupLocal(parent, name)
		if err == nil || caughtUp || (Errno(err) != syscall.ENOENT && Errno(err) != syscall.ENOTDIR) {
			return a, err
		}
		if err := s.sites.catchUp(ctx); err != nil {
			return Attr{}, err
		}
	}
}

func (s *Site) lookupLocal(parent uint64, name string) (Attr, error) {
	md := s.sites.md
	v, ok, err := md.TenantGet(s.tenant, dentryKey(parent, name))
	if err != nil {
		return Attr{}, err
	}
	if !ok {
		p, ok, err := md.TenantGet(s.tenant, inoKey(parent))
		if err != nil {
			return Attr{}, err
		}
		if ok {
			if pa, err := decodeInode(parent, p); err == nil && !pa.IsDir() {
				return Attr{}, syscall.ENOTDIR
			}
		}
		return Attr{}, syscall.ENOENT
	}
	ino, _, err := decodeDentry(v)
	if err != nil {
		return Attr{}, err
	}
	iv, ok, err := md.TenantGet(s.tenant, inoKey(ino))
	if err != nil {
		return Attr{}, err
	}
	if !ok {
		// Removed between the two reads.
		return Attr{}, syscall.ENOENT
	}
	return decodeInode(ino, iv)
}

// ReadDir lists a directory in name order (bytewise), without "." and "..".
func (s *Site) ReadDir(ctx context.Context, ino uint64) ([]DirEntry, error) {
	a, err := s.getAttr(ctx, ino)
	if err == nil && !a.IsDir() {
		err = syscall.ENOTDIR
	}
	if err != nil {
		return nil, pathErr("readdir", inoPath(ino), err)
	}
	prefix := dentryPrefix(ino)
	var out []DirEntry
	err = s.sites.md.TenantScan(s.tenant, prefix, func(key string, v []byte) error {
		child, mode, err := decodeDentry(v)
		if err != nil {
			return err
		}
		out = append(out, DirEntry{Name: key[len(prefix):], Ino: child, Mode: mode})
		return nil
	})
	if err != nil {
		return nil, pathErr("readdir", inoPath(ino), err)
	}
	return out, nil
}

// ReadDirPlus is ReadDir with each entry's attributes.
func (s *Site) ReadDirPlus(ctx context.Context, ino uint64) ([]Entry, error) {
	des, err := s.ReadDir(ctx, ino)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		v, ok, err := s.sites.md.TenantGet(s.tenant, inoKey(de.Ino))
		if err != nil {
			return nil, pathErr("readdir", de.Name, err)
		}
		if !ok {
			continue // removed since the scan
		}
		a, err := decodeInode(de.Ino, v)
		if err != nil {
			return nil, pathErr("readdir", de.Name, err)
		}
		out = append(out, Entry{Name: de.Name, Attr: a})
	}
	return out, nil
}

// Readlink returns a symlink's target; EINVAL if ino is not a symlink.
func (s *Site) Readlink(ctx context.Context, ino uint64) (string, error) {
	a, err := s.getAttr(ctx, ino)
	if err == nil && !a.IsSymlink() {
		err = syscall.EINVAL
	}
	if err != nil {
		return "", pathErr("readlink", inoPath(ino), err)
	}
	return a.Target, nil
}

// Mutations. Each is one atomic metadata batch guarded by checks of what
// it read.

// Mkdir creates a directory; EEXIST if the name is taken.
func (s *Site) Mkdir(ctx context.Context, parent uint64, name string, na NewAttr) (Attr, error) {
	return s.create(ctx, "mkdir", parent, name, ModeDir, "", na)
}

// Create creates an empty regular file, exclusively: EEXIST if the name
// is taken.
func (s *Site) Create(ctx context.Context, parent uint64, name string, na NewAttr) (Attr, error) {
	return s.create(ctx, "create", parent, name, ModeRegular, "", na)
}

// Symlink creates a symlink to target (mode 0777).
func (s *Site) Symlink(ctx context.Context, parent uint64, name, target string, na NewAttr) (Attr, error) {
	switch {
	case target == "":
		return Attr{}, pathErr("symlink", name, fmt.Errorf("%w: empty target", syscall.ENOENT))
	case len(target) > PathMax:
		return Attr{}, pathErr("symlink", name, syscall.ENAMETOOLONG)
	case slices.Contains([]byte(target), 0):
		return Attr{}, pathErr("symlink", name, syscall.EINVAL)
	}
	na.Mode = 0o777
	return s.create(ctx, "symlink", parent, name, ModeSymlink, target, na)
}

// Mknod creates a FIFO, UNIX socket, character or block device node —
// stored as metadata only, never with content — or, for ModeRegular, an
// empty regular file; typ is the type bits (EINVAL for others), na.Mode
// the permissions and na.Rdev a device node's number. EEXIST if the name
// is taken.
func (s *Site) Mknod(ctx context.Context, parent uint64, name string, typ uint32, na NewAttr) (Attr, error) {
	typ &= ModeType
	if typ != ModeRegular && !IsSpecialType(typ) {
		return Attr{}, pathErr("mknod", name, fmt.Errorf("%w: mknod of file type %#o", syscall.EINVAL, typ))
	}
	if typ != ModeChar && typ != ModeBlock {
		na.Rdev = 0
	}
	return s.create(ctx, "mknod", parent, name, typ, "", na)
}

func (s *Site) create(ctx context.Context, op string, parent uint64, name string, typ uint32, target string, na NewAttr) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, pathErr(op, name, err)
	}
	var out Attr
	err := s.mutate(ctx, op, name, []uint64{parent}, func(t *txn, now time.Time) error {
		p, err := s.dirInode(t, parent)
		if err != nil {
			return err
		}
		if ino, _, ok, err := s.dentry(t, parent, name); err != nil {
			return err
		} else if ok {
			if na.Ino != 0 && ino == na.Ino {
				// Our own create, retried after its answer was lost.
				if a, ok, err := s.inode(t, ino); err == nil && ok && a.Mode&ModeType == typ {
					out = a
					return nil
				}
			}
			return syscall.EEXIST
		}
		ino, err := s.newIno(t, na.Ino)
		if err != nil {
			return err
		}
		a := newInode(ino, typ, na, now)
		if typ == ModeDir {
			a.Parent = parent
		}
		if typ == ModeSymlink {
			a.Target, a.Size = target, int64(len(target))
		}
		if typ == ModeChar || typ == ModeBlock {
			a.Rdev = na.Rdev
		}
		s.putInode(t, &a)
		s.putDentry(t, parent, name, &a)
		addEntry(&p, &a, now)
		s.putInode(t, &p)
		out = a
		return nil
	})
	return out, err
}

func newInode(ino uint64, typ uint32, na NewAttr, now time.Time) Attr {
	a := Attr{Ino: ino, Mode: typ | na.Mode&ModePerm, Uid: na.Uid, Gid: na.Gid, Nlink: 1, Atime: now, Mtime: now, Ctime: now}
	if !na.Mtime.IsZero() {
		a.Mtime, a.Atime = na.Mtime, na.Mtime
	}
	if typ == ModeDir {
		a.Nlink = 2
	}
	a.ContentID = contentID(&a)
	return a
}

// Unlink removes a name that is not a directory (EISDIR if it is). The
// inode loses a link; with its last link it is deleted and the content's
// chunk references are dropped after the change committed — unless a
// mount of the site is alive, which may hold the file open: then the
// inode becomes an orphan, kept for open descriptors (see orphans.go).
func (s *Site) Unlink(ctx context.Context, parent uint64, name string) error {
	return s.remove(ctx, "unlink", parent, name, false)
}

// Rmdir removes an empty directory: ENOTDIR if the name is not one,
// ENOTEMPTY if it has entries.
func (s *Site) Rmdir(ctx context.Context, parent uint64, name string) error {
	return s.remove(ctx, "rmdir", parent, name, true)
}

func (s *Site) remove(ctx context.Context, op string, parent uint64, name string, dir bool) error {
	if err := checkName(name); err != nil {
		return pathErr(op, name, err)
	}
	return s.mutate(ctx, op, name, []uint64{parent}, func(t *txn, now time.Time) error {
		p, err := s.dirInode(t, parent)
		if err != nil {
			return err
		}
		ino, _, ok, err := s.dentry(t, parent, name)
		if err != nil {
			return err
		}
		if !ok {
			return syscall.ENOENT
		}
		a, err := s.mustInode(t, ino)
		if err != nil {
			return err
		}
		switch {
		case dir && !a.IsDir():
			return syscall.ENOTDIR
		case !dir && a.IsDir():
			return syscall.EISDIR
		case dir && a.Entries > 0:
			return syscall.ENOTEMPTY
		}
		t.del(s.tenant, dentryKey(parent, name))
		if a.IsDir() {
			s.delInode(t, &a)
		} else {
			s.dropLink(t, &a, now)
		}
		removeEntry(&p, &a, now)
		s.putInode(t, &p)
		return nil
	})
}

// Link gives the inode ino another name, newParent/newName (link(2)):
// one inode, one content, its link count raised. EPERM for a directory,
// ENOENT for an inode without names (an orphan), EEXIST if the name is
// taken, EMLINK past LinkMax links.
func (s *Site) Link(ctx context.Context, ino, newParent uint64, newName string) (Attr, error) {
	const op = "link"
	if err := checkName(newName); err != nil {
		return Attr{}, pathErr(op, newName, err)
	}
	var out Attr
	err := s.mutate(ctx, op, newName, []uint64{ino, newParent}, func(t *txn, now time.Time) error {
		a, err := s.mustInode(t, ino)
		if err != nil {
			return err
		}
		switch {
		case a.IsDir():
			return fmt.Errorf("%w: hard links to directories are not allowed", syscall.EPERM)
		case a.Nlink == 0:
			return fmt.Errorf("%w: the file has no name left", syscall.ENOENT)
		case a.Nlink >= LinkMax:
			return syscall.EMLINK
		}
		p, err := s.dirInode(t, newParent)
		if err != nil {
			return err
		}
		if _, _, ok, err := s.dentry(t, newParent, newName); err != nil {
			return err
		} else if ok {
			return syscall.EEXIST
		}
		a.Nlink++
		a.Ctime = now
		s.putInode(t, &a)
		s.putDentry(t, newParent, newName, &a)
		addEntry(&p, &a, now)
		s.putInode(t, &p)
		out = a
		return nil
	})
	return out, err
}

// LinkMax is the most names one inode may have (LINK_MAX).
const LinkMax = 65000

// dropLink removes one link of a non-directory a (its name has been
// removed by the caller): the inode is kept with one link less, or with
// its last link deleted (content dropped after the commit), or made an
// orphan if mounts may hold it open.
func (s *Site) dropLink(t *txn, a *Attr, now time.Time) {
	if a.Nlink > 1 {
		a.Nlink--
		a.Ctime = now
		s.putInode(t, a)
		return
	}
	if a.IsRegular() && s.mountsAlive(t, now) {
		s.orphan(t, a, now)
		return
	}
	s.delInode(t, a)
}

// Rename moves oldParent/oldName to newParent/newName atomically,
// replacing what newName named (a file by a file, an empty directory by a
// directory): at every moment newName names either the old or the new
// inode, and a concurrent change of anything it read makes it start over.
// Errors as rename(2): ENOENT, ENOTDIR, EISDIR, ENOTEMPTY, and EINVAL for
// moving a directory into itself.
func (s *Site) Rename(ctx context.Context, oldParent uint64, oldName string, newParent uint64, newName string) error {
	const op = "rename"
	for _, n := range []string{oldName, newName} {
		if err := checkName(n); err != nil {
			return pathErr(op, n, err)
		}
	}
	return s.mutate(ctx, op, oldName, []uint64{oldParent, newParent}, func(t *txn, now time.Time) error {
		if _, err := s.dirInode(t, oldParent); err != nil {
			return err
		}
		if _, err := s.dirInode(t, newParent); err != nil {
			return err
		}
		srcIno, _, ok, err := s.dentry(t, oldParent, oldName)
		if err != nil {
			return err
		}
		if !ok {
			return syscall.ENOENT
		}
		src, err := s.mustInode(t, srcIno)
		if err != nil {
			return err
		}
		dstIno, _, exists, err := s.dentry(t, newParent, newName)
		if err != nil {
			return err
		}
		if exists && dstIno == srcIno {
			return nil // the same inode: nothing to do
		}
		if src.IsDir() {
			// newParent must not be src or below it. The ancestors read
			// here are checked at commit, so a concurrent rename cannot
			// make a cycle.
			for a := newParent; ; {
				if a == srcIno {
					return fmt.Errorf("%w: cannot move a directory into itself", syscall.EINVAL)
				}
				if a == RootIno {
					break
				}
				d, err := s.mustInode(t, a)
				if err != nil {
					return err
				}
				a = d.Parent
			}
		}
		if exists {
			dst, err := s.mustInode(t, dstIno)
			if err != nil {
				return err
			}
			switch {
			case src.IsDir() && !dst.IsDir():
				return syscall.ENOTDIR
			case !src.IsDir() && dst.IsDir():
				return syscall.EISDIR
			case dst.IsDir() && dst.Entries > 0:
				return syscall.ENOTEMPTY
			}
			if dst.IsDir() {
				s.delInode(t, &dst)
			} else {
				s.dropLink(t, &dst, now)
			}
			np, _ := s.mustInode(t, newParent)
			removeEntry(&np, &dst, now)
			s.putInode(t, &np)
		}
		t.del(s.tenant, dentryKey(oldParent, oldName))
		op, _ := s.mustInode(t, oldParent)
		removeEntry(&op, &src, now)
		s.putInode(t, &op)
		np, _ := s.mustInode(t, newParent) // after the write above if the same
		addEntry(&np, &src, now)
		s.putInode(t, &np)
		src.Ctime = now
		if src.IsDir() {
			src.Parent = newParent
		}
		s.putInode(t, &src)
		s.putDentry(t, newParent, newName, &src)
		return nil
	})
}

// Setattr changes the attributes sa.Valid names; SetSize truncates or
// extends a regular file with zeros (EISDIR for a directory, EINVAL for a
// symlink) and sets mtime to now unless SetMtime is given too. Ctime
// becomes now. It returns the new attributes.
func (s *Site) Setattr(ctx context.Context, ino uint64, sa SetAttr) (Attr, error) {
	const op = "setattr"
	if sa.Valid&SetSize != 0 {
		if sa.Size < 0 {
			return Attr{}, pathErr(op, inoPath(ino), syscall.EINVAL)
		}
		if sa.Size > MaxFileSize {
			return Attr{}, pathErr(op, inoPath(ino), syscall.EFBIG)
		}
		return s.editContent(ctx, op, ino, sa.Size, 0, nil, func(a *Attr, now time.Time) {
			a.Mtime = now // truncate(2) marks mtime, unless the call sets it
			applySetAttr(a, sa, now)
		})
	}
	var out Attr
	err := s.mutate(ctx, op, inoPath(ino), []uint64{ino}, func(t *txn, now time.Time) error {
		a, err := s.mustInode(t, ino)
		if err != nil {
			return err
		}
		applySetAttr(&a, sa, now)
		s.putInode(t, &a)
		out = a
		return nil
	})
	return out, err
}

func applySetAttr(a *Attr, sa SetAttr, now time.Time) {
	if sa.Valid&SetMode != 0 {
		a.Mode = a.Mode&ModeType | sa.Mode&ModePerm
	}
	if sa.Valid&SetUid != 0 {
		a.Uid = sa.Uid
	}
	if sa.Valid&SetGid != 0 {
		a.Gid = sa.Gid
	}
	if sa.Valid&SetAtime != 0 {
		a.Atime = sa.Atime
	}
	if sa.Valid&SetMtime != 0 {
		a.Mtime = sa.Mtime
	}
	a.Ctime = now
}

// WriteFile replaces a regular file's content with data; mtime becomes now.
func (s *Site) WriteFile(ctx context.Context, ino uint64, data []byte) (Attr, error) {
	return s.SetContent(ctx, ino, bytesReader(data), time.Time{})
}

// SetContent replaces a regular file's content with what r yields (EISDIR
// for a directory, EINVAL for a symlink), with mtime as the modification
// time (zero: now). The content is stored first, then committed in one
// change; the replaced content's references are dropped afterwards. Memory
// use is bounded by a few chunks whatever the size.
func (s *Site) SetContent(ctx context.Context, ino uint64, r io.Reader, mtime time.Time) (Attr, error) {
	const op = "write"
	nc, err := s.sites.ingest(ctx, r)
	if err != nil {
		return Attr{}, pathErr(op, inoPath(ino), err)
	}
	var out Attr
	err = s.mutate(ctx, op, inoPath(ino), []uint64{ino}, func(t *txn, now time.Time) error {
		a, err := s.mustInode(t, ino)
		if err != nil {
			return err
		}
		if err := contentType(&a); err != nil {
			return err
		}
		for _, c := range a.Chunks {
			t.drop = append(t.drop, c.ID)
		}
		nc.apply(&a)
		t.take = nc.acquired
		a.Mtime, a.Ctime = now, now
		if !mtime.IsZero() {
			a.Mtime = mtime
		}
		s.putInode(t, &a)
		out = a
		return nil
	})
	if err != nil && outcomeKnown(err) {
		s.sites.release(nc.acquired)
	}
	return out, err
}

// PutFile stores a whole file under parent/name: it creates it (with na)
// if the name is free, replaces the content and sets mode, owner and mtime
// of a regular file there, replaces a symlink, and fails with EISDIR on a
// directory. It is the upload operation: one metadata change per file.
func (s *Site) PutFile(ctx context.Context, parent uint64, name string, r io.Reader, na NewAttr) (Attr, error) {
	const op = "put"
	if err := checkName(name); err != nil {
		return Attr{}, pathErr(op, name, err)
	}
	nc, err := s.sites.ingest(ctx, r)
	if err != nil {
		return Attr{}, pathErr(op, name, err)
	}
	var out Attr
	err = s.mutate(ctx, op, name, []uint64{parent}, func(t *txn, now time.Time) error {
		p, err := s.dirInode(t, parent)
		if err != nil {
			return err
		}
		ino, _, exists, err := s.dentry(t, parent, name)
		if err != nil {
			return err
		}
		if exists {
			a, err := s.mustInode(t, ino)
			if err != nil {
				return err
			}
			switch {
			case a.IsDir():
				return syscall.EISDIR
			case a.IsRegular():
				for _, c := range a.Chunks {
					t.drop = append(t.drop, c.ID)
				}
				nc.apply(&a)
				t.take = nc.acquired
				a.Mode = ModeRegular | na.Mode&ModePerm
				a.Uid, a.Gid = na.Uid, na.Gid
				a.Mtime, a.Ctime = now, now
				if !na.Mtime.IsZero() {
					a.Mtime = na.Mtime
				}
				s.putInode(t, &a)
				out = a
				return nil
			}
			// Anything else (a symlink, a special file) is replaced by
			// a new file.
			s.dropLink(t, &a, now)
			removeEntry(&p, &a, now)
		}
		ino, err = s.newIno(t, na.Ino)
		if err != nil {
			return err
		}
		a := newInode(ino, ModeRegular, na, now)
		nc.apply(&a)
		t.take = nc.acquired
		s.putInode(t, &a)
		s.putDentry(t, parent, name, &a)
		addEntry(&p, &a, now)
		s.putInode(t, &p)
		out = a
		return nil
	})
	if err != nil && outcomeKnown(err) {
		s.sites.release(nc.acquired)
	}
	return out, err
}

// WriteAt writes data at off into a regular file, extending it (with
// zeros up to off) if need be; mtime becomes now. Only the chunks the
// write touches are rebuilt; the others are kept as they are.
func (s *Site) WriteAt(ctx context.Context, ino uint64, off int64, data []byte) (Attr, error) {
	if off < 0 {
		return Attr{}, pathErr("write", inoPath(ino), syscall.EINVAL)
	}
	if off+int64(len(data)) > MaxFileSize {
		return Attr{}, pathErr("write", inoPath(ino), syscall.EFBIG)
	}
	return s.editContent(ctx, "write", ino, -1, off, data, func(a *Attr, now time.Time) { a.Mtime, a.Ctime = now, now })
}

// contentType returns the error for content operations on a's type.
func contentType(a *Attr) error {
	switch {
	case a.IsDir():
		return syscall.EISDIR
	case !a.IsRegular():
		return syscall.EINVAL
	}
	return nil
}

// Sync waits until this node reflects every change acknowledged anywhere
// before the call.
func (s *Site) Sync(ctx context.Context) error { return s.sites.Sync(ctx) }
