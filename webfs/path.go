package webfs

import (
	"context"
	"fmt"
	"strings"
	"syscall"
)

// maxSymlinks bounds the symlinks followed while resolving one path
// (Linux's MAXSYMLINKS); more is ELOOP.
const maxSymlinks = 40

// Walk resolves a slash-separated path from the site's root and returns
// the inode it names, like lstat(2): symlinks in the middle of the path
// are followed, a final one is not (unless the path ends in '/'). The site
// is a closed world: absolute symlink targets start at the site's root,
// and a path or symlink that climbs above the root with ".." names nothing
// (ENOENT). Paths over PathMax bytes and names over NameMax are
// ENAMETOOLONG; NUL is EINVAL.
func (s *Site) Walk(ctx context.Context, path string) (uint64, Attr, error) {
	a, err := s.walk(ctx, path, false, false)
	if err != nil {
		return 0, Attr{}, pathErr("walk", path, err)
	}
	return a.Ino, a, nil
}

// Stat is Walk that also follows a final symlink, like stat(2).
func (s *Site) Stat(ctx context.Context, path string) (uint64, Attr, error) {
	a, err := s.walk(ctx, path, true, false)
	if err != nil {
		return 0, Attr{}, pathErr("stat", path, err)
	}
	return a.Ino, a, nil
}

// walk resolves path; with caughtUp, the caller has just passed a read
// barrier and misses need no confirmation.
func (s *Site) walk(ctx context.Context, path string, follow, caughtUp bool) (Attr, error) {
	if len(path) > PathMax {
		return Attr{}, syscall.ENAMETOOLONG
	}
	if strings.IndexByte(path, 0) >= 0 {
		return Attr{}, syscall.EINVAL
	}
	root, err := s.getAttrAfter(ctx, RootIno, caughtUp)
	if err != nil {
		return Attr{}, err
	}
	mustDir := strings.HasSuffix(path, "/") && strings.Trim(path, "/") != ""
	if mustDir {
		follow = true
	}
	cur := root
	comps := strings.Split(path, "/")
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if cur.Ino == RootIno {
				return Attr{}, fmt.Errorf("%w: the path leaves the site", syscall.ENOENT)
			}
			if cur, err = s.getAttrAfter(ctx, cur.Parent, caughtUp); err != nil {
				return Attr{}, err
			}
			continue
		}
		if !cur.IsDir() {
			return Attr{}, syscall.ENOTDIR
		}
		if len(c) > NameMax {
			return Attr{}, syscall.ENAMETOOLONG
		}
		next, err := s.lookup(ctx, cur.Ino, c, caughtUp)
		if err != nil {
			return Attr{}, err
		}
		if next.IsSymlink() && (follow || hasName(comps)) {
			if links++; links > maxSymlinks {
				return Attr{}, syscall.ELOOP
			}
			if strings.HasPrefix(next.Target, "/") {
				cur = root
			}
			comps = append(strings.Split(next.Target, "/"), comps...)
			continue
		}
		cur = next
	}
	if mustDir && !cur.IsDir() {
		return Attr{}, syscall.ENOTDIR
	}
	return cur, nil
}

// hasName reports whether path components remain that name something
// (not only "" and ".").
func hasName(comps []string) bool {
	for _, c := range comps {
		if c != "" && c != "." {
			return true
		}
	}
	return false
}
