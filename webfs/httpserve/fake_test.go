package httpserve_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"hastore/webfs/httpserve"
	"hastore/webfs/httpserve/sitestest"
)

// memSites is an in-memory httpserve.Sites with the contract's semantics
// (snapshots, symlinks within the site, content-hash ETags) and hooks for
// injecting faults. Safe for concurrent use.
type memSites struct {
	mu    sync.RWMutex
	hosts map[string]string // host or alias → site
	trees map[string]map[string]*node

	opens, closes atomic.Int64
	// Faults, keyed by "site:name" (or host for Resolve); set before use.
	resolveErr error
	statErr    map[string]error
	openErr    map[string]error
	readErr    map[string]error // returned by ReadAt at or past readErrAt
	readErrAt  int64
	// beforeOpen, if set, runs at the start of every Open.
	beforeOpen func(site, name string)
	// statHook, if set, runs at the start of every Stat.
	statHook func(ctx context.Context, site, name string)
}

// node is one immutable version of a tree entry; a change replaces it.
type node struct {
	dir  bool
	link string
	size int64
	data []byte
	gen  func(p []byte, off int64) // contents of a generated file, instead of data
	etag string
	mod  time.Time
}

var modTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func newMem(f sitestest.Fixture) *memSites {
	m := &memSites{
		hosts:   map[string]string{},
		trees:   map[string]map[string]*node{},
		statErr: map[string]error{}, openErr: map[string]error{}, readErr: map[string]error{},
	}
	for _, s := range f.Sites {
		m.hosts[s.Name] = s.Name
		for _, a := range s.Aliases {
			m.hosts[a] = s.Name
		}
		m.trees[s.Name] = map[string]*node{"/": {dir: true, mod: modTime}}
		for name, data := range s.Files {
			m.Put(s.Name, name, data)
		}
		for _, d := range s.Dirs {
			m.mkdirAll(s.Name, d)
		}
		for name, target := range s.Symlinks {
			m.mkdirAll(s.Name, path.Dir(name))
			m.trees[s.Name][name] = &node{link: target, mod: modTime}
		}
	}
	return m
}

func etagOf(data []byte) string {
	h := sha256.Sum256(data)
	return `"` + hex.EncodeToString(h[:16]) + `"`
}

func (m *memSites) mkdirAll(site, dir string) {
	t := m.trees[site]
	for d := dir; d != "/"; d = path.Dir(d) {
		if n, ok := t[d]; !ok || !n.dir {
			t[d] = &node{dir: true, mod: modTime}
		}
	}
}

// Put creates or replaces a file; once it returns, the change is
// "acknowledged".
func (m *memSites) Put(site, name string, data []byte) {
	m.put(site, name, &node{size: int64(len(data)), data: data, etag: etagOf(data), mod: modTime})
}

// PutGen creates a file of size bytes whose contents gen produces.
func (m *memSites) PutGen(site, name string, size int64, etag string, gen func(p []byte, off int64)) {
	m.put(site, name, &node{size: size, gen: gen, etag: etag, mod: modTime})
}

func (m *memSites) put(site, name string, n *node) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.trees[site] == nil {
		m.trees[site] = map[string]*node{"/": {dir: true, mod: modTime}}
	}
	m.mkdirAll(site, path.Dir(name))
	m.trees[site][name] = n
}

func (m *memSites) Resolve(ctx context.Context, host string) (string, bool, error) {
	if m.resolveErr != nil {
		return "", false, m.resolveErr
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, ok := m.hosts[host]
	return s, ok, nil
}

// lookup resolves name in site, following symbolic links within the site.
func (m *memSites) lookup(site, name string) (*node, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	t := m.trees[site]
	if t == nil {
		return nil, fs.ErrNotExist
	}
	parts := strings.FieldsFunc(name, func(r rune) bool { return r == '/' })
	cur, hops := "/", 0
	for len(parts) > 0 {
		p := parts[0]
		parts = parts[1:]
		switch p {
		case ".":
			continue
		case "..":
			if cur == "/" {
				return nil, fs.ErrNotExist // leaves the site
			}
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, p)
		n, ok := t[next]
		if !ok {
			return nil, fs.ErrNotExist
		}
		if n.link != "" {
			if hops++; hops > 40 || strings.HasPrefix(n.link, "/") {
				return nil, fs.ErrNotExist
			}
			parts = append(strings.FieldsFunc(n.link, func(r rune) bool { return r == '/' }), parts...)
			continue
		}
		if !n.dir && len(parts) > 0 {
			return nil, fs.ErrNotExist
		}
		cur = next
	}
	return t[cur], nil
}

func entryOf(n *node) httpserve.Entry {
	if n.dir {
		return httpserve.Entry{IsDir: true, ModTime: n.mod}
	}
	return httpserve.Entry{Size: n.size, ModTime: n.mod, ETag: n.etag}
}

func (m *memSites) Stat(ctx context.Context, site, name string) (httpserve.Entry, error) {
	if m.statHook != nil {
		m.statHook(ctx, site, name)
	}
	if err := ctx.Err(); err != nil {
		return httpserve.Entry{}, err
	}
	if err := m.statErr[site+":"+name]; err != nil {
		return httpserve.Entry{}, err
	}
	n, err := m.lookup(site, name)
	if err != nil {
		return httpserve.Entry{}, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	return entryOf(n), nil
}

func (m *memSites) Open(ctx context.Context, site, name string) (httpserve.File, error) {
	if m.beforeOpen != nil {
		m.beforeOpen(site, name)
	}
	if err := m.openErr[site+":"+name]; err != nil {
		return nil, err
	}
	n, err := m.lookup(site, name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if n.dir {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a directory")}
	}
	m.opens.Add(1)
	return &memFile{m: m, ctx: ctx, n: n, readErr: m.readErr[site+":"+name], readErrAt: m.readErrAt}, nil
}

// open reports the Files opened and not yet closed.
func (m *memSites) open() int64 { return m.opens.Load() - m.closes.Load() }

type memFile struct {
	m         *memSites
	ctx       context.Context
	n         *node
	readErr   error
	readErrAt int64
	closed    atomic.Bool
}

func (f *memFile) Entry() httpserve.Entry { return entryOf(f.n) }

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if f.closed.Load() {
		panic("memFile: ReadAt after Close")
	}
	if err := f.ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if f.readErr != nil && off+int64(len(p)) > f.readErrAt {
		return 0, f.readErr
	}
	if off >= f.n.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.n.size-off))
	if f.n.gen != nil {
		f.n.gen(p[:n], off)
	} else {
		copy(p, f.n.data[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Close() error {
	if f.closed.Swap(true) {
		return fmt.Errorf("memFile: closed twice")
	}
	f.m.closes.Add(1)
	return nil
}

// pattern fills p with the bytes of a generated file at off: cheap,
// deterministic, and different at every offset modulo 2^32.
func pattern(p []byte, off int64) {
	for i := range p {
		x := uint32(off + int64(i))
		x *= 2654435761
		p[i] = byte(x >> 24)
	}
}
