//go:build linux

package fuse_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"hastore/replica/transport"
	"hastore/testing/cluster"
	"hastore/webfs"
	webfuse "hastore/webfs/fuse"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.RemoveHastoreBinary()
	os.Exit(code)
}

// needFUSE skips the test where nothing can be mounted: no /dev/fuse, or
// not root (the tests mount with mount(2) directly).
func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root here (the tests use mount(2) directly)")
	}
}

// toolPackages are the Debian packages of the tools the tests drive.
var toolPackages = map[string]string{
	"tar": "tar", "rsync": "rsync", "git": "git", "nginx": "nginx-light", "diff": "diffutils", "cp": "coreutils",
}

var aptMu sync.Mutex

// needTool returns the path of a tool, installing its Debian package if
// it is missing (testing/deps.sh does that for `make test` already).
func needTool(t *testing.T, name string) (string, error) {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if name == "nginx" {
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			return "/usr/sbin/nginx", nil
		}
	}
	pkg := toolPackages[name]
	if pkg == "" || os.Geteuid() != 0 {
		return "", fmt.Errorf("%s is not installed", name)
	}
	aptMu.Lock()
	defer aptMu.Unlock()
	t.Logf("installing %s (Debian package %s)", name, pkg)
	apt := func(args ...string) error {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %v: %s", strings.Join(args, " "), err, lastLines(out, 3))
		}
		return nil
	}
	install := []string{"install", "-y", "-qq", "--no-install-recommends", pkg}
	if err := apt(install...); err != nil {
		if err := apt("update", "-qq"); err != nil {
			t.Log(err)
		}
		if err := apt(install...); err != nil {
			t.Log(err)
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if name == "nginx" {
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			return "/usr/sbin/nginx", nil
		}
	}
	return "", fmt.Errorf("%s is not installed and apt-get could not install %s", name, pkg)
}

func mustTool(t *testing.T, name string) string {
	t.Helper()
	p, err := needTool(t, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs a command (never with its working directory in a mount: the
// child's chdir would be served by this process while it forks) and fails
// the test if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, lastLines(out, 30))
	}
	return string(out)
}

func runErr(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "GIT_CONFIG_NOSYSTEM=1", "HOME=/nonexistent")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd.CombinedOutput()
}

// testCluster is a 3-process cluster of the real binary.
type testCluster struct {
	*cluster.Processes
	conns []*grpc.ClientConn
}

func startCluster(t *testing.T) *testCluster {
	t.Helper()
	return startClusterWith(t, cluster.ProcOptions{})
}

func startClusterWith(t *testing.T, po cluster.ProcOptions) *testCluster {
	t.Helper()
	c := &testCluster{Processes: cluster.StartProcesses(t, po)}
	opts, err := transport.DialOptions(transport.Config{Key: c.Key})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Addrs {
		cc, err := grpc.NewClient("passthrough:///"+a, opts...)
		if err != nil {
			t.Fatal(err)
		}
		c.conns = append(c.conns, cc)
	}
	t.Cleanup(func() {
		for _, cc := range c.conns {
			cc.Close()
		}
	})
	return c
}

// addSite creates a site with the admin CLI.
func (c *testCluster) addSite(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := c.Admin(ctx, "site", "add", name); err != nil {
		t.Fatal(err)
	}
}

// client returns a client over the nodes, in the order given (default
// 0, 1, 2): calls go to the first that answers.
func (c *testCluster) client(order ...int) *webfs.Client {
	if len(order) == 0 {
		order = []int{0, 1, 2}
	}
	var conns []grpc.ClientConnInterface
	for _, i := range order {
		conns = append(conns, c.conns[i])
	}
	return webfuse.NewClient(conns...)
}

// mount mounts site in the test process on a new directory, talking to
// the nodes in order.
func (c *testCluster) mount(t *testing.T, site string, opt webfuse.Options, order ...int) (string, *webfuse.Server) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if opt.Logger == nil {
		opt.Logger = log.New(testWriter{t}, "", log.Lmicroseconds)
	}
	srv, err := webfuse.Mount(dir, c.client(order...).Site(site), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, srv) })
	return dir, srv
}

func unmount(t *testing.T, srv *webfuse.Server) {
	var err error
	for range 50 {
		if err = srv.Unmount(); err == nil || !errors.Is(err, webfuse.ErrBusy) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("unmount %s: %v", srv.Mountpoint, err)
		if errors.Is(err, webfuse.ErrBusy) {
			srv.DetachUnmount()
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// genTree writes a site-like tree under dir: nested directories, mostly
// small files (inline in the metadata), some larger, one over a chunk,
// empty ones, symlinks, various modes; mtimes in the past.
func genTree(t *testing.T, dir string, n int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	old := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("d%02d", i%7), fmt.Sprintf("s%d", i/7%3))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		var size int
		switch r := rng.IntN(100); {
		case i == 0:
			size = webfs.ChunkSize + 12345 // two chunks
		case r < 5:
			size = 0
		case r < 70:
			size = rng.IntN(3000)
		case r < 95:
			size = 3000 + rng.IntN(60000)
		default:
			size = 64<<10 + rng.IntN(300<<10)
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		mode := []fs.FileMode{0o644, 0o644, 0o644, 0o755, 0o600, 0o640}[rng.IntN(6)]
		p := filepath.Join(d, fmt.Sprintf("f%04d.html", i))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		mt := old.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range [][2]string{{"d00/s0/f0000.html", "big"}, {"d01", "d01link"}, {"/nowhere", "dangling"}, {"../d02/s1", "d03/up"}} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
}

type entry struct {
	mode   fs.FileMode
	size   int64
	mtime  time.Time
	hash   [32]byte
	target string
}

// snapshot describes every entry under dir (relative paths), reading
// every file's content.
func snapshot(t *testing.T, dir string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := entry{mode: fi.Mode(), mtime: fi.ModTime()}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if int64(len(b)) != fi.Size() {
				return fmt.Errorf("%s: read %d bytes, stat says %d", rel, len(b), fi.Size())
			}
			e.size, e.hash = fi.Size(), sha256.Sum256(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			if e.target, err = os.Readlink(p); err != nil {
				return err
			}
			e.mtime = time.Time{}
		default:
			e.mtime = time.Time{}
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return out
}

// sameTree fails the test unless got has what want has: types, modes,
// contents, symlink targets, and with mtimes also files' mtimes.
func sameTree(t *testing.T, want, got string, mtimes bool) {
	t.Helper()
	w, g := snapshot(t, want), snapshot(t, got)
	bad := 0
	for p, we := range w {
		ge, ok := g[p]
		switch {
		case !ok:
			t.Errorf("%s: missing in %s", p, got)
		case we.mode != ge.mode:
			t.Errorf("%s: mode %v, want %v", p, ge.mode, we.mode)
		case we.size != ge.size || we.hash != ge.hash:
			t.Errorf("%s: content differs (%d bytes, want %d)", p, ge.size, we.size)
		case we.target != ge.target:
			t.Errorf("%s: symlink to %q, want %q", p, ge.target, we.target)
		case mtimes && p != "." && !we.mtime.Equal(ge.mtime) && we.mode.IsRegular():
			t.Errorf("%s: mtime %v, want %v", p, ge.mtime, we.mtime)
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatal("too many differences")
		}
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			t.Errorf("%s: in %s but not in %s", p, got, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = cond(); err == nil {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, timeout, err)
	return 0
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

func wantContent(p string, want []byte) func() error {
	return func() error {
		b, err := readFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, want) {
			return fmt.Errorf("%s: %d bytes %.20q, want %d bytes %.20q", p, len(b), b, len(want), want)
		}
		return nil
	}
}
