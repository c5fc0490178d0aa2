package webfs_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"
	"testing"

	"hastore/webfs"
	"hastore/webfs/httpserve"
	"hastore/webfs/httpserve/sitestest"
)

// mkdirAll creates p and its parents in s and returns p's inode number.
func mkdirAll(ctx context.Context, t *testing.T, s *webfs.Site, p string) uint64 {
	t.Helper()
	ino := webfs.RootIno
	for _, c := range strings.Split(strings.Trim(p, "/"), "/") {
		if c == "" {
			continue
		}
		a, err := s.Mkdir(ctx, ino, c, webfs.NewAttr{Mode: 0o755})
		if errors.Is(err, fs.ErrExist) {
			a, err = s.Lookup(ctx, ino, c)
		}
		if err != nil {
			t.Fatal(err)
		}
		ino = a.Ino
	}
	return ino
}

// TestHTTPSites runs the HTTP server's conformance suite against the
// trees: built through node 0, served from node 1.
func TestHTTPSites(t *testing.T) {
	e := newEnv(t)
	sitestest.Test(t, func(t *testing.T, f sitestest.Fixture) httpserve.Sites {
		ctx := ctxT(t)
		for _, fs := range f.Sites {
			if err := e.sites(0).AddSite(ctx, fs.Name, fs.Aliases); err != nil {
				t.Fatal(err)
			}
			s, err := e.sites(0).Site(ctx, fs.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range fs.Dirs {
				mkdirAll(ctx, t, s, d)
			}
			for p, data := range fs.Files {
				dir, name := path.Split(p)
				if _, err := s.PutFile(ctx, mkdirAll(ctx, t, s, dir), name, bytes.NewReader(data), webfs.NewAttr{Mode: 0o644}); err != nil {
					t.Fatal(err)
				}
			}
			for p, target := range fs.Symlinks {
				dir, name := path.Split(p)
				if _, err := s.Symlink(ctx, mkdirAll(ctx, t, s, dir), name, target, webfs.NewAttr{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		return e.sites(1).HTTP()
	})
}
