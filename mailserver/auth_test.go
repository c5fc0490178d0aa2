package mailserver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"hastore/mailserver"
	"hastore/mailserver/mailbox"
	pb "hastore/proto/hastorepb"
	"hastore/replica"
	"hastore/testing/cluster"
)

// A password verified on one node is known to the others (no second
// hash there), and a password change is seen everywhere: the old one
// fails on every node, the new one works.
func TestLoginCacheSharedAcrossNodes(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3, Node: func(cfg *replica.NodeConfig) { cfg.Register = mailserver.Register }})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stores []*mailbox.Store
	for _, n := range c.Nodes {
		stores = append(stores, mailserver.NewStore(n, mailbox.Options{
			Hash:     mailbox.HashParams{Memory: 4 << 10, Time: 1, Threads: 1},
			Throttle: mailbox.ThrottleOptions{FailDelay: -1},
		}))
	}
	a, b := stores[0], stores[1]
	if err := a.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	const user, pass = "carol@example.test", "carol-secret"
	if err := a.AddUser(ctx, user, pass, 0); err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		if err := s.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
	}
	client := net.ParseIP("192.0.2.10")
	login := func(s *mailbox.Store, password string) error {
		_, err := s.Authenticate(ctx, "imap", user, password, client)
		return err
	}
	if err := login(a, pass); err != nil {
		t.Fatal(err)
	}
	// The entry reaches the other nodes (asynchronously, batched).
	for i, s := range stores[1:] {
		deadline := time.Now().Add(10 * time.Second)
		for s.AuthStats().CacheEntries == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if s.AuthStats().CacheEntries == 0 {
			t.Fatalf("node %d never got the verified login", i+2)
		}
	}
	for i, s := range stores[1:] {
		before := s.AuthStats()
		if err := login(s, pass); err != nil {
			t.Fatalf("node %d: %v", i+2, err)
		}
		after := s.AuthStats()
		if after.Hashes != before.Hashes || after.CacheHits != before.CacheHits+1 {
			t.Errorf("node %d: the login was hashed again (before %+v, after %+v)", i+2, before, after)
		}
	}
	// A wrong password still costs a hash there.
	before := b.AuthStats()
	if err := login(b, pass+"x"); !errors.Is(err, mailbox.ErrAuthFailed) {
		t.Errorf("wrong password: %v", err)
	}
	if b.AuthStats().Hashes != before.Hashes+1 {
		t.Error("a wrong password was not hashed")
	}

	if err := a.SetPassword(ctx, user, "new-secret"); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		if err := s.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for s.AuthStats().CacheEntries != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := s.AuthStats().CacheEntries; n != 0 {
			t.Errorf("node %d keeps %d login cache entries after the password change", i+1, n)
		}
	}
	for i, s := range stores {
		if err := login(s, pass); !errors.Is(err, mailbox.ErrAuthFailed) {
			t.Errorf("node %d: old password after the change: %v", i+1, err)
		}
		if err := login(s, "new-secret"); err != nil {
			t.Errorf("node %d: new password: %v", i+1, err)
		}
	}

	// Only nodes may hand out entries: without the cluster key the call
	// is refused.
	cc, err := grpc.NewClient("passthrough:///"+c.Addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = pb.NewMailClient(cc).ShareCredentials(ctx, &pb.ShareCredentialsRequest{Credentials: []*pb.SharedCredential{{User: user, Mac: make([]byte, 32), ExpiresUnixNano: time.Now().Add(time.Hour).UnixNano()}}})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("ShareCredentials without the cluster key: %v", err)
	}
}

// The devices of one user logging in at once on all three nodes (a login
// storm: each node gets some of them) cost one password hash in the whole
// cluster: the node that starts hashing says so, and the others wait for
// its verified entry instead of hashing the same password.
func TestLoginStormOneHashPerUserInCluster(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3, Node: func(cfg *replica.NodeConfig) { cfg.Register = mailserver.Register }})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stores []*mailbox.Store
	for _, n := range c.Nodes {
		stores = append(stores, mailserver.NewStore(n, mailbox.Options{
			// Dear enough (a hundred ms or so) that the other nodes' logins
			// start while the first node hashes.
			Hash:     mailbox.HashParams{Memory: 16 << 10, Time: 8, Threads: 1},
			Throttle: mailbox.ThrottleOptions{FailDelay: -1},
		}))
	}
	if err := stores[0].AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	const user, pass = "dave@example.test", "dave-secret"
	if err := stores[0].AddUser(ctx, user, pass, 0); err != nil {
		t.Fatal(err)
	}
	var before int64
	for _, s := range stores {
		if err := s.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		before += s.AuthStats().Hashes
	}
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	login := func(s *mailbox.Store, i int) {
		defer wg.Done()
		if _, err := s.Authenticate(ctx, "imap", user, pass, net.ParseIP(fmt.Sprintf("192.0.2.%d", i+1))); err != nil {
			errs <- err
		}
	}
	// The first device reaches node 1 a moment before the others reach
	// every node, as in a storm where some node always starts first: the
	// others start once nodes 2 and 3 heard that node 1 is hashing.
	wg.Add(1)
	go login(stores[0], 0)
	for i, s := range stores[1:] {
		deadline := time.Now().Add(10 * time.Second)
		for s.AuthStats().PeerHashing == 0 && s.AuthStats().CacheEntries == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if st := s.AuthStats(); st.PeerHashing == 0 {
			t.Fatalf("node %d never heard that node 1 was hashing the password (%+v)", i+2, st)
		}
	}
	for i := 1; i < 12; i++ {
		wg.Add(1)
		go login(stores[i%3], i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var hashes int64
	for _, s := range stores {
		hashes += s.AuthStats().Hashes
	}
	if n := hashes - before; n != 1 {
		t.Errorf("%d password hashes in the cluster for 12 concurrent logins of one user over 3 nodes, want 1", n)
	}
}
