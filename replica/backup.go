package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/replica/meta"
	"hastore/storage"
)

// backupServer serves the Backup service (`hastore admin backup|restore`;
// docs/operations.md, "Backup and restore").
type backupServer struct {
	pb.UnimplementedBackupServer
	n *Node
}

// Snapshot streams the metadata as of one applied index (meta.FSM.WriteBackup),
// after catching up with the leader.
func (s *backupServer) Snapshot(_ *pb.BackupSnapshotRequest, stream grpc.ServerStreamingServer[pb.BackupSnapshotChunk]) error {
	ctx := stream.Context()
	if err := s.n.Cluster.CatchUp(ctx); err != nil {
		return toStatus(err)
	}
	// The index is known only once the read transaction is open, which is
	// when WriteBackup starts writing: the writer sends it with the first
	// chunk, read from the stream's own header.
	w := &snapshotSender{stream: stream, scheme: s.n.Cluster.Scheme().String(), node: s.n.ID()}
	_, _, err := s.n.Meta.FSM().WriteBackup(w)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return toStatus(fmt.Errorf("backup snapshot on %s: %w", s.n.ID(), err))
	}
	return nil
}

type snapshotSender struct {
	stream       grpc.ServerStreamingServer[pb.BackupSnapshotChunk]
	scheme, node string
	buf          []byte
	sent         bool
}

func (w *snapshotSender) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for len(w.buf) >= chunkSize {
		if err := w.send(w.buf[:chunkSize]); err != nil {
			return 0, err
		}
		w.buf = w.buf[chunkSize:]
	}
	return len(p), nil
}

func (w *snapshotSender) send(p []byte) error {
	c := &pb.BackupSnapshotChunk{Data: p}
	if !w.sent {
		// Header: magic (8 bytes) and the applied index (8, big endian).
		if len(p) < 16 {
			return errors.New("snapshot header cut short")
		}
		for _, b := range p[8:16] {
			c.AppliedIndex = c.AppliedIndex<<8 | uint64(b)
		}
		c.Scheme, c.Node = w.scheme, w.node
		w.sent = true
	}
	return w.stream.Send(c)
}

func (w *snapshotSender) flush() error {
	if len(w.buf) == 0 && w.sent {
		return nil
	}
	err := w.send(w.buf)
	w.buf = nil
	return err
}

// GetObject streams a whole object, verified.
func (s *backupServer) GetObject(req *pb.BackupObjectRequest, stream grpc.ServerStreamingServer[pb.DataChunk]) error {
	id, err := parseID(req.Id)
	if err != nil {
		return err
	}
	data, err := s.n.Cluster.getForBackup(stream.Context(), id)
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

// getForBackup reads an object a backup snapshot referenced: through Get
// while it is live, and from its tombstone's placement if it has been
// deleted since (its shards stay for the grace period).
func (c *Cluster) getForBackup(ctx context.Context, id storage.BlobID) ([]byte, error) {
	data, err := c.Get(ctx, id)
	if !errors.Is(err, ErrNotFound) {
		return data, err
	}
	o, ok, merr := c.meta.Object(id)
	if merr != nil {
		return nil, merr
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s was deleted and purged since the backup's snapshot (backups must fetch within the grace period, %v); run the backup again", ErrNotFound, id, c.opt.Grace)
	}
	return c.getWhole(ctx, o)
}

// Restore receives a backup's metadata snapshot and installs it through
// meta.Store.RestoreBackup, on the leader.
func (s *backupServer) Restore(stream grpc.ClientStreamingServer[pb.RestoreChunk, pb.RestoreReply]) error {
	ctx := stream.Context()
	if !s.n.Meta.IsLeader() {
		_, leader := s.n.Meta.Leader()
		return status.Errorf(codes.Unavailable, "hastore: %s is not the raft leader (the leader is %q); a restore runs on the leader", s.n.ID(), leader)
	}
	first, err := stream.Recv()
	if err == io.EOF {
		return status.Error(codes.InvalidArgument, "restore: empty request")
	}
	if err != nil {
		return err
	}
	if first.CheckOnly {
		if err := s.n.Meta.FSM().CheckRestorable(); err != nil && !first.Force {
			return restoreStatus(err)
		}
		return stream.SendAndClose(&pb.RestoreReply{})
	}
	// The snapshot holds password hashes: a private file in the node's
	// data directory, not /tmp.
	tmpDir := s.n.cfg.DataDir
	f, err := os.CreateTemp(tmpDir, "backup-upload-*.snap")
	if err != nil {
		return toStatus(fmt.Errorf("restore: %w", err))
	}
	defer os.Remove(f.Name())
	defer f.Close()
	for c := first; ; {
		if _, err := f.Write(c.Data); err != nil {
			return toStatus(fmt.Errorf("restore: store the uploaded metadata: %w", err))
		}
		c, err = stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return toStatus(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	st, err := s.n.Meta.RestoreBackup(rctx, f.Name(), tmpDir, first.Force, time.Now())
	if err != nil {
		return restoreStatus(err)
	}
	s.n.log.Info("backup restored", "index", st.Index, "objects", st.Objects, "tenant_keys", st.TenantKeys, "tombstoned", st.Tombstoned)
	return stream.SendAndClose(&pb.RestoreReply{Index: st.Index, Objects: st.Objects, TenantKeys: st.TenantKeys, Tombstoned: st.Tombstoned})
}

func restoreStatus(err error) error {
	if errors.Is(err, meta.ErrNotEmpty) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return toStatus(err)
}
