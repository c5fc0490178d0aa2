// Package storage is one node's storage engine: it knows blobs, shards and
// disks, and nothing of the network.
//
// A blob is a byte string named by the BLAKE3-256 hash of its content
// ([BlobID]). A [Codec] cuts a blob into shards: k data and m parity shards
// with Reed–Solomon erasure coding, or — for blobs below a size threshold —
// m+1 full copies, which give the same fault tolerance without k+m tiny writes.
// Every shard is a self-describing record ([Shard]): a versioned header naming
// the blob, the shard's index and the scheme, followed by the payload, with a
// CRC32C checksum for every block of the payload. Checksums are verified on
// every read; a mismatch is reported as [ErrCorrupt] and the bytes are never
// returned.
//
// [DB] keeps shard records on one disk in badger. A Put returns only once the
// record is fsynced; concurrent puts share fsyncs (group commit). A full disk
// is reported as [ErrNoSpace] and leaves every stored shard readable.
//
// The on-disk format and the durability promise are described for operators
// in docs/storage.md.
package storage
