package webfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"hastore/replica"
)

// MetaReader is the replicated metadata as webfs reads it: this node's
// applied state of the tenant keyspaces. *meta.Store provides it.
type MetaReader interface {
	TenantGet(tenant, key string) ([]byte, bool, error)
	// TenantScan calls fn for each key of tenant with the prefix, in key
	// order; fn must be quick (it runs inside a read transaction).
	TenantScan(tenant, prefix string, fn func(key string, value []byte) error) error
}

// Registry keys, in the tenant RegistryTenant:
//
//	s/<site>    site record (aliases, creation time)
//	h/<host>    the site a host name (the site's name or an alias) serves
//	x/<site>    the site is being deleted; its tree records are going
const (
	// RegistryTenant holds the list of sites and their host names.
	RegistryTenant = "webfs"
	// TenantPrefix + site name is the tenant that holds a site's tree.
	TenantPrefix = "site."
	// SiteNameMax is the longest site or alias name.
	SiteNameMax = 253 - len(TenantPrefix) // tenant names are at most 255 bytes
)

// Sites is every site's tree, served from one node: reads from the node's
// metadata replica, changes through Raft, content through the cluster. It
// is safe for concurrent use; every node may have one.
type Sites struct {
	c   *replica.Cluster
	md  MetaReader
	now func() time.Time
	// Log receives what cannot be returned (a chunk reference that could
	// not be dropped after a commit). Default: discarded.
	Log  *slog.Logger
	sync barrier
	// settling holds a token per batch of unknown outcome being settled.
	settling chan struct{}

	mu   sync.Mutex
	open map[string]*Site
}

// NewSites returns the sites of the cluster c whose metadata md reads;
// on a node, NewSites(n.Cluster, n.Meta).
func NewSites(c *replica.Cluster, md MetaReader) *Sites {
	s := &Sites{c: c, md: md, now: time.Now, Log: slog.New(slog.DiscardHandler), open: map[string]*Site{},
		settling: make(chan struct{}, maxSettling)}
	s.sync.run = c.CatchUp
	return s
}

// SiteInfo describes a site.
type SiteInfo struct {
	Name    string
	Aliases []string
	Created time.Time
}

// Sync waits until this node has applied every change acknowledged
// anywhere before the call (read-your-writes across nodes). Concurrent
// calls share one round-trip to the leader.
func (s *Sites) Sync(ctx context.Context) error { return s.catchUp(ctx) }

func (s *Sites) catchUp(ctx context.Context) error {
	return s.catchUpSince(ctx, time.Time{})
}

// catchUpSince is catchUp for a caller to whom any barrier that began at or
// after since will do (one HTTP request making several calls, say): it
// returns at once if such a barrier has completed.
func (s *Sites) catchUpSince(ctx context.Context, since time.Time) error {
	if err := s.sync.waitSince(ctx, since); err != nil {
		return fmt.Errorf("catching up with the cluster: %w", err)
	}
	return nil
}

// CheckSiteName validates a site or alias name: a lowercase host name of
// letters, digits, '-', '_' and dots.
func CheckSiteName(name string) error {
	if name == "" || len(name) > SiteNameMax {
		return fmt.Errorf("site name %q: want 1..%d bytes", name, SiteNameMax)
	}
	if name[0] == '.' || name[len(name)-1] == '.' || strings.Contains(name, "..") {
		return fmt.Errorf("site name %q: empty label", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("site name %q: only lowercase letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// NormalizeHost turns an HTTP Host header into the name Resolve looks up:
// port removed, lowercase, no trailing dot.
func NormalizeHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

func encodeSiteRecord(si *SiteInfo) []byte {
	b := []byte{1}
	b = binary.AppendVarint(b, unixNano(si.Created))
	b = binary.AppendUvarint(b, uint64(len(si.Aliases)))
	for _, a := range si.Aliases {
		b = binary.AppendUvarint(b, uint64(len(a)))
		b = append(b, a...)
	}
	return b
}

func decodeSiteRecord(name string, b []byte) (SiteInfo, error) {
	if len(b) == 0 || b[0] != 1 {
		return SiteInfo{}, fmt.Errorf("%w: site %q: unknown format", errCorrupt, name)
	}
	r := reader{b: b[1:]}
	si := SiteInfo{Name: name, Created: fromUnixNano(r.varint())}
	n := r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		si.Aliases = append(si.Aliases, string(r.bytes(SiteNameMax)))
	}
	if r.err != nil || len(r.b) != 0 {
		return SiteInfo{}, fmt.Errorf("%w: site %q", errCorrupt, name)
	}
	return si, nil
}

// AddSite creates a site with an empty root directory (mode 0755, owner
// 0:0), served under its name and each alias. It fails with EEXIST if the
// site exists or a name is taken by another site.
func (s *Sites) AddSite(ctx context.Context, name string, aliases []string) error {
	const op = "addsite"
	hosts := append([]string{name}, aliases...)
	for _, h := range hosts {
		if err := CheckSiteName(h); err != nil {
			return pathErr(op, name, fmt.Errorf("%w: %v", syscall.EINVAL, err))
		}
	}
	aliases = slices.Clone(aliases)
	slices.Sort(aliases)
	aliases = slices.Compact(aliases)
	aliases = slices.DeleteFunc(aliases, func(a string) bool { return a == name })
	now := s.now()
	err := s.update(ctx, func(t *txn) error {
		if _, ok := t.get(RegistryTenant, "s/"+name); ok {
			return syscall.EEXIST
		}
		if _, ok := t.get(RegistryTenant, "x/"+name); ok {
			return fmt.Errorf("%w: the site is still being deleted", syscall.EBUSY)
		}
		for _, h := range hosts {
			if other, ok := t.get(RegistryTenant, "h/"+h); ok {
				return fmt.Errorf("%w: host name %s belongs to site %s", syscall.EEXIST, h, other)
			}
		}
		si := SiteInfo{Name: name, Aliases: aliases, Created: now}
		t.put(RegistryTenant, "s/"+name, encodeSiteRecord(&si))
		for _, h := range hosts {
			t.put(RegistryTenant, "h/"+h, []byte(name))
		}
		root := Attr{Ino: RootIno, Mode: ModeDir | 0o755, Nlink: 2, Parent: RootIno, Atime: now, Mtime: now, Ctime: now}
		tenant := TenantPrefix + name
		if _, ok := t.get(tenant, inoKey(RootIno)); ok {
			return fmt.Errorf("%w: records of an earlier site %s are left", syscall.EBUSY, name)
		}
		t.put(tenant, inoKey(RootIno), encodeInode(&root))
		return nil
	})
	if err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// ListSites returns every site, by name, as of a read-your-writes barrier.
func (s *Sites) ListSites(ctx context.Context) ([]SiteInfo, error) {
	if err := s.catchUp(ctx); err != nil {
		return nil, err
	}
	var out []SiteInfo
	err := s.md.TenantScan(RegistryTenant, "s/", func(key string, v []byte) error {
		si, err := decodeSiteRecord(key[2:], v)
		if err != nil {
			return err
		}
		out = append(out, si)
		return nil
	})
	return out, err
}

// Resolve returns the site serving the host name (an HTTP Host header;
// the port is ignored). A miss is confirmed against the cluster before it
// is believed, so a site added anywhere is found on every node.
func (s *Sites) Resolve(host string) (*Site, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.ResolveContext(ctx, host)
}

// ResolveContext is Resolve with a context for the confirmation of a miss.
func (s *Sites) ResolveContext(ctx context.Context, host string) (*Site, bool) {
	host = NormalizeHost(host)
	if CheckSiteName(host) != nil {
		return nil, false
	}
	for caughtUp := false; ; caughtUp = true {
		name, ok, err := s.md.TenantGet(RegistryTenant, "h/"+host)
		if err == nil && ok {
			return s.handle(string(name)), true
		}
		if caughtUp || s.catchUp(ctx) != nil {
			return nil, false
		}
	}
}

// Site returns the named site, or ENOENT.
func (s *Sites) Site(ctx context.Context, name string) (*Site, error) {
	if CheckSiteName(name) != nil {
		return nil, pathErr("site", name, syscall.ENOENT)
	}
	for caughtUp := false; ; caughtUp = true {
		_, ok, err := s.md.TenantGet(RegistryTenant, "s/"+name)
		if err != nil {
			return nil, pathErr("site", name, err)
		}
		if ok {
			return s.handle(name), nil
		}
		if caughtUp {
			return nil, pathErr("site", name, syscall.ENOENT)
		}
		if err := s.catchUp(ctx); err != nil {
			return nil, pathErr("site", name, err)
		}
	}
}

func (s *Sites) handle(name string) *Site {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.open[name]
	if st == nil {
		st = &Site{sites: s, name: name, tenant: TenantPrefix + name}
		s.open[name] = st
	}
	return st
}

// delBatch bounds the records one deletion batch of DelSite removes.
const delBatch = 512

// DelSite deletes a site: first its registration (its host names stop
// resolving at once and its tree refuses changes), then its tree records
// in batches, dropping the content references. If interrupted, calling it
// again finishes the job; until then AddSite of the name fails with EBUSY.
func (s *Sites) DelSite(ctx context.Context, name string) error {
	const op = "delsite"
	if CheckSiteName(name) != nil {
		return pathErr(op, name, syscall.ENOENT)
	}
	err := s.update(ctx, func(t *txn) error {
		v, ok := t.get(RegistryTenant, "s/"+name)
		if !ok {
			if _, deleting := t.get(RegistryTenant, "x/"+name); deleting {
				return nil // resume
			}
			return syscall.ENOENT
		}
		si, err := decodeSiteRecord(name, v)
		if err != nil {
			return err
		}
		t.del(RegistryTenant, "s/"+name)
		for _, h := range append([]string{name}, si.Aliases...) {
			if owner, ok := t.get(RegistryTenant, "h/"+h); ok && string(owner) == name {
				t.del(RegistryTenant, "h/"+h)
			}
		}
		t.put(RegistryTenant, "x/"+name, []byte{1})
		return nil
	})
	if err != nil {
		return pathErr(op, name, err)
	}
	s.mu.Lock()
	delete(s.open, name)
	s.mu.Unlock()
	tenant := TenantPrefix + name
	for {
		// A batch of keys, bounded in count and in bytes: the batch
		// checks each value it deletes.
		var keys []string
		size := 0
		err := s.md.TenantScan(tenant, "", func(key string, v []byte) error {
			keys = append(keys, key)
			if size += len(key) + len(v); len(keys) >= delBatch || size >= 256<<10 {
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return pathErr(op, name, err)
		}
		if len(keys) == 0 {
			break
		}
		err = s.update(ctx, func(t *txn) error {
			for _, k := range keys {
				v, ok := t.get(tenant, k)
				if !ok {
					continue
				}
				if strings.HasPrefix(k, "i/") {
					// Chunks are dropped once, by the txn whose checks
					// saw exactly this record.
					if a, err := decodeInode(0, v); err == nil {
						for _, c := range a.Chunks {
							t.drop = append(t.drop, c.ID)
						}
					}
				}
				t.del(tenant, k)
			}
			return nil
		})
		if err != nil {
			return pathErr(op, name, err)
		}
	}
	err = s.update(ctx, func(t *txn) error {
		t.del(RegistryTenant, "x/"+name)
		return nil
	})
	if err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

var errStop = errors.New("stop")

// release drops one reference to each object, after the metadata change
// that stopped using them committed, and even if the caller has gone.
func (s *Sites) release(ids []ObjectID) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.c.Delete(ctx, [32]byte(id)); err != nil {
				s.Log.Warn("webfs: dropping a content reference failed; it leaks", "object", id, "err", err)
			}
		}()
	}
	wg.Wait()
}

// barrier runs catch-ups on behalf of concurrent callers: a caller joins
// the round that has not started yet, so every caller's round begins after
// its call (as a read barrier must), and a burst of callers costs one or
// two round-trips to the leader rather than one each.
type barrier struct {
	run func(ctx context.Context) error

	mu      sync.Mutex
	pending *round
	running bool
	// doneSince is when the latest successful round began: a caller that
	// needs a barrier begun after t is served if t ≤ doneSince.
	doneSince time.Time
}

type round struct {
	done chan struct{}
	err  error
}

// waitSince waits for a round that begins after the call, or returns at
// once if a round that began at or after since (not zero) has succeeded.
func (b *barrier) waitSince(ctx context.Context, since time.Time) error {
	b.mu.Lock()
	if !since.IsZero() && !since.After(b.doneSince) {
		b.mu.Unlock()
		return nil
	}
	r := b.pending
	if r == nil {
		r = &round{done: make(chan struct{})}
		b.pending = r
	}
	if !b.running {
		b.running = true
		go b.loop()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *barrier) loop() {
	for {
		b.mu.Lock()
		r := b.pending
		b.pending = nil
		if r == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		began := time.Now()
		r.err = b.run(ctx)
		cancel()
		if r.err == nil {
			b.mu.Lock()
			if began.After(b.doneSince) {
				b.doneSince = began
			}
			b.mu.Unlock()
		}
		close(r.done)
	}
}
