package webfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"hastore/webfs/httpserve"
)

// HTTP returns the sites as the HTTP server reads them (httpserve.Sites).
// Every call first passes a read barrier (Sync; concurrent calls share
// one), so it reflects every change acknowledged anywhere before it began,
// as the server's cache requires; this costs a round-trip to the Raft
// leader per call, not per byte. Symlinks are followed within the site; a
// path through a file, a dangling or looping symlink and one that leaves
// the site are fs.ErrNotExist; bad names are fs.ErrInvalid.
func (s *Sites) HTTP() httpserve.Sites { return httpSites{s} }

type httpSites struct{ s *Sites }

// catchUp is the read barrier the httpserve contract asks for: every change
// acknowledged before the call is seen. Within one request a barrier begun
// after the request began serves every call, so a request pays for one.
func (h httpSites) catchUp(ctx context.Context) error {
	since, ok := httpserve.RequestStart(ctx)
	if !ok {
		return h.s.catchUp(ctx)
	}
	return h.s.catchUpSince(ctx, since)
}

func (h httpSites) Resolve(ctx context.Context, host string) (string, bool, error) {
	if CheckSiteName(host) != nil {
		return "", false, nil
	}
	if err := h.catchUp(ctx); err != nil {
		return "", false, err
	}
	name, ok, err := h.s.md.TenantGet(RegistryTenant, "h/"+host)
	if err != nil || !ok {
		return "", false, err
	}
	return string(name), true, nil
}

// stat resolves name in site after a read barrier.
func (h httpSites) stat(ctx context.Context, site, name string) (Attr, error) {
	if err := h.catchUp(ctx); err != nil {
		return Attr{}, err
	}
	if CheckSiteName(site) != nil {
		return Attr{}, httpErr(site, syscall.ENOENT)
	}
	if _, ok, err := h.s.md.TenantGet(RegistryTenant, "s/"+site); err != nil || !ok {
		if err == nil {
			err = syscall.ENOENT
		}
		return Attr{}, httpErr(name, err)
	}
	a, err := h.s.handle(site).walk(ctx, name, true, true)
	if err == nil && a.IsSpecial() {
		// FIFOs, sockets and device nodes exist for the mount only.
		err = fmt.Errorf("%w: %s is a special file", syscall.ENOENT, name)
	}
	if err != nil {
		return Attr{}, httpErr(name, err)
	}
	return a, nil
}

func (h httpSites) Stat(ctx context.Context, site, name string) (httpserve.Entry, error) {
	a, err := h.stat(ctx, site, name)
	if err != nil {
		return httpserve.Entry{}, err
	}
	return httpEntry(&a), nil
}

func (h httpSites) Open(ctx context.Context, site, name string) (httpserve.File, error) {
	a, err := h.stat(ctx, site, name)
	if err == nil {
		err = contentType(&a)
	}
	if err != nil {
		return nil, httpErr(name, err)
	}
	return httpFile{&File{s: h.s, ctx: ctx, attr: a}}, nil
}

func httpEntry(a *Attr) httpserve.Entry {
	e := httpserve.Entry{IsDir: a.IsDir(), ModTime: a.Mtime}
	if a.IsRegular() {
		e.Size = a.Size
		e.ETag = `"` + a.ContentID + `"`
	}
	return e
}

// httpErr gives an error the kind httpserve maps to a status.
func httpErr(name string, err error) error {
	var kind error
	switch Errno(err) {
	case syscall.ENOENT, syscall.ENOTDIR, syscall.ELOOP:
		kind = fs.ErrNotExist
	case syscall.EINVAL, syscall.ENAMETOOLONG:
		kind = fs.ErrInvalid
	case syscall.EACCES, syscall.EPERM:
		kind = fs.ErrPermission
	}
	if kind == nil || errors.Is(err, kind) {
		return pathErr("http", name, err)
	}
	return pathErr("http", name, fmt.Errorf("%w: %w", kind, err))
}

type httpFile struct{ f *File }

func (f httpFile) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }
func (f httpFile) Close() error                            { return f.f.Close() }
func (f httpFile) Entry() httpserve.Entry                  { return httpEntry(&f.f.attr) }
