package cluster

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/replica"
	"hastore/replica/transport"
)

// TestInProcessRevocation runs the credential record and revocation path
// inside the test process, so that the race detector sees the nodes'
// revocation lookups alongside Raft applying the revocation.
func TestInProcessRevocation(t *testing.T) {
	dir := t.TempDir()
	ca, err := transport.NewCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	cred := func(name string, req transport.CredRequest) (string, string) {
		issued, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(dir, name)
		if err := ca.WriteCredential(d, issued); err != nil {
			t.Fatal(err)
		}
		return d, issued.ID
	}
	nodeDir, _ := cred("node", transport.CredRequest{Role: transport.RoleNode, Hosts: []string{"127.0.0.1"}})
	server, client, err := transport.LoadNodeTLS(filepath.Join(nodeDir, transport.CertFile), filepath.Join(nodeDir, transport.KeyFile), filepath.Join(nodeDir, transport.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	c := StartInProcess(t, Options{Node: func(cfg *replica.NodeConfig) { cfg.ServerTLS, cfg.ClientTLS = server, client }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	conn := func(credDir, addr string) *grpc.ClientConn {
		tc, _, err := transport.LoadCredential(credDir)
		if err != nil {
			t.Fatal(err)
		}
		opts, err := transport.DialOptions(transport.Config{ClientTLS: tc})
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	adminDir, _ := cred("admin", transport.CredRequest{Role: transport.RoleAdmin})
	mountDir, mountID := cred("mount", transport.CredRequest{Role: transport.RoleMount, Sites: []string{"a.example"}})
	admin := pb.NewCredsClient(conn(adminDir, c.Addrs[0]))
	if _, err := admin.RecordCred(ctx, &pb.CredRecord{Id: mountID, Role: "mount", Sites: []string{"a.example"}}); err != nil {
		t.Fatalf("RecordCred: %v", err)
	}
	// No Sites service runs here: UNIMPLEMENTED means the call was let in.
	sync := func(cc *grpc.ClientConn) codes.Code {
		_, err := pb.NewSitesClient(cc).Sync(ctx, &pb.SiteRequest{Site: "a.example"})
		return status.Code(err)
	}
	mounts := make([]*grpc.ClientConn, len(c.Addrs))
	for i, a := range c.Addrs {
		mounts[i] = conn(mountDir, a)
		if got := sync(mounts[i]); got != codes.Unimplemented {
			t.Fatalf("node %d before revocation: %v", i, got)
		}
	}
	if _, err := admin.RevokeCred(ctx, &pb.RevokeCredRequest{Id: mountID}); err != nil {
		t.Fatalf("RevokeCred: %v", err)
	}
	for i := range c.Addrs {
		deadline := time.Now().Add(10 * time.Second)
		for sync(mounts[i]) != codes.Unauthenticated {
			if time.Now().After(deadline) {
				t.Fatalf("node %d still lets the revoked credential in", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	list, err := admin.ListCreds(ctx, &pb.ListCredsRequest{})
	if err != nil || len(list.GetCreds()) != 1 || list.GetCreds()[0].GetRevokedUnixNano() == 0 {
		t.Fatalf("ListCreds after revocation = %v, %v", list, err)
	}
}
