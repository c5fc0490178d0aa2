// Package fuse mounts a web site's tree (webfs) read-write with FUSE, for
// web hosts that run nginx, Apache or PHP on top of hastore
// (`hastore mount`). It uses go-fuse's fs package (the inode API) over a
// webfs.Tree, in practice a *webfs.RemoteSite: gRPC to the cluster's
// Sites service through any node.
//
// # Inodes and names
//
// Kernel inode numbers are the site's inode numbers. Lookup, create,
// mkdir, mknod, symlink, link, rename, unlink and rmdir are one call each
// to the cluster, and each change is one atomic, durable metadata change
// there when the call returns. Names over NAME_MAX (255) bytes are
// ENAMETOOLONG; PATH_MAX bounds each path handed to a system call (the
// kernel checks it), not a file's depth. Modes are stored exactly as the
// kernel hands them over
// (it has applied the umask; set-group-ID directories pass their group
// on), and the mount always uses default_permissions, so the kernel
// checks access against the stored modes, owners and groups — with
// AllowOther, a web server running as another user sees what the modes
// let it see. rename(2) replaces atomically; renameat2 with
// RENAME_NOREPLACE or RENAME_EXCHANGE answers ENOSYS, which the kernel
// turns into EINVAL for this and every later flagged rename (callers
// such as mv fall back to rename(2)). O_TMPFILE and extended attributes
// are not supported (ENOTSUP), as in the site tree.
//
// # Special files, hard links, files removed while open
//
// mkfifo, mknod and bind(2) of a UNIX socket make FIFOs, device nodes
// and sockets in the site (metadata only; HTTP never serves them). The
// kernel serves FIFOs and sockets itself, between processes of the same
// host; the mount is nodev, so a device node opens no device. link(2)
// makes a hard link: one inode with a link count that every name and
// every mount shows.
//
// A regular file whose last name goes (unlink, or rename over it) while
// it is open stays readable and writable through its open descriptors
// until they close, in this mount and every other: the cluster keeps it
// as an orphan while any mount is alive (webfs/orphans.go). The mount
// takes a lease on the site when it starts and renews it every
// Options.RenewEvery (webfs.MountRenew, 10 s) with the list of inodes it
// has open; the cluster holds those that are orphans for it. When its own
// unlink or rename removes a name of a file open here it holds the file
// at once, and when the last handle of a held orphan closes it releases
// it. An orphan is freed OrphanGrace (30 s) after it lost its name at the
// earliest, once no hold on it is live; a mount that dies without
// releasing loses its holds when its lease ends (MountLease, 60 s), and
// the Raft leader's reaper frees them then. A mount that cannot reach the
// cluster for longer than the grace may lose an orphan it had not held
// yet; its reads then fail (ENOENT or ESTALE).
//
// # Writes
//
// Writes are buffered per file (shared by the file's handles in this
// mount): written ranges are kept at their offsets in memory up to
// Options.MemPerFile into the file, beyond that in an unlinked sparse
// temporary file, with the extents written, the size, and the smallest
// size the file was truncated to since. Reads through any handle of the
// mount see the buffered writes. A flush (every close(2)), fsync or the
// last release commits them: a file that was created, opened with
// O_TRUNC, or written from start to end is sent whole (SetContent: one
// change, content and mtime); otherwise the commit truncates if needed
// and writes the changed ranges (WriteAt), then sets the final size. When
// close or fsync returns, the data is durable in the cluster; a failed
// commit is reported to close/fsync (EIO) and kept buffered for the next
// try. O_TRUNC reaches open (FUSE atomic_o_trunc), so open-truncate-
// write-close is one commit.
//
// A file written from its start (created, opened with O_TRUNC, or
// truncated to 0) is streamed to the cluster while it is written, once its
// first 4 MiB are: one Write stream carries each byte as soon as the bytes
// before it are written, so the cluster stores its chunks in the
// background, and close or fsync sends the rest and ends the stream — the
// one commit, after which (and only after which) they succeed. Until then
// the file keeps its committed content everywhere. A write or truncate
// below what was sent cancels the stream, and the commit sends the file as
// described above; a cancelled stream, or one whose mount dies, commits
// nothing, and the node that received it releases the chunks it stored
// (stream.go). chmod, chown and utimes of a file with
// buffered writes are buffered with them (a futimens after the last write
// gives the content its mtime; tar and rsync chmod and chown files to
// what they already are, which costs nothing); otherwise they are one
// change each, as is truncate(2) of a file that is not open.
//
// # Caching and seeing other hosts' changes
//
// The kernel caches names, attributes and negative lookups for
// Options.AttrTimeout (default 1 s), and pages of file content across
// opens (FOPEN_KEEP_CACHE) while the file's content ID — a hash of its
// content — is the one this mount last saw. An open fetches the
// attributes again once the timeout has passed (close-to-open
// consistency): if the content changed elsewhere, the kernel drops the
// pages and the cached size. Attributes fetched for any other reason
// (getattr, lookup, a directory listing) that show another content make
// the mount drop the file's pages (NotifyContent); a listing that lacks
// a name the kernel knows, or has it as another inode, makes it forget
// the name (NotifyEntry). So two mounts of one site on two hosts see each
// other's changes within the attribute timeout (plus the cluster's
// replication delay, milliseconds). A handle reads committed content
// through a window: the whole of a file up to 1 MiB on the first read,
// and for larger files a read-ahead that doubles up to 4 MiB while reads
// are sequential, with the next two 4 MiB windows fetched in the
// background. Directory listings are one ReadDirPlus call, whose
// attributes also answer the kernel's readdirplus lookups; and a
// directory that sees a second lookup within the attribute timeout (a
// program going through its files) is listed so that its lookups, found
// or not, are answered from the listing until it is AttrTimeout old —
// the kernel is told to keep each answer only for what is left of that —
// except for names and inodes this mount changed since (listing.go).
//
// # Failover
//
// Use NewClient: the webfs.Client sends a call to the node that answered
// last and on to the next when one is unreachable, and the mount retries
// calls that failed because no node could answer or decide (UNAVAILABLE,
// EAGAIN, an attempt's timeout — e.g. while the cluster elects a new Raft
// leader) for up to Options.RetryFor, so the application sees no error.
// Every retried call is safe to repeat: reads; creates, because the mount
// chooses the new inode number and a repeat finds its own first attempt;
// commits, which send the same content or ranges again; setattr with
// absolute values. Unlink, rmdir and rename are not idempotent: when an
// attempt may have been carried out by a node that then failed (NewClient
// notes it), an ENOENT from the repeat is taken as the first attempt's
// success (for a rename, after checking that the new name has the inode).
// The calls of a mount do not follow the kernel's interrupts: a retried
// change must not be abandoned half-way.
//
// # Limits
//
// An orphan collected while a handle still had it (see above) drops the
// writes buffered for it, with a log line. Writes through a shared writable mmap are committed at
// the next flush, fsync or release, or at unmount. Locks (flock, fcntl)
// are local to the host.
package fuse
