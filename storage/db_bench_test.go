package storage

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int
}{
	{"4KiB", 4 << 10},
	{"64KiB", 64 << 10},
	{"1MiB", 1 << 20},
}

var benchModes = []struct {
	name    string
	writers int
}{
	{"seq", 1},
	{"conc16", 16},
}

// benchDB opens a store with production defaults in a fresh directory.
func benchDB(b *testing.B) *DB {
	b.Helper()
	db, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	return db
}

// benchShard returns shard i of a run: one payload shared by all, a blob ID
// of its own.
func benchShard(base *Shard, i int) *Shard {
	s := *base
	binary.LittleEndian.PutUint64(s.Blob[:8], uint64(i)+1)
	return &s
}

// runOps runs op(i) for i in [0, n) on the given number of goroutines and
// returns the first error.
func runOps(n, workers int, op func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var first error
	var once sync.Once
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// BenchmarkDBPut measures durable puts: each op returns after its fsync
// round. MB/s counts payload bytes.
func BenchmarkDBPut(b *testing.B) {
	for _, sz := range benchSizes {
		for _, m := range benchModes {
			b.Run(sz.name+"/"+m.name, func(b *testing.B) {
				db := benchDB(b)
				base := dbShard(dbID("bench", sz.n), 0, sz.n, 0)
				ctx := b.Context()
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				syncs := db.Stats().Syncs
				b.ResetTimer()
				if err := runOps(b.N, m.writers, func(i int) error { return db.Put(ctx, benchShard(base, i)) }); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				b.ReportMetric(float64(db.Stats().Syncs-syncs)/float64(b.N), "fsyncs/op")
			})
		}
	}
}

// BenchmarkDBGet measures verified whole-shard reads of a working set that
// fits in the page cache.
func BenchmarkDBGet(b *testing.B) {
	for _, sz := range benchSizes {
		for _, m := range benchModes {
			b.Run(sz.name+"/"+m.name, func(b *testing.B) {
				db := benchDB(b)
				base := dbShard(dbID("bench", sz.n), 0, sz.n, 0)
				ctx := b.Context()
				keys := max(16, (64<<20)/sz.n) // 64 MiB of shards
				if err := runOps(keys, 16, func(i int) error { return db.Put(ctx, benchShard(base, i)) }); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				b.ResetTimer()
				err := runOps(b.N, m.writers, func(i int) error {
					_, err := db.Get(ctx, benchShard(base, i%keys).Key())
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}
