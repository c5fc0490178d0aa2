package storage

import (
	"testing"
)

// BenchmarkDBReadRange measures verified ranged reads (ReadAt, and
// ReadSpan, which the node server sends from) of one 4 MiB shard in the
// page cache: the storage end of the large-file read path. MB/s counts the
// bytes of the range.
func BenchmarkDBReadRange(b *testing.B) {
	db := benchDB(b)
	ctx := b.Context()
	s := dbShard(dbID("readbench", 0), 0, 4<<20, DefaultBlockSize)
	if err := db.Put(ctx, s); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int64{64 << 10, 1 << 20} {
		name := map[int64]string{64 << 10: "64KiB", 1 << 20: "1MiB"}[n]
		// Unaligned, so each range touches one block more than it fills.
		off := int64(DefaultBlockSize/2 + 100)
		b.Run("ReadAt/"+name, func(b *testing.B) {
			b.SetBytes(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := db.ReadAt(ctx, s.Key(), off, n); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("ReadSpan/"+name, func(b *testing.B) {
			b.SetBytes(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, _, err := db.ReadSpan(ctx, s.Key(), off, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
