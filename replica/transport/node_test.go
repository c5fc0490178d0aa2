package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"hastore/storage"
)

// storeImpls lists the stores the shard tests run against.
var storeImpls = []struct {
	name string
	new  func(t *testing.T) Store
}{
	{"fake", func(*testing.T) Store { return newFakeStore() }},
	{"db", func(t *testing.T) Store {
		db, err := storage.Open(t.TempDir(), storage.Options{Reserve: 1 << 20, MemTableSize: 4 << 20, GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}},
}

var _ Store = (*storage.DB)(nil)

func TestShardRoundTrip(t *testing.T) {
	const blockSize = 64 << 10
	for _, impl := range storeImpls {
		t.Run(impl.name, func(t *testing.T) {
			n := startNode(t, "n", Config{Key: testKey}, impl.new(t))
			c, err := newPool(t, Config{Key: testKey}).Node(n.addr)
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)

			// 3.5 MiB + a bit: several PutShard and GetShard chunks, a
			// short last block.
			rec := makeRecord(t, 3<<20+512<<10+123, blockSize)
			want, err := storage.ParseShard(rec)
			if err != nil {
				t.Fatal(err)
			}
			key, payload := want.Key(), want.Payload
			if err := c.PutShard(ctx, rec); err != nil {
				t.Fatalf("PutShard: %v", err)
			}

			got, err := c.GetRecord(ctx, key)
			if err != nil || !bytes.Equal(got, rec) {
				t.Fatalf("GetRecord: %d bytes, %v; want the %d-byte record", len(got), err, len(rec))
			}

			plen := int64(len(payload))
			for _, r := range []struct{ off, n int64 }{
				{0, -1},
				{0, plen},
				{0, 0},
				{1, 1},
				{blockSize - 1, 2},         // straddles a block boundary
				{blockSize, blockSize},     // exactly one block
				{100, 2<<20 + 5},           // several chunks, unaligned
				{plen - 1, 1},              // last byte, in the short block
				{plen - 10, -1},            // tail
				{plen, 0},                  // empty at the end
				{3 * blockSize, -1},        // from a block boundary to the end
				{plen/2 + 7, plen/2 - 100}, // middle
			} {
				t.Run(fmt.Sprintf("range %d+%d", r.off, r.n), func(t *testing.T) {
					// A deadline per range: under -race on a loaded
					// machine the whole list takes more than one.
					ctx := ctxT(t)
					b, h, err := c.GetShard(ctx, key, r.off, r.n)
					if err != nil {
						t.Fatalf("GetShard: %v", err)
					}
					end := r.off + r.n
					if r.n < 0 {
						end = plen
					}
					if !bytes.Equal(b, payload[r.off:end]) {
						t.Errorf("GetShard returned %d bytes, not payload[%d:%d]", len(b), r.off, end)
					}
					if h.Key() != key || h.PayloadLen != plen || h.BlockSize != blockSize {
						t.Errorf("header %+v", h)
					}
					p := bytes.Repeat([]byte{0xee}, int(end-r.off))
					if err := c.ReadShardInto(ctx, key, r.off, p, nil); err != nil || !bytes.Equal(p, payload[r.off:end]) {
						t.Errorf("ReadShardInto: %v; payload[%d:%d] equal %v", err, r.off, end, bytes.Equal(p, payload[r.off:end]))
					}
				})
			}

			ctx = ctxT(t)
			for _, bad := range []struct{ off, n int64 }{{plen, 1}, {-1, 1}, {0, plen + 1}, {plen + 1, -1}} {
				if _, _, err := c.GetShard(ctx, key, bad.off, bad.n); !errors.Is(err, storage.ErrInvalid) {
					t.Errorf("GetShard %d+%d = %v, want ErrInvalid", bad.off, bad.n, err)
				}
				if bad.n < 0 {
					continue
				}
				if err := c.ReadShardInto(ctx, key, bad.off, make([]byte, bad.n), nil); !errors.Is(err, storage.ErrInvalid) {
					t.Errorf("ReadShardInto %d+%d = %v, want ErrInvalid", bad.off, bad.n, err)
				}
			}

			h, err := c.StatShard(ctx, key)
			if err != nil {
				t.Fatalf("StatShard: %v", err)
			}
			if h != want.Header {
				t.Errorf("StatShard = %+v, want %+v", h, want.Header)
			}
			// Written must survive the wire to the nanosecond.
			if !h.Written.Equal(want.Written) {
				t.Errorf("Written %v, want %v", h.Written, want.Written)
			}

			var listed []storage.Header
			if err := c.ListShards(ctx, func(h storage.Header) error { listed = append(listed, h); return nil }); err != nil {
				t.Fatalf("ListShards: %v", err)
			}
			if len(listed) != 1 || listed[0] != want.Header {
				t.Errorf("ListShards = %+v", listed)
			}
			stop := errors.New("stop")
			if err := c.ListShards(ctx, func(storage.Header) error { return stop }); err != stop {
				t.Errorf("ListShards with failing fn = %v, want fn's error", err)
			}

			info, err := c.Info(ctx)
			if err != nil || info.ID != "n" || info.Shards != 1 {
				t.Errorf("Info = %+v, %v", info, err)
			}

			// Twice: deleting what is gone succeeds, so deletes can be retried.
			for range 2 {
				if err := c.DeleteShard(ctx, key, time.Time{}); err != nil {
					t.Fatalf("DeleteShard: %v", err)
				}
			}
			for name, call := range map[string]func() error{
				"GetShard":      func() error { _, _, err := c.GetShard(ctx, key, 0, -1); return err },
				"GetRecord":     func() error { _, err := c.GetRecord(ctx, key); return err },
				"ReadShardInto": func() error { return c.ReadShardInto(ctx, key, 0, make([]byte, 10), nil) },
				"StatShard":     func() error { _, err := c.StatShard(ctx, key); return err },
			} {
				err := call()
				if !errors.Is(err, storage.ErrNotFound) || status.Code(err) != codes.NotFound {
					t.Errorf("%s after delete = %v, want storage.ErrNotFound", name, err)
				}
			}
		})
	}
}

// TestGetShardVerifiesClientSide plays a peer that serves bad bytes without
// noticing: the client must refuse them with ErrCorrupt.
func TestGetShardVerifiesClientSide(t *testing.T) {
	const blockSize = 16 << 10
	rec := makeRecord(t, 200<<10+17, blockSize)
	other := makeRecord(t, 200<<10+17, blockSize)
	sh, _ := storage.ParseShard(rec)
	otherHdr := other[:storage.HeaderLen(&sh.Header)]

	for _, tc := range []struct {
		name   string
		tamper func(hdr, span []byte, off int64) ([]byte, []byte, int64)
	}{
		{"flipped payload bit", func(hdr, span []byte, off int64) ([]byte, []byte, int64) {
			span[len(span)/2] ^= 1
			return hdr, span, off
		}},
		{"flipped header bit", func(hdr, span []byte, off int64) ([]byte, []byte, int64) {
			hdr[20] ^= 0x80
			return hdr, span, off
		}},
		{"another shard's header", func(_, span []byte, off int64) ([]byte, []byte, int64) {
			return bytes.Clone(otherHdr), span, off
		}},
		{"short span", func(hdr, span []byte, off int64) ([]byte, []byte, int64) {
			return hdr, span[:len(span)-1], off
		}},
		{"long span", func(hdr, span []byte, off int64) ([]byte, []byte, int64) {
			return hdr, append(span, 0), off
		}},
		{"shifted span", func(hdr, span []byte, off int64) ([]byte, []byte, int64) {
			return hdr, span, off + blockSize
		}},
		{"truncated header", func(hdr, span []byte, off int64) ([]byte, []byte, int64) {
			return hdr[:len(hdr)-1], span, off
		}},
		{"no header", func(_, span []byte, off int64) ([]byte, []byte, int64) {
			return nil, span, off
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newFakeStore()
			if _, err := store.PutRecord(context.Background(), rec); err != nil {
				t.Fatal(err)
			}
			store.tamper = tc.tamper
			n := startNode(t, "n", Config{Key: testKey}, store)
			c, err := newPool(t, Config{Key: testKey}).Node(n.addr)
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			if b, _, err := c.GetShard(ctx, sh.Key(), 3, blockSize*3); !errors.Is(err, storage.ErrCorrupt) {
				t.Errorf("GetShard = %d bytes, %v; want ErrCorrupt", len(b), err)
			}
			if _, err := c.GetRecord(ctx, sh.Key()); !errors.Is(err, storage.ErrCorrupt) {
				t.Errorf("GetRecord = %v; want ErrCorrupt", err)
			}
			if err := c.ReadShardInto(ctx, sh.Key(), 3, make([]byte, blockSize*3), nil); !errors.Is(err, storage.ErrCorrupt) {
				t.Errorf("ReadShardInto = %v; want ErrCorrupt", err)
			}
		})
	}
}

// TestErrorKindsCrossTheWire checks that every storage error kind returned
// by the peer's store comes back as the same kind.
func TestErrorKindsCrossTheWire(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{storage.ErrNotFound, codes.NotFound},
		{storage.ErrCorrupt, codes.DataLoss},
		{storage.ErrNoSpace, codes.ResourceExhausted},
		{storage.ErrInvalid, codes.InvalidArgument},
		{storage.ErrClosed, codes.Unavailable},
		{errors.New("disk on fire"), codes.Internal},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			store := newFakeStore()
			n := startNode(t, "n", Config{Key: testKey}, store)
			store.err = fmt.Errorf("shard xyz: %w", tc.err)
			c, err := newPool(t, Config{Key: testKey}).Node(n.addr)
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			key := storage.ShardKey{Blob: storage.Sum([]byte("x"))}
			for name, call := range map[string]func() error{
				"PutShard":    func() error { return c.PutShard(ctx, makeRecord(t, 1000, 4096)) },
				"GetShard":    func() error { _, _, err := c.GetShard(ctx, key, 0, 10); return err },
				"StatShard":   func() error { _, err := c.StatShard(ctx, key); return err },
				"DeleteShard": func() error { return c.DeleteShard(ctx, key, time.Time{}) },
				"ListShards":  func() error { return c.ListShards(ctx, func(storage.Header) error { return nil }) },
				"Info":        func() error { _, err := c.Info(ctx); return err },
			} {
				err := call()
				if got := status.Code(err); got != tc.code {
					t.Errorf("%s: code %v (%v), want %v", name, got, err, tc.code)
				}
				if tc.code != codes.Internal && !errors.Is(err, tc.err) {
					t.Errorf("%s: %v is not %v", name, err, tc.err)
				}
			}
		})
	}
}

func TestFromStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   error
		is   []error
		not  []error
	}{
		{"nil", nil, nil, nil},
		{"no status", errors.New("plain"), nil, []error{storage.ErrNotFound}},
		// gRPC's own RESOURCE_EXHAUSTED (message too large) is not a full disk.
		{"bare resource exhausted", status.Error(codes.ResourceExhausted, "message larger than max"), nil, []error{storage.ErrNoSpace}},
		{"bare not found", status.Error(codes.NotFound, "x"), []error{storage.ErrNotFound}, nil},
		{"bare data loss", status.Error(codes.DataLoss, "x"), []error{storage.ErrCorrupt}, nil},
		{"unavailable", status.Error(codes.Unavailable, "connection refused"), []error{ErrUnavailable}, []error{storage.ErrClosed}},
		{"closed", ToStatus(storage.ErrClosed), []error{ErrUnavailable, storage.ErrClosed}, nil},
		{"too few shards", ToStatus(fmt.Errorf("blob b: %w", storage.ErrTooFewShards)), []error{storage.ErrTooFewShards}, []error{storage.ErrClosed}},
		{"deadline", ToStatus(context.DeadlineExceeded), []error{context.DeadlineExceeded}, nil},
		{"canceled", status.Error(codes.Canceled, "x"), []error{context.Canceled}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := FromStatus(tc.in)
			if (err == nil) != (tc.in == nil) {
				t.Fatalf("FromStatus(%v) = %v", tc.in, err)
			}
			for _, k := range tc.is {
				if !errors.Is(err, k) {
					t.Errorf("%v is not %v", err, k)
				}
			}
			for _, k := range tc.not {
				if errors.Is(err, k) {
					t.Errorf("%v is %v", err, k)
				}
			}
			if tc.in != nil && status.Code(err) != status.Code(tc.in) {
				t.Errorf("status.Code changed from %v to %v", status.Code(tc.in), status.Code(err))
			}
		})
	}
}

// TestPutShardRejectsBadRecords checks the server's own framing checks and
// that the store's verification reaches the client as ErrCorrupt.
func TestPutShardRejectsBadRecords(t *testing.T) {
	rec := makeRecord(t, 300<<10, 64<<10)
	for _, tc := range []struct {
		name string
		rec  []byte
	}{
		{"trailing bytes", append(bytes.Clone(rec), 1, 2, 3)},
		{"trailing megabyte", append(bytes.Clone(rec), make([]byte, 1<<20)...)},
		{"truncated", rec[:len(rec)-1]},
		{"flipped payload bit", func() []byte { r := bytes.Clone(rec); r[len(r)-5] ^= 1; return r }()},
		{"garbage", bytes.Repeat([]byte("garbage!"), 1000)},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newFakeStore()
			n := startNode(t, "n", Config{Key: testKey}, store)
			c, err := newPool(t, Config{Key: testKey}).Node(n.addr)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.PutShard(ctxT(t), tc.rec); !errors.Is(err, storage.ErrCorrupt) {
				t.Errorf("PutShard = %v, want ErrCorrupt", err)
			}
			if store.putRecs != 0 {
				t.Errorf("store got %d records", store.putRecs)
			}
		})
	}
}
