package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "hastore/proto/hastorepb"
	"hastore/replica/meta"
	"hastore/replica/transport"
)

// Credentials (issue #11 V9). Clients present certificates signed by the
// cluster CA (see transport's credential notes); the CA key stays with the
// admin, who signs locally and records what was issued here. A revocation
// is a metadata entry, so every node learns it through Raft and refuses
// the credential from the moment it has applied the entry.

// credsTenant is the metadata keyspace of the credential records ("c/ID",
// a pb.CredRecord) and revocations ("r/ID", the revocation time).
const credsTenant = "hastore:creds"

func init() { meta.KeepOnRestore(credsTenant) }

const (
	credRecordPrefix = "c/"
	credRevokedKey   = "r/"
	maxCredID        = 128
)

// credRevoked is the node's transport.Config.Revoked: a local read of the
// replicated revocation list.
func (n *Node) credRevoked(id string) (bool, error) {
	if n.Meta == nil {
		return false, errors.New("metadata not open yet")
	}
	_, ok, err := n.Meta.TenantGet(credsTenant, credRevokedKey+id)
	return ok, err
}

func validCredID(id string) error {
	if id == "" || len(id) > maxCredID || strings.ContainsAny(id, "/ \t\n") {
		return status.Errorf(codes.InvalidArgument, "credential ID %q: want the ID `hastore admin cred list` shows", id)
	}
	return nil
}

// credsServer serves the Creds service. Only node and admin credentials
// reach it (transport refuses mount credentials every non-Sites call).
type credsServer struct {
	pb.UnimplementedCredsServer
	n *Node
}

func (s *credsServer) RecordCred(ctx context.Context, r *pb.CredRecord) (*pb.Empty, error) {
	if err := validCredID(r.GetId()); err != nil {
		return nil, err
	}
	if _, err := transport.ParseRole(r.GetRole()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rec := proto.Clone(r).(*pb.CredRecord)
	rec.RevokedUnixNano = 0
	b, err := proto.Marshal(rec)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.n.Cluster.Propose(ctx, meta.TenantPut{Tenant: credsTenant, Key: credRecordPrefix + r.GetId(), Value: b}); err != nil {
		return nil, toStatus(fmt.Errorf("recording credential %s: %w", r.GetId(), err))
	}
	return &pb.Empty{}, nil
}

func (s *credsServer) ListCreds(ctx context.Context, _ *pb.ListCredsRequest) (*pb.ListCredsReply, error) {
	out := &pb.ListCredsReply{}
	byID := map[string]*pb.CredRecord{}
	err := s.n.Meta.TenantScan(credsTenant, credRecordPrefix, func(key string, v []byte) error {
		rec := &pb.CredRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return fmt.Errorf("credential record %s: %w", key, err)
		}
		byID[rec.GetId()] = rec
		out.Creds = append(out.Creds, rec)
		return nil
	})
	if err == nil {
		err = s.n.Meta.TenantScan(credsTenant, credRevokedKey, func(key string, v []byte) error {
			id := strings.TrimPrefix(key, credRevokedKey)
			rec := byID[id]
			if rec == nil {
				// Revoked without a record (issued without --addr).
				rec = &pb.CredRecord{Id: id}
				out.Creds = append(out.Creds, rec)
			}
			if len(v) == 8 {
				rec.RevokedUnixNano = int64(binary.BigEndian.Uint64(v))
			} else {
				rec.RevokedUnixNano = 1
			}
			return nil
		})
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return out, nil
}

func (s *credsServer) RevokeCred(ctx context.Context, r *pb.RevokeCredRequest) (*pb.Empty, error) {
	id := r.GetId()
	if err := validCredID(id); err != nil {
		return nil, err
	}
	if !r.GetForce() {
		_, ok, err := s.n.Meta.TenantGet(credsTenant, credRecordPrefix+id)
		if err != nil {
			return nil, toStatus(err)
		}
		if !ok {
			return nil, status.Errorf(codes.NotFound, "no credential %s on record (see `hastore admin cred list`); one issued without --addr is revoked with --force", id)
		}
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
	if _, err := s.n.Cluster.Propose(ctx, meta.TenantPut{Tenant: credsTenant, Key: credRevokedKey + id, Value: v}); err != nil {
		return nil, toStatus(fmt.Errorf("revoking credential %s: %w", id, err))
	}
	s.n.log.Info("credential revoked", "id", id)
	return &pb.Empty{}, nil
}
