//go:build linux

package fuse_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"hastore/testing/cluster"
	webfuse "hastore/webfs/fuse"
)

// TestMount drives a mount of a site on a 3-process cluster with real
// tools: tar, cp, mv, rm, rsync, git, nginx; and checks POSIX details,
// two mounts seeing each other's changes, and the hastore mount command.
func TestMount(t *testing.T) {
	needFUSE(t)
	for _, tool := range []string{"tar", "diff", "cp"} {
		mustTool(t, tool)
	}
	c := startCluster(t)
	const site = "fuse.test"
	c.addSite(t, site)
	leader := c.Leader()
	order := []int{leader, (leader + 1) % 3, (leader + 2) % 3}
	// Small files stay in memory, larger ones go through the temporary
	// file: both paths run.
	mnt, _ := c.mount(t, site, webfuse.Options{MemPerFile: 256 << 10}, order...)
	work := t.TempDir()
	src := filepath.Join(work, "src")
	genTree(t, src, 240, 1)

	t.Run("tar", func(t *testing.T) {
		start := time.Now()
		archive := filepath.Join(work, "src.tar")
		run(t, "tar", "-C", src, "-cf", archive, ".")
		dst := filepath.Join(mnt, "tar")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, "tar", "-C", dst, "-xf", archive)
		run(t, "diff", "-r", "--no-dereference", src, dst)
		sameTree(t, src, dst, true)

		// A real tree: the Go standard library's net packages.
		goroot := strings.TrimSpace(run(t, "go", "env", "GOROOT"))
		real := filepath.Join(work, "net.tar")
		run(t, "tar", "-C", filepath.Join(goroot, "src"), "-cf", real, "net")
		run(t, "tar", "-C", mnt, "-xf", real)
		run(t, "diff", "-r", "--no-dereference", filepath.Join(goroot, "src", "net"), filepath.Join(mnt, "net"))
		t.Logf("tar -x of %d + %d entries: %v", len(snapshot(t, src)), len(snapshot(t, filepath.Join(mnt, "net"))), time.Since(start))
	})

	t.Run("cp-mv-rm", func(t *testing.T) {
		start := time.Now()
		dst := filepath.Join(mnt, "cp")
		run(t, "cp", "-r", src, dst)
		sameTree(t, src, dst, false)
		// mv: a directory within the site, across directories, and a
		// file over another (atomic replace).
		run(t, "mv", dst, filepath.Join(mnt, "cp2"))
		dst = filepath.Join(mnt, "cp2")
		run(t, "mv", filepath.Join(dst, "d01"), filepath.Join(mnt, "moved"))
		run(t, "diff", "-r", "--no-dereference", filepath.Join(src, "d01"), filepath.Join(mnt, "moved"))
		a, b := filepath.Join(dst, "d00", "s1", "f0007.html"), filepath.Join(dst, "d00", "s2", "f0014.html")
		want, err := os.ReadFile(a)
		if err != nil {
			t.Fatal(err)
		}
		run(t, "mv", a, b)
		if _, err := os.Lstat(a); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s after mv: %v", a, err)
		}
		if got, err := os.ReadFile(b); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after mv over it: %d bytes, %v; want %d bytes", b, len(got), err, len(want))
		}
		run(t, "rm", "-r", dst, filepath.Join(mnt, "moved"))
		for _, p := range []string{dst, filepath.Join(mnt, "moved")} {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s after rm -r: %v", p, err)
			}
		}
		t.Logf("cp -r, mv, rm -r: %v", time.Since(start))
	})

	t.Run("rsync", func(t *testing.T) {
		mustTool(t, "rsync")
		start := time.Now()
		local := filepath.Join(work, "rs")
		run(t, "cp", "-a", src, local)
		dst := filepath.Join(mnt, "rs")
		run(t, "rsync", "-a", local+"/", dst+"/")
		sameTree(t, local, dst, true)
		// Change some files (one keeps its size), remove and add some:
		// rsync writes temporary files and renames them over the old.
		changes := []string{"d02/s0/f0002.html", "d03/s1/f0031.html", "d04/s0/f0046.html"}
		for i, p := range changes {
			p = filepath.Join(local, p)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				for j := range b {
					b[j] ^= 0x5a
				}
			} else {
				b = append(b, "more"...)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.RemoveAll(filepath.Join(local, "d05")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(local, "new.html"), []byte("new"), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, "rsync", "-a", "--delete", local+"/", dst+"/")
		sameTree(t, local, dst, true)
		if out := run(t, "rsync", "-a", "--delete", "-n", "-i", local+"/", dst+"/"); strings.TrimSpace(out) != "" {
			t.Errorf("rsync -n -i finds differences after the sync:\n%s", out)
		}
		t.Logf("rsync -a twice: %v", time.Since(start))
	})

	t.Run("git", func(t *testing.T) {
		mustTool(t, "git")
		start := time.Now()
		repo := filepath.Join(mnt, "repo")
		git := func(args ...string) string {
			t.Helper()
			return run(t, "git", append([]string{"-C", repo, "-c", "user.name=T", "-c", "user.email=t@example.test", "-c", "init.defaultBranch=main"}, args...)...)
		}
		if err := os.Mkdir(repo, 0o755); err != nil {
			t.Fatal(err)
		}
		git("init", "-q")
		run(t, "cp", "-r", filepath.Join(src, "d00"), filepath.Join(src, "d06"), repo)
		git("add", ".")
		git("commit", "-q", "-m", "first")
		p := filepath.Join(repo, "d06", "s0", "f0006.html")
		if err := os.WriteFile(p, []byte("changed\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		git("commit", "-q", "-a", "-m", "second")
		git("fsck", "--strict")
		if out := git("status", "--porcelain"); out != "" {
			t.Fatalf("git status after commit:\n%s", out)
		}
		if out := git("log", "--format=%s"); out != "second\nfirst\n" {
			t.Fatalf("git log: %q", out)
		}
		clone := filepath.Join(work, "clone")
		run(t, "git", "clone", "-q", repo, clone)
		run(t, "diff", "-r", "--exclude=.git", repo, clone)
		t.Logf("git init, add, commit, fsck, clone: %v", time.Since(start))
	})

	t.Run("posix", func(t *testing.T) { testPOSIX(t, c, site, mnt) })

	t.Run("two-mounts", func(t *testing.T) {
		// The second mount talks to another node.
		mntB, _ := c.mount(t, site, webfuse.Options{}, order[1], order[2], order[0])
		testTwoMounts(t, mnt, mntB)
	})

	t.Run("nginx", func(t *testing.T) { testNginx(t, c, site, mnt, src) })

	t.Run("command", func(t *testing.T) { testCommand(t, c, site, mnt) })
}

func testPOSIX(t *testing.T, c *testCluster, site, mnt string) {
	dir := filepath.Join(mnt, "posix")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	expectErrno := func(what string, err error, want syscall.Errno) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
	}

	// NAME_MAX and PATH_MAX.
	expectErrno("256-byte name", os.WriteFile(p(strings.Repeat("n", 256)), nil, 0o644), syscall.ENAMETOOLONG)
	if err := os.WriteFile(p(strings.Repeat("n", 255)), []byte("x"), 0o644); err != nil {
		t.Fatalf("255-byte name: %v", err)
	}
	_, err := os.Lstat(p(strings.Repeat("m", 256)))
	expectErrno("lookup of a 256-byte name", err, syscall.ENAMETOOLONG)
	// Directories of 250-byte names, made relative to each other: as on
	// a local file system, the tree may be deeper than PATH_MAX from the
	// root (pjdfstest's */03.t build such paths under a working
	// directory); a path argument over PATH_MAX is ENAMETOOLONG.
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("L", 250)
	for level := 0; level < 20; level++ {
		if err := unix.Mkdirat(fd, long, 0o755); err != nil {
			unix.Close(fd)
			t.Fatalf("mkdir at level %d (%d bytes from the root): %v", level, (level+1)*251, err)
		}
		next, err := unix.Openat(fd, long, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	if err := unix.Mkdirat(fd, strings.Repeat("d/", 2048), 0o755); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("mkdir of a 4096-byte path: %v, want ENAMETOOLONG", err)
	}
	unix.Close(fd)

	// Modes exactly as given; the kernel applies the umask.
	old := syscall.Umask(0)
	for _, m := range []uint32{0o2751, 0o4700, 0o1777, 0o000, 0o640} {
		name := p(fmt.Sprintf("mode%o", m))
		fd, err := syscall.Open(name, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, m)
		if err != nil {
			syscall.Umask(old)
			t.Fatal(err)
		}
		syscall.Close(fd)
		var st syscall.Stat_t
		if err := syscall.Stat(name, &st); err != nil || st.Mode&0o7777 != m {
			syscall.Umask(old)
			t.Fatalf("created with mode %o: %o, %v", m, st.Mode&0o7777, err)
		}
	}
	if err := syscall.Mkdir(p("sticky"), 0o1777); err != nil {
		syscall.Umask(old)
		t.Fatal(err)
	}
	syscall.Umask(0o027)
	err = os.WriteFile(p("masked"), nil, 0o777)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{"sticky": syscall.S_IFDIR | 0o1777, "masked": syscall.S_IFREG | 0o750} {
		var st syscall.Stat_t
		if err := syscall.Stat(p(name), &st); err != nil || st.Mode != want {
			t.Fatalf("%s: mode %o, want %o (%v)", name, st.Mode, want, err)
		}
	}
	// (chown clears set-user-ID: chmod after it.)
	if err := os.Chown(p("masked"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(p("masked"), 0o4711); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)
	if err := os.Chtimes(p("masked"), mt, mt); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p("masked"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o4711 || st.Uid != 1234 || st.Gid != 5678 || time.Unix(st.Mtim.Unix()).UTC() != mt {
		t.Fatalf("after chmod, chown, utimes: mode %o uid %d gid %d mtime %v", st.Mode&0o7777, st.Uid, st.Gid, time.Unix(st.Mtim.Unix()).UTC())
	}

	// Reads see writes not committed yet; a closed file is in the
	// cluster; fsync commits.
	f, err := os.Create(p("rw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("hello, world")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p("rw")); err != nil || string(b) != "hello, world" {
		t.Fatalf("read before close: %q, %v", b, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	remote := func(name string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s := c.client().Site(site)
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		ino, a, err := s.Stat(ctx, "posix/"+name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.ReadAt(ctx, ino, 0, a.Size)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if b := remote("rw"); string(b) != "hello, world" {
		t.Fatalf("in the cluster after fsync: %q", b)
	}
	if _, err := f.WriteAt([]byte("W"), 7); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if b := remote("rw"); string(b) != "hello, World" {
		t.Fatalf("in the cluster after close: %q", b)
	}

	// Changes in the middle of a committed file (written back as
	// ranges), appends, truncation and extension.
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes
	if err := os.WriteFile(p("big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err = os.OpenFile(p("big"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{5, 150001, 319990} {
		if _, err := f.WriteAt([]byte("XYZ"), off); err != nil {
			t.Fatal(err)
		}
		copy(big[off:], "XYZ")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f, err = os.OpenFile(p("big"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("tail"))
	f.Close()
	big = append(big, "tail"...)
	if b := remote("big"); !bytes.Equal(b, big) {
		t.Fatalf("after writes in the middle and an append: %d bytes differ from the %d expected", len(b), len(big))
	}
	if err := os.Truncate(p("big"), 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p("big"), 2000); err != nil {
		t.Fatal(err)
	}
	want := append(big[:1000:1000], make([]byte, 1000)...)
	if b, err := os.ReadFile(p("big")); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("after truncate and extend: %d bytes, %v", len(b), err)
	}
	// ftruncate on an open file, then writes past the end (a hole).
	f, err = os.OpenFile(p("big"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(10)
	f.WriteAt([]byte("end"), 3<<20)
	f.Close()
	want = append(append(big[:10:10], make([]byte, 3<<20-10)...), "end"...)
	if b := remote("big"); !bytes.Equal(b, want) {
		t.Fatalf("after ftruncate and a write past the end: %d bytes, want %d", len(b), len(want))
	}

	// Rename over a file, over a directory, with renameat2 flags.
	os.WriteFile(p("ra"), []byte("A"), 0o644)
	os.WriteFile(p("rb"), []byte("B"), 0o644)
	if err := os.Rename(p("ra"), p("rb")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p("rb")); err != nil || string(b) != "A" {
		t.Fatalf("after rename over: %q, %v", b, err)
	}
	if err := syscall.Stat(p("rb"), &st); err != nil || st.Nlink != 1 {
		t.Fatalf("nlink after rename over: %d, %v", st.Nlink, err)
	}
	os.MkdirAll(p("full/x"), 0o755)
	os.Mkdir(p("empty"), 0o755)
	expectErrno("rename over a non-empty directory", syscall.Rename(p("empty"), p("full")), syscall.ENOTEMPTY)
	expectErrno("rmdir of a non-empty directory", syscall.Rmdir(p("full")), syscall.ENOTEMPTY)
	os.WriteFile(p("rc"), nil, 0o644)
	expectErrno("RENAME_NOREPLACE", unix.Renameat2(unix.AT_FDCWD, p("rc"), unix.AT_FDCWD, p("rd"), unix.RENAME_NOREPLACE), syscall.EINVAL)
	expectErrno("RENAME_EXCHANGE", unix.Renameat2(unix.AT_FDCWD, p("rc"), unix.AT_FDCWD, p("rb"), unix.RENAME_EXCHANGE), syscall.EINVAL)
	if err := os.Rename(p("empty"), p("full/x2")); err != nil {
		t.Fatal(err)
	}

	// Symlinks.
	if err := os.Symlink("../posix/rb", p("link")); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(p("link")); err != nil || target != "../posix/rb" {
		t.Fatalf("readlink: %q, %v", target, err)
	}
	if b, err := os.ReadFile(p("link")); err != nil || string(b) != "A" {
		t.Fatalf("through the symlink: %q, %v", b, err)
	}

	// A file removed while open for writing: close succeeds, the
	// writes go with the file.
	f, err = os.Create(p("gone"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("lost"))
	if err := os.Remove(p("gone")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close of a removed file: %v", err)
	}

	// Unlink; the listing.
	if err := os.Remove(p("rc")); err != nil {
		t.Fatal(err)
	}
	expectErrno("unlink twice", syscall.Unlink(p("rc")), syscall.ENOENT)
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range names {
		got[e.Name()] = true
	}
	for _, name := range []string{"big", "full", "link", "masked", "mode0", "mode2751", "rb", "rw", "sticky", strings.Repeat("n", 255)} {
		if !got[name] {
			t.Errorf("listing lacks %s", name)
		}
	}
	if got["rc"] || got["ra"] || got["empty"] || len(got) != 14 {
		t.Fatalf("listing: %v", got)
	}

	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &sfs); err != nil || sfs.Namelen != 255 {
		t.Fatalf("statfs: namelen %d, %v", sfs.Namelen, err)
	}
}

func testTwoMounts(t *testing.T, a, b string) {
	const limit = 3 * time.Second // attribute timeout 1 s, and slack for a slow machine
	dirA, dirB := filepath.Join(a, "two"), filepath.Join(b, "two")
	if err := os.Mkdir(dirA, 0o755); err != nil {
		t.Fatal(err)
	}
	eventually(t, limit, "a directory made through A, seen through B", func() error {
		_, err := os.Stat(dirB)
		return err
	})
	// A new file through A.
	if err := os.WriteFile(filepath.Join(dirA, "x"), []byte("from A"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := eventually(t, limit, "a file written through A, read through B", wantContent(filepath.Join(dirB, "x"), []byte("from A")))
	t.Logf("B saw A's new file after %v", d)
	// B reads a file (its page cache keeps it), A changes it keeping
	// the size: B must not read the old pages.
	if err := os.WriteFile(filepath.Join(dirA, "y"), []byte("version 1"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, limit, "y through B", wantContent(filepath.Join(dirB, "y"), []byte("version 1")))
	if err := os.WriteFile(filepath.Join(dirA, "y"), []byte("version 2"), 0o644); err != nil {
		t.Fatal(err)
	}
	d = eventually(t, limit, "y changed through A, read through B", wantContent(filepath.Join(dirB, "y"), []byte("version 2")))
	t.Logf("B saw A's change after %v", d)
	// The other way, with a rename and a removal.
	if err := os.WriteFile(filepath.Join(dirB, "z.tmp"), []byte("from B"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dirB, "z.tmp"), filepath.Join(dirB, "x")); err != nil {
		t.Fatal(err)
	}
	eventually(t, limit, "B's rename over x, read through A", wantContent(filepath.Join(dirA, "x"), []byte("from B")))
	if err := os.Remove(filepath.Join(dirA, "y")); err != nil {
		t.Fatal(err)
	}
	eventually(t, limit, "y removed through A, gone through B", func() error {
		if _, err := os.Stat(filepath.Join(dirB, "y")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stat: %v", err)
		}
		es, err := os.ReadDir(dirB)
		if err != nil {
			return err
		}
		if len(es) != 1 || es[0].Name() != "x" {
			return fmt.Errorf("listing %v", es)
		}
		return nil
	})
}

func testNginx(t *testing.T, c *testCluster, site, mnt, src string) {
	nginx, err := needTool(t, "nginx")
	if err != nil {
		t.Skipf("nginx cannot be installed here: %v", err)
	}
	// nginx's workers run as nobody: the mount allows other users, and
	// the kernel checks the files' modes.
	www, _ := c.mount(t, site, webfuse.Options{AllowOther: true})
	// The test's temporary directories are 0700: nobody could not
	// reach the mount point.
	for d := filepath.Dir(www); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(www, "tar")
	dir := t.TempDir()
	port := cluster.FreePorts(t, 1)[0]
	conf := fmt.Sprintf(`user nobody nogroup;
worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  default_type application/octet-stream;
  server {
    listen %[2]s;
    root %[3]s;
    location / { }
  }
}
`, dir, port, root)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-c", confFile, "-p", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	eventually(t, 10*time.Second, "nginx listening", func() error {
		conn, err := net.Dial("tcp", port)
		if err == nil {
			conn.Close()
		}
		return err
	})
	get := func(path string) (int, []byte, error) {
		resp, err := http.Get("http://" + port + "/" + path)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	served, forbidden := 0, 0
	for rel, e := range snapshot(t, src) {
		if !e.mode.IsRegular() {
			continue
		}
		code, body, err := get(rel)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", rel, err, out.String())
		}
		want, _ := os.ReadFile(filepath.Join(src, rel))
		switch {
		case e.mode.Perm()&0o004 == 0:
			// Not readable by nobody.
			if code != http.StatusForbidden {
				t.Fatalf("GET %s (mode %v): %d, want 403", rel, e.mode, code)
			}
			forbidden++
		case code != http.StatusOK || !bytes.Equal(body, want):
			t.Fatalf("GET %s: %d, %d bytes; want 200, the %d bytes of the file", rel, code, len(body), len(want))
		default:
			served++
		}
	}
	// A change through the other mount is served within the timeout.
	if err := os.WriteFile(filepath.Join(mnt, "tar", "d00", "fresh.html"), []byte("fresh"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "nginx serving a file written through another mount", func() error {
		code, body, err := get("d00/fresh.html")
		if err != nil || code != 200 || string(body) != "fresh" {
			return fmt.Errorf("%d %q %v", code, body, err)
		}
		return nil
	})
	t.Logf("nginx served %d files byte for byte from the mount (%d forbidden by their modes, as they should)", served, forbidden)
}

// testCommand runs the hastore mount command: refusals, a clean unmount
// on SIGTERM, and a busy mount detached on SIGTERM.
func testCommand(t *testing.T, c *testCluster, site, busy string) {
	base := []string{"mount", "--addr", strings.Join(c.Addrs, ","), "--cluster-key-file", c.KeyFile, "--site", site}
	refuse := func(dir, want string) {
		t.Helper()
		out, err := exec.Command(c.Bin, append(base, dir)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Fatalf("hastore mount on %s: %v, %q; want a failure saying %q", dir, err, out, want)
		}
	}
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "file"), nil, 0o644)
	refuse(full, "not empty")
	refuse(busy, "busy")
	refuse(filepath.Join(full, "file"), "not a directory")

	start := func() (string, *exec.Cmd, *syncBuffer) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "m")
		os.Mkdir(dir, 0o755)
		cmd := exec.Command(c.Bin, append(base, dir)...)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			syscall.Unmount(dir, syscall.MNT_DETACH)
		})
		eventually(t, 20*time.Second, "hastore mount serving", func() error {
			if _, err := os.Stat(filepath.Join(dir, "posix")); err != nil {
				return fmt.Errorf("%v; output: %s", err, out.String())
			}
			return nil
		})
		return dir, cmd, out
	}
	waitExit := func(cmd *exec.Cmd, out *syncBuffer) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("hastore mount exited with %v:\n%s", err, out.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("hastore mount did not exit:\n%s", out.String())
		}
	}

	dir, cmd, out := start()
	if err := os.WriteFile(filepath.Join(dir, "cli.txt"), []byte("through the command"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	waitExit(cmd, out)
	if mounted(t, dir) {
		t.Fatalf("%s still mounted after SIGTERM", dir)
	}
	eventually(t, 3*time.Second, "the file written through the command", wantContent(filepath.Join(busy, "cli.txt"), []byte("through the command")))

	// Busy: a file stays open over SIGTERM. The mount point is detached
	// at once; the open file works until it is closed, then the command
	// exits.
	dir, cmd, out = start()
	f, err := os.OpenFile(filepath.Join(dir, "cli.txt"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 10*time.Second, "the busy mount detached", func() error {
		if mounted(t, dir) {
			return errors.New("still mounted")
		}
		return nil
	})
	if !strings.Contains(out.String(), "busy") {
		t.Errorf("no word of the busy mount point in the output:\n%s", out.String())
	}
	if _, err := f.WriteAt([]byte("T"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitExit(cmd, out)
	eventually(t, 3*time.Second, "the file written after the detach", wantContent(filepath.Join(busy, "cli.txt"), []byte("Through the command")))
}

func mounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// syncBuffer is a bytes.Buffer safe for a command's output copier and
// the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
