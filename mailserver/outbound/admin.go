package outbound

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// The admin service is a gRPC service of its own, with JSON messages (a
// codec registered under the content subtype "hastore-json"), so that the
// queue needs no change to the cluster's protobuf definitions. It sits
// behind the node's usual interceptors: admin and node credentials reach
// it, mount credentials do not.

const (
	adminService = "hastore.Outbound"
	adminMethod  = "/" + adminService + "/Admin"
	codecName    = "hastore-json"
)

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)   { return json.Marshal(v) }
func (jsonCodec) Unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
func (jsonCodec) Name() string                    { return codecName }

func init() { encoding.RegisterCodec(jsonCodec{}) }

// AdminRequest is one admin operation: Op is "queue list", "queue show",
// "queue retry", "queue delete", "queue stats", "dkim create" or "dkim
// show".
type AdminRequest struct {
	Op        string `json:"op"`
	ID        string `json:"id,omitempty"`
	Domain    string `json:"domain,omitempty"`
	Selector  string `json:"selector,omitempty"`
	Algorithm string `json:"algorithm,omitempty"`
	Replace   bool   `json:"replace,omitempty"`
}

// AdminReply is its answer.
type AdminReply struct {
	Entries []Entry     `json:"entries,omitempty"`
	Entry   *Entry      `json:"entry,omitempty"`
	Key     *DKIMPublic `json:"key,omitempty"`
	Stats   *Stats      `json:"stats,omitempty"`
	Message string      `json:"message,omitempty"`
}

// DKIMPublic is what may be shown of a DKIM key.
type DKIMPublic struct {
	Domain    string    `json:"domain"`
	Selector  string    `json:"selector"`
	Algorithm string    `json:"algorithm"`
	Name      string    `json:"name"`   // DNS name of the TXT record
	Record    string    `json:"record"` // its value
	Zone      string    `json:"zone"`   // as a zone-file line
	Created   time.Time `json:"created"`
}

// Admin carries out admin operations on one node.
type Admin struct {
	C  Cluster
	KV KV
	// CatchUp waits until this node has applied what the cluster
	// committed (read-your-writes for an admin on another node); nil: none.
	CatchUp func(ctx context.Context) error
	// IsLocalDomain says whether a domain is the cluster's (DKIM keys are
	// made for those only); nil: any domain.
	IsLocalDomain func(ctx context.Context, domain string) (bool, error)
	Now           func() time.Time
}

// Do runs one operation.
func (a *Admin) Do(ctx context.Context, req *AdminRequest) (*AdminReply, error) {
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.CatchUp != nil {
		if err := a.CatchUp(ctx); err != nil {
			return nil, fmt.Errorf("outbound: this node cannot catch up with the cluster: %w", err)
		}
	}
	rec := records{c: a.C, kv: a.KV}
	keys := DKIMKeys{C: a.C, KV: a.KV}
	switch req.Op {
	case "queue list":
		es, _, err := rec.list()
		if err != nil {
			return nil, err
		}
		out := make([]Entry, len(es))
		for i, e := range es {
			out[i] = *e
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		return &AdminReply{Entries: out}, nil
	case "queue stats":
		st, err := QueueStats(a.KV)
		if err != nil {
			return nil, err
		}
		return &AdminReply{Stats: &st}, nil
	case "queue show":
		e, _, err := rec.get(req.ID)
		if err != nil {
			return nil, err
		}
		return &AdminReply{Entry: e}, nil
	case "queue retry", "queue delete":
		return a.retryOrDelete(ctx, rec, req)
	case "dkim create":
		d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(req.Domain)), ".")
		if d == "" {
			return nil, errors.New("outbound: dkim create needs a domain")
		}
		if a.IsLocalDomain != nil {
			ok, err := a.IsLocalDomain(ctx, d)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%w: %s is not a local mail domain ('hastore admin domain add %s' first)", ErrNotFound, d, d)
			}
		}
		k, err := NewDKIMKey(d, req.Selector, req.Algorithm, a.Now())
		if err != nil {
			return nil, err
		}
		if err := keys.Put(ctx, k, req.Replace); err != nil {
			return nil, err
		}
		pub, err := public(k)
		return &AdminReply{Key: pub}, err
	case "dkim show":
		k, err := keys.Get(req.Domain)
		if err != nil {
			return nil, err
		}
		pub, err := public(k)
		return &AdminReply{Key: pub}, err
	}
	return nil, fmt.Errorf("outbound: unknown admin operation %q", req.Op)
}

// retryOrDelete changes one entry. A worker may lease the entry between
// our read and our write (a deferred entry is tried every few seconds),
// so a conflict or a short lease is waited out instead of handed to the
// operator, who would only run the command again.
func (a *Admin) retryOrDelete(ctx context.Context, rec records, req *AdminRequest) (*AdminReply, error) {
	wait := time.NewTimer(0)
	defer wait.Stop()
	giveUp := a.Now().Add(adminWaitLimit)
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wait.C:
		}
		e, old, err := rec.get(req.ID)
		if err != nil {
			return nil, err
		}
		now := a.Now()
		if e.Lease.Node != "" && e.Lease.Until > now.UnixNano() {
			if now.After(giveUp) {
				return nil, fmt.Errorf("%w: entry %s is being worked by node %s right now (lease until %s); try again in a moment",
					ErrConflict, e.ID, e.Lease.Node, time.Unix(0, e.Lease.Until).UTC().Format(time.RFC3339))
			}
			wait.Reset(adminWaitStep)
			continue
		}
		if req.Op == "queue retry" {
			e.Next = now.UnixNano()
			if _, err := rec.swap(ctx, e.ID, old, e); err != nil {
				if errors.Is(err, ErrConflict) && now.Before(giveUp) {
					wait.Reset(adminWaitStep)
					continue
				}
				return nil, err
			}
			return &AdminReply{Message: fmt.Sprintf("entry %s will be tried at the next poll (%d recipients pending)", e.ID, len(e.Pending()))}, nil
		}
		if _, err := rec.swap(ctx, e.ID, old, nil); err != nil {
			if errors.Is(err, ErrConflict) && now.Before(giveUp) {
				wait.Reset(adminWaitStep)
				continue
			}
			return nil, err
		}
		if id, err := parseBody(e.Body); err == nil {
			if err := a.C.Delete(ctx, id); err != nil {
				return &AdminReply{Message: fmt.Sprintf("entry %s deleted without a DSN; its body stays until reconciled (%v)", e.ID, err)}, nil
			}
		}
		return &AdminReply{Message: fmt.Sprintf("entry %s deleted without a DSN (%d recipients were pending)", e.ID, len(e.Pending()))}, nil
	}
}

// adminWaitLimit bounds how long retry/delete waits out a worker's
// attempt; attempts normally take milliseconds to a few seconds.
const (
	adminWaitLimit = 30 * time.Second
	adminWaitStep  = 100 * time.Millisecond
)

func public(k *DKIMKey) (*DKIMPublic, error) {
	rec, err := k.Record()
	if err != nil {
		return nil, err
	}
	zone, err := k.ZoneLine()
	if err != nil {
		return nil, err
	}
	return &DKIMPublic{Domain: k.Domain, Selector: k.Selector, Algorithm: k.Algorithm, Name: k.RecordName(),
		Record: rec, Zone: zone, Created: time.Unix(0, k.Created).UTC()}, nil
}

// RegisterAdmin registers a's gRPC service on s.
func RegisterAdmin(s grpc.ServiceRegistrar, a *Admin) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: adminService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Admin",
			Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				req := new(AdminRequest)
				if err := dec(req); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, r any) (any, error) {
					rep, err := srv.(*Admin).Do(ctx, r.(*AdminRequest))
					return rep, grpcErr(err)
				}
				if icpt == nil {
					return h(ctx, req)
				}
				return icpt(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: adminMethod}, h)
			},
		}},
		Metadata: "outbound",
	}, a)
}

func grpcErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrConflict):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// CallAdmin runs req on the node at the other end of conn.
func CallAdmin(ctx context.Context, conn grpc.ClientConnInterface, req *AdminRequest) (*AdminReply, error) {
	rep := new(AdminReply)
	if err := conn.Invoke(ctx, adminMethod, req, rep, grpc.CallContentSubtype(codecName)); err != nil {
		return nil, err
	}
	return rep, nil
}
