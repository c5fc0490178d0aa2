package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
)

// ErrAbandoned is returned by a copy into a buffer whose [Guard] was
// abandoned: its reader took the bytes from elsewhere.
var ErrAbandoned = errors.New("storage: destination buffer abandoned by its reader")

// Guard lets a reader stop waiting for a copy into its buffer — a hedged
// read that got its bytes another way — and reuse the buffer at once:
// after Abandon returns, no [SpanCopy] holding the guard writes to its
// buffer again. The zero value is ready to use.
type Guard struct {
	mu   sync.Mutex
	gone bool
}

// Abandon takes the buffer back from every copy that holds g. It waits
// only for a write of at most copyPiece bytes in progress.
func (g *Guard) Abandon() {
	g.mu.Lock()
	g.gone = true
	g.mu.Unlock()
}

// copyPiece is how much SpanCopy copies at a time: small enough that the
// checksum pass over the copy finds it in the CPU cache, and that a Guard
// is never held for long.
const copyPiece = 64 << 10

// SpanCopy verifies a block-aligned payload span as its bytes arrive, in
// order and in pieces of any size, and copies the part that falls in
// [off, off+len(dst)) into dst — one copy, from wherever the bytes are
// (a store's mapping, a network buffer) to where the reader wants them.
// Without a guard the bytes copied are checksummed where they landed, so
// what dst holds is what was verified; with one, in the source just before
// the copy (which the source must not change under: a store's immutable
// mapping, a received buffer). dst holds the range only once Close has returned nil:
// after any error its content is unspecified and must not be used.
type SpanCopy struct {
	h     Header
	sums  []byte // the block checksums of the record header
	dst   []byte
	off   int64 // payload offset of dst[0]
	start int64 // payload offset of the span's first byte
	pos   int64 // payload offset of the next byte to arrive
	end   int64 // payload offset at which the span ends
	crc   uint32
	guard *Guard
}

// NewSpanCopy starts a copy of payload bytes [off, off+len(dst)) of the
// shard whose record header is head (h as ParseHeader returned it from
// head, already verified). The span to be written is the one
// RangeInPayload gives; Start returns its payload offset. guard may be nil.
func NewSpanCopy(h Header, head []byte, off int64, dst []byte, guard *Guard) (*SpanCopy, error) {
	start, length, err := RangeInPayload(&h, off, int64(len(dst)))
	if err != nil {
		return nil, err
	}
	hl := HeaderLen(&h)
	if len(head) < hl {
		return nil, fmt.Errorf("%w: shard %v: header of %d bytes, want %d", ErrCorrupt, h.Key(), len(head), hl)
	}
	return &SpanCopy{
		h:     h,
		sums:  head[headerFixedLen : hl-4],
		dst:   dst,
		off:   off,
		start: start,
		pos:   start,
		end:   start + length,
		guard: guard,
	}, nil
}

// Start returns the payload offset of the span's first byte.
func (c *SpanCopy) Start() int64 { return c.start }

// Write takes the span's next bytes. It fails with ErrCorrupt when a block
// that is complete fails its checksum or when b runs past the span, and
// with ErrAbandoned once the guard was abandoned.
func (c *SpanCopy) Write(b []byte) error {
	bs := int64(c.h.BlockSize)
	for len(b) > 0 {
		if c.pos >= c.end {
			return fmt.Errorf("%w: shard %v: span longer than the %d bytes wanted", ErrCorrupt, c.h.Key(), c.end-c.start)
		}
		blockEnd := min((c.pos/bs+1)*bs, c.h.PayloadLen)
		n := min(int64(len(b)), blockEnd-c.pos, copyPiece)
		seg := b[:n]
		lo, hi := max(c.pos, c.off), min(c.pos+n, c.off+int64(len(c.dst)))
		if lo < hi {
			c.crc = crc32.Update(c.crc, castagnoli, seg[:lo-c.pos])
			if err := c.copyIn(c.dst[lo-c.off:hi-c.off], seg[lo-c.pos:hi-c.pos]); err != nil {
				return err
			}
			c.crc = crc32.Update(c.crc, castagnoli, seg[hi-c.pos:])
		} else {
			c.crc = crc32.Update(c.crc, castagnoli, seg)
		}
		c.pos += n
		b = b[n:]
		if c.pos == blockEnd {
			blk := (c.pos - 1) / bs
			want := binary.LittleEndian.Uint32(c.sums[4*blk:])
			if c.crc != want {
				return fmt.Errorf("%w: shard %v: block %d checksum %08x, want %08x", ErrCorrupt, c.h.Key(), blk, c.crc, want)
			}
			c.crc = 0
		}
	}
	return nil
}

// copyIn copies src to d and adds d to the running checksum.
func (c *SpanCopy) copyIn(d, src []byte) error {
	if c.guard == nil {
		copy(d, src)
		c.crc = crc32.Update(c.crc, castagnoli, d)
		return nil
	}
	// Read the source before taking the guard: a page fault on a stalled
	// disk must not hold up the reader that abandons the buffer.
	c.crc = crc32.Update(c.crc, castagnoli, src)
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	if c.guard.gone {
		return ErrAbandoned
	}
	copy(d, src)
	return nil
}

// Close reports whether the whole span arrived and verified.
func (c *SpanCopy) Close() error {
	if c.pos != c.end {
		return fmt.Errorf("%w: shard %v: span ended %d bytes short", ErrCorrupt, c.h.Key(), c.end-c.pos)
	}
	return nil
}
