package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
	"google.golang.org/grpc"

	"hastore/replica"
	"hastore/webfs"
)

// site runs `hastore admin site ...` through the Sites gRPC service of
// whichever node answers.
func (a *adminClient) site(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("site: want add, list, del, put, get or ls")
	}
	var conns []grpc.ClientConnInterface
	for _, addr := range a.addrs {
		c, err := a.conn(addr)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	cl := webfs.NewClient(conns...)
	verb, args := args[0], args[1:]
	fset := flag.NewFlagSet("site "+verb, flag.ContinueOnError)
	var aliases []string
	fset.Func("alias", "another host name of the site (repeatable)", func(s string) error { aliases = append(aliases, s); return nil })
	asJSON := fset.Bool("json", false, "print JSON")
	del := fset.Bool("delete", false, "delete files of the site that LOCALDIR does not have")
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return err
	}
	want := func(n int, usage string) error {
		if len(pos) != n {
			return fmt.Errorf("usage: hastore admin site %s", usage)
		}
		return nil
	}
	switch verb {
	case "add":
		if err := want(1, "add NAME [--alias NAME]..."); err != nil {
			return err
		}
		if err := cl.AddSite(ctx, pos[0], aliases); err != nil {
			return siteAddError(pos[0], err)
		}
		fmt.Fprintf(stdout, "site %s added\n", pos[0])
		return nil
	case "list":
		if err := want(0, "list [--json]"); err != nil {
			return err
		}
		sites, err := cl.ListSites(ctx)
		if err != nil {
			return err
		}
		return printSites(stdout, sites, *asJSON)
	case "del":
		if err := want(1, "del NAME"); err != nil {
			return err
		}
		if err := cl.DelSite(ctx, pos[0]); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("site del: there is no site %q; nothing was deleted ('hastore admin site list' shows the sites)", pos[0])
			}
			return err
		}
		fmt.Fprintf(stdout, "site %s deleted\n", pos[0])
		return nil
	case "put":
		if err := want(2, "put NAME LOCALDIR [--delete]"); err != nil {
			return err
		}
		return sitePut(ctx, cl.Site(pos[0]), pos[1], *del, stdout)
	case "get":
		if err := want(2, "get NAME LOCALDIR"); err != nil {
			return err
		}
		return siteGet(ctx, cl.Site(pos[0]), pos[1], stdout)
	case "ls":
		if len(pos) == 1 {
			pos = append(pos, "/")
		}
		if err := want(2, "ls NAME [PATH]"); err != nil {
			return err
		}
		return siteLs(ctx, cl.Site(pos[0]), pos[1], stdout)
	}
	return fmt.Errorf("site: unknown command %q; want add, list, del, put, get or ls", verb)
}

// siteAddError says why a site could not be added, and what to do.
func siteAddError(name string, err error) error {
	var pe *fs.PathError
	detail := ""
	if errors.As(err, &pe) {
		detail = pe.Err.Error()
	}
	switch {
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("site add: site %q is still being deleted; run 'hastore admin site del %s' again to finish, then add it", name, name)
	case errors.Is(err, fs.ErrExist) && strings.Contains(detail, "host name ") && strings.Contains(detail, " belongs to site "):
		// The node says "… host name X belongs to site Y": a name or alias
		// of the new site is another site's.
		taken := detail[strings.Index(detail, "host name "):]
		return fmt.Errorf("site add %s: %s; a host name serves one site only, nothing was changed ('hastore admin site list' shows which site has which names)", name, taken)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("site add: site %q already exists; nothing was changed ('hastore admin site list' shows the sites; 'site put %s DIR' updates its files)", name, name)
	}
	return err
}

// parseInterspersed parses flags wherever they are among the arguments
// and returns the others.
func parseInterspersed(fset *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fset.Parse(args); err != nil {
			return nil, err
		}
		args = fset.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func printSites(out io.Writer, sites []webfs.SiteInfo, asJSON bool) error {
	if asJSON {
		type site struct {
			Name    string    `json:"name"`
			Aliases []string  `json:"aliases"`
			Created time.Time `json:"created"`
		}
		list := []site{}
		for _, s := range sites {
			list = append(list, site{s.Name, append([]string{}, s.Aliases...), s.Created})
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tALIASES\tCREATED")
	for _, s := range sites {
		al := strings.Join(s.Aliases, ",")
		if al == "" {
			al = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, al, s.Created.Format(time.RFC3339))
	}
	return tw.Flush()
}

func siteLs(ctx context.Context, rs *webfs.RemoteSite, p string, out io.Writer) error {
	_, a, err := rs.Stat(ctx, p)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 1, ' ', tabwriter.AlignRight)
	line := func(name string, a *webfs.Attr) {
		if a.IsSymlink() {
			name += " -> " + a.Target
		}
		fmt.Fprintf(tw, "%s\t %d\t %d\t %d\t %s\t %s\t\n", a.FileMode(), a.Uid, a.Gid, a.Size, a.Mtime.Format("2006-01-02 15:04:05"), name)
	}
	if !a.IsDir() {
		line(path.Base(p), &a)
		return tw.Flush()
	}
	es, err := rs.ReadDirPlus(ctx, a.Ino)
	if err != nil {
		return err
	}
	for i := range es {
		line(es[i].Name, &es[i].Attr)
	}
	return tw.Flush()
}

// localEntry is a file, directory or symlink under the directory put.
type localEntry struct {
	rel    string // slash-separated, relative; "" is the directory itself
	abs    string
	mode   uint32 // POSIX type and permission bits
	size   int64
	mtime  time.Time
	uid    uint32
	gid    uint32
	target string
}

func posixMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	switch {
	case m.IsDir():
		mode |= webfs.ModeDir
	case m&fs.ModeSymlink != 0:
		mode |= webfs.ModeSymlink
	case m.IsRegular():
		mode |= webfs.ModeRegular
	}
	return mode
}

// scanLocal lists the tree of root (the directory dir), parents before
// children, without following symlinks. Special files (sockets, devices,
// FIFOs) are skipped with a warning.
func scanLocal(root *os.Root, dir string) ([]localEntry, error) {
	var out []localEntry
	fsys := root.FS()
	err := fs.WalkDir(fsys, ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if rel == "." {
			rel = ""
			if !info.IsDir() {
				return fmt.Errorf("%s is not a directory", dir)
			}
		}
		e := localEntry{rel: rel, abs: p, mode: posixMode(info.Mode()), size: info.Size(), mtime: info.ModTime()}
		if e.mode&webfs.ModeType == 0 {
			fmt.Fprintf(os.Stderr, "hastore: skipping %s: not a file, directory or symlink\n", p)
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			e.uid, e.gid = st.Uid, st.Gid
		}
		if e.mode&webfs.ModeType == webfs.ModeSymlink {
			if e.target, err = fs.ReadLink(fsys, rel); err != nil {
				return err
			}
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// openLocal opens the regular file scanLocal found at le, through root: a
// file swapped meanwhile for a symlink leading out of the directory is
// refused, and one swapped for anything but a regular file is too.
func openLocal(root *os.Root, le *localEntry) (*os.File, error) {
	f, err := root.Open(filepath.FromSlash(le.rel))
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: no longer a regular file", le.abs)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// remoteEntry is an inode of the site's tree and where it is.
type remoteEntry struct {
	rel    string
	parent uint64
	name   string
	attr   webfs.Attr
}

// scanRemote lists the site's tree, a level at a time with a few
// directories read at once. The root is "".
func scanRemote(ctx context.Context, rs *webfs.RemoteSite) (map[string]*remoteEntry, error) {
	root, err := rs.GetAttr(ctx, webfs.RootIno)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no site %s", rs.Name())
		}
		return nil, err
	}
	all := map[string]*remoteEntry{"": {attr: root}}
	level := []*remoteEntry{all[""]}
	for len(level) > 0 {
		var (
			mu    sync.Mutex
			next  []*remoteEntry
			first error
			wg    sync.WaitGroup
			sem   = make(chan struct{}, 8)
		)
		for _, d := range level {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				es, err := rs.ReadDirPlus(ctx, d.attr.Ino)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if first == nil {
						first = err
					}
					return
				}
				for _, e := range es {
					re := &remoteEntry{rel: path.Join(d.rel, e.Name), parent: d.attr.Ino, name: e.Name, attr: e.Attr}
					all[re.rel] = re
					if e.Attr.IsDir() {
						next = append(next, re)
					}
				}
			}()
		}
		wg.Wait()
		if first != nil {
			return nil, first
		}
		level = next
	}
	return all, nil
}

func depth(rel string) int {
	if rel == "" {
		return 0
	}
	return strings.Count(rel, "/") + 1
}

// progress prints a progress line on a terminal.
type progress struct {
	what        string
	files, done atomic.Int64
	bytes, sent atomic.Int64
	stop        chan struct{}
	wg          sync.WaitGroup
}

func startProgress(what string) *progress {
	p := &progress{what: what, stop: make(chan struct{})}
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.print()
				fmt.Fprintln(os.Stderr)
				return
			case <-t.C:
				p.print()
			}
		}
	}()
	return p
}

func (p *progress) print() {
	fmt.Fprintf(os.Stderr, "\r%s: %d/%d files, %s/%s   ", p.what, p.done.Load(), p.files.Load(), mib(p.sent.Load()), mib(p.bytes.Load()))
}

func (p *progress) finish() {
	close(p.stop)
	p.wg.Wait()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// sitePut makes the site's tree like dir, rsync-like: only entries whose
// type, size or mtime differ are stored again; only attributes are set
// where only they differ; with del, what dir does not have is removed.
//
// Every local access goes through an os.Root on dir, so nothing outside
// dir is read even if the tree changes under the walk.
func sitePut(ctx context.Context, rs *webfs.RemoteSite, dir string, del bool, out io.Writer) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	local, err := scanLocal(root, dir)
	if err != nil {
		return err
	}
	remote, err := scanRemote(ctx, rs)
	if err != nil {
		return err
	}
	inLocal := map[string]*localEntry{}
	for i := range local {
		inLocal[local[i].rel] = &local[i]
	}
	var nStored, nSet, nDeleted, nDirs, nLinks, nUnchanged int
	touched := map[string]bool{} // directories whose entries changed

	// 1. Remove what is not wanted: extraneous entries (with del) and
	// entries whose type changes, deepest first.
	var gone []*remoteEntry
	for rel, re := range remote {
		if rel == "" {
			continue
		}
		le := inLocal[rel]
		if (le == nil && del) || (le != nil && le.mode&webfs.ModeType != re.attr.Mode&webfs.ModeType) {
			gone = append(gone, re)
		}
	}
	// A replaced directory's contents go with it.
	for rel, re := range remote {
		for _, g := range gone {
			if g.attr.IsDir() && strings.HasPrefix(rel, g.rel+"/") && !slices.Contains(gone, re) {
				gone = append(gone, re)
				break
			}
		}
	}
	slices.SortFunc(gone, func(a, b *remoteEntry) int { return depth(b.rel) - depth(a.rel) })
	for _, g := range gone {
		if g.attr.IsDir() {
			err = rs.Rmdir(ctx, g.parent, g.name)
		} else {
			err = rs.Unlink(ctx, g.parent, g.name)
		}
		if err != nil {
			return fmt.Errorf("removing %s: %w", g.rel, err)
		}
		delete(remote, g.rel)
		touched[path.Dir("/" + g.rel)[1:]] = true
		nDeleted++
	}

	// 2. Directories, parents first.
	ino := map[string]uint64{}
	for rel, re := range remote {
		if re.attr.IsDir() {
			ino[rel] = re.attr.Ino
		}
	}
	parentOf := func(rel string) (uint64, string) {
		dir, name := path.Split(rel)
		return ino[strings.TrimSuffix(dir, "/")], name
	}
	for i := range local {
		le := &local[i]
		if le.rel == "" || le.mode&webfs.ModeType != webfs.ModeDir || remote[le.rel] != nil {
			continue
		}
		p, name := parentOf(le.rel)
		a, err := rs.Mkdir(ctx, p, name, webfs.NewAttr{Mode: le.mode, Uid: le.uid, Gid: le.gid})
		if err != nil {
			return fmt.Errorf("creating directory %s: %w", le.rel, err)
		}
		ino[le.rel] = a.Ino
		touched[path.Dir("/" + le.rel)[1:]] = true
		nDirs++
	}

	// 3. Files (stored by a few workers) and symlinks.
	var files []*localEntry
	for i := range local {
		le := &local[i]
		re := remote[le.rel]
		switch le.mode & webfs.ModeType {
		case webfs.ModeRegular:
			if re == nil || re.attr.Size != le.size || !re.attr.Mtime.Equal(le.mtime) {
				files = append(files, le)
				if re == nil {
					touched[path.Dir("/" + le.rel)[1:]] = true
				}
				continue
			}
			if re.attr.Mode != le.mode || re.attr.Uid != le.uid || re.attr.Gid != le.gid {
				if _, err := rs.Setattr(ctx, re.attr.Ino, webfs.SetAttr{Valid: webfs.SetMode | webfs.SetUid | webfs.SetGid, Mode: le.mode, Uid: le.uid, Gid: le.gid}); err != nil {
					return fmt.Errorf("setting attributes of %s: %w", le.rel, err)
				}
				nSet++
				continue
			}
			nUnchanged++
		case webfs.ModeSymlink:
			if re != nil && re.attr.Target == le.target {
				nUnchanged++
				continue
			}
			p, name := parentOf(le.rel)
			if re != nil {
				if err := rs.Unlink(ctx, p, name); err != nil {
					return fmt.Errorf("replacing symlink %s: %w", le.rel, err)
				}
			}
			if _, err := rs.Symlink(ctx, p, name, le.target, webfs.NewAttr{Uid: le.uid, Gid: le.gid}); err != nil {
				return fmt.Errorf("creating symlink %s: %w", le.rel, err)
			}
			touched[path.Dir("/" + le.rel)[1:]] = true
			nLinks++
		}
	}
	pr := startProgress("put " + rs.Name())
	for _, f := range files {
		pr.files.Add(1)
		pr.bytes.Add(f.size)
	}
	err = runWorkers(ctx, 8, len(files), func(ctx context.Context, i int) error {
		le := files[i]
		f, err := openLocal(root, le)
		if err != nil {
			return err
		}
		defer f.Close()
		p, name := parentOf(le.rel)
		if _, err := rs.PutFile(ctx, p, name, f, webfs.NewAttr{Mode: le.mode, Uid: le.uid, Gid: le.gid, Mtime: le.mtime}); err != nil {
			return fmt.Errorf("storing %s: %w", le.rel, err)
		}
		pr.done.Add(1)
		pr.sent.Add(le.size)
		return nil
	})
	pr.finish()
	if err != nil {
		return err
	}
	nStored = len(files)

	// 4. Directory attributes, deepest first (their mtimes changed with
	// their entries).
	dirs := slices.Clone(local)
	slices.SortStableFunc(dirs, func(a, b localEntry) int { return depth(b.rel) - depth(a.rel) })
	for _, le := range dirs {
		if le.mode&webfs.ModeType != webfs.ModeDir {
			continue
		}
		re := remote[le.rel]
		if re != nil && !touched[le.rel] && re.attr.Mode == le.mode && re.attr.Uid == le.uid && re.attr.Gid == le.gid && re.attr.Mtime.Equal(le.mtime) {
			continue
		}
		sa := webfs.SetAttr{Valid: webfs.SetMode | webfs.SetUid | webfs.SetGid | webfs.SetMtime | webfs.SetAtime,
			Mode: le.mode, Uid: le.uid, Gid: le.gid, Mtime: le.mtime, Atime: le.mtime}
		if _, err := rs.Setattr(ctx, ino[le.rel], sa); err != nil {
			return fmt.Errorf("setting attributes of directory %q: %w", le.rel, err)
		}
	}
	fmt.Fprintf(out, "put %s: %d files stored (%s), %d unchanged, %d attributes set, %d directories and %d symlinks created, %d deleted\n",
		rs.Name(), nStored, mib(pr.bytes.Load()), nUnchanged, nSet, nDirs, nLinks, nDeleted)
	return nil
}

// runWorkers calls fn for 0..n-1 with at most k at once, and stops at the
// first error.
func runWorkers(ctx context.Context, k, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range min(k, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return first
}

// siteGet downloads the site's tree into dir (created if need be):
// directories, files with their mode and mtime, symlinks. What dir holds
// already is overwritten, never deleted.
//
// The tree's writers are not trusted: every local access goes through an
// os.Root on dir, so no symlink — one this command made on an earlier get,
// or one planted in dir otherwise — leads a write outside dir. A local
// symlink where the site has a directory is replaced by the directory,
// never followed.
func siteGet(ctx context.Context, rs *webfs.RemoteSite, dir string, out io.Writer) error {
	remote, err := scanRemote(ctx, rs)
	if err != nil {
		return err
	}
	all := make([]*remoteEntry, 0, len(remote))
	for _, re := range remote {
		all = append(all, re)
	}
	slices.SortFunc(all, func(a, b *remoteEntry) int { return strings.Compare(a.rel, b.rel) })
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	local := func(rel string) string {
		if rel == "" {
			return "."
		}
		return filepath.FromSlash(rel)
	}
	var files []*remoteEntry
	pr := startProgress("get " + rs.Name())
	for _, re := range all {
		p := local(re.rel)
		switch {
		case re.attr.IsDir():
			if re.rel == "" {
				continue
			}
			// Parents come first and are real directories by now; what
			// stands at p itself, if not a directory, goes.
			if fi, err := root.Lstat(p); err == nil && !fi.IsDir() {
				if err := root.Remove(p); err != nil {
					return fmt.Errorf("replacing %s with a directory: %w", re.rel, err)
				}
			}
			// Owner-writable until the end, when its real mode is set.
			if err := root.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		case re.attr.IsSymlink():
			if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			if err := root.Symlink(re.attr.Target, p); err != nil {
				return err
			}
		case re.attr.IsRegular():
			files = append(files, re)
			pr.files.Add(1)
			pr.bytes.Add(re.attr.Size)
		}
	}
	err = runWorkers(ctx, 8, len(files), func(ctx context.Context, i int) error {
		re := files[i]
		p := local(re.rel)
		n, err := getFile(ctx, rs, root, re, p)
		if err != nil {
			return fmt.Errorf("getting %s: %w", re.rel, err)
		}
		pr.done.Add(1)
		pr.sent.Add(n)
		return nil
	})
	pr.finish()
	if err != nil {
		return err
	}
	// Directory modes and times, deepest first.
	slices.SortStableFunc(all, func(a, b *remoteEntry) int { return depth(b.rel) - depth(a.rel) })
	for _, re := range all {
		if !re.attr.IsDir() {
			continue
		}
		p := local(re.rel)
		if err := root.Chmod(p, webfs.FileMode(re.attr.Mode)); err != nil {
			return err
		}
		if err := root.Chtimes(p, re.attr.Mtime, re.attr.Mtime); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "get %s: %d files (%s), %d entries in all\n", rs.Name(), len(files), mib(pr.bytes.Load()), len(all)-1)
	return nil
}

// getFile downloads one file into a temporary file next to p, all within
// root, and renames it over p (replacing a symlink there, not following
// it).
func getFile(ctx context.Context, rs *webfs.RemoteSite, root *os.Root, re *remoteEntry, p string) (int64, error) {
	var suffix [8]byte
	rand.Read(suffix[:])
	tmpName := filepath.Join(filepath.Dir(p), ".hastore-get-"+hex.EncodeToString(suffix[:]))
	tmp, err := root.OpenFile(tmpName, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer root.Remove(tmpName)
	n, err := rs.ReadTo(ctx, re.attr.Ino, tmp)
	if err == nil && n != re.attr.Size {
		err = fmt.Errorf("got %d bytes of %d", n, re.attr.Size)
	}
	if err == nil {
		err = tmp.Chmod(webfs.FileMode(re.attr.Mode))
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmpName, p)
	}
	if err == nil {
		err = root.Chtimes(p, re.attr.Mtime, re.attr.Mtime)
	}
	return n, err
}

// devSite is the site `hastore dev` creates.
const devSite = "www.example.test"

const devIndex = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>www.example.test on hastore</title></head>
<body>
<h1>It works</h1>
<p>This page is served by hastore from the site <code>www.example.test</code>.
Replace it with <code>hastore admin site put www.example.test DIR</code>.</p>
</body>
</html>
`

// ensureDevSite creates the dev site with an index page, if absent.
func ensureDevSite(n *replica.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sites := webfs.ForNode(n)
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = sites.AddSite(ctx, devSite, nil); err == nil || errors.Is(err, fs.ErrExist) {
			break
		}
		// No leader yet: wait for the election.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating site %s: %w", devSite, err)
	}
	st, err := sites.Site(ctx, devSite)
	if err != nil {
		return err
	}
	if _, err := st.Lookup(ctx, webfs.RootIno, "index.html"); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_, err = st.PutFile(ctx, webfs.RootIno, "index.html", strings.NewReader(devIndex), webfs.NewAttr{Mode: 0o644})
	return err
}
