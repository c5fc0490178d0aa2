package storage

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// Layout says how a blob's shards relate to its bytes.
type Layout uint8

const (
	// LayoutErasure: k data shards (the blob cut in k equal parts, the last
	// zero-padded) followed by m Reed–Solomon parity shards.
	LayoutErasure Layout = 1
	// LayoutReplica: m+1 shards, each a full copy of the blob; k is 1.
	LayoutReplica Layout = 2
)

func (l Layout) String() string {
	switch l {
	case LayoutErasure:
		return "erasure"
	case LayoutReplica:
		return "replica"
	}
	return fmt.Sprintf("layout(%d)", uint8(l))
}

// Format constants recorded in every shard header. A reader refuses values
// it does not know instead of guessing.
const (
	recordVersion = 1
	// ErasureFormatV1 is Reed–Solomon over GF(2^8) with the systematic
	// Vandermonde-derived matrix that klauspost/reedsolomon builds by
	// default. Its parity is pinned by a golden test, so a library upgrade
	// that changed the matrix would fail the tests instead of the disks.
	ErasureFormatV1 = 1
	// ChecksumCRC32C is CRC-32 (Castagnoli) over each block of the payload.
	ChecksumCRC32C = 1

	// DefaultBlockSize is the payload span covered by one checksum. A ranged
	// read verifies only the blocks it touches.
	DefaultBlockSize = 256 << 10
	minBlockSize     = 4 << 10
	maxBlockSize     = 16 << 20

	// MaxShards bounds k+m.
	MaxShards = 16
	// MaxPayload bounds one shard's payload (and so what a header may claim).
	MaxPayload = 1 << 32

	headerFixedLen = 72
	magic          = "HSSH"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header describes one shard. It is stored in front of the payload and is
// itself protected by a CRC32C.
type Header struct {
	Blob      BlobID
	Index     int    // 0..k-1 data, k..k+m-1 parity (erasure); copy number (replica)
	K, M      int    // the scheme; K is 1 for LayoutReplica
	Layout    Layout //
	BlobLen   int64  // length of the whole blob
	Written   time.Time
	BlockSize int
	// PayloadLen is the shard's payload length: ceil(BlobLen/K) for erasure,
	// BlobLen for replica.
	PayloadLen int64
}

// Key returns the shard's key.
func (h *Header) Key() ShardKey { return ShardKey{Blob: h.Blob, Index: h.Index} }

// Shards returns how many shards the blob has in all.
func (h *Header) Shards() int {
	if h.Layout == LayoutReplica {
		return h.M + 1
	}
	return h.K + h.M
}

// Shard is one shard record: header and payload.
type Shard struct {
	Header
	Payload []byte
}

func numBlocks(payloadLen int64, blockSize int) int {
	return int((payloadLen + int64(blockSize) - 1) / int64(blockSize))
}

// recordLen returns the length of the encoded record's header part.
func headerLen(payloadLen int64, blockSize int) int {
	return headerFixedLen + 4*numBlocks(payloadLen, blockSize) + 4
}

// payloadLenFor returns the payload length a shard of this shape must have.
func payloadLenFor(layout Layout, k int, blobLen int64) int64 {
	if layout == LayoutReplica {
		return blobLen
	}
	return (blobLen + int64(k) - 1) / int64(k)
}

// check validates the header's fields against each other.
func (h *Header) check() error {
	switch {
	case h.Layout != LayoutErasure && h.Layout != LayoutReplica:
		return fmt.Errorf("unknown layout %d", h.Layout)
	case h.K < 1 || h.M < 0 || h.K+h.M > MaxShards:
		return fmt.Errorf("impossible scheme %d+%d", h.K, h.M)
	case h.Layout == LayoutReplica && h.K != 1:
		return fmt.Errorf("replica layout with k=%d", h.K)
	case h.Index < 0 || h.Index >= h.Shards():
		return fmt.Errorf("shard index %d outside 0..%d", h.Index, h.Shards()-1)
	case h.BlockSize < minBlockSize || h.BlockSize > maxBlockSize || h.BlockSize&(h.BlockSize-1) != 0:
		return fmt.Errorf("block size %d not a power of two in %d..%d", h.BlockSize, minBlockSize, maxBlockSize)
	case h.BlobLen < 0 || h.PayloadLen < 0 || h.PayloadLen > MaxPayload:
		return fmt.Errorf("impossible lengths blob=%d payload=%d", h.BlobLen, h.PayloadLen)
	case h.PayloadLen != payloadLenFor(h.Layout, h.K, h.BlobLen):
		return fmt.Errorf("payload length %d does not match blob length %d for %s %d+%d", h.PayloadLen, h.BlobLen, h.Layout, h.K, h.M)
	case h.Blob.IsZero():
		return fmt.Errorf("zero blob ID")
	}
	return nil
}

// Record is an encoded shard record in two parts: Head (fixed header, block
// checksums, header checksum) and Payload. Head followed by Payload is the
// byte string ParseShard accepts. Keeping the parts apart lets an encoder hand
// out data shards that alias the blob instead of copying it.
type Record struct{ Head, Payload []byte }

// Len returns the length of the joined record.
func (r Record) Len() int { return len(r.Head) + len(r.Payload) }

// Bytes returns the joined record in a new buffer.
func (r Record) Bytes() []byte {
	b := make([]byte, 0, r.Len())
	return append(append(b, r.Head...), r.Payload...)
}

// sumBlocks writes the block checksums of payload into head.
func sumBlocks(h *Header, head, payload []byte) {
	sums := head[headerFixedLen : len(head)-4]
	for i := 0; i < len(sums)/4; i++ {
		end := min((i+1)*h.BlockSize, len(payload))
		binary.LittleEndian.PutUint32(sums[4*i:], crc32.Checksum(payload[i*h.BlockSize:end], castagnoli))
	}
}

// sealHead fills in the fixed fields of head and its checksum; the block
// checksums must already be in place.
func sealHead(h *Header, head []byte) {
	copy(head[0:4], magic)
	head[4] = recordVersion
	head[5] = ErasureFormatV1
	head[6] = ChecksumCRC32C
	head[7] = byte(h.Layout)
	head[8] = byte(h.K)
	head[9] = byte(h.M)
	head[10] = byte(h.Index)
	head[11] = 0
	binary.LittleEndian.PutUint32(head[12:16], uint32(h.BlockSize))
	copy(head[16:48], h.Blob[:])
	binary.LittleEndian.PutUint64(head[48:56], uint64(h.BlobLen))
	binary.LittleEndian.PutUint64(head[56:64], uint64(h.PayloadLen))
	var written int64
	if !h.Written.IsZero() {
		written = h.Written.UnixNano()
	}
	binary.LittleEndian.PutUint64(head[64:72], uint64(written))
	hl := len(head)
	binary.LittleEndian.PutUint32(head[hl-4:], crc32.Checksum(head[:hl-4], castagnoli))
}

// Marshal encodes the shard as a record: header, block checksums, header
// checksum, payload. It fails only if the header is inconsistent.
func (s *Shard) Marshal() ([]byte, error) {
	h := s.Header
	if h.BlockSize == 0 {
		h.BlockSize = DefaultBlockSize
	}
	if err := h.check(); err != nil {
		return nil, fmt.Errorf("%w: shard %v: %v", ErrInvalid, h.Key(), err)
	}
	if int64(len(s.Payload)) != h.PayloadLen {
		return nil, fmt.Errorf("%w: shard %v: payload is %d bytes, header says %d", ErrInvalid, h.Key(), len(s.Payload), h.PayloadLen)
	}
	rec := make([]byte, headerLen(h.PayloadLen, h.BlockSize), headerLen(h.PayloadLen, h.BlockSize)+len(s.Payload))
	sumBlocks(&h, rec, s.Payload)
	sealHead(&h, rec)
	return append(rec, s.Payload...), nil
}

// ParseHeader decodes and verifies the header at the front of rec (which may
// be just a prefix of a record, at least [HeaderLen] bytes). It returns the
// header and the offset of the payload in the full record. Payload checksums
// are not checked; see [VerifyPayload] and [ParseShard].
func ParseHeader(rec []byte) (Header, int, error) {
	var h Header
	if len(rec) < headerFixedLen+4 {
		return h, 0, fmt.Errorf("%w: record of %d bytes is shorter than a header", ErrCorrupt, len(rec))
	}
	if string(rec[0:4]) != magic {
		return h, 0, fmt.Errorf("%w: bad magic %q", ErrCorrupt, rec[0:4])
	}
	if rec[4] != recordVersion || rec[5] != ErasureFormatV1 || rec[6] != ChecksumCRC32C {
		return h, 0, fmt.Errorf("%w: unknown record version %d, erasure format %d or checksum %d (written by a newer hastore?)", ErrCorrupt, rec[4], rec[5], rec[6])
	}
	h.Layout = Layout(rec[7])
	h.K, h.M, h.Index = int(rec[8]), int(rec[9]), int(rec[10])
	h.BlockSize = int(binary.LittleEndian.Uint32(rec[12:16]))
	copy(h.Blob[:], rec[16:48])
	h.BlobLen = int64(binary.LittleEndian.Uint64(rec[48:56]))
	h.PayloadLen = int64(binary.LittleEndian.Uint64(rec[56:64]))
	if w := int64(binary.LittleEndian.Uint64(rec[64:72])); w != 0 {
		h.Written = time.Unix(0, w)
	}
	if rec[11] != 0 {
		return h, 0, fmt.Errorf("%w: reserved header byte is %d", ErrCorrupt, rec[11])
	}
	if err := h.check(); err != nil {
		return h, 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	hl := headerLen(h.PayloadLen, h.BlockSize)
	if len(rec) < hl {
		return h, 0, fmt.Errorf("%w: shard %v: record of %d bytes is shorter than its %d-byte header", ErrCorrupt, h.Key(), len(rec), hl)
	}
	if got, want := crc32.Checksum(rec[:hl-4], castagnoli), binary.LittleEndian.Uint32(rec[hl-4:hl]); got != want {
		return h, 0, fmt.Errorf("%w: shard %v: header checksum %08x, want %08x", ErrCorrupt, h.Key(), got, want)
	}
	return h, hl, nil
}

// HeaderLen returns the length of the header part of a record for h.
func HeaderLen(h *Header) int { return headerLen(h.PayloadLen, h.BlockSize) }

// VerifyPayload checks the payload bytes p, which start at payload offset
// off, against the block checksums of the record header rec (already
// verified by ParseHeader). off must be a block boundary, and p must end at
// a block boundary or at the payload's end.
func VerifyPayload(h *Header, rec []byte, off int64, p []byte) error {
	if off%int64(h.BlockSize) != 0 || off < 0 || off+int64(len(p)) > h.PayloadLen ||
		((off+int64(len(p)))%int64(h.BlockSize) != 0 && off+int64(len(p)) != h.PayloadLen) {
		return fmt.Errorf("%w: verify range %d+%d of shard %v not block aligned", ErrInvalid, off, len(p), h.Key())
	}
	first := int(off / int64(h.BlockSize))
	for i := 0; i*h.BlockSize < len(p); i++ {
		end := min((i+1)*h.BlockSize, len(p))
		want := binary.LittleEndian.Uint32(rec[headerFixedLen+4*(first+i):])
		if got := crc32.Checksum(p[i*h.BlockSize:end], castagnoli); got != want {
			return fmt.Errorf("%w: shard %v: block %d checksum %08x, want %08x", ErrCorrupt, h.Key(), first+i, got, want)
		}
	}
	return nil
}

// ParseShard decodes rec and verifies every checksum in it. The returned
// payload aliases rec. A record with trailing bytes is rejected: a record is
// always stored and sent whole.
func ParseShard(rec []byte) (*Shard, error) {
	h, hl, err := ParseHeader(rec)
	if err != nil {
		return nil, err
	}
	if int64(len(rec)-hl) != h.PayloadLen {
		return nil, fmt.Errorf("%w: shard %v: payload is %d bytes, header says %d", ErrCorrupt, h.Key(), len(rec)-hl, h.PayloadLen)
	}
	payload := rec[hl:]
	if err := VerifyPayload(&h, rec, 0, payload); err != nil {
		return nil, err
	}
	return &Shard{Header: h, Payload: payload}, nil
}

// RangeInPayload returns the block-aligned span of the payload that covers
// [off, off+n): the span's start and length. Callers read that span, verify
// it with VerifyPayload and cut [off-start, off-start+n) out of it.
func RangeInPayload(h *Header, off, n int64) (start, length int64, err error) {
	if off < 0 || n < 0 || off+n > h.PayloadLen {
		return 0, 0, fmt.Errorf("%w: range %d+%d outside shard %v of %d bytes", ErrInvalid, off, n, h.Key(), h.PayloadLen)
	}
	bs := int64(h.BlockSize)
	start = off / bs * bs
	end := min((off+n+bs-1)/bs*bs, h.PayloadLen)
	if n == 0 {
		end = start
	}
	return start, end - start, nil
}
