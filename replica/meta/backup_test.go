package meta

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func propose(t *testing.T, ctx context.Context, s *Store, cmds ...Command) {
	t.Helper()
	for _, c := range cmds {
		if _, err := s.Propose(ctx, c); err != nil {
			t.Fatalf("propose %T: %v", c, err)
		}
	}
}

// A backup taken from one cluster and restored into another through
// RestoreBackup: every node of the target installs it; tenants come from
// the backup, internal tenants and placement from the target, reference
// counts from the backup; an object the backup does not reference becomes
// a tombstone; proposals go on applying after it; a second restore without
// force is refused, and one missing an object is refused before anything
// changes.
func init() {
	// As replica registers its own tenants in a running node.
	KeepOnRestore("hastore:creds")
	KeepOnRestore("hastore:stores")
}

func TestBackupRestoreIntoNewCluster(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	now := time.Now().UnixNano()

	src := newTestCluster(t, nil)
	s1 := src.start("s1", src.servers("s1"))
	src.leader()
	a, b, gone := testObject("a"), testObject("b"), testObject("gone")
	propose(t, ctx, s1.store,
		PutObject{Object: a, Now: now}, PutObject{Object: a, Now: now}, // refs 2
		PutObject{Object: b, Now: now},
		PutObject{Object: gone, Now: now}, DecRef{ID: gone.ID, Now: now}, // tombstone
		TenantPut{Tenant: "mail:user@example.test", Key: "m/1", Value: []byte("message 1")},
		TenantPut{Tenant: "site:www", Key: "i/1", Value: []byte("inode 1")},
		TenantPut{Tenant: "hastore:creds", Key: "c/old", Value: []byte("source credential")},
		TenantPut{Tenant: "hastore:sieve", Key: "user@example.test", Value: []byte("keep;")},
	)
	backup := filepath.Join(t.TempDir(), "meta.snap")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	index, _, err := s1.store.FSM().WriteBackup(f)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if index == 0 || index != s1.store.AppliedIndex() {
		t.Fatalf("backup at index %d, applied %d", index, s1.store.AppliedIndex())
	}
	// A change after the backup is not in it.
	propose(t, ctx, s1.store, TenantPut{Tenant: "site:www", Key: "i/2", Value: []byte("later")})

	dst := newTestCluster(t, nil)
	all := dst.servers("d1", "d2", "d3")
	for _, id := range []string{"d1", "d2", "d3"} {
		dst.start(id, all)
	}
	lead := dst.leader()
	// The target's own: an internal tenant, and the objects "put again"
	// with its placement, plus one the backup does not reference.
	pa, pb, extra := a, b, testObject("extra")
	pa.Placement = []string{"d1", "d2", "d3"}
	pb.Placement = []string{"d3", "d1", "d2"}
	propose(t, ctx, lead.store,
		TenantPut{Tenant: "hastore:stores", Key: "d1", Value: []byte("store id")},
		PutObject{Object: pa, Now: now + 1}, PutObject{Object: pb, Now: now + 1}, PutObject{Object: extra, Now: now + 1})

	// One missing object: refused, nothing changed.
	propose(t, ctx, lead.store, DecRef{ID: pb.ID, Now: now + 2})
	before := dump(t, lead.store.fsm, false)
	if _, err := lead.store.RestoreBackup(ctx, backup, t.TempDir(), false, time.Now()); err == nil || !strings.Contains(err.Error(), "not stored in this cluster") {
		t.Fatalf("restore with an object missing: %v", err)
	}
	equalDumps(t, "after a refused restore", before, dump(t, lead.store.fsm, false))
	propose(t, ctx, lead.store, PutObject{Object: pb, Now: now + 3})

	st, err := lead.store.RestoreBackup(ctx, backup, t.TempDir(), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st.Objects != 2 || st.TenantKeys != 3 || st.Tombstoned != 1 {
		t.Fatalf("restore stats %+v, want 2 objects, 3 tenant keys, 1 tombstoned", st)
	}
	dst.converge(ctx)
	for _, n := range dst.nodes {
		if n.restores.Load() == 0 {
			t.Fatalf("%s never installed the restored state", n.id)
		}
	}
	fsm := lead.store.FSM()
	check := func(o Object, refs int64, place []string) {
		t.Helper()
		got, ok, err := fsm.Object(o.ID)
		if err != nil || !ok {
			t.Fatalf("object %s: %v %v", o.ID, ok, err)
		}
		if got.Refs != refs || strings.Join(got.Placement, ",") != strings.Join(place, ",") {
			t.Fatalf("object %s: refs %d placement %v, want %d %v", o.ID, got.Refs, got.Placement, refs, place)
		}
	}
	check(a, 2, pa.Placement)
	check(b, 1, pb.Placement)
	check(extra, 0, extra.Placement)
	if _, ok, _ := fsm.Object(gone.ID); ok {
		t.Fatal("the backup's tombstone was restored")
	}
	if n, _ := fsm.ObjectCount(); n != 3 {
		t.Fatalf("object count %d, want 3 (a, b, the extra tombstone)", n)
	}
	for _, kv := range []struct{ tenant, key, want string }{
		{"mail:user@example.test", "m/1", "message 1"},
		{"site:www", "i/1", "inode 1"},
		{"site:www", "i/2", ""},
		{"hastore:creds", "c/old", ""},
		{"hastore:stores", "d1", "store id"},
		// Service data under a "hastore:" name is user data: restored.
		{"hastore:sieve", "user@example.test", "keep;"},
	} {
		v, ok, err := fsm.TenantGet(kv.tenant, kv.key)
		if err != nil || string(v) != kv.want || ok != (kv.want != "") {
			t.Fatalf("%s %s: %q %v %v, want %q", kv.tenant, kv.key, v, ok, err, kv.want)
		}
	}

	// Raft goes on: a proposal after the restore applies on every node.
	propose(t, ctx, lead.store, TenantPut{Tenant: "site:www", Key: "i/3", Value: []byte("after")}, DecRef{ID: a.ID, Now: now + 4})
	dst.converge(ctx)
	check(a, 1, pa.Placement)

	// Every node opens again after the restore: the raft log has no hole
	// below the restored index (the log refuses to open with one).
	for _, id := range []string{"d1", "d2", "d3"} {
		dst.stop(id)
		dst.start(id, nil)
	}
	lead = dst.leader()
	dst.converge(ctx)
	fsm = lead.store.FSM()
	check(a, 1, pa.Placement)

	if _, err := lead.store.RestoreBackup(ctx, backup, t.TempDir(), false, time.Now()); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("second restore without force: %v, want ErrNotEmpty", err)
	}
	if _, err := lead.store.RestoreBackup(context.Background(), backup, t.TempDir(), true, time.Now()); err != nil {
		t.Fatalf("restore with force: %v", err)
	}
	dst.converge(ctx)
	if _, ok, _ := fsm.TenantGet("site:www", "i/3"); ok {
		t.Fatal("forced restore kept the target's tenant data")
	}
	check(a, 2, pa.Placement)
}
