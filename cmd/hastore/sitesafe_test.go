//go:build linux

package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"hastore/replica"
	"hastore/replica/transport"
	"hastore/testing/cluster"
	"hastore/webfs"
)

// inProcessSite starts an in-process cluster serving the Sites service and
// returns a client for a new site on it.
func inProcessSite(t *testing.T, name string) *webfs.RemoteSite {
	t.Helper()
	c := cluster.StartInProcess(t, cluster.Options{Node: func(cfg *replica.NodeConfig) { cfg.Register = webfs.Register }})
	opts, err := transport.DialOptions(transport.Config{Key: c.Key})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+c.Addrs[0], opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	cl := webfs.NewClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.AddSite(ctx, name, nil); err != nil {
		t.Fatal(err)
	}
	return cl.Site(name)
}

// TestSiteGetPlantedSymlink replays issue #11 V8: a site writer makes a
// symlink pointing out of the tree, the admin gets the site, the writer
// turns the symlink into a directory holding a file, the admin gets the
// site again. The second get must not write through the symlink the first
// one made.
func TestSiteGetPlantedSymlink(t *testing.T) {
	rs := inProcessSite(t, "www.evil.test")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	outside := filepath.Join(tmp, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "get")
	links := map[string]string{"abs": outside, "rel": "../outside"}
	for name, target := range links {
		if _, err := rs.Symlink(ctx, webfs.RootIno, name, target, webfs.NewAttr{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := siteGet(ctx, rs, dir, io.Discard); err != nil {
		t.Fatalf("first get: %v", err)
	}
	for name, target := range links {
		if got, err := os.Readlink(filepath.Join(dir, name)); err != nil || got != target {
			t.Fatalf("first get: %s -> %q, %v; want -> %q", name, got, err, target)
		}
	}
	// The writer's move: each link becomes a directory with a file.
	for name := range links {
		if err := rs.Unlink(ctx, webfs.RootIno, name); err != nil {
			t.Fatal(err)
		}
		d, err := rs.Mkdir(ctx, webfs.RootIno, name, webfs.NewAttr{Mode: 0o755})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rs.PutFile(ctx, d.Ino, "planted-"+name, strings.NewReader("gotcha\n"), webfs.NewAttr{Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
	}
	err := siteGet(ctx, rs, dir, io.Discard)
	if es, _ := os.ReadDir(outside); len(es) != 0 {
		t.Fatalf("site get wrote outside its directory: %s holds %v", outside, es[0].Name())
	}
	if err != nil {
		t.Fatalf("second get: %v", err)
	}
	for name := range links {
		p := filepath.Join(dir, name, "planted-"+name)
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || !fi.IsDir() {
			t.Fatalf("%s after the second get: %v, %v; want the site's directory", name, fi, err)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != "gotcha\n" {
			t.Fatalf("%s: %q, %v", p, b, err)
		}
	}
}

// TestOpenLocalStaysInside: a file site put listed, swapped for a symlink
// out of the directory before it is read, is refused.
func TestOpenLocalStaysInside(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "src")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(tmp, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.html"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	local, err := scanLocal(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(local) != 2 || local[1].rel != "a.html" {
		t.Fatalf("scanLocal: %+v", local)
	}
	if err := os.Remove(filepath.Join(dir, "a.html")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "a.html")); err != nil {
		t.Fatal(err)
	}
	if f, err := openLocal(root, &local[1]); err == nil {
		b, _ := io.ReadAll(f)
		f.Close()
		t.Fatalf("openLocal read %q through a symlink leaving the directory", b)
	}
}
