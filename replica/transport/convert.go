package transport

import (
	"fmt"
	"time"

	pb "hastore/proto/hastorepb"
	"hastore/storage"
)

func shardKey(blob []byte, index int32) (storage.ShardKey, error) {
	var k storage.ShardKey
	if len(blob) != len(k.Blob) {
		return k, fmt.Errorf("%w: blob ID of %d bytes, want %d", storage.ErrInvalid, len(blob), len(k.Blob))
	}
	copy(k.Blob[:], blob)
	if k.Blob.IsZero() {
		return k, fmt.Errorf("%w: zero blob ID", storage.ErrInvalid)
	}
	if index < 0 || index >= storage.MaxShards {
		return k, fmt.Errorf("%w: shard index %d outside 0..%d", storage.ErrInvalid, index, storage.MaxShards-1)
	}
	k.Index = int(index)
	return k, nil
}

func shardRef(k storage.ShardKey) *pb.ShardRef {
	return &pb.ShardRef{Blob: k.Blob[:], Index: int32(k.Index)}
}

func shardInfo(h storage.Header) *pb.ShardInfo {
	var written int64
	if !h.Written.IsZero() {
		written = h.Written.UnixNano()
	}
	return &pb.ShardInfo{
		Blob:            h.Blob[:],
		Index:           int32(h.Index),
		K:               int32(h.K),
		M:               int32(h.M),
		Layout:          h.Layout.String(),
		BlobLen:         h.BlobLen,
		PayloadLen:      h.PayloadLen,
		WrittenUnixNano: written,
		BlockSize:       int32(h.BlockSize),
	}
}

// header converts a peer's ShardInfo back; a description no hastore node
// would send is ErrCorrupt, like any other bad bytes from the wire.
func header(in *pb.ShardInfo) (storage.Header, error) {
	k, err := shardKey(in.GetBlob(), in.GetIndex())
	if err != nil {
		return storage.Header{}, fmt.Errorf("%w: shard info: %v", storage.ErrCorrupt, err)
	}
	h := storage.Header{
		Blob:       k.Blob,
		Index:      k.Index,
		K:          int(in.GetK()),
		M:          int(in.GetM()),
		BlobLen:    in.GetBlobLen(),
		PayloadLen: in.GetPayloadLen(),
		BlockSize:  int(in.GetBlockSize()),
	}
	switch in.GetLayout() {
	case storage.LayoutErasure.String():
		h.Layout = storage.LayoutErasure
	case storage.LayoutReplica.String():
		h.Layout = storage.LayoutReplica
	default:
		return storage.Header{}, fmt.Errorf("%w: shard %v: unknown layout %q", storage.ErrCorrupt, k, in.GetLayout())
	}
	if w := in.GetWrittenUnixNano(); w != 0 {
		h.Written = time.Unix(0, w)
	}
	return h, nil
}
