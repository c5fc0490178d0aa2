package mailserver

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"hastore/mailserver/mailbox"
	pb "hastore/proto/hastorepb"
	"hastore/replica"
	"hastore/replica/transport"
)

// Register adds the Mail admin gRPC service to a node's cluster port; pass
// it (with the other frontends') as replica.NodeConfig.Register.
func Register(s grpc.ServiceRegistrar, n *replica.Node) {
	pb.RegisterMailServer(s, &adminServer{n: n})
	registerMigrate(s, n) // migrate.go
}

type adminServer struct {
	pb.UnimplementedMailServer
	n *replica.Node
}

// store is looked up per call: the node's store may be made (NewStore)
// after the service is registered, which happens while the node starts.
func (a *adminServer) store() *mailbox.Store { return ForNode(a.n) }

// toStatus maps mailbox error kinds to gRPC codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	code := codes.Internal
	switch {
	case errors.Is(err, mailbox.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, mailbox.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, mailbox.ErrNotEmpty):
		code = codes.FailedPrecondition
	case errors.Is(err, mailbox.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, mailbox.ErrUnavailable):
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}

func (a *adminServer) AddDomain(ctx context.Context, r *pb.MailDomainRequest) (*pb.Empty, error) {
	// A single-label name ("example", "localhost") is no domain mail from
	// the Internet can reach: refused here, where an operator adds one.
	if d, err := mailbox.NormalizeDomain(r.GetDomain()); err == nil && !strings.Contains(d, ".") {
		return nil, status.Errorf(codes.InvalidArgument,
			"domain %q has a single label: a mail domain needs at least two, as in %s.com or %s.example.net (its MX record points at the cluster)", d, d, d)
	}
	err := a.store().AddDomain(ctx, r.GetDomain())
	if errors.Is(err, mailbox.ErrExists) {
		return nil, status.Errorf(codes.AlreadyExists, "domain %q already exists; nothing was changed ('hastore admin domain list' shows the domains)", r.GetDomain())
	}
	return &pb.Empty{}, toStatus(err)
}

func (a *adminServer) DelDomain(ctx context.Context, r *pb.MailDomainRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(a.store().DeleteDomain(ctx, r.GetDomain()))
}

func (a *adminServer) ListDomains(ctx context.Context, _ *pb.ListMailDomainsRequest) (*pb.ListMailDomainsReply, error) {
	ds, err := a.store().Domains(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListMailDomainsReply{}
	for _, d := range ds {
		out.Domains = append(out.Domains, &pb.MailDomainInfo{Domain: d.Name, Users: d.Users, CreatedUnixNano: d.Created})
	}
	return out, nil
}

func (a *adminServer) AddUser(ctx context.Context, r *pb.MailUserRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(a.store().AddUser(ctx, r.GetAddress(), r.GetPassword(), r.GetQuotaBytes()))
}

func (a *adminServer) SetPassword(ctx context.Context, r *pb.MailUserRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(a.store().SetPassword(ctx, r.GetAddress(), r.GetPassword()))
}

func (a *adminServer) SetQuota(ctx context.Context, r *pb.MailUserRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(a.store().SetQuota(ctx, r.GetAddress(), r.GetQuotaBytes()))
}

func (a *adminServer) DelUser(ctx context.Context, r *pb.MailUserRequest) (*pb.Empty, error) {
	err := a.store().DeleteUser(ctx, r.GetAddress())
	if errors.Is(err, mailbox.ErrNotFound) {
		domain := r.GetAddress()
		if i := strings.LastIndexByte(domain, '@'); i >= 0 {
			domain = domain[i+1:]
		}
		return nil, status.Errorf(codes.NotFound, "there is no user %q; nothing was deleted ('hastore admin user list %s' shows the domain's users)", r.GetAddress(), domain)
	}
	return &pb.Empty{}, toStatus(err)
}

func (a *adminServer) ListUsers(ctx context.Context, r *pb.ListMailUsersRequest) (*pb.ListMailUsersReply, error) {
	us, err := a.store().Users(ctx, r.GetDomain())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListMailUsersReply{}
	for _, u := range us {
		out.Users = append(out.Users, &pb.MailUserInfo{Address: u.Address, QuotaBytes: u.Quota, UsedBytes: u.Usage.Bytes,
			Messages: u.Usage.Messages, Disabled: u.Disabled, CreatedUnixNano: u.Created})
	}
	return out, nil
}

func (a *adminServer) AddAlias(ctx context.Context, r *pb.MailAliasRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(a.store().AddAlias(ctx, r.GetAddress(), r.GetTargets()))
}

func (a *adminServer) DelAlias(ctx context.Context, r *pb.MailAliasRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(a.store().DeleteAlias(ctx, r.GetAddress(), r.GetTargets()))
}

func (a *adminServer) ListAliases(ctx context.Context, r *pb.ListMailAliasesRequest) (*pb.ListMailAliasesReply, error) {
	as, err := a.store().Aliases(ctx, r.GetDomain())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListMailAliasesReply{}
	for _, x := range as {
		out.Aliases = append(out.Aliases, &pb.MailAliasInfo{Address: x.Address, Targets: x.Targets})
	}
	return out, nil
}

func (a *adminServer) DomainPolicy(ctx context.Context, r *pb.MailDomainPolicy) (*pb.MailDomainPolicy, error) {
	d, err := mailbox.NormalizeDomain(r.GetDomain())
	if err != nil {
		return nil, toStatus(err)
	}
	if r.GetDmarc() != "" {
		if err := a.store().SetDMARCPolicy(ctx, d, r.GetDmarc()); err != nil {
			return nil, toStatus(err)
		}
	}
	p, err := a.store().CurrentDMARCPolicy(ctx, d)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.MailDomainPolicy{Domain: d, Dmarc: p}, nil
}

// Client reaches the Mail admin service through any node of a cluster: a
// call goes to the node that answered last, and on to the next one if that
// node is unreachable (every call is safe to repeat). Errors carry the
// node's message. Safe for concurrent use.
type Client struct {
	nodes *transport.Failover[pb.MailClient]
}

// NewClient returns a client over connections to cluster nodes (dialled
// with the cluster key, see transport.DialOptions).
func NewClient(conns ...grpc.ClientConnInterface) *Client {
	var nodes []pb.MailClient
	for _, cc := range conns {
		nodes = append(nodes, pb.NewMailClient(cc))
	}
	return &Client{nodes: transport.NewFailover(nodes)}
}

func (c *Client) call(ctx context.Context, fn func(pb.MailClient) error) error {
	err := c.nodes.Call(ctx, fn)
	if s, ok := status.FromError(err); ok && err != nil {
		return errors.New(s.Message())
	}
	return err
}

// DomainInfo describes a domain.
type DomainInfo struct {
	Name    string
	Users   int64
	Created int64 // unix nanoseconds
}

// UserInfo describes a user.
type UserInfo struct {
	Address     string
	Quota, Used int64 // bytes
	Messages    int64
	Disabled    bool
	Created     int64 // unix nanoseconds
}

// AddDomain makes a domain local.
func (c *Client) AddDomain(ctx context.Context, d string) error {
	return c.call(ctx, func(n pb.MailClient) error { _, err := n.AddDomain(ctx, &pb.MailDomainRequest{Domain: d}); return err })
}

// DelDomain removes a domain without users.
func (c *Client) DelDomain(ctx context.Context, d string) error {
	return c.call(ctx, func(n pb.MailClient) error { _, err := n.DelDomain(ctx, &pb.MailDomainRequest{Domain: d}); return err })
}

// ListDomains lists the local domains.
func (c *Client) ListDomains(ctx context.Context) ([]DomainInfo, error) {
	var out []DomainInfo
	err := c.call(ctx, func(n pb.MailClient) error {
		r, err := n.ListDomains(ctx, &pb.ListMailDomainsRequest{})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, d := range r.GetDomains() {
			out = append(out, DomainInfo{Name: d.GetDomain(), Users: d.GetUsers(), Created: d.GetCreatedUnixNano()})
		}
		return nil
	})
	return out, err
}

// AddUser creates a user.
func (c *Client) AddUser(ctx context.Context, addr, password string, quota int64) error {
	return c.call(ctx, func(n pb.MailClient) error {
		_, err := n.AddUser(ctx, &pb.MailUserRequest{Address: addr, Password: password, QuotaBytes: quota})
		return err
	})
}

// SetPassword replaces a user's password.
func (c *Client) SetPassword(ctx context.Context, addr, password string) error {
	return c.call(ctx, func(n pb.MailClient) error {
		_, err := n.SetPassword(ctx, &pb.MailUserRequest{Address: addr, Password: password})
		return err
	})
}

// SetQuota sets a user's quota in bytes (0: none).
func (c *Client) SetQuota(ctx context.Context, addr string, quota int64) error {
	return c.call(ctx, func(n pb.MailClient) error {
		_, err := n.SetQuota(ctx, &pb.MailUserRequest{Address: addr, QuotaBytes: quota})
		return err
	})
}

// DelUser deletes a user and its mail.
func (c *Client) DelUser(ctx context.Context, addr string) error {
	return c.call(ctx, func(n pb.MailClient) error { _, err := n.DelUser(ctx, &pb.MailUserRequest{Address: addr}); return err })
}

// ListUsers lists the users of a domain ("" for all).
func (c *Client) ListUsers(ctx context.Context, domain string) ([]UserInfo, error) {
	var out []UserInfo
	err := c.call(ctx, func(n pb.MailClient) error {
		r, err := n.ListUsers(ctx, &pb.ListMailUsersRequest{Domain: domain})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, u := range r.GetUsers() {
			out = append(out, UserInfo{Address: u.GetAddress(), Quota: u.GetQuotaBytes(), Used: u.GetUsedBytes(),
				Messages: u.GetMessages(), Disabled: u.GetDisabled(), Created: u.GetCreatedUnixNano()})
		}
		return nil
	})
	return out, err
}

// Alias is an alias and its targets.
type Alias struct {
	Address string // local@domain, @domain (catch-all) or local@* (every domain)
	Targets []string
}

// AddAlias adds local targets to an alias, creating it.
func (c *Client) AddAlias(ctx context.Context, addr string, targets []string) error {
	return c.call(ctx, func(n pb.MailClient) error {
		_, err := n.AddAlias(ctx, &pb.MailAliasRequest{Address: addr, Targets: targets})
		return err
	})
}

// DelAlias removes targets from an alias, or the whole alias without any.
func (c *Client) DelAlias(ctx context.Context, addr string, targets []string) error {
	return c.call(ctx, func(n pb.MailClient) error {
		_, err := n.DelAlias(ctx, &pb.MailAliasRequest{Address: addr, Targets: targets})
		return err
	})
}

// ListAliases lists the aliases of a domain ("*": the cluster-wide ones;
// "": all).
func (c *Client) ListAliases(ctx context.Context, domain string) ([]Alias, error) {
	var out []Alias
	err := c.call(ctx, func(n pb.MailClient) error {
		r, err := n.ListAliases(ctx, &pb.ListMailAliasesRequest{Domain: domain})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, a := range r.GetAliases() {
			out = append(out, Alias{Address: a.GetAddress(), Targets: a.GetTargets()})
		}
		return nil
	})
	return out, err
}

// DomainPolicy sets a domain's DMARC policy for incoming mail ("reject",
// "none", "default"; "" leaves it) and returns the policy now in force.
func (c *Client) DomainPolicy(ctx context.Context, domain, dmarc string) (string, error) {
	var out string
	err := c.call(ctx, func(n pb.MailClient) error {
		r, err := n.DomainPolicy(ctx, &pb.MailDomainPolicy{Domain: domain, Dmarc: dmarc})
		out = r.GetDmarc()
		return err
	})
	return out, err
}
