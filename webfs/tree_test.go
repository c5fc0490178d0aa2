package webfs_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"hastore/webfs"
)

type step struct {
	desc string
	do   func(ctx context.Context, tr webfs.Tree) error
	want syscall.Errno // 0: success
}

func ok(desc string, do func(ctx context.Context, tr webfs.Tree) error) step {
	return step{desc: desc, do: do}
}

func fails(want syscall.Errno, desc string, do func(ctx context.Context, tr webfs.Tree) error) step {
	return step{desc: desc, do: do, want: want}
}

// expect is a step that succeeds if f returns want.
func expect(desc string, f func(ctx context.Context, tr webfs.Tree) (string, error), want string) step {
	return ok(desc, func(ctx context.Context, tr webfs.Tree) error {
		got, err := f(ctx, tr)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	})
}

func Mkdir(p string) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error { return mkdir(ctx, tr, p) }
}
func Create(p string) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error { return create(ctx, tr, p) }
}
func Put(p, data string) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error { return put(ctx, tr, p, data) }
}
func Write(p, data string) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error { return write(ctx, tr, p, data) }
}
func Rename(from, to string) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error { return rename(ctx, tr, from, to) }
}
func Unlink(p string) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error { return unlink(ctx, tr, p) }
}
func Rmdir(p string) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error { return rmdir(ctx, tr, p) }
}
func Symlink(target, p string) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error { return symlink(ctx, tr, target, p) }
}
func Walk(p string) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error { _, _, err := tr.Walk(ctx, p); return err }
}
func Read(p string) func(context.Context, webfs.Tree) (string, error) {
	return func(ctx context.Context, tr webfs.Tree) (string, error) { return read(ctx, tr, p) }
}
func Ls(p string) func(context.Context, webfs.Tree) (string, error) {
	return func(ctx context.Context, tr webfs.Tree) (string, error) { return ls(ctx, tr, p) }
}
func Readlink(p string) func(context.Context, webfs.Tree) (string, error) {
	return func(ctx context.Context, tr webfs.Tree) (string, error) {
		ino, _, err := tr.Walk(ctx, p)
		if err != nil {
			return "", err
		}
		return tr.Readlink(ctx, ino)
	}
}
func Attr(p string, show func(a webfs.Attr) string) func(context.Context, webfs.Tree) (string, error) {
	return func(ctx context.Context, tr webfs.Tree) (string, error) {
		_, a, err := tr.Walk(ctx, p)
		return show(a), err
	}
}
func Setattr(p string, sa webfs.SetAttr) func(context.Context, webfs.Tree) error {
	return func(ctx context.Context, tr webfs.Tree) error {
		ino, _, err := tr.Walk(ctx, p)
		if err == nil {
			_, err = tr.Setattr(ctx, ino, sa)
		}
		return err
	}
}

var treeCases = []struct {
	name  string
	steps []step
}{
	{"create, write, read", []step{
		ok("mkdir", Mkdir("/a")),
		ok("create", Create("/a/f")),
		expect("empty", Read("/a/f"), ""),
		ok("write", Write("/a/f", "hello")),
		expect("read", Read("/a/f"), "hello"),
		fails(syscall.EEXIST, "create is exclusive", Create("/a/f")),
		fails(syscall.EEXIST, "mkdir over a file", Mkdir("/a/f")),
		fails(syscall.EEXIST, "mkdir over a directory", Mkdir("/a")),
		fails(syscall.ENOENT, "create in a missing directory", Create("/b/f")),
		fails(syscall.ENOTDIR, "create under a file", Create("/a/f/g")),
		fails(syscall.EISDIR, "write a directory", Write("/a", "x")),
		expect("listing", Ls("/"), "a/"),
		expect("attributes", Attr("/a/f", func(a webfs.Attr) string {
			return fmt.Sprintf("%o %d %d", a.Mode, a.Size, a.Nlink)
		}), "100644 5 1"),
	}},
	{"overwrite", []step{
		ok("put", Put("/f", "first version, a little longer")),
		ok("put again", Put("/f", "second")),
		expect("read", Read("/f"), "second"),
		ok("write", Write("/f", strings.Repeat("x", 5000))),
		expect("read", Read("/f"), strings.Repeat("x", 5000)),
		ok("write small", Write("/f", "y")),
		expect("read", Read("/f"), "y"),
		ok("mkdir", Mkdir("/d")),
		fails(syscall.EISDIR, "put over a directory", Put("/d", "x")),
		ok("symlink", Symlink("f", "/l")),
		ok("put over a symlink replaces it", Put("/l", "now a file")),
		expect("read", Read("/l"), "now a file"),
		expect("listing", Ls("/"), "d/ f l"),
	}},
	{"rename over an existing file", []step{
		ok("put a", Put("/a", "A")),
		ok("put b", Put("/b", "B")),
		ok("rename", Rename("/a", "/b")),
		expect("target has the source", Read("/b"), "A"),
		fails(syscall.ENOENT, "source gone", Walk("/a")),
		expect("listing", Ls("/"), "b"),
		ok("rename onto itself", Rename("/b", "/b")),
		expect("still there", Read("/b"), "B"[:0]+"A"),
		fails(syscall.ENOENT, "rename a missing name", Rename("/a", "/c")),
	}},
	{"rename directories", []step{
		ok("mkdir", Mkdir("/d1")),
		ok("mkdir", Mkdir("/d1/d2")),
		ok("put", Put("/d1/d2/f", "deep")),
		ok("mkdir", Mkdir("/e")),
		ok("move d1 under e", Rename("/d1", "/e/d1")),
		expect("content moved", Read("/e/d1/d2/f"), "deep"),
		expect("root", Ls("/"), "e/"),
		expect("e", Ls("/e"), "d1/"),
		expect("..", Read("/e/d1/d2/../d2/f"), "deep"),
		fails(syscall.EINVAL, "into itself", Rename("/e", "/e/d1/d2/x")),
		fails(syscall.EINVAL, "into its child", Rename("/e/d1", "/e/d1/d2/d1")),
		ok("empty dir", Mkdir("/empty")),
		ok("rename over an empty directory", Rename("/e", "/empty")),
		expect("replaced", Ls("/"), "empty/"),
		expect("content", Read("/empty/d1/d2/f"), "deep"),
		ok("mkdir", Mkdir("/full")),
		ok("put", Put("/full/x", "x")),
		fails(syscall.ENOTEMPTY, "over a non-empty directory", Rename("/empty", "/full")),
		ok("put", Put("/file", "f")),
		fails(syscall.ENOTDIR, "directory over a file", Rename("/full", "/file")),
		fails(syscall.EISDIR, "file over a directory", Rename("/file", "/full")),
		fails(syscall.ENOTDIR, "into a file", Rename("/file", "/file/x")),
		expect("root", Ls("/"), "empty/ file full/"),
	}},
	{"unlink and rmdir", []step{
		ok("mkdir", Mkdir("/d")),
		ok("put", Put("/d/f", "x")),
		fails(syscall.ENOTEMPTY, "rmdir non-empty", Rmdir("/d")),
		fails(syscall.EISDIR, "unlink a directory", Unlink("/d")),
		fails(syscall.ENOTDIR, "rmdir a file", Rmdir("/d/f")),
		ok("unlink", Unlink("/d/f")),
		fails(syscall.ENOENT, "unlink again", Unlink("/d/f")),
		ok("rmdir", Rmdir("/d")),
		fails(syscall.ENOENT, "rmdir again", Rmdir("/d")),
		expect("empty root", Ls("/"), ""),
	}},
	{"symlinks", []step{
		ok("mkdir", Mkdir("/dir")),
		ok("put", Put("/dir/f", "through the link")),
		ok("relative", Symlink("dir", "/rel")),
		ok("absolute", Symlink("/dir/f", "/abs")),
		ok("escaping", Symlink("../../../dir/f", "/dir/up")),
		ok("loop", Symlink("loop", "/loop")),
		fails(syscall.EEXIST, "symlink over a name", Symlink("x", "/rel")),
		expect("readlink", Readlink("/rel"), "dir"),
		fails(syscall.EINVAL, "readlink of a file", func(ctx context.Context, tr webfs.Tree) error { _, err := Readlink("/dir/f")(ctx, tr); return err }),
		expect("through a relative link", Read("/rel/f"), "through the link"),
		expect("absolute link", Read("/abs"), "through the link"),
		fails(syscall.ENOENT, "a link leaving the site names nothing", Walk("/dir/up/")),
		fails(syscall.ENOENT, "so does a path", Walk("/dir/../..")),
		expect("lstat", Attr("/abs", func(a webfs.Attr) string { return fmt.Sprintf("%o %d", a.Mode, a.Size) }), "120777 6"),
		fails(syscall.ELOOP, "loop", func(ctx context.Context, tr webfs.Tree) error { _, _, err := tr.Stat(ctx, "/loop"); return err }),
		fails(syscall.ENOTDIR, "trailing slash on a file", Walk("/dir/f/")),
		expect("listing", Ls("/"), "abs@ dir/ loop@ rel@"),
		expect("'..' inside the site", Read("/dir/../dir/./f"), "through the link"),
		ok("unlink a link", Unlink("/rel")),
		expect("target stays", Read("/dir/f"), "through the link"),
	}},
	{"names", []step{
		fails(syscall.EINVAL, "dot", Create("/.")),
		fails(syscall.EINVAL, "dot-dot", Mkdir("/..")),
		fails(syscall.EINVAL, "empty", func(ctx context.Context, tr webfs.Tree) error {
			_, err := tr.Create(ctx, webfs.RootIno, "", webfs.NewAttr{})
			return err
		}),
		fails(syscall.EINVAL, "slash", func(ctx context.Context, tr webfs.Tree) error {
			_, err := tr.Create(ctx, webfs.RootIno, "a/b", webfs.NewAttr{})
			return err
		}),
		fails(syscall.EINVAL, "NUL", Create("/a\x00b")),
		fails(syscall.ENAMETOOLONG, "256 bytes", Create("/"+strings.Repeat("n", 256))),
		ok("255 bytes", Create("/"+strings.Repeat("n", 255))),
		fails(syscall.ENAMETOOLONG, "path over 4096", Walk(strings.Repeat("/a", 2049))),
		fails(syscall.ENAMETOOLONG, "long symlink target", Symlink(strings.Repeat("t", 4097), "/l")),
		fails(syscall.EINVAL, "rename to dot-dot", Rename("/"+strings.Repeat("n", 255), "/..")),
		ok("unicode and spaces", Put("/ünï cödé ✓.html", "u")),
		expect("read", Read("/ünï cödé ✓.html"), "u"),
	}},
	{"setattr", []step{
		ok("put", Put("/f", "0123456789")),
		ok("chmod", Setattr("/f", webfs.SetAttr{Valid: webfs.SetMode, Mode: 0o4751})),
		ok("chown", Setattr("/f", webfs.SetAttr{Valid: webfs.SetUid | webfs.SetGid, Uid: 33, Gid: 44})),
		ok("utimens", Setattr("/f", webfs.SetAttr{Valid: webfs.SetMtime | webfs.SetAtime, Mtime: time.Unix(1000, 5), Atime: time.Unix(1000, 6)})),
		expect("attributes", Attr("/f", func(a webfs.Attr) string {
			return fmt.Sprintf("%o %d:%d %d %d", a.Mode, a.Uid, a.Gid, a.Mtime.UnixNano(), a.Atime.UnixNano())
		}), "104751 33:44 1000000000005 1000000000006"),
		ok("truncate", Setattr("/f", webfs.SetAttr{Valid: webfs.SetSize, Size: 4})),
		expect("shrunk", Read("/f"), "0123"),
		ok("extend", Setattr("/f", webfs.SetAttr{Valid: webfs.SetSize, Size: 6})),
		expect("zeros", Read("/f"), "0123\x00\x00"),
		ok("mkdir", Mkdir("/d")),
		fails(syscall.EISDIR, "truncate a directory", Setattr("/d", webfs.SetAttr{Valid: webfs.SetSize, Size: 0})),
		ok("chmod a directory", Setattr("/d", webfs.SetAttr{Valid: webfs.SetMode, Mode: 0o700})),
		expect("dir mode", Attr("/d", func(a webfs.Attr) string { return fmt.Sprintf("%o", a.Mode) }), "40700"),
		ok("write at", func(ctx context.Context, tr webfs.Tree) error {
			ino, _, err := tr.Walk(ctx, "/f")
			if err == nil {
				_, err = tr.WriteAt(ctx, ino, 8, []byte("AB"))
			}
			return err
		}),
		expect("written with a hole", Read("/f"), "0123\x00\x00\x00\x00AB"),
	}},
}

// TestTree runs each case on a fresh site, through this node's Site and
// through the gRPC client (which lands on any node).
func TestTree(t *testing.T) {
	e := newEnv(t)
	for i, tc := range treeCases {
		for _, impl := range []string{"local", "remote"} {
			t.Run(tc.name+"/"+impl, func(t *testing.T) {
				ctx := ctxT(t)
				name := fmt.Sprintf("case%d-%s.test", i, impl)
				var tr webfs.Tree = e.addSite(t, name)
				if impl == "remote" {
					tr = e.client.Site(name)
				}
				for j, s := range tc.steps {
					err := s.do(ctx, tr)
					if got := errnoOf(err); got != s.want {
						t.Fatalf("step %d (%s): %v; want errno %d (%v)", j, s.desc, err, s.want, s.want)
					}
				}
			})
		}
	}
}
