//go:build linux

package fuse_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	webfuse "hastore/webfs/fuse"
)

// TestListingLookups: a mount going through a directory's files answers
// their lookups from one listing (listing.go), and still sees its own
// changes at once and another mount's within the attribute timeout.
func TestListingLookups(t *testing.T) {
	needFUSE(t)
	c := startCluster(t)
	const site = "listing.test"
	c.addSite(t, site)
	leader := c.Leader()
	mntA, srvA := c.mount(t, site, webfuse.Options{}, leader, (leader+1)%3, (leader+2)%3)
	mntB, _ := c.mount(t, site, webfuse.Options{}, (leader+1)%3, (leader+2)%3, leader)
	dirA, dirB := filepath.Join(mntA, "d"), filepath.Join(mntB, "d")
	if err := os.Mkdir(dirA, 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 60
	for i := range n {
		if err := os.WriteFile(filepath.Join(dirA, fmt.Sprintf("f%d", i)), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond) // the kernel's entries expire
	before := srvA.FS.Listed()
	for i := range n {
		if fi, err := os.Stat(filepath.Join(dirA, fmt.Sprintf("f%d", i))); err != nil || fi.Size() != 3 {
			t.Fatalf("stat f%d: %v, %v", i, fi, err)
		}
	}
	if got := srvA.FS.Listed() - before; got < 1 || got > 3 {
		t.Fatalf("stat of %d files fetched %d listings; want 1 (or a few if slow)", n, got)
	}

	// Own changes, at once.
	if err := os.WriteFile(filepath.Join(dirA, "new"), []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dirA, "new")); err != nil || fi.Size() != 5 {
		t.Fatalf("stat of a file just made: %v, %v", fi, err)
	}
	if err := os.Remove(filepath.Join(dirA, "f1")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dirA, "f1")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat of a file just removed: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dirA, "f4"), []byte("longer content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dirA, "f4")); err != nil || fi.Size() != 14 {
		t.Fatalf("stat of a file just rewritten: %v, %v", fi, err)
	}

	// Another mount's changes, within the attribute timeout (and slack).
	if err := os.Remove(filepath.Join(dirB, "f2")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "fromB"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "f3"), []byte("rewritten by B"), 0o644); err != nil {
		t.Fatal(err)
	}
	const limit = 3 * time.Second
	eventually(t, limit, "a removal through B, seen through A", func() error {
		if _, err := os.Stat(filepath.Join(dirA, "f2")); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("f2: %v", err)
		}
		return nil
	})
	eventually(t, limit, "a file made through B, seen through A", wantContent(filepath.Join(dirA, "fromB"), []byte("b")))
	eventually(t, limit, "a file rewritten through B, seen through A", wantContent(filepath.Join(dirA, "f3"), []byte("rewritten by B")))
}
