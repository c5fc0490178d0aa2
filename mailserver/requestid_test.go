package mailserver_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"hastore/mailserver"
	pb "hastore/proto/hastorepb"
	"hastore/replica"
	"hastore/replica/transport"
	"hastore/testing/cluster"
)

// An admin call repeated under the same request ID — as `hastore admin`
// repeats it on the next node when the first one's answer is lost — gets
// the first call's answer, not "already exists"; a new call for the same
// user is still refused.
func TestAdminCallRepeatedUnderRequestID(t *testing.T) {
	c := cluster.StartInProcess(t, cluster.Options{Node: func(cfg *replica.NodeConfig) { cfg.Register = mailserver.Register }})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts, err := transport.DialOptions(transport.Config{Key: c.Key})
	if err != nil {
		t.Fatal(err)
	}
	clients := make([]pb.MailClient, len(c.Addrs))
	for i, addr := range c.Addrs {
		cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		clients[i] = pb.NewMailClient(cc)
	}
	if _, err := clients[0].AddDomain(ctx, &pb.MailDomainRequest{Domain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	user := &pb.MailUserRequest{Address: "ann@example.org", Password: "correct horse battery", QuotaBytes: 1 << 20}

	call := transport.WithOutgoingRequestID(ctx, transport.NewRequestID())
	for i := range clients {
		// Every node, leader and followers: the first applies, the
		// others are repeats answered with the first result.
		if _, err := clients[i].AddUser(call, user); err != nil {
			t.Fatalf("try %d of the same call (node %s): %v; want the first answer (created)", i+1, c.IDs[i], err)
		}
	}
	_, err = clients[1].AddUser(transport.WithOutgoingRequestID(ctx, transport.NewRequestID()), user)
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("a new call for an existing user: %v, want AlreadyExists", err)
	}
	_, err = clients[2].AddUser(ctx, user)
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("a call without request ID for an existing user: %v, want AlreadyExists", err)
	}

	bad := metadata.AppendToOutgoingContext(ctx, transport.RequestIDHeader, "not hex")
	if _, err := clients[0].AddUser(bad, user); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed request ID: %v, want InvalidArgument", err)
	}
}
