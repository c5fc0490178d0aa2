// Package webfs is the file trees of hosted web sites: a POSIX file
// system per site (directories, regular files, symlinks, special files,
// hard links; mode, uid, gid, size, atime/mtime/ctime) kept in the
// cluster's replicated metadata, with file content in content-addressed
// cluster objects. HTTP (webfs/httpserve)
// serves it from every node; FUSE mounts and `hastore admin site` reach
// it through the Sites gRPC service (server.go, client.go).
//
// # Records
//
// The registry, tenant "webfs":
//
//	s/<site>    site record: aliases, creation time
//	h/<host>    the site a host name serves (its name and each alias)
//	x/<site>    deletion in progress
//
// A site's tree, tenant "site.<site>":
//
//	i/<ino>               inode (16 hex digits): mode, uid, gid, nlink, size,
//	                      times, parent (directories), entry count
//	                      (directories), symlink target, device number
//	                      (device nodes), and content: inline bytes for
//	                      files of at most InlineMax (3 KiB), else a list
//	                      of chunks {object ID, length}
//	d/<parent>/<name>     directory entry → child's type and inode number
//	o/<ino>               orphan: a file that lost its last name while a
//	                      mount was alive, kept for open descriptors
//	h/<ino>/<holder>      a mount holds orphan <ino> open, until a time
//	m                     some mount of the site is alive until a time
//
// Inode records start with a format byte: 1 for every record written
// before device nodes existed, 2 (1 plus the device number) for device
// nodes only, so that a cluster being upgraded reads every record written
// before, and nodes not yet upgraded read every record but device nodes'.
//
// Inode types: directories, regular files, symlinks, and FIFOs, UNIX
// sockets, character and block devices — special files, stored as what
// they are (type, mode, owner, times, device number) with no content.
// HTTP answers 404 for them; a mount lists and stats them, and the kernel
// serves FIFOs and sockets itself.
//
// A non-directory may have several names (hard links, Link): one inode
// with a link count; its names' directory entries point at it.
// The root directory is inode 1; other inode numbers are random 63-bit
// numbers chosen by the proposer (or by a client, so that it can repeat a
// create safely). Files are cut into ChunkSize (4 MiB) chunks stored with
// Cluster.Put: identical chunks across files and sites are stored once, and
// a partial write or truncate rebuilds only the chunks it touches. Each
// chunk entry of an inode holds one reference to its object.
//
// # Changes
//
// Every change is ONE atomic meta.Batch proposed through Raft: a
// meta.TenantCheck of every record the change read (value for value, or
// absence), then its puts and deletes (see txn.go). If anything read has
// changed, the batch aborts whole and the change is planned again on fresh
// state (up to 40 times, then EAGAIN); so changes are serializable. For
// example rename checks the source entry, the target entry (absent, or the
// inode it replaces — and that one's record, so a replaced directory is
// empty at commit), both parent directories and, for a directory, every
// ancestor of the target (no cycles); create-exclusive checks the name is
// absent; rmdir checks the entry count of the directory it removes is 0.
// Because every key written was also checked, a proposal cannot apply
// twice, and a change whose outcome was lost (leader change) is retried
// after checking whether its writes are visible.
//
// Content is stored before the metadata change that references it
// (content durable → record committed → acknowledged). References of
// content that a change replaces or deletes are dropped with
// Cluster.Delete only after the change committed; the cluster keeps the
// objects through its grace period. A node crash between those steps
// leaks references (the storage is never freed); it never loses data.
//
// # Reads and what they see
//
// Reads serve this node's metadata replica and are never older than the
// node's own acknowledged changes. A read that finds nothing (Lookup,
// GetAttr, Walk, Resolve, Site) waits for a read barrier (Sync:
// Cluster.CatchUp, shared by concurrent callers) and looks again, so a
// name or site acknowledged on any node before the call began is found.
// A read that finds something may return a version older than the newest
// acknowledged anywhere, by the replication delay (usually milliseconds);
// call Sync first where that matters. A change's checks are against the
// newest state, so stale reads never make a change lose updates, and a
// change's error (ENOENT, EEXIST, ...) is only reported after it was
// confirmed against the newest state. ReadAt reads one version of a file;
// if the content is replaced while it is read, it reads the new one (an
// open File instead fails with ESTALE once the old chunks are dropped; it
// never returns bytes of another version).
//
// The HTTP server's view (Sites.HTTP, the httpserve.Sites interface) is
// stricter: every call passes a read barrier first, so each request
// reflects every change acknowledged anywhere before it began, at the cost
// of one round-trip to the Raft leader per call (concurrent calls share
// it). A FUSE client gets the same from the Sync RPC where it needs it.
//
// ForNode gives every frontend of a node the same Sites (shared locks and
// barriers); Register adds the gRPC service to a node.
//
// # Names and errors
//
// Names are 1..NameMax (255) bytes without '/' or NUL, and not "." or
// "..". Paths are at most PathMax (4096) bytes. A site is a closed world:
// absolute symlink targets start at its root, and a path or symlink that
// climbs above the root names nothing. Errors are *fs.PathError
// with a syscall.Errno (errors.go), so errors.Is(err, fs.ErrNotExist)
// works for HTTP and the errno for FUSE; the gRPC service carries the errno
// by name.
//
// # Limits
//
// Files up to MaxFileSize (16 GiB), LinkMax names per inode. An inode is
// deleted when its last name goes — except a regular file while a mount
// of the site is alive: it becomes an orphan, readable and writable by
// inode number for the mounts' open descriptors, and is deleted after its
// last holder releases it or its holders' leases end (orphans.go).
// Concurrent changes of one directory serialize: through one node they
// queue on a lock, across nodes they retry.
package webfs
