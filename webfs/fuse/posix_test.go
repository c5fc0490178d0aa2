//go:build linux

package fuse_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"hastore/testing/cluster"
	"hastore/webfs"
	webfuse "hastore/webfs/fuse"
)

// TestPOSIXMount: special files, hard links and files removed while open,
// through two mounts of a site on a 3-process cluster (each mount talking
// to another node), HTTP from the nodes, and a node failure.
func TestPOSIXMount(t *testing.T) {
	needFUSE(t)
	httpAddrs := cluster.FreePorts(t, 3)
	c := startClusterWith(t, cluster.ProcOptions{NodeArgs: func(i int) []string { return []string{"--http", httpAddrs[i]} }})
	const site = "posix.test"
	c.addSite(t, site)
	leader := c.Leader()
	order := []int{leader, (leader + 1) % 3, (leader + 2) % 3}
	mntA, _ := c.mount(t, site, webfuse.Options{}, order...)
	mntB, _ := c.mount(t, site, webfuse.Options{}, order[1], order[2], order[0])
	httpGet := func(path string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+httpAddrs[order[2]]+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = site
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	var (
		orphans []uint64 // closed after their last name went
		closed  time.Time
	)

	t.Run("special-files", func(t *testing.T) {
		a, b := filepath.Join(mntA, "special"), filepath.Join(mntB, "special")
		if err := os.Mkdir(a, 0o755); err != nil {
			t.Fatal(err)
		}
		chr, blk := unix.Mkdev(1, 3), unix.Mkdev(8, 17)
		if err := unix.Mkfifo(filepath.Join(a, "fifo"), 0o640); err != nil {
			t.Fatalf("mkfifo: %v", err)
		}
		if err := unix.Mknod(filepath.Join(a, "chr"), unix.S_IFCHR|0o600, int(chr)); err != nil {
			t.Fatalf("mknod c: %v", err)
		}
		if err := unix.Mknod(filepath.Join(a, "blk"), unix.S_IFBLK|0o660, int(blk)); err != nil {
			t.Fatalf("mknod b: %v", err)
		}
		l, err := net.Listen("unix", filepath.Join(a, "sock"))
		if err != nil {
			t.Fatalf("bind of a UNIX socket: %v", err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		defer l.Close()
		if err := os.WriteFile(filepath.Join(a, "reg.html"), []byte("regular"), 0o644); err != nil {
			t.Fatal(err)
		}
		want := map[string]struct {
			typ  uint32
			perm uint32
			rdev uint64
		}{
			"fifo": {unix.S_IFIFO, 0o640, 0},
			"chr":  {unix.S_IFCHR, 0o600, chr},
			"blk":  {unix.S_IFBLK, 0o660, blk},
			"sock": {unix.S_IFSOCK, 0o777, 0},
		}
		mask := uint32(umask()) // the kernel applies it to mknod and bind
		for _, dir := range []string{a, b} {
			for name, w := range want {
				p := filepath.Join(dir, name)
				eventually(t, 10*time.Second, "stat "+p, func() error {
					var st unix.Stat_t
					if err := unix.Lstat(p, &st); err != nil {
						return err
					}
					if st.Mode&unix.S_IFMT != w.typ || st.Mode&0o7777 != w.perm&^mask || st.Rdev != w.rdev || st.Nlink != 1 {
						return fmt.Errorf("mode %#o rdev %#x nlink %d; want type %#o perm %#o rdev %#x", st.Mode, st.Rdev, st.Nlink, w.typ, w.perm&^mask, w.rdev)
					}
					return nil
				})
			}
			des, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			types := map[string]os.FileMode{}
			for _, de := range des {
				types[de.Name()] = de.Type()
			}
			if types["fifo"] != os.ModeNamedPipe || types["sock"] != os.ModeSocket || types["chr"] != os.ModeDevice|os.ModeCharDevice || types["blk"] != os.ModeDevice {
				t.Errorf("%s lists types %v", dir, types)
			}
		}
		// What the kernel does with them works on the mount: a FIFO
		// between two processes' ends, a UNIX socket connection.
		done := make(chan error, 1)
		go func() {
			w, err := os.OpenFile(filepath.Join(a, "fifo"), os.O_WRONLY, 0)
			if err == nil {
				_, err = w.Write([]byte("through the pipe"))
				w.Close()
			}
			done <- err
		}()
		r, err := os.Open(filepath.Join(a, "fifo"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(got) != "through the pipe" || <-done != nil {
			t.Errorf("FIFO: read %q, %v", got, err)
		}
		go func() {
			conn, err := l.Accept()
			if err == nil {
				conn.Write([]byte("hello"))
				conn.Close()
			}
		}()
		conn, err := net.Dial("unix", filepath.Join(a, "sock"))
		if err != nil {
			t.Fatalf("connecting to the socket on the mount: %v", err)
		}
		got, _ = io.ReadAll(conn)
		conn.Close()
		if string(got) != "hello" {
			t.Errorf("socket: read %q", got)
		}
		// The mount is nodev: device nodes are names, never devices.
		if f, err := os.Open(filepath.Join(b, "chr")); err == nil {
			f.Close()
			t.Error("a device node on the mount opened")
		}
		// HTTP serves none of them.
		if code, body := httpGet("/special/reg.html"); code != 200 || string(body) != "regular" {
			t.Fatalf("HTTP of a regular file beside them: %d %q", code, body)
		}
		for name := range want {
			if code, _ := httpGet("/special/" + name); code != http.StatusNotFound {
				t.Errorf("HTTP GET of the %s: %d, want 404", name, code)
			}
		}
		// Renamed, and removed, like other names.
		if err := os.Rename(filepath.Join(b, "fifo"), filepath.Join(b, "fifo2")); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"fifo2", "chr", "blk", "sock", "reg.html"} {
			if err := os.Remove(filepath.Join(b, n)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Remove(b); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("hard-links", func(t *testing.T) {
		a, b := filepath.Join(mntA, "links"), filepath.Join(mntB, "links")
		if err := os.MkdirAll(filepath.Join(a, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		data := randBytes(300<<10, 1)
		if err := os.WriteFile(filepath.Join(a, "h1"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(a, "h1"), filepath.Join(a, "sub", "h2")); err != nil {
			t.Fatalf("link: %v", err)
		}
		if err := os.Link(filepath.Join(a, "sub"), filepath.Join(a, "dirlink")); !errors.Is(err, syscall.EPERM) {
			t.Errorf("link of a directory: %v, want EPERM", err)
		}
		if err := os.Link(filepath.Join(a, "h1"), filepath.Join(a, "sub", "h2")); !errors.Is(err, syscall.EEXIST) {
			t.Errorf("link over a name: %v, want EEXIST", err)
		}
		links := func(dir string, names []string, nlink uint64, content []byte) func() error {
			return func() error {
				var ino uint64
				for _, n := range names {
					p := filepath.Join(dir, n)
					var st unix.Stat_t
					if err := unix.Lstat(p, &st); err != nil {
						return err
					}
					if ino != 0 && st.Ino != ino {
						return fmt.Errorf("%s: inode %d, the other name %d", p, st.Ino, ino)
					}
					ino = st.Ino
					if st.Nlink != nlink {
						return fmt.Errorf("%s: nlink %d, want %d", p, st.Nlink, nlink)
					}
					if err := wantContent(p, content)(); err != nil {
						return err
					}
				}
				return nil
			}
		}
		both := []string{"h1", "sub/h2"}
		eventually(t, 10*time.Second, "two links in mount A", links(a, both, 2, data))
		eventually(t, 10*time.Second, "two links in mount B", links(b, both, 2, data))
		// A write through one name is the file's, under every name and
		// in every mount.
		f, err := os.OpenFile(filepath.Join(b, "sub", "h2"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("CHANGED"), 1000); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		copy(data[1000:], "CHANGED")
		eventually(t, 10*time.Second, "the write in mount A", links(a, both, 2, data))
		// A third link made through mount B.
		if err := os.Link(filepath.Join(b, "sub", "h2"), filepath.Join(b, "h3")); err != nil {
			t.Fatal(err)
		}
		all := []string{"h1", "sub/h2", "h3"}
		eventually(t, 10*time.Second, "three links in mount A", links(a, all, 3, data))
		// Unlinks drop one link each; the content stays with the last.
		if err := os.Remove(filepath.Join(a, "h1")); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(b, "h3")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "one link left in mount A", links(a, []string{"sub/h2"}, 1, data))
		eventually(t, 10*time.Second, "one link left in mount B", links(b, []string{"sub/h2"}, 1, data))
		eventually(t, 10*time.Second, "the unlinked name gone in mount B", func() error {
			if _, err := os.Lstat(filepath.Join(b, "h1")); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("lstat: %v", err)
			}
			return nil
		})
		// Renaming one link over another of the same file does nothing.
		if err := os.Link(filepath.Join(a, "sub", "h2"), filepath.Join(a, "h4")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(a, "h4"), filepath.Join(a, "sub", "h2")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "rename of a link onto its twin", links(a, []string{"h4", "sub/h2"}, 2, data))
		if code, body := httpGet("/links/h4"); code != 200 || !bytes.Equal(body, data) {
			t.Errorf("HTTP of a hard link: %d, %d bytes", code, len(body))
		}
	})

	t.Run("open-unlinked", func(t *testing.T) {
		a, b := filepath.Join(mntA, "open"), filepath.Join(mntB, "open")
		if err := os.Mkdir(a, 0o755); err != nil {
			t.Fatal(err)
		}

		// Unlinked through the mount it is open in: fstat, read and
		// write go on until close.
		data := randBytes(100<<10, 2)
		p := filepath.Join(a, "u")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 || st.Size != int64(len(data)) {
			t.Fatalf("fstat after unlink: nlink %d size %d, %v", st.Nlink, st.Size, err)
		}
		uIno := st.Ino
		got := make([]byte, len(data))
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read after unlink: %v (equal %v)", err, bytes.Equal(got, data))
		}
		if _, err := f.WriteAt([]byte("after"), int64(len(data))); err != nil {
			t.Fatalf("write after unlink: %v", err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync after unlink: %v", err)
		}
		got = make([]byte, len(data)+5)
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, append(data, "after"...)) {
			t.Fatalf("read back after unlink: %v", err)
		}

		// The atomic deploy across mounts: B reads x while A writes
		// x.tmp and renames it over x; B's descriptor reads the old
		// bytes in full.
		old := randBytes(5<<20+333, 3)
		if err := os.WriteFile(filepath.Join(a, "x"), old, 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "x in mount B", wantContent(filepath.Join(b, "x"), old))
		r, err := os.Open(filepath.Join(b, "x"))
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 256<<10)
		if _, err := io.ReadFull(r, head); err != nil {
			t.Fatal(err)
		}
		xIno := inoOf(t, r)
		neu := randBytes(5<<20, 4)
		if err := os.WriteFile(filepath.Join(a, "x.tmp"), neu, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(a, "x.tmp"), filepath.Join(a, "x")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the new x in mount B", wantContent(filepath.Join(b, "x"), neu))
		time.Sleep(1500 * time.Millisecond) // past the attribute timeout
		rest, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("reading the replaced x through the old descriptor: %v", err)
		}
		if all := append(head, rest...); !bytes.Equal(all, old) {
			t.Fatalf("the replaced x through the old descriptor: %d bytes (first difference at %d), want the old %d", len(all), firstDiff(all, old), len(old))
		}
		if err := unix.Fstat(int(r.Fd()), &st); err != nil || st.Nlink != 0 {
			t.Errorf("fstat of the replaced x: nlink %d, %v; want 0", st.Nlink, err)
		}
		r.Close()
		if err := f.Close(); err != nil {
			t.Fatalf("close after unlink: %v", err)
		}
		// Both orphans are collected after their last close (the
		// grace, then the leader's reaper): checked last, after the
		// node failure, to wait once.
		orphans, closed = []uint64{uIno, xIno}, time.Now()
	})

	t.Run("node-failure", func(t *testing.T) {
		// A file open in mount A is removed through mount B; the node
		// mount A talks to dies; A's descriptor still reads it whole.
		a, b := filepath.Join(mntA, "nf"), filepath.Join(mntB, "nf")
		if err := os.Mkdir(a, 0o755); err != nil {
			t.Fatal(err)
		}
		data := randBytes(9<<20, 5)
		if err := os.WriteFile(filepath.Join(a, "f"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := os.Open(filepath.Join(a, "f"))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		head := make([]byte, 1<<20)
		if _, err := io.ReadFull(r, head); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "f in mount B", func() error { return os.Remove(filepath.Join(b, "f")) })
		c.Kill(order[0])
		// Past the grace and a reaper's round: only mount A's hold
		// (renewed through the surviving nodes) keeps the file now.
		time.Sleep(webfs.OrphanGrace + webfs.ReapEvery + 2*time.Second)
		rest, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("reading the removed file after a node failure: %v", err)
		}
		if all := append(head, rest...); !bytes.Equal(all, data) {
			t.Fatalf("the removed file after a node failure: %d bytes, want %d", len(all), len(data))
		}
	})

	t.Run("orphans-collected", func(t *testing.T) {
		if orphans == nil {
			t.Fatal("no orphans to wait for: the open-unlinked subtest failed before recording them")
		}
		tr := c.client(order[1], order[2]).Site(site)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for _, ino := range orphans {
			eventually(t, webfs.OrphanGrace+3*webfs.ReapEvery, fmt.Sprintf("collection of orphan %d", ino), func() error {
				_, err := tr.GetAttr(ctx, ino)
				if webfs.Errno(err) == syscall.ENOENT {
					return nil
				}
				return fmt.Errorf("still there: %v", err)
			})
		}
		t.Logf("orphans collected within %v of their last close", time.Since(closed))
	})
}

func randBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func inoOf(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func umask() int {
	old := unix.Umask(0)
	unix.Umask(old)
	return old
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
