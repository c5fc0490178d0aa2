package storage

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/zeebo/blake3"
)

func TestParseScheme(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Scheme
		ok   bool
	}{
		{"2+1", Scheme{2, 1}, true},
		{"4+2", Scheme{4, 2}, true},
		{"1+0", Scheme{1, 0}, true},
		{"8+8", Scheme{8, 8}, true},
		{"8+9", Scheme{}, false},
		{"0+2", Scheme{}, false},
		{"2-1", Scheme{}, false},
		{"", Scheme{}, false},
		{"a+b", Scheme{}, false},
	} {
		got, err := ParseScheme(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseScheme(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// parse decodes records as a reader would get them from disk.
func parse(t *testing.T, recs []Record) []*Shard {
	t.Helper()
	out := make([]*Shard, len(recs))
	for i, r := range recs {
		s, err := ParseShard(r.Bytes())
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
		out[i] = s
	}
	return out
}

// The property the whole product rests on: for random sizes and schemes,
// losing or corrupting any m shards still rebuilds the exact bytes, and
// losing m+1 fails cleanly instead of returning wrong bytes.
func TestErasureLoseAnyM(t *testing.T) {
	schemes := []Scheme{{1, 0}, {2, 1}, {4, 2}, {8, 3}}
	rng := rand.New(rand.NewPCG(7, 11))
	sizes := []int{0, 1, 2, 63, 64 << 10, 8 << 20}
	for range 14 {
		// Log-uniform sizes so that small and large both get tested.
		sizes = append(sizes, int(rng.Float64()*rng.Float64()*rng.Float64()*float64(8<<20)))
	}
	if testing.Short() {
		sizes = sizes[:8]
	}
	for _, sc := range schemes {
		for _, small := range []int{0, DefaultSmallObject} {
			codec := &Codec{Scheme: sc, SmallObject: small, BlockSize: 64 << 10}
			for _, size := range sizes {
				data := make([]byte, size)
				for i := 0; i < len(data); i += 8 {
					v := rng.Uint64()
					for j := 0; j < 8 && i+j < len(data); j++ {
						data[i+j] = byte(v >> (8 * j))
					}
				}
				id, recs, err := codec.Encode(data, time.Unix(1, 0))
				if err != nil {
					t.Fatalf("%v size %d: %v", sc, size, err)
				}
				n := len(recs)
				if want := sc.K + sc.M; codec.LayoutFor(int64(size)) == LayoutErasure && n != want {
					t.Fatalf("%v: %d shards, want %d", sc, n, want)
				}
				if codec.LayoutFor(int64(size)) == LayoutReplica && n != sc.M+1 {
					t.Fatalf("%v replica: %d shards, want %d", sc, n, sc.M+1)
				}
				lose := sc.M
				if codec.LayoutFor(int64(size)) == LayoutReplica {
					lose = n - 1
				}
				// Drop a random set of `lose` shards, and corrupt another
				// random set of the same size in a second trial.
				for trial := range 2 {
					perm := rng.Perm(n)
					shards := parse(t, recs)
					for _, i := range perm[:lose] {
						if trial == 0 {
							shards[i] = nil
							continue
						}
						bad := recs[i].Bytes()
						if pl := len(bad) - HeaderLen(&shards[i].Header); pl > 0 {
							bad[len(bad)-1-rng.IntN(pl)] ^= 0x40
						} else {
							bad[rng.IntN(len(bad))] ^= 1 // empty payload: hit the header
						}
						if _, err := ParseShard(bad); !errors.Is(err, ErrCorrupt) {
							t.Fatalf("%v size %d: corrupt shard %d not detected: %v", sc, size, i, err)
						}
						shards[i] = nil // a reader drops what fails its checksum
					}
					got, missing, err := Decode(id, shards)
					if err != nil {
						t.Fatalf("%v size %d trial %d lost %v: %v", sc, size, trial, perm[:lose], err)
					}
					if !bytes.Equal(got, data) {
						t.Fatalf("%v size %d: rebuilt bytes differ", sc, size)
					}
					if len(missing) != lose {
						t.Fatalf("missing = %v, want %d entries", missing, lose)
					}
					// Repair: rebuild each lost shard and compare with the original record.
					for _, i := range perm[:lose] {
						rec, err := Reconstruct(id, shards, i, time.Unix(1, 0))
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(rec.Bytes(), recs[i].Bytes()) {
							t.Fatalf("%v size %d: reconstructed shard %d differs from original", sc, size, i)
						}
					}
				}
				// One loss too many must fail, not guess — except for an empty
				// blob, whose payloads are empty and need no rebuilding.
				shards := parse(t, recs)
				perm := rng.Perm(n)
				for _, i := range perm[:min(lose+1, n)] {
					shards[i] = nil
				}
				if _, _, err := Decode(id, shards); !errors.Is(err, ErrTooFewShards) && !(lose+1 < n && size == 0) {
					t.Fatalf("%v size %d lost %d: err = %v, want ErrTooFewShards", sc, size, lose+1, err)
				}
			}
		}
	}
}

// A shard whose checksum is right but whose content is wrong (written wrong
// before it was checksummed) must not produce wrong bytes.
func TestDecodeChecksBlobID(t *testing.T) {
	codec := &Codec{Scheme: Scheme{2, 1}}
	data := bytes.Repeat([]byte("hastore "), 20000)
	id, recs, err := codec.Encode(data, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	shards := parse(t, recs)
	evil := *shards[0]
	evil.Payload = bytes.Clone(evil.Payload)
	evil.Payload[10] ^= 1
	if _, _, err := Decode(id, []*Shard{&evil, shards[1]}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	// Shards of another blob are ignored, not mixed in.
	_, other, _ := codec.Encode(bytes.Repeat([]byte("x"), 100000), time.Time{})
	os := parse(t, other)
	got, _, err := Decode(id, []*Shard{os[0], shards[1], shards[2]})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("with a foreign shard: err %v", err)
	}
}

// The erasure format is pinned: if a library upgrade changed the coding
// matrix, parity written by older nodes would rebuild wrong data. This test
// fails first.
func TestErasureFormatGolden(t *testing.T) {
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i*31 + i>>8)
	}
	for _, tc := range []struct {
		scheme Scheme
		want   string
	}{
		{Scheme{2, 1}, "641e4c222184139f025cd8f775b1aea7"},
		{Scheme{4, 2}, "3451e91cc8905fb2d70ed3f1c855be62"},
		{Scheme{3, 2}, "e5fcb4670348765ce765a7074f4f1966"},
	} {
		_, recs, err := (&Codec{Scheme: tc.scheme}).Encode(data, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		h := blake3.New()
		for _, r := range recs {
			h.Write(r.Bytes())
		}
		if got := hex.EncodeToString(h.Sum(nil))[:32]; got != tc.want {
			t.Errorf("scheme %v: records hash %s, want %s (erasure format changed?)", tc.scheme, got, tc.want)
		}
	}
}
