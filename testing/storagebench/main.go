// Command storagebench prints the cost of hastore's shard encoding pipeline
// (BLAKE3 blob ID, Reed–Solomon parity, per-block CRC32C, record headers)
// side by side with the raw work it is made of: reedsolomon.Encode on
// ready-made shards plus one BLAKE3 pass over the same data. The ratio is the
// pipeline's overhead; the goal is ≥ 0.8.
//
//	go run ./testing/storagebench [-benchtime 1s]
package main

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/klauspost/reedsolomon"
	"github.com/zeebo/blake3"

	"hastore/storage"
)

func main() {
	testing.Init()
	benchtime := flag.Duration("benchtime", time.Second, "time per measurement")
	flag.Parse()
	if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scheme\tsize\tpipeline MB/s\traw RS+BLAKE3 MB/s\tratio\t")
	for _, sc := range []storage.Scheme{{K: 2, M: 1}, {K: 4, M: 2}, {K: 8, M: 3}} {
		for _, size := range []int{256 << 10, 1 << 20, 8 << 20} {
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i * 13)
			}
			codec := &storage.Codec{Scheme: sc}
			pipe := testing.Benchmark(func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, _, err := codec.Encode(data, time.Time{}); err != nil {
						b.Fatal(err)
					}
				}
			})
			enc, err := reedsolomon.New(sc.K, sc.M)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			shards, err := enc.Split(append([]byte(nil), data...))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			raw := testing.Benchmark(func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					_ = blake3.Sum256(data)
					if err := enc.Encode(shards); err != nil {
						b.Fatal(err)
					}
				}
			})
			p, r := mbps(pipe), mbps(raw)
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.2f\t\n", sc, human(size), p, r, p/r)
		}
	}
	tw.Flush()
}

func mbps(r testing.BenchmarkResult) float64 {
	return float64(r.Bytes) * float64(r.N) / r.T.Seconds() / 1e6
}

func human(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
