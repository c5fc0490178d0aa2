package mailserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
	"hastore/replica"
	"hastore/replica/meta"
	"hastore/replica/transport"
)

// The MailMigrate admin service: accounts (disable, imported password
// hashes) and mail import. Its requests and replies are JSON documents in
// a protobuf BytesValue, so that it needs no change of the shared
// proto/hastore.proto (and its generated code) while other services grow
// there; the cluster port's checks (cluster credentials, request IDs)
// apply to it like to every service. Its types are below; both sides are
// this package, so they change together.

const migrateService = "hastore.MailMigrate"

type (
	// MigrateUser is the request of SetDisabled, AddUserHash, SetPasswordHash.
	MigrateUser struct {
		Address  string `json:"address"`
		Disabled bool   `json:"disabled,omitempty"`
		Hash     string `json:"hash,omitempty"`
		Quota    int64  `json:"quota,omitempty"`
	}
	// MigrateMailbox names a mailbox (EnsureMailbox, Imported) and, in
	// the reply of EnsureMailbox, says what it is.
	MigrateMailbox struct {
		Address     string   `json:"address"`
		Name        string   `json:"name,omitempty"`
		ID          uint64   `json:"id,omitempty"`
		UIDValidity uint32   `json:"uidvalidity,omitempty"`
		UIDNext     uint32   `json:"uidnext,omitempty"`
		Messages    uint32   `json:"messages,omitempty"`
		Keys        []string `json:"keys,omitempty"` // Imported: the source keys asked about
		UIDs        []uint32 `json:"uids,omitempty"` // Imported reply: their UIDs, 0 if not imported
	}
	// MigrateList asks for a user's mailboxes (Mailboxes) or a page of a
	// mailbox's messages (Messages: UIDs above After, at most Limit).
	MigrateList struct {
		Address string `json:"address"`
		Mailbox uint64 `json:"mailbox,omitempty"`
		After   uint32 `json:"after,omitempty"`
		Limit   int    `json:"limit,omitempty"`
	}
	// MigrateListReply answers MigrateList.
	MigrateListReply struct {
		Mailboxes []MigrateMailbox       `json:"mailboxes,omitempty"`
		Messages  []MigrateStoredMessage `json:"messages,omitempty"`
	}
	// MigrateStoredMessage is one message as stored, for an export.
	MigrateStoredMessage struct {
		UID          uint32      `json:"uid"`
		Object       meta.BlobID `json:"object"`
		Size         int64       `json:"size"`
		InternalDate time.Time   `json:"internaldate"`
		Flags        []string    `json:"flags,omitempty"`
	}
	// MigrateImport is the request of Import.
	MigrateImport struct {
		Address     string           `json:"address"`
		Mailbox     string           `json:"mailbox"`
		UIDValidity uint32           `json:"uidvalidity,omitempty"`
		Messages    []MigrateMessage `json:"messages"`
	}
	// MigrateMessage is one message of an Import; Object is held by the
	// caller (one reference, from PutObject), and the call consumes it.
	MigrateMessage struct {
		Key          string      `json:"key"`
		UID          uint32      `json:"uid,omitempty"`
		Object       meta.BlobID `json:"object"`
		Size         int64       `json:"size"`
		InternalDate time.Time   `json:"internaldate"`
		Info         []byte      `json:"info"`
		Flags        []string    `json:"flags,omitempty"`
	}
	// MigrateImportReply says what became of each message.
	MigrateImportReply struct {
		Results []MigrateResult `json:"results"`
	}
	// MigrateResult is one message's outcome.
	MigrateResult struct {
		UID         uint32 `json:"uid"`
		UIDValidity uint32 `json:"uidvalidity"`
		Existed     bool   `json:"existed,omitempty"`
		Error       string `json:"error,omitempty"`
	}
)

type migrateServer struct{ n *replica.Node }

func (m migrateServer) store() *mailbox.Store { return ForNode(m.n) }

// handlers maps each method to its work on a decoded request.
func (m migrateServer) handle(ctx context.Context, method string, in []byte) (any, error) {
	s := m.store()
	switch method {
	case "SetDisabled", "AddUserHash", "SetPasswordHash":
		var r MigrateUser
		if err := json.Unmarshal(in, &r); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: bad request: %v", method, err)
		}
		var err error
		switch method {
		case "SetDisabled":
			err = s.SetDisabled(ctx, r.Address, r.Disabled)
		case "AddUserHash":
			err = s.AddUserHash(ctx, r.Address, r.Hash, r.Quota)
		default:
			err = s.SetPasswordHash(ctx, r.Address, r.Hash)
		}
		return struct{}{}, toStatus(err)
	case "EnsureMailbox", "Imported":
		var r MigrateMailbox
		if err := json.Unmarshal(in, &r); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: bad request: %v", method, err)
		}
		if method == "Imported" {
			uids, err := s.ImportedUIDs(ctx, r.Address, r.ID, r.Keys)
			if err != nil {
				return nil, toStatus(err)
			}
			return MigrateMailbox{Address: r.Address, ID: r.ID, UIDs: uids}, nil
		}
		mb, err := s.EnsureMailbox(ctx, r.Address, r.Name)
		if err != nil {
			return nil, toStatus(err)
		}
		return MigrateMailbox{Address: r.Address, Name: mb.Name, ID: mb.ID, UIDValidity: mb.UIDValidity, UIDNext: mb.UIDNext, Messages: mb.Messages}, nil
	case "Mailboxes", "Messages":
		var r MigrateList
		if err := json.Unmarshal(in, &r); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: bad request: %v", method, err)
		}
		a, err := mailbox.NormalizeAddress(r.Address)
		if err != nil {
			return nil, toStatus(err)
		}
		if err := s.CatchUp(ctx); err != nil {
			return nil, toStatus(err)
		}
		var out MigrateListReply
		if method == "Mailboxes" {
			if _, ok, err := s.View().User(a); err != nil || !ok {
				return nil, toStatus(errors.Join(err, fmt.Errorf("%w: user %s", mailbox.ErrNotFound, a)))
			}
			mbs, err := s.Mailboxes(a)
			if err != nil {
				return nil, toStatus(err)
			}
			for _, mb := range mbs {
				out.Mailboxes = append(out.Mailboxes, MigrateMailbox{Address: a, Name: mb.Name, ID: mb.ID, UIDValidity: mb.UIDValidity, UIDNext: mb.UIDNext, Messages: mb.Messages})
			}
			return out, nil
		}
		limit := r.Limit
		if limit <= 0 || limit > migrateListMax {
			limit = migrateListMax
		}
		errFull := errors.New("page full")
		err = s.EachMessage(a, r.Mailbox, func(m mailstate.MailMessage) error {
			if m.UID <= r.After {
				return nil
			}
			if len(out.Messages) == limit {
				return errFull
			}
			out.Messages = append(out.Messages, MigrateStoredMessage{UID: m.UID, Object: m.Object, Size: m.Size,
				InternalDate: time.Unix(0, m.InternalDate).In(time.FixedZone("", int(m.Zone))), Flags: m.Flags})
			return nil
		})
		if err != nil && !errors.Is(err, errFull) {
			return nil, toStatus(err)
		}
		return out, nil
	case "Import":
		var r MigrateImport
		if err := json.Unmarshal(in, &r); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "Import: bad request: %v", err)
		}
		msgs := make([]mailbox.ImportMessage, len(r.Messages))
		for i, x := range r.Messages {
			msgs[i] = mailbox.ImportMessage{Key: x.Key, UID: x.UID, Object: x.Object, Size: x.Size, InternalDate: x.InternalDate, Info: x.Info, Flags: x.Flags}
		}
		res, err := s.ImportMessages(ctx, r.Address, r.Mailbox, r.UIDValidity, msgs)
		if err != nil {
			return nil, toStatus(err)
		}
		out := MigrateImportReply{Results: make([]MigrateResult, len(res))}
		for i, x := range res {
			out.Results[i] = MigrateResult{UID: x.UID, UIDValidity: x.UIDValidity, Existed: x.Existed}
			if x.Err != nil {
				out.Results[i].Error = x.Err.Error()
			}
		}
		return out, nil
	}
	return nil, status.Errorf(codes.Unimplemented, "MailMigrate has no method %q", method)
}

var migrateMethods = []string{"SetDisabled", "AddUserHash", "SetPasswordHash", "EnsureMailbox", "Imported", "Import", "Mailboxes", "Messages"}

// migrateListMax bounds a page of Messages (about 200 bytes each in JSON,
// well under the reply limit).
const migrateListMax = 5000

// registerMigrate adds the MailMigrate service to a node's cluster port.
func registerMigrate(s grpc.ServiceRegistrar, n *replica.Node) {
	desc := grpc.ServiceDesc{ServiceName: migrateService, HandlerType: (*any)(nil)}
	for _, name := range migrateMethods {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{
			MethodName: name,
			Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.BytesValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, req any) (any, error) {
					out, err := srv.(migrateServer).handle(ctx, name, req.(*wrapperspb.BytesValue).GetValue())
					if err != nil {
						return nil, err
					}
					b, err := json.Marshal(out)
					if err != nil {
						return nil, status.Errorf(codes.Internal, "%s: encoding the reply: %v", name, err)
					}
					return wrapperspb.Bytes(b), nil
				}
				if icpt == nil {
					return h(ctx, in)
				}
				return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + migrateService + "/" + name}, h)
			},
		})
	}
	s.RegisterService(&desc, migrateServer{n: n})
}

// MigrateClient calls the MailMigrate service through any node of a
// cluster, failing over like Client.
type MigrateClient struct {
	nodes *transport.Failover[grpc.ClientConnInterface]
}

// NewMigrateClient returns a client over connections to cluster nodes.
func NewMigrateClient(conns ...grpc.ClientConnInterface) *MigrateClient {
	return &MigrateClient{nodes: transport.NewFailover(conns)}
}

// call makes one logical call (one request ID, kept across nodes, so that
// a repeat after a lost answer is answered from the first, never applied
// twice).
func (c *MigrateClient) call(ctx context.Context, method string, req, reply any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx = transport.WithOutgoingRequestID(ctx, transport.NewRequestID())
	out := new(wrapperspb.BytesValue)
	err = c.nodes.Call(ctx, func(cc grpc.ClientConnInterface) error {
		return cc.Invoke(ctx, "/"+migrateService+"/"+method, wrapperspb.Bytes(b), out)
	})
	if s, ok := status.FromError(err); ok && err != nil {
		return &MigrateError{Code: s.Code(), Msg: s.Message()}
	}
	if err != nil {
		return err
	}
	if reply != nil {
		if err := json.Unmarshal(out.GetValue(), reply); err != nil {
			return fmt.Errorf("%s: unreadable reply: %v", method, err)
		}
	}
	return nil
}

// MigrateError is a MailMigrate call's failure as the node reported it.
type MigrateError struct {
	Code codes.Code
	Msg  string
}

func (e *MigrateError) Error() string { return e.Msg }

// Decided reports whether err means the cluster refused the call, so that
// it changed nothing (as opposed to an outcome not known).
func Decided(err error) bool {
	var me *MigrateError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Code {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition:
		return true
	}
	return false
}

// SetDisabled disables or enables a user.
func (c *MigrateClient) SetDisabled(ctx context.Context, addr string, disabled bool) error {
	return c.call(ctx, "SetDisabled", MigrateUser{Address: addr, Disabled: disabled}, nil)
}

// AddUserHash creates a user with an imported password hash.
func (c *MigrateClient) AddUserHash(ctx context.Context, addr, hash string, quota int64) error {
	return c.call(ctx, "AddUserHash", MigrateUser{Address: addr, Hash: hash, Quota: quota}, nil)
}

// SetPasswordHash sets a user's password to an imported hash.
func (c *MigrateClient) SetPasswordHash(ctx context.Context, addr, hash string) error {
	return c.call(ctx, "SetPasswordHash", MigrateUser{Address: addr, Hash: hash}, nil)
}

// EnsureMailbox returns a user's mailbox, creating it if missing.
func (c *MigrateClient) EnsureMailbox(ctx context.Context, addr, name string) (MigrateMailbox, error) {
	var r MigrateMailbox
	err := c.call(ctx, "EnsureMailbox", MigrateMailbox{Address: addr, Name: name}, &r)
	return r, err
}

// Imported returns the UIDs of the keys an earlier import brought into a
// mailbox (0: not imported).
func (c *MigrateClient) Imported(ctx context.Context, addr string, mailbox uint64, keys []string) ([]uint32, error) {
	var r MigrateMailbox
	if err := c.call(ctx, "Imported", MigrateMailbox{Address: addr, ID: mailbox, Keys: keys}, &r); err != nil {
		return nil, err
	}
	if len(r.UIDs) != len(keys) {
		return nil, fmt.Errorf("Imported: %d answers for %d keys", len(r.UIDs), len(keys))
	}
	return r.UIDs, nil
}

// Mailboxes lists a user's mailboxes.
func (c *MigrateClient) Mailboxes(ctx context.Context, addr string) ([]MigrateMailbox, error) {
	var r MigrateListReply
	err := c.call(ctx, "Mailboxes", MigrateList{Address: addr}, &r)
	return r.Mailboxes, err
}

// Messages returns the messages of a mailbox with UIDs above after, in
// UID order, a page at a time (empty: no more).
func (c *MigrateClient) Messages(ctx context.Context, addr string, mailbox uint64, after uint32) ([]MigrateStoredMessage, error) {
	var r MigrateListReply
	err := c.call(ctx, "Messages", MigrateList{Address: addr, Mailbox: mailbox, After: after}, &r)
	return r.Messages, err
}

// Import appends messages (see mailbox.Store.ImportMessages).
func (c *MigrateClient) Import(ctx context.Context, r MigrateImport) ([]MigrateResult, error) {
	var out MigrateImportReply
	if err := c.call(ctx, "Import", r, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(r.Messages) {
		return nil, fmt.Errorf("Import: %d results for %d messages", len(out.Results), len(r.Messages))
	}
	return out.Results, nil
}
