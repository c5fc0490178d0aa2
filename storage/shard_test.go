package storage

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func testShard(t testing.TB, payloadLen int, blockSize int) *Shard {
	t.Helper()
	p := make([]byte, payloadLen)
	for i := range p {
		p[i] = byte(i*7 + 3)
	}
	return &Shard{
		Header: Header{Blob: Sum(p), Index: 1, K: 1, M: 2, Layout: LayoutReplica, BlobLen: int64(payloadLen),
			PayloadLen: int64(payloadLen), BlockSize: blockSize, Written: time.Unix(1700000000, 42)},
		Payload: p,
	}
}

func TestShardRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name       string
		payloadLen int
		blockSize  int
	}{
		{"empty", 0, 4096},
		{"one byte", 1, 4096},
		{"exact block", 4096, 4096},
		{"block plus one", 4097, 4096},
		{"many blocks", 100_000, 4096},
		{"default block", 300_000, DefaultBlockSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testShard(t, tc.payloadLen, tc.blockSize)
			rec, err := s.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseShard(rec)
			if err != nil {
				t.Fatal(err)
			}
			if got.Header != s.Header {
				t.Errorf("header = %+v, want %+v", got.Header, s.Header)
			}
			if !bytes.Equal(got.Payload, s.Payload) {
				t.Error("payload differs")
			}
		})
	}
}

// Every single-byte change anywhere in a record must be caught: in the
// header by the header checksum or validation, in the payload by a block
// checksum.
func TestShardEveryByteFlipDetected(t *testing.T) {
	s := testShard(t, 3*4096+17, 4096)
	rec, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for i := range rec {
		bad := bytes.Clone(rec)
		bad[i] ^= 0x01
		if _, err := ParseShard(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip at byte %d of %d: err = %v, want ErrCorrupt", i, len(rec), err)
		}
	}
	for _, n := range []int{0, 10, len(rec) - 1} {
		if _, err := ParseShard(rec[:n]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d: err = %v, want ErrCorrupt", n, err)
		}
	}
	if _, err := ParseShard(append(bytes.Clone(rec), 0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("trailing byte: err = %v, want ErrCorrupt", err)
	}
}

func TestShardRangeVerify(t *testing.T) {
	s := testShard(t, 10*4096+100, 4096)
	rec, _ := s.Marshal()
	h, hl, err := ParseHeader(rec)
	if err != nil {
		t.Fatal(err)
	}
	payload := rec[hl:]
	payload[5*4096+7] ^= 0xff // corrupt block 5 only
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		off := rng.Int64N(h.PayloadLen + 1)
		n := rng.Int64N(h.PayloadLen - off + 1)
		start, length, err := RangeInPayload(&h, off, n)
		if err != nil {
			t.Fatal(err)
		}
		if start > off || start+length < off+n || start%4096 != 0 {
			t.Fatalf("span %d+%d does not cover %d+%d", start, length, off, n)
		}
		err = VerifyPayload(&h, rec, start, payload[start:start+length])
		touches := n > 0 && off < 6*4096 && off+n > 5*4096 // any byte of block 5
		if touches != (err != nil) || (err != nil && !errors.Is(err, ErrCorrupt)) {
			t.Fatalf("range %d+%d (span %d+%d): touches bad block %v, err %v", off, n, start, length, touches, err)
		}
	}
	if _, _, err := RangeInPayload(&h, h.PayloadLen, 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("range past end: %v, want ErrInvalid", err)
	}
}

func TestShardMarshalRejectsInconsistentHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Shard)
	}{
		{"payload length", func(s *Shard) { s.Payload = s.Payload[:3] }},
		{"index", func(s *Shard) { s.Index = 3 }},
		{"replica k", func(s *Shard) { s.K = 2 }},
		{"too many shards", func(s *Shard) { s.M = 16 }},
		{"block size", func(s *Shard) { s.BlockSize = 5000 }},
		{"zero id", func(s *Shard) { s.Blob = BlobID{} }},
		{"layout", func(s *Shard) { s.Layout = 9 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testShard(t, 100, 4096)
			tc.mod(s)
			if _, err := s.Marshal(); !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func FuzzParseShard(f *testing.F) {
	for _, n := range []int{0, 1, 5000} {
		rec, err := testShard(f, n, 4096).Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rec)
	}
	f.Add([]byte("HSSH"))
	f.Fuzz(func(t *testing.T, rec []byte) {
		s, err := ParseShard(rec)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		// Whatever parses must re-marshal to exactly the same bytes: the
		// decoder accepts only what the encoder writes.
		again, err := s.Marshal()
		if err != nil {
			t.Fatalf("parsed shard does not marshal: %v", err)
		}
		if !bytes.Equal(again, rec) {
			t.Fatal("parsed shard re-marshals differently")
		}
	})
}
