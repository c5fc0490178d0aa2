package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"hastore/mailserver"
	"hastore/mailserver/mailbox"
	"hastore/replica"
)

// `hastore admin user sieve set|get|del`: a gRPC service of its own with
// JSON messages (the "hastore-json" codec the outbound admin service
// registers), behind the node's usual interceptors: admin and node
// credentials reach it, mount credentials do not.

const (
	sieveService = "hastore.Sieve"
	sieveMethod  = "/" + sieveService + "/Admin"
	sieveCodec   = "hastore-json"
)

const sieveUsage = `  user sieve set ADDRESS FILE|-   check and store the user's Sieve filter (- reads standard input)
  user sieve get ADDRESS      print the user's Sieve filter
  user sieve del ADDRESS      remove it (and its vacation memory)
`

// sieveRequest is one operation: Op "set", "get" or "del".
type sieveRequest struct {
	Op      string `json:"op"`
	Address string `json:"address"`
	Script  []byte `json:"script,omitempty"`
}

type sieveReply struct {
	Script  []byte `json:"script,omitempty"`
	Message string `json:"message,omitempty"`
}

type sieveAdmin struct{ n *replica.Node }

func (s sieveAdmin) do(ctx context.Context, req *sieveRequest) (*sieveReply, error) {
	st := mailserver.ForNode(s.n)
	switch req.Op {
	case "set":
		if err := st.SetSieve(ctx, req.Address, req.Script); err != nil {
			return nil, err
		}
		return &sieveReply{Message: fmt.Sprintf("Sieve script of %s stored (%d bytes); it filters the next message delivered", req.Address, len(req.Script))}, nil
	case "get":
		b, err := st.GetSieve(ctx, req.Address)
		if err != nil {
			return nil, err
		}
		return &sieveReply{Script: b}, nil
	case "del":
		if err := st.DeleteSieve(ctx, req.Address); err != nil {
			return nil, err
		}
		return &sieveReply{Message: "Sieve script of " + req.Address + " removed"}, nil
	}
	return nil, fmt.Errorf("%w: unknown sieve operation %q", mailbox.ErrInvalid, req.Op)
}

func sieveGRPCErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mailbox.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, mailbox.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, mailbox.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// sieveRegister registers the Sieve admin service, for
// replica.NodeConfig.Register.
func sieveRegister(s grpc.ServiceRegistrar, n *replica.Node) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: sieveService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Admin",
			Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				req := new(sieveRequest)
				if err := dec(req); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, r any) (any, error) {
					rep, err := srv.(sieveAdmin).do(ctx, r.(*sieveRequest))
					return rep, sieveGRPCErr(err)
				}
				if icpt == nil {
					return h(ctx, req)
				}
				return icpt(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: sieveMethod}, h)
			},
		}},
		Metadata: "sieve",
	}, sieveAdmin{n})
}

// sieve runs `hastore admin user sieve set|get|del ADDRESS [FILE|-]`.
func (a *adminClient) sieve(ctx context.Context, args []string, stdin io.Reader, out io.Writer) error {
	usage := errors.New("usage:\n" + strings.TrimSuffix(sieveUsage, "\n"))
	if len(args) < 2 {
		return usage
	}
	req := &sieveRequest{Op: args[0], Address: args[1]}
	switch {
	case req.Op == "set" && len(args) == 3:
		r := stdin
		if args[2] != "-" {
			f, err := os.Open(args[2])
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		// Bounded: the store refuses scripts over sieve.Limits anyway.
		b, err := io.ReadAll(io.LimitReader(r, 1<<20))
		if err != nil {
			return fmt.Errorf("reading the script: %w", err)
		}
		req.Script = b
	case (req.Op == "get" || req.Op == "del") && len(args) == 2:
	default:
		return usage
	}
	rep := new(sieveReply)
	err := a.eachConn(func(c *grpc.ClientConn) error {
		return c.Invoke(ctx, sieveMethod, req, rep, grpc.CallContentSubtype(sieveCodec))
	})
	if err != nil {
		return err
	}
	if req.Op == "get" {
		_, err := out.Write(rep.Script)
		return err
	}
	fmt.Fprintln(out, rep.Message)
	return nil
}
