package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// feed writes span to c in pieces of random sizes, as network frames
// arrive.
func feed(c *SpanCopy, span []byte, rng *rand.Rand) error {
	for len(span) > 0 {
		n := min(len(span), 1+rng.IntN(40_000))
		if err := c.Write(span[:n]); err != nil {
			return err
		}
		span = span[n:]
	}
	return c.Close()
}

// TestSpanCopy: the range lands in dst, whatever pieces the span arrives
// in, and a damaged byte anywhere in the span — inside the range or only in
// the part of a block around it — fails the copy with ErrCorrupt.
func TestSpanCopy(t *testing.T) {
	const bs = 4096
	s := dbShard(dbID("spancopy", 0), 0, 5*bs+123, bs)
	rec := dbMarshal(t, s)
	h, hl, err := ParseHeader(rec)
	if err != nil {
		t.Fatal(err)
	}
	head, payload := rec[:hl], rec[hl:]
	plen := int64(len(payload))
	rng := rand.New(rand.NewPCG(1, 2))
	for _, r := range []struct{ off, n int64 }{
		{0, 0}, {0, 1}, {0, plen}, {7, 10}, {bs - 1, 2}, {bs, bs}, {bs + 1, 3*bs - 2},
		{plen - 1, 1}, {plen - 200, 200}, {plen, 0}, {100, plen - 100},
	} {
		t.Run(fmt.Sprintf("%d+%d", r.off, r.n), func(t *testing.T) {
			start, length, err := RangeInPayload(&h, r.off, r.n)
			if err != nil {
				t.Fatal(err)
			}
			span := payload[start : start+length]
			dst := bytes.Repeat([]byte{0xee}, int(r.n))
			c, err := NewSpanCopy(h, head, r.off, dst, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.Start() != start {
				t.Fatalf("Start = %d, want %d", c.Start(), start)
			}
			if err := feed(c, span, rng); err != nil {
				t.Fatalf("intact span: %v", err)
			}
			if !bytes.Equal(dst, payload[r.off:r.off+r.n]) {
				t.Fatal("dst does not hold the range")
			}
			// Every byte of the span is covered by a checksum that is
			// checked, including those of its blocks outside the range.
			for _, at := range []int64{0, length / 2, length - 1, r.off - start, r.off - start + r.n - 1} {
				if at < 0 || at >= length {
					continue
				}
				bad := bytes.Clone(span)
				bad[at] ^= 0x10
				c, _ := NewSpanCopy(h, head, r.off, make([]byte, r.n), nil)
				if err := feed(c, bad, rng); !errors.Is(err, ErrCorrupt) {
					t.Errorf("byte %d of the span flipped: %v, want ErrCorrupt", at, err)
				}
			}
			if length > 0 {
				c, _ := NewSpanCopy(h, head, r.off, make([]byte, r.n), nil)
				if err := feed(c, span[:length-1], rng); !errors.Is(err, ErrCorrupt) {
					t.Errorf("short span: %v, want ErrCorrupt", err)
				}
			}
			c, _ = NewSpanCopy(h, head, r.off, make([]byte, r.n), nil)
			if err := feed(c, append(bytes.Clone(span), 0), rng); !errors.Is(err, ErrCorrupt) {
				t.Errorf("long span: %v, want ErrCorrupt", err)
			}
		})
	}
	if _, err := NewSpanCopy(h, head, plen-1, make([]byte, 2), nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("range past the payload: %v, want ErrInvalid", err)
	}
	if _, err := NewSpanCopy(h, head[:hl-1], 0, make([]byte, 1), nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated header: %v, want ErrCorrupt", err)
	}
}

// TestSpanCopyGuard: once its guard is abandoned, a copy writes nothing
// more into dst and fails with ErrAbandoned.
func TestSpanCopyGuard(t *testing.T) {
	const bs = 4096
	s := dbShard(dbID("spancopy", 1), 0, 4*bs, bs)
	rec := dbMarshal(t, s)
	h, hl, _ := ParseHeader(rec)
	var g Guard
	dst := make([]byte, 4*bs)
	c, err := NewSpanCopy(h, rec[:hl], 0, dst, &g)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(rec[hl : hl+bs]); err != nil {
		t.Fatal(err)
	}
	g.Abandon()
	mine := bytes.Repeat([]byte{0x77}, len(dst))
	copy(dst, mine)
	if err := c.Write(rec[hl+bs:]); !errors.Is(err, ErrAbandoned) {
		t.Fatalf("write after Abandon: %v, want ErrAbandoned", err)
	}
	if !bytes.Equal(dst, mine) {
		t.Fatal("a copy wrote into dst after its guard was abandoned")
	}
}

// TestDBReadInto: ReadInto fills the caller's buffer with verified bytes,
// and refuses a record with a damaged byte in the blocks the range covers.
func TestDBReadInto(t *testing.T) {
	db := openTestDB(t, t.TempDir(), dbTestOptions(t))
	ctx := t.Context()
	const bs = 4096
	s := dbShard(dbID("readinto", 0), 0, 3*bs+17, bs)
	if err := db.Put(ctx, s); err != nil {
		t.Fatal(err)
	}
	plen := int64(len(s.Payload))
	for _, r := range []struct{ off, n int64 }{{0, plen}, {5, 10}, {bs - 3, 6}, {plen - 1, 1}, {plen, 0}} {
		p := make([]byte, r.n)
		h, err := db.ReadInto(ctx, s.Key(), r.off, p, nil)
		if err != nil || !bytes.Equal(p, s.Payload[r.off:r.off+r.n]) || h.Key() != s.Key() {
			t.Errorf("ReadInto %d+%d: %v, equal %v, header %v", r.off, r.n, err, bytes.Equal(p, s.Payload[r.off:r.off+r.n]), h.Key())
		}
	}
	if _, err := db.ReadInto(ctx, s.Key(), plen-1, make([]byte, 2), nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("ReadInto past the end: %v, want ErrInvalid", err)
	}
	var g Guard
	g.Abandon()
	if _, err := db.ReadInto(ctx, s.Key(), 0, make([]byte, 10), &g); !errors.Is(err, ErrAbandoned) || errors.Is(err, ErrCorrupt) {
		t.Errorf("ReadInto with an abandoned guard: %v, want ErrAbandoned, not ErrCorrupt", err)
	}
	if n := db.corruptions.Load(); n != 0 {
		t.Errorf("an abandoned read counted as damage %d times", n)
	}
}
