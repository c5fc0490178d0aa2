package storage

import (
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// BlobID names a blob by the BLAKE3-256 hash of its content. The zero value
// is not the ID of any blob (not even the empty one) and is rejected where an
// ID is required.
type BlobID [32]byte

// Sum returns the ID of data.
func Sum(data []byte) BlobID {
	return BlobID(blake3.Sum256(data))
}

// ParseBlobID parses the 64-digit hex form printed by [BlobID.String].
func ParseBlobID(s string) (BlobID, error) {
	var id BlobID
	if len(s) != 2*len(id) {
		return BlobID{}, fmt.Errorf("%w: blob ID %q: want %d hex digits", ErrInvalid, s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return BlobID{}, fmt.Errorf("%w: blob ID %q: %v", ErrInvalid, s, err)
	}
	return id, nil
}

// String returns the ID as 64 lowercase hex digits.
func (id BlobID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero (invalid) ID.
func (id BlobID) IsZero() bool { return id == BlobID{} }

// ShardKey names one shard of one blob.
type ShardKey struct {
	Blob  BlobID
	Index int
}

func (k ShardKey) String() string { return fmt.Sprintf("%s/%d", k.Blob, k.Index) }
