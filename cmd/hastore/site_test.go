//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"hastore/testing/cluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.RemoveHastoreBinary()
	os.Exit(code)
}

// genTree writes a site-like tree of n files under dir: nested
// directories, mostly small files, some larger, one over a chunk, a few
// empty ones and symlinks, various modes.
func genTree(t *testing.T, dir string, n int, rng *rand.Rand) {
	t.Helper()
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("d%02d", i%20), fmt.Sprintf("s%d", i/20%5))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		var size int
		switch r := rng.IntN(100); {
		case i == 0:
			size = 6<<20 + 12345 // two chunks
		case r < 3:
			size = 0
		case r < 70:
			size = rng.IntN(3000)
		case r < 96:
			size = 3000 + rng.IntN(60000)
		default:
			size = 64<<10 + rng.IntN(500<<10)
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		mode := []fs.FileMode{0o644, 0o644, 0o644, 0o755, 0o600}[rng.IntN(5)]
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d.html", i)), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range [][2]string{{"d00/s0/f0000.html", "big"}, {"d01", "d01link"}, {"/nowhere", "dangling"}} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
}

type fileInfo struct {
	mode   fs.FileMode
	mtime  time.Time
	data   []byte
	target string
}

func snapshot(t *testing.T, dir string) map[string]fileInfo {
	t.Helper()
	out := map[string]fileInfo{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		fi := fileInfo{mode: info.Mode()}
		switch {
		case info.Mode().IsRegular():
			fi.mtime = info.ModTime()
			if fi.data, err = os.ReadFile(p); err != nil {
				return err
			}
		case info.Mode()&fs.ModeSymlink != 0:
			if fi.target, err = os.Readlink(p); err != nil {
				return err
			}
			fi.mode = fs.ModeSymlink // permissions of symlinks mean nothing
		}
		out[rel] = fi
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func compareTrees(t *testing.T, what, a, b string) {
	t.Helper()
	sa, sb := snapshot(t, a), snapshot(t, b)
	bad := 0
	for rel, x := range sa {
		y, ok := sb[rel]
		switch {
		case !ok:
			t.Errorf("%s: %s missing", what, rel)
		case x.mode != y.mode:
			t.Errorf("%s: %s mode %v, want %v", what, rel, y.mode, x.mode)
		case !bytes.Equal(x.data, y.data):
			t.Errorf("%s: %s content differs (%d vs %d bytes)", what, rel, len(y.data), len(x.data))
		case !x.mtime.Equal(y.mtime):
			t.Errorf("%s: %s mtime %v, want %v", what, rel, y.mtime, x.mtime)
		case x.target != y.target:
			t.Errorf("%s: %s target %q, want %q", what, rel, y.target, x.target)
		default:
			continue
		}
		if bad++; bad > 10 {
			t.Fatalf("%s: too many differences", what)
		}
	}
	for rel := range sb {
		if _, ok := sa[rel]; !ok {
			t.Errorf("%s: %s should not be there", what, rel)
		}
	}
}

var putLine = regexp.MustCompile(`(\d+) files stored .*, (\d+) unchanged, (\d+) attributes set, (\d+) directories and (\d+) symlinks created, (\d+) deleted`)

// putCounts runs site put and returns its counts: stored, unchanged,
// attributes set, directories, symlinks, deleted.
func putCounts(t *testing.T, c *cluster.Processes, args ...string) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, _, err := c.Admin(ctx, append([]string{"site", "put"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("site put (%v): %s", time.Since(start).Round(time.Millisecond), out)
	m := putLine.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("site put printed %q", out)
	}
	var n []int
	for _, s := range m[1:] {
		v, _ := strconv.Atoi(s)
		n = append(n, v)
	}
	return n
}

func admin1(t *testing.T, c *cluster.Processes, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, _, err := c.Admin(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %v", strings.Join(args[:2], " "), time.Since(start).Round(time.Millisecond))
	return string(out)
}

// TestSitePutGet: a 3-process cluster; site put of a ~2,000-file tree,
// site get of it back, byte for byte; then changes put with --delete
// store only what changed.
func TestSitePutGet(t *testing.T) {
	c := cluster.StartProcesses(t, cluster.ProcOptions{})
	const site = "www.cli.test"
	admin1(t, c, "site", "add", site, "--alias", "cli.test")
	if out := admin1(t, c, "site", "list"); !strings.Contains(out, site) || !strings.Contains(out, "cli.test") {
		t.Fatalf("site list: %q", out)
	}

	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	const files = 2000
	genTree(t, src, files, rand.New(rand.NewPCG(5, 6)))
	n := putCounts(t, c, site, src)
	if n[0] != files || n[1] != 0 || n[3] != 120 || n[4] != 3 {
		t.Errorf("first put: %v, want %d stored, 120 directories, 3 symlinks", n, files)
	}
	out1 := filepath.Join(tmp, "out1")
	admin1(t, c, "site", "get", site, out1)
	compareTrees(t, "first get", src, out1)

	// Nothing changed: nothing stored.
	if n := putCounts(t, c, site, src); n[0] != 0 || n[1] != files+3 || n[5] != 0 {
		t.Errorf("second put: %v, want nothing stored", n)
	}

	// Change a few files, add some, delete some, chmod one, turn a file
	// into a directory, retarget a symlink.
	later := time.Now().Add(time.Hour)
	for i := 1; i <= 5; i++ {
		p := filepath.Join(src, "d0"+strconv.Itoa(i), "s0", fmt.Sprintf("f%04d.html", i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("changed %d", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(src, "new", "deeper"), 0o750); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(src, "new", "deeper", fmt.Sprintf("n%d.css", i)), bytes.Repeat([]byte{'n'}, 10000*i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deleted := 0
	for i := 60; i < 70; i++ {
		if err := os.Remove(filepath.Join(src, fmt.Sprintf("d%02d", i%20), fmt.Sprintf("s%d", i/20%5), fmt.Sprintf("f%04d.html", i))); err != nil {
			t.Fatal(err)
		}
		deleted++
	}
	sub := filepath.Join(src, "d19", "s4")
	des, _ := os.ReadDir(sub)
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	deleted += len(des) + 1
	if err := os.Chmod(filepath.Join(src, "d07", "s0", "f0007.html"), 0o600); err != nil {
		t.Fatal(err)
	}
	typeChange := filepath.Join(src, "d08", "s0", "f0008.html")
	if err := os.Remove(typeChange); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(typeChange, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(typeChange, "index.html"), []byte("dir now"), 0o644); err != nil {
		t.Fatal(err)
	}
	deleted++
	if err := os.Remove(filepath.Join(src, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d02", filepath.Join(src, "dangling")); err != nil {
		t.Fatal(err)
	}

	n = putCounts(t, c, site, src, "--delete")
	if want := []int{5 + 3 + 1, -1, 1, 3, 1, deleted}; n[0] != want[0] || n[2] != want[2] || n[3] != want[3] || n[4] != want[4] || n[5] != want[5] {
		t.Errorf("put --delete: %v, want stored, _, attributes, dirs, symlinks, deleted = %v", n, want)
	}
	out2 := filepath.Join(tmp, "out2")
	admin1(t, c, "site", "get", site, out2)
	compareTrees(t, "get after changes", src, out2)
	if n := putCounts(t, c, site, src, "--delete"); n[0] != 0 || n[5] != 0 {
		t.Errorf("put after changes: %v, want nothing stored", n)
	}

	ls := admin1(t, c, "site", "ls", site, "/new/deeper")
	if !strings.Contains(ls, "n2.css") || !strings.Contains(ls, "20000") {
		t.Errorf("site ls: %q", ls)
	}
	admin1(t, c, "site", "del", site)
	if out := admin1(t, c, "site", "list"); strings.Contains(out, site) {
		t.Errorf("site list after del: %q", out)
	}
}
