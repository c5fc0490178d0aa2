package cluster

import (
	"context"
	"fmt"
	"io"

	pb "hastore/proto/hastorepb"
	"hastore/storage"
)

// Object calls through the public gRPC API, as a client outside the cluster
// makes them. They work on any pb.ClusterClient; the process harness wraps
// them per node.

// PutObject streams data in 1 MiB chunks and returns the ID the node
// acknowledged.
func PutObject(ctx context.Context, c pb.ClusterClient, data []byte) (storage.BlobID, error) {
	var id storage.BlobID
	stream, err := c.PutObject(ctx)
	if err != nil {
		return id, err
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1<<20)
		if err := stream.Send(&pb.DataChunk{Data: rest[:n]}); err != nil {
			break // the real error comes from CloseAndRecv
		}
		rest = rest[n:]
	}
	ref, err := stream.CloseAndRecv()
	if err != nil {
		return id, err
	}
	if len(ref.Id) != len(id) {
		return id, fmt.Errorf("put: node returned an ID of %d bytes", len(ref.Id))
	}
	copy(id[:], ref.Id)
	if ref.Size != int64(len(data)) {
		return id, fmt.Errorf("put: node acknowledged %d bytes, sent %d", ref.Size, len(data))
	}
	return id, nil
}

// GetObject reads [off, off+n) of an object (n = -1: to the end).
func GetObject(ctx context.Context, c pb.ClusterClient, id storage.BlobID, off, n int64) ([]byte, error) {
	stream, err := c.GetObject(ctx, &pb.GetObjectRequest{Id: id[:], Offset: off, Length: n})
	if err != nil {
		return nil, err
	}
	data := []byte{}
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, err
		}
		data = append(data, chunk.Data...)
	}
}
