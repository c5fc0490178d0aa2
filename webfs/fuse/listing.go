package fuse

import (
	"context"
	"sync"
	"time"

	"hastore/webfs"
)

// Directory listings answer lookups. When a directory sees a second
// lookup within the attribute timeout (a program going through its files:
// stat, open, create), the mount fetches its listing with attributes (one
// ReadDirPlus) and answers the directory's lookups from it, found or not,
// until it is AttrTimeout old; the kernel is told to keep what it was
// answered only for what is left of that time. So nothing answered is
// older than the attribute timeout, the promise the kernel's own caches
// keep.
//
// The mount's own changes show at once: creates put their new name in the
// listing, removals take it out, a rename drops both directories'
// listings, and an inode this mount changed after the listing was fetched
// (a commit, setattr, link) is looked up afresh instead.
//
// Bounds: directories of more than maxListing entries are never listed
// for this; listings, and the record of changed inodes, are dropped once
// they are AttrTimeout old.
const maxListing = 4096

type listing struct {
	at      time.Time // when its fetch began
	entries map[string]listEntry
}

type listEntry struct {
	a  webfs.Attr
	at time.Time // when the attributes were current
}

type lists struct {
	mu      sync.Mutex
	dirs    map[uint64]*listing
	touched map[uint64]time.Time // inode → when this mount last changed it
	misses  map[uint64]time.Time // directory → its last lookup that went to the cluster
	loading map[uint64]bool
	swept   time.Time
}

func newLists() *lists {
	return &lists{dirs: map[uint64]*listing{}, touched: map[uint64]time.Time{}, misses: map[uint64]time.Time{}, loading: map[uint64]bool{}}
}

// lookup answers name in directory dir from its listing: found says
// whether the name exists, and left how long the answer may be kept. ok
// is false when the listing cannot answer.
func (f *FS) listLookup(dir uint64, name string) (e listEntry, found bool, left time.Duration, ok bool) {
	l := f.lists
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := l.dirs[dir]
	if ls == nil {
		return e, false, 0, false
	}
	left = f.opt.AttrTimeout - time.Since(ls.at)
	if left <= 0 {
		delete(l.dirs, dir)
		return e, false, 0, false
	}
	e, found = ls.entries[name]
	if found {
		if t, ok := l.touched[e.a.Ino]; ok && !t.Before(e.at) {
			return e, false, 0, false // changed here since: ask
		}
	}
	return e, found, left, true
}

// wantListing reports whether a lookup in dir should fetch its listing:
// it is the second lookup there within the attribute timeout, and the
// directory is small enough. It then notes that a fetch is under way.
func (f *FS) wantListing(dir uint64, entries int64) bool {
	l := f.lists
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	last, seen := l.misses[dir]
	l.misses[dir] = now
	if !seen || now.Sub(last) > f.opt.AttrTimeout || entries > maxListing || l.loading[dir] {
		return false
	}
	l.loading[dir] = true
	return true
}

// fetchListing fetches dir's listing (wantListing said so).
func (f *FS) fetchListing(dir uint64) {
	at := time.Now()
	var es []webfs.Entry
	_, err := f.call("readdir", readTimeout, func(ctx context.Context) (err error) {
		es, err = f.tree.ReadDirPlus(ctx, dir)
		return err
	})
	f.lists.mu.Lock()
	delete(f.lists.loading, dir)
	f.lists.mu.Unlock()
	if err == nil {
		f.listed.Add(1)
		f.storeListing(dir, at, es)
	}
}

// storeListing keeps es, fetched from at on, as dir's listing.
func (f *FS) storeListing(dir uint64, at time.Time, es []webfs.Entry) {
	if len(es) > maxListing {
		return
	}
	ls := &listing{at: at, entries: make(map[string]listEntry, len(es))}
	for _, e := range es {
		ls.entries[e.Name] = listEntry{a: e.Attr, at: at}
	}
	l := f.lists
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.touched[dir]; ok && !t.Before(at) {
		// Changed through this mount while it was fetched: it may
		// lack the change.
		return
	}
	l.dirs[dir] = ls
	l.sweepLocked(f.opt.AttrTimeout)
}

// sweepLocked drops what is too old to be used, at most once per
// attribute timeout.
func (l *lists) sweepLocked(ttl time.Duration) {
	now := time.Now()
	if now.Sub(l.swept) < ttl {
		return
	}
	l.swept = now
	for dir, ls := range l.dirs {
		if now.Sub(ls.at) > ttl {
			delete(l.dirs, dir)
		}
	}
	for ino, t := range l.touched {
		if now.Sub(t) > ttl {
			delete(l.touched, ino)
		}
	}
	for dir, t := range l.misses {
		if now.Sub(t) > ttl {
			delete(l.misses, dir)
		}
	}
}

// touched notes that this mount changed inodes: listings fetched before
// do not answer for them.
func (f *FS) touched(inos ...uint64) {
	l := f.lists
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ino := range inos {
		if ino != 0 {
			l.touched[ino] = now
		}
	}
	l.sweepLocked(f.opt.AttrTimeout)
}

// listPut records a name this mount made in dir.
func (f *FS) listPut(dir uint64, name string, a webfs.Attr) {
	l := f.lists
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.touched[dir] = now
	if ls := l.dirs[dir]; ls != nil {
		ls.entries[name] = listEntry{a: a, at: now}
	}
}

// listDel records that this mount removed name from dir.
func (f *FS) listDel(dir uint64, name string) {
	l := f.lists
	l.mu.Lock()
	defer l.mu.Unlock()
	l.touched[dir] = time.Now()
	if ls := l.dirs[dir]; ls != nil {
		delete(ls.entries, name)
	}
}

// listDrop forgets dirs' listings.
func (f *FS) listDrop(dirs ...uint64) {
	l := f.lists
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, dir := range dirs {
		delete(l.dirs, dir)
		l.touched[dir] = now
	}
}
