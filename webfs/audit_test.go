package webfs_test

import (
	"bytes"
	"testing"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
	"hastore/webfs"
)

// TestContentRefs: the audit finds nothing on a healthy site, and finds
// both a chunk whose object lost its last reference and one shared by two
// files that holds a single reference — over gRPC, from another node.
func TestContentRefs(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	s := e.addSite(t, "audit.test")
	shared := bytes.Repeat([]byte("shared content "), 1000)
	own := bytes.Repeat([]byte("own content "), 1000)
	var chunks []webfs.ObjectID
	for _, f := range []struct {
		name string
		data []byte
	}{{"a", shared}, {"b", shared}, {"c", own}, {"small", []byte("inline")}} {
		a, err := s.PutFile(ctx, webfs.RootIno, f.name, bytes.NewReader(f.data), webfs.NewAttr{Mode: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range a.Chunks {
			chunks = append(chunks, c.ID)
		}
	}
	if len(chunks) != 3 || chunks[0] != chunks[1] {
		t.Fatalf("chunks %v: want a, b sharing one, c its own", chunks)
	}
	opts, err := transport.DialOptions(transport.Config{Key: e.c.Key})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+e.c.Addrs[2], opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	audit := func() *pb.ContentRefsReply {
		t.Helper()
		r, err := pb.NewSiteAuditClient(cc).ContentRefs(ctx, &pb.SiteRequest{Site: "audit.test"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := audit()
	if r.Inodes != 5 || r.Chunks != 3 || r.Objects != 2 || len(r.Problems) != 0 || r.Surplus != 0 {
		t.Fatalf("healthy site: %v", r)
	}
	// A reference the site does not use (a leak, or another user).
	if _, err := e.c.Nodes[1].Cluster.Put(ctx, own); err != nil {
		t.Fatal(err)
	}
	if r = audit(); r.Surplus != 1 || len(r.Problems) != 0 {
		t.Fatalf("with a surplus reference: %v", r)
	}
	if err := e.c.Nodes[0].Cluster.Delete(ctx, [32]byte(chunks[2])); err != nil {
		t.Fatal(err)
	}
	// Drop a reference the tree still counts on, as a double release would.
	for _, id := range []webfs.ObjectID{chunks[0], chunks[2]} {
		if err := e.c.Nodes[0].Cluster.Delete(ctx, [32]byte(id)); err != nil {
			t.Fatal(err)
		}
	}
	r = audit()
	if len(r.Problems) != 2 {
		t.Fatalf("after dropping references: %v", r)
	}
	want := map[webfs.ObjectID][2]int64{chunks[0]: {1, 2}, chunks[2]: {0, 1}}
	for _, p := range r.Problems {
		id := webfs.ObjectID(p.Object)
		if w, ok := want[id]; !ok || p.Refs != w[0] || p.Used != w[1] || p.Ino == 0 || p.Error != "" {
			t.Errorf("problem %v; want refs/used %v for %s", p, w, id)
		}
	}
	if _, err := pb.NewSiteAuditClient(cc).ContentRefs(ctx, &pb.SiteRequest{Site: "nosuch.test"}); err == nil {
		t.Error("audit of a site that does not exist succeeded")
	}
}
