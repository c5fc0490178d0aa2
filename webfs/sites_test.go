package webfs_test

import (
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"hastore/webfs"
)

func TestSites(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	s0, s2 := e.sites(0), e.sites(2)

	if err := s0.AddSite(ctx, "www.shop.test", []string{"shop.test", "www.shop.test", "alt.test"}); err != nil {
		t.Fatal(err)
	}
	// Another node resolves at once: its miss is confirmed with the leader.
	for _, host := range []string{"www.shop.test", "SHOP.test:8080", "alt.test."} {
		st, ok := s2.Resolve(host)
		if !ok || st.Name() != "www.shop.test" {
			t.Errorf("Resolve(%q) = %v, %v", host, st, ok)
		}
	}
	if _, ok := s2.Resolve("other.test"); ok {
		t.Error("unknown host resolved")
	}
	for _, tc := range []struct {
		name    string
		aliases []string
		want    syscall.Errno
	}{
		{"www.shop.test", nil, syscall.EEXIST},
		{"new.test", []string{"alt.test"}, syscall.EEXIST},
		{"shop.test", nil, syscall.EEXIST},
		{"Upper.test", nil, syscall.EINVAL},
		{"bad/name", nil, syscall.EINVAL},
		{"", nil, syscall.EINVAL},
		{"a..b", nil, syscall.EINVAL},
		{strings.Repeat("x", 249), nil, syscall.EINVAL},
		{"ok.test", []string{"bad alias"}, syscall.EINVAL},
	} {
		if err := s2.AddSite(ctx, tc.name, tc.aliases); errnoOf(err) != tc.want {
			t.Errorf("AddSite(%q, %q) = %v, want %v", tc.name, tc.aliases, err, tc.want)
		}
	}
	list, err := e.client.ListSites(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "www.shop.test" || !reflect.DeepEqual(list[0].Aliases, []string{"alt.test", "shop.test"}) || list[0].Created.IsZero() {
		t.Errorf("ListSites = %+v", list)
	}

	// A file created through node 0 is found at once through node 2.
	st0, _ := s0.Resolve("shop.test")
	if _, err := st0.PutFile(ctx, webfs.RootIno, "index.html", strings.NewReader("hi"), webfs.NewAttr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	st2, _ := s2.Resolve("shop.test")
	if a, err := st2.Lookup(ctx, webfs.RootIno, "index.html"); err != nil || a.Size != 2 {
		t.Errorf("lookup through another node: %+v, %v", a, err)
	}
	if _, a, err := st2.Walk(ctx, "/index.html"); err != nil || a.Size != 2 {
		t.Errorf("walk through another node: %+v, %v", a, err)
	}

	// A create repeated with the same inode number is recognised; with
	// another number it is EEXIST.
	rs := e.client.Site("www.shop.test")
	a1, err := rs.Create(ctx, webfs.RootIno, "once", webfs.NewAttr{Ino: 777})
	if err != nil || a1.Ino != 777 {
		t.Fatalf("create with ino: %+v, %v", a1, err)
	}
	if a2, err := rs.Create(ctx, webfs.RootIno, "once", webfs.NewAttr{Ino: 777}); err != nil || a2.Ino != 777 {
		t.Errorf("repeated create: %+v, %v", a2, err)
	}
	if _, err := rs.Create(ctx, webfs.RootIno, "once", webfs.NewAttr{Ino: 778}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("create over another's name: %v", err)
	}
	if _, err := rs.Create(ctx, webfs.RootIno, "twice", webfs.NewAttr{Ino: 777}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("create with an inode number in use: %v", err)
	}
	if _, err := e.client.Site("nosuch.test").GetAttr(ctx, webfs.RootIno); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetAttr in a missing site: %v", err)
	}

	// Deletion: host names stop resolving, handles refuse changes, and the
	// name can be used again for an empty site.
	if err := e.client.DelSite(ctx, "www.shop.test"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s0.Resolve("alt.test"); ok {
		t.Error("alias of a deleted site resolves")
	}
	if _, err := s0.Site(ctx, "www.shop.test"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Site after DelSite: %v", err)
	}
	if _, err := st0.Create(ctx, webfs.RootIno, "late", webfs.NewAttr{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("create through a handle of a deleted site: %v", err)
	}
	if err := e.client.DelSite(ctx, "www.shop.test"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second DelSite: %v", err)
	}
	if err := s2.AddSite(ctx, "www.shop.test", nil); err != nil {
		t.Fatal(err)
	}
	st, err := s0.Site(ctx, "www.shop.test")
	if err != nil {
		t.Fatal(err)
	}
	if des, err := st.ReadDir(ctx, webfs.RootIno); err != nil || len(des) != 0 {
		t.Errorf("re-added site: %v, %v", des, err)
	}
}
