package webfs

import (
	"context"
	"io"
	"time"
)

// Tree is a site's file tree as adapters (HTTP, FUSE, the admin CLI) use
// it, whether served from this node (*Site) or through the gRPC service
// of any node (*RemoteSite). Inodes are named by number (RootIno is the
// root); errors are *fs.PathError values carrying a syscall.Errno (see
// errors.go). Every method is safe for concurrent use.
type Tree interface {
	Name() string
	// Lookup returns the attributes of name in directory parent.
	Lookup(ctx context.Context, parent uint64, name string) (Attr, error)
	GetAttr(ctx context.Context, ino uint64) (Attr, error)
	// Walk resolves a path from the root without following a final
	// symlink; Stat follows it.
	Walk(ctx context.Context, path string) (uint64, Attr, error)
	Stat(ctx context.Context, path string) (uint64, Attr, error)
	ReadDir(ctx context.Context, ino uint64) ([]DirEntry, error)
	ReadDirPlus(ctx context.Context, ino uint64) ([]Entry, error)
	Mkdir(ctx context.Context, parent uint64, name string, na NewAttr) (Attr, error)
	// Create makes an empty regular file; EEXIST if the name is taken.
	Create(ctx context.Context, parent uint64, name string, na NewAttr) (Attr, error)
	Symlink(ctx context.Context, parent uint64, name, target string, na NewAttr) (Attr, error)
	Readlink(ctx context.Context, ino uint64) (string, error)
	// Mknod makes a FIFO, socket or device node (typ: the type bits), or
	// an empty regular file.
	Mknod(ctx context.Context, parent uint64, name string, typ uint32, na NewAttr) (Attr, error)
	// Link gives inode ino another name (a hard link).
	Link(ctx context.Context, ino, newParent uint64, newName string) (Attr, error)
	// Hold renews a mount's lease and holds those of inos that are
	// orphans (unlinked while open); Release ends the hold on one. See
	// orphans.go.
	Hold(ctx context.Context, holder uint64, inos []uint64) ([]uint64, error)
	Release(ctx context.Context, holder, ino uint64) error
	Setattr(ctx context.Context, ino uint64, sa SetAttr) (Attr, error)
	// Rename is atomic and replaces the target, as rename(2).
	Rename(ctx context.Context, oldParent uint64, oldName string, newParent uint64, newName string) error
	Unlink(ctx context.Context, parent uint64, name string) error
	Rmdir(ctx context.Context, parent uint64, name string) error
	// ReadAt returns bytes [off, off+n) of a regular file, fewer at its end.
	ReadAt(ctx context.Context, ino uint64, off, n int64) ([]byte, error)
	// SetContent replaces a regular file's content; a zero mtime is now.
	SetContent(ctx context.Context, ino uint64, r io.Reader, mtime time.Time) (Attr, error)
	WriteFile(ctx context.Context, ino uint64, data []byte) (Attr, error)
	// WriteAt writes into a regular file, rebuilding only the chunks the
	// write touches.
	WriteAt(ctx context.Context, ino uint64, off int64, data []byte) (Attr, error)
	// PutFile creates or replaces a whole file in one change.
	PutFile(ctx context.Context, parent uint64, name string, r io.Reader, na NewAttr) (Attr, error)
	// Sync is a read-your-writes barrier: afterwards reads reflect every
	// change acknowledged anywhere before the call.
	Sync(ctx context.Context) error
}
