package webfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"hastore/replica"
	"hastore/replica/transport"
	"hastore/testing/cluster"
	"hastore/webfs"
)

// env is a 3-node in-process cluster whose nodes serve the Sites service.
type env struct {
	c      *cluster.InProcess
	client *webfs.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := cluster.StartInProcess(t, cluster.Options{Node: func(cfg *replica.NodeConfig) { cfg.Register = webfs.Register }})
	opts, err := transport.DialOptions(transport.Config{Key: c.Key})
	if err != nil {
		t.Fatal(err)
	}
	var conns []grpc.ClientConnInterface
	for _, addr := range c.Addrs {
		cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		conns = append(conns, cc)
	}
	return &env{c: c, client: webfs.NewClient(conns...)}
}

// sites returns node i's Sites.
func (e *env) sites(i int) *webfs.Sites { return webfs.ForNode(e.c.Nodes[i]) }

func (e *env) addSite(t *testing.T, name string) *webfs.Site {
	t.Helper()
	ctx := context.Background()
	if err := e.sites(0).AddSite(ctx, name, nil); err != nil {
		t.Fatal(err)
	}
	s, err := e.sites(0).Site(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Path helpers over a Tree, for readable tests.

func parentOf(ctx context.Context, tr webfs.Tree, p string) (uint64, string, error) {
	dir, name := path.Split(p)
	ino, _, err := tr.Walk(ctx, dir)
	return ino, name, err
}

func mkdir(ctx context.Context, tr webfs.Tree, p string) error {
	ino, name, err := parentOf(ctx, tr, p)
	if err == nil {
		_, err = tr.Mkdir(ctx, ino, name, webfs.NewAttr{Mode: 0o755})
	}
	return err
}

func create(ctx context.Context, tr webfs.Tree, p string) error {
	ino, name, err := parentOf(ctx, tr, p)
	if err == nil {
		_, err = tr.Create(ctx, ino, name, webfs.NewAttr{Mode: 0o644})
	}
	return err
}

func put(ctx context.Context, tr webfs.Tree, p, data string) error {
	ino, name, err := parentOf(ctx, tr, p)
	if err == nil {
		_, err = tr.PutFile(ctx, ino, name, strings.NewReader(data), webfs.NewAttr{Mode: 0o644})
	}
	return err
}

func write(ctx context.Context, tr webfs.Tree, p, data string) error {
	ino, _, err := tr.Walk(ctx, p)
	if err == nil {
		_, err = tr.WriteFile(ctx, ino, []byte(data))
	}
	return err
}

func read(ctx context.Context, tr webfs.Tree, p string) (string, error) {
	ino, a, err := tr.Stat(ctx, p)
	if err != nil {
		return "", err
	}
	b, err := tr.ReadAt(ctx, ino, 0, a.Size+10)
	return string(b), err
}

func rename(ctx context.Context, tr webfs.Tree, from, to string) error {
	op, on, err := parentOf(ctx, tr, from)
	if err != nil {
		return err
	}
	np, nn, err := parentOf(ctx, tr, to)
	if err != nil {
		return err
	}
	return tr.Rename(ctx, op, on, np, nn)
}

func unlink(ctx context.Context, tr webfs.Tree, p string) error {
	ino, name, err := parentOf(ctx, tr, p)
	if err == nil {
		err = tr.Unlink(ctx, ino, name)
	}
	return err
}

func rmdir(ctx context.Context, tr webfs.Tree, p string) error {
	ino, name, err := parentOf(ctx, tr, p)
	if err == nil {
		err = tr.Rmdir(ctx, ino, name)
	}
	return err
}

func symlink(ctx context.Context, tr webfs.Tree, target, p string) error {
	ino, name, err := parentOf(ctx, tr, p)
	if err == nil {
		_, err = tr.Symlink(ctx, ino, name, target, webfs.NewAttr{})
	}
	return err
}

// ls returns "name" for files, "name/" for directories and "name@" for
// symlinks, checking the directory's entry count and link count.
func ls(ctx context.Context, tr webfs.Tree, p string) (string, error) {
	ino, a, err := tr.Walk(ctx, p)
	if err != nil {
		return "", err
	}
	es, err := tr.ReadDirPlus(ctx, ino)
	if err != nil {
		return "", err
	}
	var names []string
	subdirs := 0
	for _, e := range es {
		n := e.Name
		switch {
		case e.Attr.IsDir():
			n += "/"
			subdirs++
		case e.Attr.IsSymlink():
			n += "@"
		}
		names = append(names, n)
	}
	if want := uint32(2 + subdirs); a.Nlink != want {
		return "", fmt.Errorf("%s: nlink %d, want %d", p, a.Nlink, want)
	}
	return strings.Join(names, " "), nil
}

// errnoOf returns err's errno (0 for nil).
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes, want %d (first difference at %d)", what, len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
