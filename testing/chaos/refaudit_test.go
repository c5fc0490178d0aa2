package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hastore/replica"
	tcluster "hastore/testing/cluster"
	"hastore/webfs"
)

// The reference audit passes a healthy site and fails one whose file lost
// a chunk reference, naming the object — against real nodes over gRPC.
func TestAuditRefs(t *testing.T) {
	c := tcluster.StartInProcess(t, tcluster.Options{Node: func(cfg *replica.NodeConfig) { cfg.Register = webfs.Register }})
	ctx := context.Background()
	sites := webfs.ForNode(c.Nodes[0])
	if err := sites.AddSite(ctx, siteName, nil); err != nil {
		t.Fatal(err)
	}
	site, err := sites.Site(ctx, siteName)
	if err != nil {
		t.Fatal(err)
	}
	a, err := site.PutFile(ctx, webfs.RootIno, "page", bytes.NewReader(bytes.Repeat([]byte("audit me "), 1000)), webfs.NewAttr{Mode: 0o644})
	if err != nil || len(a.Chunks) != 1 {
		t.Fatalf("put: %v, %d chunks", err, len(a.Chunks))
	}
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, c.Key, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &state{c: &cluster{}}
	for i, addr := range c.Addrs {
		s.c.ns = append(s.c.ns, &node{id: c.IDs[i], cluster: addr, keyFile: key})
	}
	var v verdict
	s.auditRefs(&v)
	if v.RefProblems != 0 || len(v.Errors) != 0 || len(v.RefAudit) != len(c.Addrs) {
		t.Fatalf("healthy site: %+v", v)
	}
	if err := c.Nodes[1].Cluster.Delete(ctx, [32]byte(a.Chunks[0].ID)); err != nil {
		t.Fatal(err)
	}
	v = verdict{}
	s.auditRefs(&v)
	if v.RefProblems != 1 || len(v.RefProblemList) != 1 || !strings.Contains(v.RefProblemList[0], a.Chunks[0].ID.String()) {
		t.Fatalf("after dropping the page's reference: %+v", v)
	}
	t.Log(v.RefProblemList[0])
}
