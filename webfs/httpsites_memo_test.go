package webfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"

	"hastore/webfs"
	"hastore/webfs/httpserve"
)

// readHTTP returns the content name has for the HTTP server, or its error.
func readHTTP(ctx context.Context, h httpserve.Sites, site, name string) ([]byte, error) {
	e, err := h.Stat(ctx, site, name)
	if err != nil {
		return nil, err
	}
	f, err := h.Open(ctx, site, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if f.Entry().ETag != e.ETag {
		return nil, fmt.Errorf("Stat gave ETag %s, Open %s (no change was in flight)", e.ETag, f.Entry().ETag)
	}
	b := make([]byte, f.Entry().Size)
	if _, err := f.ReadAt(b, 0); err != nil && len(b) > 0 {
		return nil, err
	}
	return b, nil
}

// The HTTP view of node 1 remembers its lookups while its applied Raft
// index stands still; changes acknowledged through node 0 — a file
// replaced, removed, created again, a new host name — must be seen by the
// very next request on node 1, however hot its memo is (other requests
// keep asking for the same names all along).
func TestHTTPSitesSeeAcknowledgedChanges(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	s := e.addSite(t, "memo.test")
	h := e.sites(1).HTTP()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.Resolve(ctx, "memo.test")
				h.Resolve(ctx, "alias.test")
				h.Stat(ctx, "memo.test", "/f.txt")
				h.Stat(ctx, "memo.test", "/g.txt")
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	for i := range 15 {
		want := []byte(fmt.Sprintf("version %d of f.txt", i))
		if _, err := s.PutFile(ctx, webfs.RootIno, "f.txt", bytes.NewReader(want), webfs.NewAttr{Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		got, err := readHTTP(ctx, h, "memo.test", "/f.txt")
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after writing %q through node 0, node 1 serves %q, %v", want, got, err)
		}
		if i%3 == 2 {
			if err := s.Unlink(ctx, webfs.RootIno, "f.txt"); err != nil {
				t.Fatal(err)
			}
			if _, err := h.Stat(ctx, "memo.test", "/f.txt"); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("f.txt removed through node 0; node 1's Stat: %v, want not found", err)
			}
		}
		g := []byte(fmt.Sprintf("g %d", i))
		if _, err := h.Stat(ctx, "memo.test", "/g.txt"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("before g.txt is created: %v, want not found", err)
		}
		if _, err := s.PutFile(ctx, webfs.RootIno, "g.txt", bytes.NewReader(g), webfs.NewAttr{Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		if got, err := readHTTP(ctx, h, "memo.test", "/g.txt"); err != nil || !bytes.Equal(got, g) {
			t.Fatalf("g.txt created through node 0; node 1 serves %q, %v", got, err)
		}
		if err := s.Unlink(ctx, webfs.RootIno, "g.txt"); err != nil {
			t.Fatal(err)
		}
	}

	if _, ok, err := h.Resolve(ctx, "alias.test"); err != nil || ok {
		t.Fatalf("alias.test before it is added: %v, %v", ok, err)
	}
	if err := e.sites(0).AddSite(ctx, "other.test", []string{"alias.test"}); err != nil {
		t.Fatal(err)
	}
	if site, ok, err := h.Resolve(ctx, "alias.test"); err != nil || !ok || site != "other.test" {
		t.Fatalf("alias.test added through node 0; node 1 resolves it to %q, %v, %v", site, ok, err)
	}
}
