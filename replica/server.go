package replica

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/replica/meta"
	"hastore/replica/transport"
	"hastore/storage"
)

// clusterServer is the gRPC face of a Node: object calls for clients and
// admin tools, and the leader-side halves of forwarded Raft calls. Errors
// leave as gRPC status codes a client can map back (transport.ToStatus).
type clusterServer struct {
	pb.UnimplementedClusterServer
	n *Node
}

// maxObjectSize bounds one object. Stores refuse shard records larger than
// their value-log file (256 MiB by default), and an object written while
// nodes are down may be stored as whole copies; larger files are chunked by
// the frontends.
const maxObjectSize = 256<<20 - 64<<10

func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrUnavailable), errors.Is(err, storage.ErrTooFewShards):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, meta.ErrNotLeader):
		return status.Error(codes.Unavailable, err.Error())
	}
	return transport.ToStatus(err)
}

func (s *clusterServer) PutObject(stream grpc.ClientStreamingServer[pb.DataChunk, pb.ObjectRef]) error {
	var data []byte
	for {
		chunk, err := stream.Recv()
		if err == nil && data == nil {
			data = make([]byte, 0, max(len(chunk.Data), 64<<10))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if len(data)+len(chunk.Data) > maxObjectSize {
			return status.Errorf(codes.InvalidArgument, "object larger than %d bytes; cut it into chunks", maxObjectSize)
		}
		data = append(data, chunk.Data...)
	}
	id, err := s.n.Cluster.Put(stream.Context(), data)
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&pb.ObjectRef{Id: id[:], Size: int64(len(data))})
}

func parseID(b []byte) (storage.BlobID, error) {
	var id storage.BlobID
	if len(b) != len(id) {
		return id, status.Errorf(codes.InvalidArgument, "object ID of %d bytes, want %d", len(b), len(id))
	}
	copy(id[:], b)
	return id, nil
}

const chunkSize = 1 << 20

func (s *clusterServer) GetObject(req *pb.GetObjectRequest, stream grpc.ServerStreamingServer[pb.DataChunk]) error {
	id, err := parseID(req.Id)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	var data []byte
	if req.Offset == 0 && req.Length < 0 {
		data, err = s.n.Cluster.Get(ctx, id)
	} else {
		n := req.Length
		if n < 0 {
			n = maxObjectSize
		}
		data, err = s.n.Cluster.ReadAt(ctx, id, req.Offset, n)
	}
	if err != nil {
		return toStatus(err)
	}
	for len(data) > 0 {
		n := min(len(data), chunkSize)
		if err := stream.Send(&pb.DataChunk{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func (s *clusterServer) StatObject(ctx context.Context, req *pb.StatObjectRequest) (*pb.ObjectStat, error) {
	id, err := parseID(req.Id)
	if err != nil {
		return nil, err
	}
	o, err := s.n.Cluster.Stat(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ObjectStat{Id: id[:], Size: o.Size, K: int32(o.K), M: int32(o.M), Layout: o.Layout.String(), Refs: o.Refs}
	for i, node := range o.Placement {
		sp := &pb.ShardPlacement{Index: int32(i), Node: node, State: "unverified"}
		if node == "" {
			sp.State, sp.Detail = "missing", "not placed"
		} else if req.Verify {
			svc, err := s.n.Peers.Shards(node)
			if err == nil {
				_, err = svc.GetShard(ctx, storage.ShardKey{Blob: id, Index: i})
			}
			switch {
			case err == nil:
				sp.State = "ok"
			case errors.Is(err, storage.ErrCorrupt):
				sp.State, sp.Detail = "corrupt", err.Error()
			default:
				sp.State, sp.Detail = "missing", err.Error()
			}
		}
		out.Shards = append(out.Shards, sp)
	}
	return out, nil
}

func (s *clusterServer) DeleteObject(ctx context.Context, ref *pb.ObjectRef) (*pb.Empty, error) {
	id, err := parseID(ref.Id)
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, toStatus(s.n.Cluster.Delete(ctx, id))
}

func (s *clusterServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.ClusterStatus, error) {
	st, err := s.n.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ClusterStatus{Scheme: st.Scheme, Objects: st.Objects, UnderReplicated: st.UnderReplicated, Leader: st.Leader,
		Repair: progressPB(st.Repair), Scrub: progressPB(st.Scrub)}
	for _, n := range st.Nodes {
		out.Nodes = append(out.Nodes, &pb.NodeStatus{Id: n.ID, Address: n.Address, Up: n.Up, RaftRole: n.RaftRole,
			DiskUsed: n.DiskUsed, DiskFree: n.DiskFree, Voter: n.Voter,
			Self: n.Self, Reserve: n.Reserve, StoreReplaced: n.StoreReplaced, LostObjects: n.LostObjects})
	}
	return out, nil
}

func progressPB(p Progress) *pb.Progress {
	return &pb.Progress{Phase: p.Phase, Done: p.Done, Total: p.Total, Bytes: p.Bytes, Finished: p.Phase == "done", Error: p.Err,
		Found: p.Found, Repaired: p.Repaired, Unfixed: p.Unfixed}
}

// streamProgress runs a pass and sends its progress, at most a few times
// a second, ending with the final state. With detach the pass runs on in
// the background and the call returns at once.
func streamProgress(stream grpc.ServerStreamingServer[pb.Progress], detach bool, bg context.Context, run func(ctx context.Context, report func(Progress)) (Progress, error)) error {
	if detach {
		go func() { _, _ = run(bg, nil) }()
		return stream.Send(&pb.Progress{Phase: "started"})
	}
	last := int64(-1)
	p, err := run(stream.Context(), func(p Progress) {
		if p.Phase == "running" && (p.Done-last >= max(1, p.Total/100) || p.Done == p.Total) {
			last = p.Done
			_ = stream.Send(progressPB(p))
		}
	})
	if err != nil {
		return toStatus(err)
	}
	return stream.Send(progressPB(p)) // the final state, once
}

func (s *clusterServer) Repair(req *pb.RunRequest, stream grpc.ServerStreamingServer[pb.Progress]) error {
	return streamProgress(stream, req.Detach, s.n.ctx, s.n.Cluster.Repair)
}

func (s *clusterServer) Scrub(req *pb.RunRequest, stream grpc.ServerStreamingServer[pb.Progress]) error {
	return streamProgress(stream, req.Detach, s.n.ctx, s.n.Cluster.Scrub)
}

func (s *clusterServer) RemoveNode(req *pb.RemoveNodeRequest, stream grpc.ServerStreamingServer[pb.Progress]) error {
	return streamProgress(stream, false, s.n.ctx, func(ctx context.Context, report func(Progress)) (Progress, error) {
		return s.n.RemoveNode(ctx, req.Id, report)
	})
}

func (s *clusterServer) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinReply, error) {
	if err := s.n.Join(ctx, req.Id, req.Address); err != nil {
		return nil, toStatus(err)
	}
	return &pb.JoinReply{}, nil
}

// Propose is the leader's half of a forwarded proposal.
func (s *clusterServer) Propose(ctx context.Context, req *pb.ProposeRequest) (*pb.ProposeReply, error) {
	res, index, err := s.n.Meta.ApplyEncoded(ctx, req.Command)
	if err != nil {
		if errors.Is(err, meta.ErrNotLeader) {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		if errors.Is(err, meta.ErrUnknownOutcome) || errors.Is(err, meta.ErrClosed) {
			// Committed or not, nobody here knows: the forwarder resends
			// the same request, which the FSM applies at most once.
			return nil, status.Error(codes.Aborted, err.Error())
		}
		return &pb.ProposeReply{Error: err.Error()}, nil
	}
	return &pb.ProposeReply{Index: index, Result: res}, nil
}

// ReadIndex is the leader's half of a follower's read barrier.
func (s *clusterServer) ReadIndex(ctx context.Context, _ *pb.ReadIndexRequest) (*pb.ReadIndexReply, error) {
	idx, err := s.n.Meta.LeaderCommitIndex(ctx)
	if err != nil {
		if errors.Is(err, meta.ErrNotLeader) {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		return nil, toStatus(err)
	}
	return &pb.ReadIndexReply{Index: idx}, nil
}

func (s *clusterServer) LeaderSlow(ctx context.Context, req *pb.LeaderSlowRequest) (*pb.Empty, error) {
	if err := s.n.leaderSlow(req); err != nil {
		return nil, err
	}
	return &pb.Empty{}, nil
}
