package webfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"syscall"
	"time"

	"hastore/webfs/httpserve"
)

// HTTP returns the sites as the HTTP server reads them (httpserve.Sites).
// Every call first passes a read barrier (Sync; concurrent calls share
// one), so it reflects every change acknowledged anywhere before it began,
// as the server's cache requires; this costs a round-trip to the Raft
// leader per call, not per byte. Symlinks are followed within the site; a
// path through a file, a dangling or looping symlink and one that leaves
// the site are fs.ErrNotExist; bad names are fs.ErrInvalid.
func (s *Sites) HTTP() httpserve.Sites {
	h := &httpSites{s: s}
	if ai, ok := s.md.(appliedIndexer); ok {
		h.memo = &lookupMemo{applied: ai.AppliedIndex}
	}
	return h
}

type httpSites struct {
	s    *Sites
	memo *lookupMemo // nil when the metadata cannot say its applied index
}

// appliedIndexer is what *meta.Store offers besides MetaReader: the Raft
// index of the state reads see.
type appliedIndexer interface{ AppliedIndex() uint64 }

// lookupMemo remembers the HTTP path's metadata lookups — host to site,
// path to attributes — for one applied Raft index of this node's
// metadata. The replicated state is a function of the applied index (every
// node applies the same committed log in the same order), so a lookup made
// when the node had applied index i gives the same answer to every later
// request that finds the node still at i; the first request after the
// index moves (any change anywhere in the cluster) starts afresh. It
// serves nothing a read of the metadata would not: a request first passes
// its read barrier (the node has applied everything acknowledged before
// the request began), then reads the applied index, and uses only entries
// made at exactly that index, whose lookups read state at least that new
// (the FSM publishes an index after the state it covers is committed).
//
// When the FSM is rebuilt from Raft after damage its index starts from 0
// again; entries are also dropped after memoMaxAge, so that a lookup that
// raced with that swap is not kept.
type lookupMemo struct {
	applied func() uint64

	mu    sync.Mutex
	index uint64
	born  time.Time
	bytes int
	hosts map[string]memoHost
	stats map[memoStatKey]memoStat
}

const (
	memoMaxBytes = 8 << 20
	memoMaxAge   = time.Second
)

type memoHost struct {
	site string
	ok   bool
}

type memoStatKey struct{ site, name string }

type memoStat struct {
	a   Attr
	err error // nil or a not-found / invalid error, which the state decides
}

// at makes the memo's maps those of index — emptied if the index moved on
// or they are too old or too big — and reports whether they are; false for
// an index older than the memo's (a request that read the index just before
// another saw a newer one), which neither uses nor fills the memo. m.mu is
// held.
func (m *lookupMemo) at(index uint64) bool {
	if index == m.index && m.hosts != nil && time.Since(m.born) < memoMaxAge && m.bytes < memoMaxBytes {
		return true
	}
	if index < m.index && m.hosts != nil && time.Since(m.born) < memoMaxAge {
		return false
	}
	m.index, m.born, m.bytes = index, time.Now(), 0
	m.hosts = map[string]memoHost{}
	m.stats = map[memoStatKey]memoStat{}
	return true
}

func (m *lookupMemo) host(index uint64, host string) (memoHost, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.at(index) {
		return memoHost{}, false
	}
	v, ok := m.hosts[host]
	return v, ok
}

func (m *lookupMemo) putHost(index uint64, host string, v memoHost) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.at(index) {
		m.hosts[host] = v
		m.bytes += len(host) + len(v.site) + 64
	}
}

func (m *lookupMemo) stat(index uint64, k memoStatKey) (memoStat, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.at(index) {
		return memoStat{}, false
	}
	v, ok := m.stats[k]
	return v, ok
}

func (m *lookupMemo) putStat(index uint64, k memoStatKey, v memoStat) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.at(index) {
		m.stats[k] = v
		m.bytes += len(k.site) + len(k.name) + len(v.a.Inline) + len(v.a.Chunks)*48 + len(v.a.Target) + len(v.a.ContentID) + 256
	}
}

// decided reports whether err is an answer the metadata gives (no such
// file, a bad name) rather than a failure to read it.
func decided(err error) bool {
	return err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid)
}

// catchUp is the read barrier the httpserve contract asks for: every change
// acknowledged before the call is seen. Within one request a barrier begun
// after the request began serves every call, so a request pays for one.
func (h *httpSites) catchUp(ctx context.Context) error {
	since, ok := httpserve.RequestStart(ctx)
	if !ok {
		return h.s.catchUp(ctx)
	}
	return h.s.catchUpSince(ctx, since)
}

func (h *httpSites) Resolve(ctx context.Context, host string) (string, bool, error) {
	if CheckSiteName(host) != nil {
		return "", false, nil
	}
	if err := h.catchUp(ctx); err != nil {
		return "", false, err
	}
	var index uint64
	if h.memo != nil {
		index = h.memo.applied() // read after the barrier: see lookupMemo
		if v, ok := h.memo.host(index, host); ok {
			return v.site, v.ok, nil
		}
	}
	name, ok, err := h.s.md.TenantGet(RegistryTenant, "h/"+host)
	if err != nil {
		return "", false, err
	}
	if h.memo != nil {
		h.memo.putHost(index, host, memoHost{string(name), ok})
	}
	if !ok {
		return "", false, nil
	}
	return string(name), true, nil
}

// stat resolves name in site after a read barrier.
func (h *httpSites) stat(ctx context.Context, site, name string) (Attr, error) {
	if err := h.catchUp(ctx); err != nil {
		return Attr{}, err
	}
	if h.memo == nil {
		return h.statLocal(ctx, site, name)
	}
	index := h.memo.applied() // read after the barrier: see lookupMemo
	k := memoStatKey{site, name}
	if v, ok := h.memo.stat(index, k); ok {
		return v.a, v.err
	}
	a, err := h.statLocal(ctx, site, name)
	if decided(err) {
		h.memo.putStat(index, k, memoStat{a, err})
	}
	return a, err
}

// statLocal is stat from this node's metadata, which has passed the read
// barrier.
func (h *httpSites) statLocal(ctx context.Context, site, name string) (Attr, error) {
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

func (h *httpSites) Stat(ctx context.Context, site, name string) (httpserve.Entry, error) {
	a, err := h.stat(ctx, site, name)
	if err != nil {
		return httpserve.Entry{}, err
	}
	return httpEntry(&a), nil
}

func (h *httpSites) Open(ctx context.Context, site, name string) (httpserve.File, error) {
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
