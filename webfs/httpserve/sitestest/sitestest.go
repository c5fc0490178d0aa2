// Package sitestest checks an implementation of httpserve.Sites against the
// contract the HTTP server relies on. Every implementation runs the same
// suite: the in-memory fake of httpserve's tests and the webfs tree over the
// cluster alike.
package sitestest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"hastore/webfs/httpserve"
)

// Site is one site of a Fixture.
type Site struct {
	Name    string
	Aliases []string
	// Files maps clean absolute paths to contents; parent directories are
	// implied.
	Files map[string][]byte
	// Dirs lists directories that hold nothing.
	Dirs []string
	// Symlinks maps clean absolute paths to link targets, which are
	// relative to the link's directory.
	Symlinks map[string]string
}

// Fixture is what a Sites under test must hold.
type Fixture struct {
	Sites []Site
}

// BigSize is the size of /big.bin in the Fixture: several chunks, not a
// multiple of any likely chunk size.
const BigSize = 9<<20 + 12345

// Big returns the deterministic content of /big.bin.
func Big() []byte {
	b := make([]byte, BigSize)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// NewFixture returns the Fixture that Test asks for.
func NewFixture() Fixture {
	same := []byte("same bytes in two places\n")
	return Fixture{Sites: []Site{
		{
			Name:    "www.one.test",
			Aliases: []string{"one.test", "alias.one.test"},
			Files: map[string][]byte{
				"/index.html":           []byte("<!doctype html><title>one</title>\n"),
				"/a.txt":                []byte("hello, a\n"),
				"/empty":                {},
				"/dir/b.txt":            []byte("bee\n"),
				"/dir/sub/c.txt":        []byte("sea\n"),
				"/same1":                same,
				"/dir/same2":            same,
				"/big.bin":              Big(),
				"/caf\u00e9 \u263a.txt": []byte("unicode name\n"),
			},
			Dirs: []string{"/emptydir"},
			Symlinks: map[string]string{
				"/link.txt":       "a.txt",
				"/dirlink":        "dir",
				"/dir/up.txt":     "../a.txt",
				"/dir/chain":      "../link.txt", // a link to a link
				"/loop1":          "loop2",
				"/loop2":          "loop1",
				"/dangling":       "nothing-here",
				"/escape":         "../../../etc/passwd",
				"/dir/escape":     "../..",
				"/dir/sub/escape": "../../../dir",
			},
		},
		{
			Name:  "www.two.test",
			Files: map[string][]byte{"/same3": same, "/a.txt": []byte("hello from two\n")},
		},
	}}
}

// Test checks the Sites that newSites returns, which must hold
// NewFixture(). newSites may use t.Cleanup.
func Test(t *testing.T, newSites func(t *testing.T, f Fixture) httpserve.Sites) {
	fix := NewFixture()
	s := newSites(t, fix)
	ctx := context.Background()
	one, two := fix.Sites[0].Name, fix.Sites[1].Name

	t.Run("Resolve", func(t *testing.T) {
		for host, want := range map[string]string{
			"www.one.test": one, "one.test": one, "alias.one.test": one, "www.two.test": two,
		} {
			got, ok, err := s.Resolve(ctx, host)
			if err != nil || !ok || got != want {
				t.Errorf("Resolve(%q) = %q, %v, %v; want %q, true, nil", host, got, ok, err, want)
			}
		}
		for _, host := range []string{"www.three.test", "one.test.evil", "", "www"} {
			if got, ok, err := s.Resolve(ctx, host); err != nil || ok {
				t.Errorf("Resolve(%q) = %q, %v, %v; want not found", host, got, ok, err)
			}
		}
	})

	t.Run("StatDirs", func(t *testing.T) {
		for _, name := range []string{"/", "/dir", "/dir/sub", "/emptydir", "/dirlink"} {
			e, err := s.Stat(ctx, one, name)
			if err != nil || !e.IsDir {
				t.Errorf("Stat(%q) = %+v, %v; want a directory", name, e, err)
			}
		}
	})

	t.Run("StatFiles", func(t *testing.T) {
		etags := map[string]string{} // ETag → content
		for _, site := range fix.Sites {
			for name, data := range site.Files {
				e, err := s.Stat(ctx, site.Name, name)
				if err != nil {
					t.Errorf("Stat(%s, %q): %v", site.Name, name, err)
					continue
				}
				if e.IsDir || e.Size != int64(len(data)) {
					t.Errorf("Stat(%s, %q) = %+v; want a file of %d bytes", site.Name, name, e, len(data))
				}
				if len(e.ETag) < 3 || e.ETag[0] != '"' || e.ETag[len(e.ETag)-1] != '"' || strings.Contains(e.ETag[1:len(e.ETag)-1], `"`) {
					t.Errorf("Stat(%s, %q).ETag = %q; want a quoted strong entity tag", site.Name, name, e.ETag)
				}
				if prev, ok := etags[e.ETag]; ok && prev != string(data) {
					t.Errorf("ETag %s given to different contents", e.ETag)
				}
				etags[e.ETag] = string(data)
			}
		}
		// Equal contents have equal ETags, within and across sites.
		var tags []string
		for _, p := range []struct{ site, name string }{{one, "/same1"}, {one, "/dir/same2"}, {two, "/same3"}} {
			e, err := s.Stat(ctx, p.site, p.name)
			if err != nil {
				t.Fatal(err)
			}
			tags = append(tags, e.ETag)
		}
		if tags[0] != tags[1] || tags[1] != tags[2] {
			t.Errorf("equal contents, ETags %q: want them equal", tags)
		}
	})

	t.Run("StatMissing", func(t *testing.T) {
		for _, name := range []string{
			"/nope", "/dir/nope", "/nope/deeper", "/a.txt/x", "/index.html/index.html",
			"/loop1", "/loop2", "/dangling", "/escape", "/dir/escape", "/dir/sub/escape",
		} {
			if e, err := s.Stat(ctx, one, name); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Stat(%q) = %+v, %v; want fs.ErrNotExist", name, e, err)
			}
		}
		if _, err := s.Stat(ctx, two, "/index.html"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(two, /index.html) = %v: sites leak into each other", err)
		}
	})

	t.Run("Symlinks", func(t *testing.T) {
		a, err := s.Stat(ctx, one, "/a.txt")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"/link.txt", "/dir/up.txt", "/dir/chain"} {
			e, err := s.Stat(ctx, one, name)
			if err != nil || e.IsDir || e.Size != a.Size || e.ETag != a.ETag {
				t.Errorf("Stat(%q) = %+v, %v; want the entry of /a.txt %+v", name, e, err, a)
			}
			checkRead(t, s, one, name, fix.Sites[0].Files["/a.txt"])
		}
		checkRead(t, s, one, "/dirlink/b.txt", fix.Sites[0].Files["/dir/b.txt"])
	})

	t.Run("Open", func(t *testing.T) {
		for name, data := range fix.Sites[0].Files {
			checkRead(t, s, one, name, data)
		}
		checkRead(t, s, two, "/a.txt", fix.Sites[1].Files["/a.txt"])
	})

	t.Run("OpenNotFile", func(t *testing.T) {
		for _, name := range []string{"/nope", "/a.txt/x", "/loop1", "/escape"} {
			if f, err := s.Open(ctx, one, name); !errors.Is(err, fs.ErrNotExist) {
				if err == nil {
					f.Close()
				}
				t.Errorf("Open(%q) = %v; want fs.ErrNotExist", name, err)
			}
		}
		for _, name := range []string{"/", "/dir", "/dirlink"} {
			if f, err := s.Open(ctx, one, name); err == nil {
				f.Close()
				t.Errorf("Open(%q) of a directory succeeded", name)
			}
		}
	})

	t.Run("ReadAtRanges", func(t *testing.T) {
		want := fix.Sites[0].Files["/big.bin"]
		f, err := s.Open(ctx, one, "/big.bin")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		size := int64(len(want))
		// Offsets around every MiB boundary, the start and the end.
		type rg struct{ off, n int64 }
		var rgs []rg
		for mib := int64(0); mib <= size>>20; mib++ {
			rgs = append(rgs, rg{mib<<20 - 3, 7}, rg{mib << 20, 1}, rg{mib<<20 + 100, 4 << 20})
		}
		rgs = append(rgs, rg{0, size}, rg{size - 1, 1}, rg{size - 10, 100}, rg{size, 1}, rg{size + 5, 1})
		var wg sync.WaitGroup
		for _, r := range rgs {
			if r.off < 0 {
				continue
			}
			wg.Add(1)
			go func() { // io.ReaderAt allows parallel reads
				defer wg.Done()
				buf := make([]byte, r.n)
				n, err := f.ReadAt(buf, r.off)
				end := min(r.off+r.n, size)
				wantN := max(end-r.off, 0)
				if int64(n) != wantN {
					t.Errorf("ReadAt(%d bytes at %d) = %d, %v; want %d", r.n, r.off, n, err, wantN)
					return
				}
				if wantN < r.n && err != io.EOF {
					t.Errorf("ReadAt(%d bytes at %d) past the end: err %v; want io.EOF", r.n, r.off, err)
				}
				if wantN == r.n && err != nil && err != io.EOF {
					t.Errorf("ReadAt(%d bytes at %d): %v", r.n, r.off, err)
				}
				if wantN > 0 && !bytes.Equal(buf[:n], want[r.off:end]) {
					t.Errorf("ReadAt(%d bytes at %d): wrong bytes", r.n, r.off)
				}
			}()
		}
		wg.Wait()
	})
}

// checkRead opens name and checks its Entry and bytes.
func checkRead(t *testing.T, s httpserve.Sites, site, name string, want []byte) {
	t.Helper()
	ctx := context.Background()
	st, err := s.Stat(ctx, site, name)
	if err != nil {
		t.Errorf("Stat(%q): %v", name, err)
		return
	}
	f, err := s.Open(ctx, site, name)
	if err != nil {
		t.Errorf("Open(%q): %v", name, err)
		return
	}
	defer func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close(%q): %v", name, err)
		}
	}()
	e := f.Entry()
	if e.IsDir || e.Size != int64(len(want)) || e.ETag != st.ETag {
		t.Errorf("Open(%q).Entry() = %+v; want a file of %d bytes, ETag %s as Stat", name, e, len(want), st.ETag)
	}
	buf := make([]byte, len(want)+10)
	n, err := f.ReadAt(buf, 0)
	if n != len(want) || err != io.EOF {
		t.Errorf("ReadAt(%q, %d bytes at 0) = %d, %v; want %d, io.EOF", name, len(buf), n, err, len(want))
	}
	if !bytes.Equal(buf[:n], want) {
		t.Errorf("ReadAt(%q): wrong bytes%s", name, diffAt(buf[:n], want))
	}
}

func diffAt(got, want []byte) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf(" from offset %d", i)
		}
	}
	return fmt.Sprintf(": %d bytes, want %d", len(got), len(want))
}
