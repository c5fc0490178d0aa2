package webfs_test

import (
	"bytes"
	"errors"
	"io/fs"
	"syscall"
	"testing"
	"time"

	"hastore/webfs"
)

// TestSpecialFilesAndLinks: FIFOs, sockets and device nodes are stored as
// what they are, listed with their type, never served over HTTP; hard
// links share one inode whose link count every name shows; the last
// unlink deletes the inode and drops its content references.
func TestSpecialFilesAndLinks(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const site = "posix.test"
	e.addSite(t, site)
	for _, impl := range []string{"local", "remote"} {
		t.Run(impl, func(t *testing.T) {
			var tr webfs.Tree
			if impl == "local" {
				s, err := e.sites(1).Site(ctx, site)
				if err != nil {
					t.Fatal(err)
				}
				tr = s
			} else {
				tr = e.client.Site(site)
			}
			dir, err := tr.Mkdir(ctx, webfs.RootIno, impl, webfs.NewAttr{Mode: 0o755})
			if err != nil {
				t.Fatal(err)
			}
			dev := uint32(8<<8 | 1) // major 8, minor 1
			for _, c := range []struct {
				name string
				typ  uint32
				rdev uint32
				fm   fs.FileMode
			}{
				{"fifo", webfs.ModeFifo, 0, fs.ModeNamedPipe},
				{"sock", webfs.ModeSocket, 0, fs.ModeSocket},
				{"chr", webfs.ModeChar, dev, fs.ModeDevice | fs.ModeCharDevice},
				{"blk", webfs.ModeBlock, dev, fs.ModeDevice},
				{"reg", webfs.ModeRegular, 0, 0},
			} {
				a, err := tr.Mknod(ctx, dir.Ino, c.name, c.typ, webfs.NewAttr{Mode: 0o640, Uid: 7, Gid: 8, Rdev: c.rdev})
				if err != nil {
					t.Fatalf("mknod %s: %v", c.name, err)
				}
				got, err := tr.Lookup(ctx, dir.Ino, c.name)
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range []webfs.Attr{a, got} {
					if x.Mode != c.typ|0o640 || x.Rdev != c.rdev || x.Nlink != 1 || x.Uid != 7 || x.Gid != 8 || x.Size != 0 {
						t.Errorf("%s: mode %#o rdev %#x nlink %d uid %d gid %d size %d; want mode %#o rdev %#x",
							c.name, x.Mode, x.Rdev, x.Nlink, x.Uid, x.Gid, x.Size, c.typ|0o640, c.rdev)
					}
				}
				if fm := got.FileMode(); fm.Type() != c.fm {
					t.Errorf("%s: file mode %v, want type %v", c.name, fm, c.fm)
				}
				if c.typ != webfs.ModeRegular {
					if _, err := tr.ReadAt(ctx, a.Ino, 0, 10); errnoOf(err) != syscall.EINVAL {
						t.Errorf("%s: reading content: %v, want EINVAL", c.name, err)
					}
					if _, err := tr.WriteAt(ctx, a.Ino, 0, []byte("x")); errnoOf(err) != syscall.EINVAL {
						t.Errorf("%s: writing content: %v, want EINVAL", c.name, err)
					}
					// HTTP: as if absent.
					if _, err := e.sites(0).HTTP().Stat(ctx, site, "/"+impl+"/"+c.name); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("%s: HTTP stat: %v, want not-exist", c.name, err)
					}
					if _, err := e.sites(0).HTTP().Open(ctx, site, "/"+impl+"/"+c.name); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("%s: HTTP open: %v, want not-exist", c.name, err)
					}
				}
			}
			if _, err := tr.Mknod(ctx, dir.Ino, "dir", webfs.ModeDir, webfs.NewAttr{Mode: 0o755}); errnoOf(err) != syscall.EINVAL {
				t.Errorf("mknod of a directory: %v, want EINVAL", err)
			}
			if _, err := tr.Mknod(ctx, dir.Ino, "fifo", webfs.ModeFifo, webfs.NewAttr{Mode: 0o755}); errnoOf(err) != syscall.EEXIST {
				t.Errorf("mknod over a name: %v, want EEXIST", err)
			}
			des, err := tr.ReadDir(ctx, dir.Ino)
			if err != nil {
				t.Fatal(err)
			}
			types := map[string]uint32{}
			for _, de := range des {
				types[de.Name] = de.Mode
			}
			if types["fifo"] != webfs.ModeFifo || types["sock"] != webfs.ModeSocket || types["chr"] != webfs.ModeChar || types["blk"] != webfs.ModeBlock {
				t.Errorf("listing types %v", types)
			}

			// Hard links.
			data := bytes.Repeat([]byte("linked "), 1<<20) // chunked: references to count
			f, err := tr.PutFile(ctx, dir.Ino, "f", bytes.NewReader(data), webfs.NewAttr{Mode: 0o644})
			if err != nil {
				t.Fatal(err)
			}
			sub, err := tr.Mkdir(ctx, dir.Ino, "sub", webfs.NewAttr{Mode: 0o755})
			if err != nil {
				t.Fatal(err)
			}
			l, err := tr.Link(ctx, f.Ino, sub.Ino, "g")
			if err != nil {
				t.Fatal(err)
			}
			if l.Ino != f.Ino || l.Nlink != 2 {
				t.Fatalf("link: inode %d nlink %d, want %d and 2", l.Ino, l.Nlink, f.Ino)
			}
			if _, err := tr.Link(ctx, f.Ino, sub.Ino, "g"); errnoOf(err) != syscall.EEXIST {
				t.Errorf("link over a name: %v, want EEXIST", err)
			}
			if _, err := tr.Link(ctx, sub.Ino, dir.Ino, "dirlink"); errnoOf(err) != syscall.EPERM {
				t.Errorf("link of a directory: %v, want EPERM", err)
			}
			if _, err := tr.Link(ctx, f.Ino, f.Ino, "x"); errnoOf(err) != syscall.ENOTDIR {
				t.Errorf("link into a file: %v, want ENOTDIR", err)
			}
			if _, err := tr.WriteAt(ctx, l.Ino, 0, []byte("LINKED")); err != nil {
				t.Fatal(err)
			}
			copy(data, "LINKED")
			for _, p := range []string{"/" + impl + "/f", "/" + impl + "/sub/g"} {
				_, a, err := tr.Walk(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				if a.Ino != f.Ino || a.Nlink != 2 {
					t.Errorf("%s: inode %d nlink %d, want %d and 2", p, a.Ino, a.Nlink, f.Ino)
				}
				got, err := tr.ReadAt(ctx, a.Ino, 0, int64(len(data)))
				if err != nil {
					t.Fatal(err)
				}
				mustEqual(t, p, got, data)
			}
			// A rename of one link over the other does nothing.
			if err := tr.Rename(ctx, dir.Ino, "f", sub.Ino, "g"); err != nil {
				t.Fatal(err)
			}
			if _, err := tr.Lookup(ctx, dir.Ino, "f"); err != nil {
				t.Errorf("rename of a link over another link of the same file removed it: %v", err)
			}
			// Renaming another file over a link drops one link.
			if _, err := tr.Create(ctx, dir.Ino, "other", webfs.NewAttr{Mode: 0o644}); err != nil {
				t.Fatal(err)
			}
			if err := tr.Rename(ctx, dir.Ino, "other", dir.Ino, "f"); err != nil {
				t.Fatal(err)
			}
			var cur webfs.Attr
			if a, err := tr.GetAttr(ctx, f.Ino); err != nil || a.Nlink != 1 {
				t.Fatalf("after a rename over one link: nlink %d, %v; want 1", a.Nlink, err)
			}
			// Remote attributes carry no chunks: read them on a node.
			if err := e.sites(0).Sync(ctx); err != nil {
				t.Fatal(err)
			}
			s0, _ := e.sites(0).Site(ctx, site)
			if cur, err = s0.GetAttr(ctx, f.Ino); err != nil || len(cur.Chunks) == 0 {
				t.Fatalf("chunks of %d: %+v, %v", f.Ino, cur.Chunks, err)
			}
			if n := e.refsOf(t, cur.Chunks); n != int64(len(cur.Chunks)) {
				t.Errorf("one inode with two links: %d references for %d chunks", n, len(cur.Chunks))
			}
			// No mount is alive: the last unlink deletes at once.
			if err := tr.Unlink(ctx, sub.Ino, "g"); err != nil {
				t.Fatal(err)
			}
			if _, err := tr.GetAttr(ctx, f.Ino); errnoOf(err) != syscall.ENOENT {
				t.Errorf("GetAttr after the last unlink: %v, want ENOENT", err)
			}
			if n := e.refsOf(t, cur.Chunks); n != 0 {
				t.Errorf("after the last unlink: %d references left", n)
			}
		})
	}
}

// refsOf sums the references of chunks.
func (e *env) refsOf(t *testing.T, chunks []webfs.Chunk) int64 {
	var n int64
	for _, c := range chunks {
		n += e.refs(t, c.ID)
	}
	return n
}

// TestOrphans: with a mount's lease alive, a file that loses its last name
// stays readable and writable by inode (nlink 0) while held, and is
// collected after its release or once its holds have expired.
func TestOrphans(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const site = "orphans.test"
	s := e.addSite(t, site)
	tr := e.client.Site(site)
	data := bytes.Repeat([]byte("old "), 2<<20)
	mk := func(name string) webfs.Attr {
		t.Helper()
		a, err := tr.PutFile(ctx, webfs.RootIno, name, bytes.NewReader(data), webfs.NewAttr{Mode: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		la, err := s.GetAttr(ctx, a.Ino)
		if err != nil {
			t.Fatal(err)
		}
		return la
	}
	const holder = 0x1234
	if _, err := tr.Hold(ctx, holder, nil); err != nil {
		t.Fatal(err)
	}
	// Replaced by rename while "open".
	x := mk("x")
	if _, err := tr.PutFile(ctx, webfs.RootIno, "x.tmp", bytes.NewReader([]byte("new")), webfs.NewAttr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Rename(ctx, webfs.RootIno, "x.tmp", webfs.RootIno, "x"); err != nil {
		t.Fatal(err)
	}
	a, err := tr.GetAttr(ctx, x.Ino)
	if err != nil || a.Nlink != 0 {
		t.Fatalf("the replaced file: nlink %d, %v; want an orphan (nlink 0)", a.Nlink, err)
	}
	held, err := tr.Hold(ctx, holder, []uint64{x.Ino, 999})
	if err != nil || len(held) != 1 || held[0] != x.Ino {
		t.Fatalf("hold: %v, %v; want [%d]", held, err, x.Ino)
	}
	got, err := tr.ReadAt(ctx, x.Ino, 0, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "the orphan's content", got, data)
	if _, err := tr.WriteAt(ctx, x.Ino, 0, []byte("OLD")); err != nil {
		t.Fatalf("writing to the orphan: %v", err)
	}
	if n, err := e.sites(0).ReapOrphans(ctx, 0); err != nil || n != 0 {
		t.Fatalf("reaping a held orphan: %d, %v; want 0", n, err)
	}
	if _, err := tr.Link(ctx, x.Ino, webfs.RootIno, "back"); errnoOf(err) != syscall.ENOENT {
		t.Errorf("linking an orphan: %v, want ENOENT", err)
	}
	if _, err := tr.Lookup(ctx, webfs.RootIno, "x"); err != nil {
		t.Fatal(err)
	}
	// Within the grace, Release keeps it (another mount may not have
	// said yet that it holds it); the reaper with grace 0 takes it.
	if err := tr.Release(ctx, holder, x.Ino); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.GetAttr(ctx, x.Ino); err != nil {
		t.Fatalf("released within the grace: %v", err)
	}
	if n, err := e.sites(2).ReapOrphans(ctx, 0); err != nil || n != 1 {
		t.Fatalf("reaping the released orphan: %d, %v; want 1", n, err)
	}
	if _, err := tr.GetAttr(ctx, x.Ino); errnoOf(err) != syscall.ENOENT {
		t.Errorf("GetAttr of the collected orphan: %v", err)
	}
	if n := e.refsOf(t, x.Chunks); n != 0 {
		t.Errorf("collected orphan: %d references left", n)
	}
	// An unheld orphan (its mount crashed before saying it holds it) is
	// collected after the grace by the reaper.
	y := mk("y")
	if err := tr.Unlink(ctx, webfs.RootIno, "y"); err != nil {
		t.Fatal(err)
	}
	if a, err := tr.GetAttr(ctx, y.Ino); err != nil || a.Nlink != 0 {
		t.Fatalf("unlinked with a live mount: %+v, %v; want an orphan", a, err)
	}
	if n, err := e.sites(0).ReapOrphans(ctx, webfs.OrphanGrace); err != nil || n != 0 {
		t.Fatalf("reaping within the grace: %d, %v; want 0", n, err)
	}
	if n, err := e.sites(0).ReapOrphans(ctx, 0); err != nil || n != 1 {
		t.Fatalf("reaping after the grace: %d, %v; want 1", n, err)
	}
	if n := e.refsOf(t, y.Chunks); n != 0 {
		t.Errorf("reaped orphan: %d references left", n)
	}
	// A mount that died holding an orphan: the hold ends with its lease.
	w := mk("w")
	if err := tr.Unlink(ctx, webfs.RootIno, "w"); err != nil {
		t.Fatal(err)
	}
	if held, err := tr.Hold(ctx, holder+1, []uint64{w.Ino}); err != nil || len(held) != 1 {
		t.Fatalf("hold: %v, %v", held, err)
	}
	if n, err := e.sites(0).ReapOrphans(ctx, 0); err != nil || n != 0 {
		t.Fatalf("reaping a held orphan: %d, %v; want 0", n, err)
	}
	later := webfs.NewSites(e.c.Nodes[1].Cluster, e.c.Nodes[1].Meta)
	webfs.SetClock(later, func() time.Time { return time.Now().Add(webfs.MountLease + time.Second) })
	if n, err := later.ReapOrphans(ctx, webfs.OrphanGrace); err != nil || n != 1 {
		t.Fatalf("reaping after the holder's lease ended: %d, %v; want 1", n, err)
	}
	if n := e.refsOf(t, w.Chunks); n != 0 {
		t.Errorf("orphan of a dead mount: %d references left", n)
	}
	// Site deletion takes orphans with it.
	z := mk("z")
	if err := tr.Unlink(ctx, webfs.RootIno, "z"); err != nil {
		t.Fatal(err)
	}
	if err := e.sites(0).DelSite(ctx, site); err != nil {
		t.Fatal(err)
	}
	if n := e.refsOf(t, z.Chunks); n != 0 {
		t.Errorf("orphan of a deleted site: %d references left", n)
	}
}
