package storage

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/reedsolomon"
)

// Scheme is an erasure-coding scheme: K data shards and M parity shards, any
// K of which rebuild the blob. Blobs below the codec's small-object size are
// instead kept as M+1 full copies, which survive the same M losses.
type Scheme struct{ K, M int }

// ParseScheme parses "K+M", e.g. "2+1" or "4+2".
func ParseScheme(s string) (Scheme, error) {
	ks, ms, ok := strings.Cut(s, "+")
	k, err1 := strconv.Atoi(ks)
	m, err2 := strconv.Atoi(ms)
	if !ok || err1 != nil || err2 != nil {
		return Scheme{}, fmt.Errorf("%w: scheme %q: want K+M such as 2+1", ErrInvalid, s)
	}
	sc := Scheme{K: k, M: m}
	return sc, sc.Validate()
}

// Validate reports whether the scheme can be used.
func (s Scheme) Validate() error {
	if s.K < 1 || s.M < 0 || s.K+s.M > MaxShards {
		return fmt.Errorf("%w: scheme %d+%d: need K ≥ 1, M ≥ 0 and K+M ≤ %d", ErrInvalid, s.K, s.M, MaxShards)
	}
	return nil
}

func (s Scheme) String() string { return fmt.Sprintf("%d+%d", s.K, s.M) }

// DefaultSmallObject is the size below which blobs are replicated instead of
// erasure coded: k+m writes of a few hundred bytes each cost more (RPCs,
// fsyncs, headers) than m+1 copies of the whole blob.
const DefaultSmallObject = 64 << 10

// Codec cuts blobs into shard records and rebuilds blobs from them. It is
// safe for concurrent use.
type Codec struct {
	Scheme Scheme
	// SmallObject: blobs shorter than this are stored as M+1 copies.
	// Zero means every blob is erasure coded.
	SmallObject int
	// BlockSize is the checksum block size; zero means DefaultBlockSize.
	BlockSize int
}

var encoders sync.Map // Scheme → reedsolomon.Encoder

// encoder returns a cached encoder: building one inverts matrices.
func encoder(k, m int) (reedsolomon.Encoder, error) {
	key := Scheme{k, m}
	if e, ok := encoders.Load(key); ok {
		return e.(reedsolomon.Encoder), nil
	}
	// The default options are part of ErasureFormatV1: no Cauchy, no
	// Leopard, so the matrix stays the one the golden test pins.
	e, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("%w: erasure scheme %d+%d: %v", ErrInvalid, k, m, err)
	}
	actual, _ := encoders.LoadOrStore(key, e)
	return actual.(reedsolomon.Encoder), nil
}

// LayoutFor returns how a blob of n bytes is stored under this codec.
func (c *Codec) LayoutFor(n int64) Layout {
	if n < int64(c.SmallObject) || c.Scheme.K == 1 {
		return LayoutReplica
	}
	return LayoutErasure
}

// Encode computes the blob's ID and cuts it into shard records ready to be
// stored, index i at position i. Data shards' payloads may alias data, so
// the caller must not change data while it uses the records.
func (c *Codec) Encode(data []byte, written time.Time) (BlobID, []Record, error) {
	if len(data) < parallelHashMin {
		id := Sum(data)
		recs, err := c.encode(id, data, written, nil)
		return id, recs, err
	}
	// Hashing costs about as much as encoding and checksumming together;
	// doing both at once nearly halves a large write's latency on a
	// multi-core node. The ID is needed only to seal the headers at the end.
	idc := make(chan BlobID, 1)
	go func() { idc <- Sum(data) }()
	var id BlobID
	recs, err := c.encode(BlobID{}, data, written, func() BlobID { id = <-idc; return id })
	return id, recs, err // on error the buffered channel lets the hasher finish alone
}

// parallelHashMin is the blob size from which Encode hashes on another
// goroutine; below it the hand-off costs more than it saves.
const parallelHashMin = 256 << 10

// EncodeID is Encode for a caller that already knows the blob's ID.
func (c *Codec) EncodeID(id BlobID, data []byte, written time.Time) ([]Record, error) {
	return c.encode(id, data, written, nil)
}

// encode cuts data into records. If awaitID is not nil the ID is not known
// yet: it is fetched from awaitID just before the headers are sealed.
func (c *Codec) encode(id BlobID, data []byte, written time.Time, awaitID func() BlobID) ([]Record, error) {
	if err := c.Scheme.Validate(); err != nil {
		return nil, err
	}
	bs := c.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	layout := c.LayoutFor(int64(len(data)))
	h := Header{Blob: id, K: c.Scheme.K, M: c.Scheme.M, Layout: layout, BlobLen: int64(len(data)), Written: written, BlockSize: bs}
	if layout == LayoutReplica {
		h.K = 1
	}
	h.PayloadLen = payloadLenFor(layout, h.K, h.BlobLen)
	if h.PayloadLen > MaxPayload {
		return nil, fmt.Errorf("%w: blob of %d bytes gives %d-byte shards, more than %d; cut it into chunks", ErrInvalid, len(data), h.PayloadLen, int64(MaxPayload))
	}
	hc := h
	if awaitID != nil {
		hc.Blob = BlobID{1} // any valid ID: the real one is still being computed
	}
	if err := hc.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	n := h.Shards()
	recs := make([]Record, n)
	hl := headerLen(h.PayloadLen, h.BlockSize)
	heads := make([]byte, n*hl)
	for i := range recs {
		recs[i].Head = heads[i*hl : (i+1)*hl : (i+1)*hl]
	}
	if layout == LayoutReplica {
		// Every copy is the same bytes: one payload, shared.
		for i := range recs {
			recs[i].Payload = data
		}
	} else {
		for i := 0; i < h.K; i++ {
			lo := min(int64(i)*h.PayloadLen, h.BlobLen)
			hi := min(lo+h.PayloadLen, h.BlobLen)
			if hi-lo == h.PayloadLen {
				recs[i].Payload = data[lo:hi:hi]
				continue
			}
			p := make([]byte, h.PayloadLen) // the tail stays zero: padding
			copy(p, data[lo:hi])
			recs[i].Payload = p
		}
		if h.M > 0 {
			parity := make([]byte, h.M*int(h.PayloadLen))
			for i := h.K; i < n; i++ {
				o := (i - h.K) * int(h.PayloadLen)
				recs[i].Payload = parity[o : o+int(h.PayloadLen) : o+int(h.PayloadLen)]
			}
		}
		if h.PayloadLen > 0 && h.M > 0 {
			enc, err := encoder(h.K, h.M)
			if err != nil {
				return nil, err
			}
			payloads := make([][]byte, n)
			for i := range recs {
				payloads[i] = recs[i].Payload
			}
			if err := enc.Encode(payloads); err != nil {
				return nil, fmt.Errorf("erasure-encoding blob %s: %w", id, err)
			}
		}
	}
	for i := range recs {
		if i > 0 && layout == LayoutReplica {
			copy(recs[i].Head[headerFixedLen:hl-4], recs[0].Head[headerFixedLen:hl-4])
			continue
		}
		sumBlocks(&h, recs[i].Head, recs[i].Payload)
	}
	if awaitID != nil {
		h.Blob = awaitID()
	}
	for i := range recs {
		h.Index = i
		sealHead(&h, recs[i].Head)
	}
	return recs, nil
}

// Decode rebuilds a blob from any of its shards. Each entry of shards is a
// verified shard (from ParseShard or a store read) or nil; order does not
// matter. Shards that disagree with the first one of the blob (scheme or
// length) are ignored. The rebuilt bytes are checked against the blob ID,
// so Decode never returns bytes other than the blob's.
//
// It returns the blob and the indexes of shards that were missing or
// ignored, which the caller should report for repair.
func Decode(id BlobID, shards []*Shard) ([]byte, []int, error) {
	var ref *Header
	for _, s := range shards {
		if s != nil && s.Blob == id {
			ref = &s.Header
			break
		}
	}
	if ref == nil {
		return nil, nil, fmt.Errorf("%w: blob %s: no shard given", ErrTooFewShards, id)
	}
	n := ref.Shards()
	byIndex := make([][]byte, n)
	for _, s := range shards {
		if s == nil || s.Blob != id || s.Layout != ref.Layout || s.K != ref.K || s.M != ref.M ||
			s.BlobLen != ref.BlobLen || s.Index >= n || int64(len(s.Payload)) != s.PayloadLen {
			continue
		}
		byIndex[s.Index] = s.Payload
	}
	var missing []int
	have := 0
	for i, p := range byIndex {
		if p == nil {
			missing = append(missing, i)
		} else {
			have++
		}
	}
	var out []byte
	switch {
	case ref.Layout == LayoutReplica:
		for _, p := range byIndex {
			if p != nil {
				out = append([]byte(nil), p...)
				break
			}
		}
	case ref.PayloadLen == 0:
		out = []byte{}
	default:
		if have < ref.K {
			return nil, missing, fmt.Errorf("%w: blob %s: %d of %d shards intact, need %d", ErrTooFewShards, id, have, n, ref.K)
		}
		dataMissing := false
		for i := 0; i < ref.K; i++ {
			dataMissing = dataMissing || byIndex[i] == nil
		}
		if dataMissing {
			enc, err := encoder(ref.K, ref.M)
			if err != nil {
				return nil, missing, err
			}
			// Reconstruction writes into nil slots only; the given
			// payloads may alias a caller's buffers and stay untouched.
			if err := enc.ReconstructData(byIndex); err != nil {
				return nil, missing, fmt.Errorf("%w: blob %s: %v", ErrTooFewShards, id, err)
			}
		}
		out = make([]byte, 0, ref.BlobLen)
		for i := 0; i < ref.K && int64(len(out)) < ref.BlobLen; i++ {
			out = append(out, byIndex[i][:min(ref.PayloadLen, ref.BlobLen-int64(len(out)))]...)
		}
	}
	if Sum(out) != id {
		// Every shard passed its checksum, yet the blob is wrong: a shard
		// was written wrong before it was checksummed, or the coding
		// matrix changed. Never serve it.
		return nil, missing, fmt.Errorf("%w: blob %s rebuilt from shards %v does not hash to its ID", ErrCorrupt, id, present(byIndex))
	}
	return out, missing, nil
}

func present(byIndex [][]byte) []int {
	var idx []int
	for i, p := range byIndex {
		if p != nil {
			idx = append(idx, i)
		}
	}
	return idx
}

// Reconstruct rebuilds the payload of shard want from verified sibling
// shards, and returns the complete record for it (for repair).
func Reconstruct(id BlobID, shards []*Shard, want int, written time.Time) (Record, error) {
	data, _, err := Decode(id, shards)
	if err != nil {
		return Record{}, err
	}
	var ref *Header
	for _, s := range shards {
		if s != nil && s.Blob == id {
			ref = &s.Header
			break
		}
	}
	c := Codec{Scheme: Scheme{K: ref.K, M: ref.M}, BlockSize: ref.BlockSize}
	if ref.Layout == LayoutReplica {
		c.SmallObject = int(ref.BlobLen) + 1
	}
	if want < 0 || want >= ref.Shards() {
		return Record{}, fmt.Errorf("%w: shard index %d of blob %s outside 0..%d", ErrInvalid, want, id, ref.Shards()-1)
	}
	recs, err := c.EncodeID(id, data, written)
	if err != nil {
		return Record{}, err
	}
	return recs[want], nil
}
