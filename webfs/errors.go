package webfs

import (
	"errors"
	"io/fs"
	"strings"
	"syscall"
)

// Errors are *fs.PathError values whose Err is a syscall.Errno, so that
// errors.Is(err, fs.ErrNotExist) and fs.ErrExist work for HTTP, and a FUSE
// adapter takes the errno with errors.As:
//
//	ENOENT        no such site, inode or name   (errors.Is fs.ErrNotExist)
//	EEXIST        the name or site exists       (errors.Is fs.ErrExist)
//	ENOTDIR       a parent is not a directory, or rmdir of a non-directory
//	EISDIR        unlink of a directory, content operation on one
//	ENOTEMPTY     rmdir of, or rename over, a non-empty directory
//	EINVAL        bad name ("", ".", "..", '/' or NUL), rename into itself,
//	              readlink of a non-symlink
//	ENAMETOOLONG  name over NameMax or path over PathMax bytes
//	ELOOP         too many symlinks while walking a path
//	EFBIG         file over MaxFileSize
//	EBUSY         the site is being deleted
//	EAGAIN        too many concurrent changes to the same inodes; retry
//	EIO           the cluster could not be reached or answered oddly
//
// Cluster failures (replica.ErrUnavailable, context errors) are returned
// wrapped in the *fs.PathError as they are, not as errnos.

func pathErr(op, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: path, Err: err}
}

// Errno returns the errno that err stands for: its own if it carries one,
// EIO otherwise (nil for nil).
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, fs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, fs.ErrPermission):
		return syscall.EACCES
	}
	return syscall.EIO
}

// errnoNames are the errnos that cross the gRPC boundary by name.
var errnoNames = map[syscall.Errno]string{
	syscall.ENOENT:       "ENOENT",
	syscall.EEXIST:       "EEXIST",
	syscall.ENOTDIR:      "ENOTDIR",
	syscall.EISDIR:       "EISDIR",
	syscall.ENOTEMPTY:    "ENOTEMPTY",
	syscall.EINVAL:       "EINVAL",
	syscall.ENAMETOOLONG: "ENAMETOOLONG",
	syscall.ELOOP:        "ELOOP",
	syscall.EFBIG:        "EFBIG",
	syscall.EBUSY:        "EBUSY",
	syscall.EAGAIN:       "EAGAIN",
	syscall.ESTALE:       "ESTALE",
	syscall.EIO:          "EIO",
	syscall.EACCES:       "EACCES",
	syscall.EPERM:        "EPERM",
	syscall.EMLINK:       "EMLINK",
}

func errnoByName(name string) (syscall.Errno, bool) {
	for e, n := range errnoNames {
		if n == name {
			return e, true
		}
	}
	return 0, false
}

// checkName validates one name in a directory.
func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return syscall.EINVAL
	case len(name) > NameMax:
		return syscall.ENAMETOOLONG
	case strings.ContainsAny(name, "/\x00"):
		return syscall.EINVAL
	}
	return nil
}
