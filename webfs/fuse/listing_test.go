package fuse

import (
	"testing"
	"time"

	"hastore/webfs"
)

// TestListingAnswers: what a directory listing answers for, and when it
// must not (changes through this mount, age).
func TestListingAnswers(t *testing.T) {
	const dir = 7
	entries := func(names ...string) []webfs.Entry {
		var es []webfs.Entry
		for i, n := range names {
			es = append(es, webfs.Entry{Name: n, Attr: webfs.Attr{Ino: uint64(100 + i), Size: 1}})
		}
		return es
	}
	type check struct {
		name     string
		ok       bool // the listing answers
		found    bool
		wantSize int64
	}
	for _, tc := range []struct {
		what   string
		before func(f *FS) // before the listing is stored
		after  func(f *FS)
		checks []check
	}{
		{what: "fresh", checks: []check{{"a", true, true, 1}, {"b", true, true, 1}, {"zz", true, false, 0}}},
		{what: "created here after", after: func(f *FS) { f.listPut(dir, "new", webfs.Attr{Ino: 200, Size: 9}) },
			checks: []check{{"new", true, true, 9}, {"a", true, true, 1}}},
		{what: "removed here after", after: func(f *FS) { f.listDel(dir, "a") },
			checks: []check{{"a", true, false, 0}, {"b", true, true, 1}}},
		{what: "an inode changed here after", after: func(f *FS) { f.touched(100) },
			checks: []check{{"a", false, false, 0}, {"b", true, true, 1}}},
		{what: "renamed here after", after: func(f *FS) { f.listDrop(dir) },
			checks: []check{{"a", false, false, 0}, {"zz", false, false, 0}}},
		{what: "changed here while it was fetched", before: func(f *FS) { f.listPut(dir, "c", webfs.Attr{Ino: 300}) },
			checks: []check{{"a", false, false, 0}, {"c", false, false, 0}}},
		{what: "too old", after: func(f *FS) { time.Sleep(60 * time.Millisecond) },
			checks: []check{{"a", false, false, 0}, {"zz", false, false, 0}}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			f := New(nil, Options{AttrTimeout: 50 * time.Millisecond})
			at := time.Now()
			time.Sleep(time.Millisecond)
			if tc.before != nil {
				tc.before(f)
			}
			f.storeListing(dir, at, entries("a", "b"))
			if tc.after != nil {
				time.Sleep(time.Millisecond)
				tc.after(f)
			}
			for _, c := range tc.checks {
				e, found, left, ok := f.listLookup(dir, c.name)
				if ok != c.ok || (ok && (found != c.found || left <= 0 || found && e.a.Size != c.wantSize)) {
					t.Errorf("%s: ok %v found %v size %d left %v; want ok %v found %v size %d", c.name, ok, found, e.a.Size, left, c.ok, c.found, c.wantSize)
				}
			}
		})
	}
}

// TestWantListing: the second lookup in a directory within the attribute
// timeout fetches its listing, unless it is large or being fetched.
func TestWantListing(t *testing.T) {
	f := New(nil, Options{AttrTimeout: time.Second})
	if f.wantListing(1, 10) {
		t.Fatal("the first lookup fetched the listing")
	}
	if !f.wantListing(1, 10) {
		t.Fatal("the second lookup did not fetch the listing")
	}
	if f.wantListing(1, 10) {
		t.Fatal("a lookup while the listing is fetched fetched it again")
	}
	f.wantListing(2, maxListing+1)
	if f.wantListing(2, maxListing+1) {
		t.Fatal("a directory over maxListing entries was listed")
	}
}

// TestNameAfterRemoval: log lines about a file that lost its last name
// (a commit that finds it gone, say) name it by the path it had.
func TestNameAfterRemoval(t *testing.T) {
	n := &node{ino: 5}
	if got := n.name(); got != "inode 5" {
		t.Errorf("never named: %q", got)
	}
	n.lastPath.Store("site/dir/x.html")
	if got, want := n.name(), "/site/dir/x.html (inode 5, removed)"; got != want {
		t.Errorf("removed: %q, want %q", got, want)
	}
}
