package httpserve

import (
	"context"
	"io"
	"time"
)

// Sites is what the HTTP server needs of the site trees. The webfs package
// implements it over the cluster; tests use an in-memory fake, and
// [hastore/webfs/httpserve/sitestest] checks any implementation.
//
// Every method must be safe for concurrent use and must reflect every change
// acknowledged before the call began, on whichever node it runs: the server
// calls Stat afresh for every request and relies on it to never serve stale
// content (see the package comment on caching).
//
// Errors: a missing host is (“”, false, nil) from Resolve; a missing entry —
// including a path that runs through a regular file, or a symbolic link that
// dangles, loops or leaves the site — is an error wrapping [fs.ErrNotExist].
// An error wrapping [fs.ErrPermission] becomes 403, one wrapping
// [fs.ErrInvalid] (a name the tree cannot hold) 400, and any other error 503:
// the server takes it for a transient cluster failure.
type Sites interface {
	// Resolve maps a host name — lowercased, without port or trailing dot —
	// to the site it names, following aliases. ok is false for a host that
	// names no site.
	Resolve(ctx context.Context, host string) (site string, ok bool, err error)

	// Stat describes the entry at name within site. name is clean and
	// absolute: "/" for the root, otherwise "/a/b" with no empty, "." or
	// ".." segment and no trailing slash. Symbolic links are followed within
	// the site, at most 40 of them; the result describes the target.
	Stat(ctx context.Context, site, name string) (Entry, error)

	// Open opens the regular file at name (as for Stat) for reading. ctx
	// covers the File's reads as well as the Open itself, until Close. Open
	// should not fetch file contents: the server opens files it may answer
	// without reading (HEAD, 304, 416). Opening a directory is an error.
	// The caller closes the File.
	Open(ctx context.Context, site, name string) (File, error)
}

// Entry describes one version of a file or directory.
type Entry struct {
	IsDir   bool
	Size    int64     // bytes; 0 for a directory
	ModTime time.Time // the zero time sends no Last-Modified
	// ETag is a quoted strong entity tag derived from the content hash, such
	// as `"b3-2c26b46b68ffc68f"`: equal ETags mean equal bytes, within a site
	// and across sites. Empty for directories. An empty ETag on a file sends
	// none and disables the cache and ETag-based conditional requests.
	ETag string
}

// File reads one version of a regular file: the one Open found. Its bytes
// never change, even if the file is replaced or removed in the tree meanwhile.
//
// ReadAt follows [io.ReaderAt]: parallel calls are allowed, and a read that
// reaches the end of the file returns io.EOF. A ranged read fetches only the
// chunks it covers. The server never calls ReadAt concurrently with or after
// Close.
type File interface {
	io.ReaderAt
	io.Closer
	// Entry describes the version this File reads: ReadAt returns exactly
	// Entry().Size bytes whose hash gave Entry().ETag.
	Entry() Entry
}
