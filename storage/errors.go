package storage

import "errors"

// Errors returned by this package, to be tested with errors.Is. Wrapping
// errors add what failed (which shard, which file) to these kinds.
var (
	// ErrNotFound means the shard or blob is not stored here.
	ErrNotFound = errors.New("storage: not found")
	// ErrCorrupt means stored or received bytes failed their checksum or
	// their header is malformed. The bytes are never returned; the caller
	// should treat the shard as missing and have it repaired.
	ErrCorrupt = errors.New("storage: corrupt shard")
	// ErrNoSpace means the disk is full (or below the configured reserve).
	// Stored shards stay readable; free space or add capacity.
	ErrNoSpace = errors.New("storage: no space left on device")
	// ErrInvalid means the caller passed an argument that can never work,
	// such as an impossible scheme or range.
	ErrInvalid = errors.New("storage: invalid argument")
	// ErrTooFewShards means fewer than k intact shards were given to
	// rebuild a blob.
	ErrTooFewShards = errors.New("storage: too few intact shards to rebuild blob")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("storage: closed")
)
