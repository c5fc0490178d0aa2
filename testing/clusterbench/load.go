package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "hastore/proto/hastorepb"
	"hastore/storage"
)

// result is what one cell (one size, one operation, one target) measured.
type result struct {
	ops, bytes int64
	elapsed    time.Duration // from the first op started to the last op finished
	lats       []time.Duration
	errs       int64
	firstErr   error
	ids        []storage.BlobID // objects written (write cells)

	nodeCPU   []float64 // CPU seconds each node process used during the cell
	selfCPU   float64   // CPU seconds this process (the load generator) used
	hostBusy  float64   // fraction of the host's CPU time not idle
	hostCores int
}

// otherCPU returns the CPU seconds that processes other than the nodes and
// this one used during the cell: other work on the host disturbing it.
func (r *result) otherCPU() float64 {
	v := r.hostBusy*float64(r.hostCores)*r.elapsed.Seconds() - r.selfCPU
	for _, c := range r.nodeCPU {
		v -= c
	}
	return max(v, 0)
}

func (r *result) mbps() float64 { return float64(r.bytes) / r.elapsed.Seconds() / 1e6 }
func (r *result) opsps() float64 {
	return float64(r.ops) / r.elapsed.Seconds()
}

func (r *result) pct(p float64) time.Duration {
	if len(r.lats) == 0 {
		return 0
	}
	i := min(int(float64(len(r.lats))*p), len(r.lats)-1)
	return r.lats[i]
}

// op does one operation for worker w and returns the payload bytes it moved
// and, for writes, the ID it wrote.
type op func(ctx context.Context, w int) (int, storage.BlobID, error)

// run drives op from conc goroutines for about d: no op starts after d, and
// the ops in flight then are waited for and counted, so the throughput is
// everything done over the whole elapsed time (no lost tail).
func run(ctx context.Context, conc int, d time.Duration, write bool, fn op) *result {
	type acc struct {
		ops, bytes, errs int64
		first            error
		lats             []time.Duration
		ids              []storage.BlobID
	}
	accs := make([]acc, conc)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range conc {
		wg.Go(func() {
			a := &accs[w]
			consecutive := 0
			for ctx.Err() == nil && time.Now().Before(deadline) {
				octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				t0 := time.Now()
				n, id, err := fn(octx, w)
				lat := time.Since(t0)
				cancel()
				if err != nil {
					a.errs++
					if a.first == nil {
						a.first = err
					}
					if consecutive++; consecutive >= 20 {
						return // this worker's target is broken; do not spin
					}
					continue
				}
				consecutive = 0
				a.ops++
				a.bytes += int64(n)
				a.lats = append(a.lats, lat)
				if write {
					a.ids = append(a.ids, id)
				}
			}
		})
	}
	wg.Wait()
	r := &result{elapsed: time.Since(start)}
	for i := range accs {
		a := &accs[i]
		r.ops += a.ops
		r.bytes += a.bytes
		r.errs += a.errs
		if r.firstErr == nil {
			r.firstErr = a.first
		}
		r.lats = append(r.lats, a.lats...)
		r.ids = append(r.ids, a.ids...)
	}
	slices.Sort(r.lats)
	return r
}

// payloads hands each worker a buffer of random bytes of one size and makes
// every object it yields distinct: each 4 KiB block gets a stamp unique to
// the run, the object and the block. Content addressing would otherwise
// deduplicate the writes, and no two blocks of the run are equal either.
type payloads struct {
	size  int
	bufs  [][]byte
	nonce uint64
	seq   *atomic.Uint64
}

func newPayloads(size, workers int, seq *atomic.Uint64) *payloads {
	p := &payloads{size: size, nonce: rand.Uint64(), seq: seq}
	var seed [32]byte
	for w := range workers {
		binary.LittleEndian.PutUint64(seed[:], p.nonce)
		binary.LittleEndian.PutUint64(seed[8:], uint64(w))
		binary.LittleEndian.PutUint64(seed[16:], uint64(size))
		b := make([]byte, size)
		_, _ = rand.NewChaCha8(seed).Read(b)
		p.bufs = append(p.bufs, b)
	}
	return p
}

// next returns worker w's buffer with fresh content. The buffer is reused by
// w's next call only, after its previous op has returned.
func (p *payloads) next(w int) []byte {
	b := p.bufs[w]
	s := p.seq.Add(1)
	for off := 0; off < len(b); off += 4096 {
		n := min(16, len(b)-off)
		var stamp [16]byte
		binary.LittleEndian.PutUint64(stamp[:], p.nonce^s)
		binary.LittleEndian.PutUint64(stamp[8:], s<<20|uint64(off/4096))
		copy(b[off:off+n], stamp[:n])
	}
	return b
}

// reader hands out the IDs of a write cell in random order, reshuffling
// whenever every one has been read.
type reader struct {
	mu   sync.Mutex
	ids  []storage.BlobID
	next int
}

func newReader(ids []storage.BlobID) *reader {
	r := &reader{ids: slices.Clone(ids)}
	rand.Shuffle(len(r.ids), func(i, j int) { r.ids[i], r.ids[j] = r.ids[j], r.ids[i] })
	return r
}

func (r *reader) pick() storage.BlobID {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next == len(r.ids) {
		rand.Shuffle(len(r.ids), func(i, j int) { r.ids[i], r.ids[j] = r.ids[j], r.ids[i] })
		r.next = 0
	}
	id := r.ids[r.next]
	r.next++
	return id
}

const putChunk = 1 << 20 // what `hastore admin object put` sends per message

// putObject streams data to a node with PutObject and returns its ID.
func putObject(ctx context.Context, c pb.ClusterClient, data []byte) (storage.BlobID, error) {
	var id storage.BlobID
	stream, err := c.PutObject(ctx)
	if err != nil {
		return id, err
	}
	for rest := data; ; {
		n := min(len(rest), putChunk)
		if err := stream.Send(&pb.DataChunk{Data: rest[:n]}); err != nil {
			break // the real error comes from CloseAndRecv
		}
		if rest = rest[n:]; len(rest) == 0 {
			break
		}
	}
	ref, err := stream.CloseAndRecv()
	if err != nil {
		return id, err
	}
	if len(ref.Id) != len(id) || ref.Size != int64(len(data)) {
		return id, fmt.Errorf("PutObject answered id of %d bytes, size %d; sent %d bytes", len(ref.Id), ref.Size, len(data))
	}
	copy(id[:], ref.Id)
	return id, nil
}

// getObject reads a whole object with GetObject. With verify, the bytes are
// also hashed and checked against the ID here (the nodes already do); else
// only the length is checked, to keep the load generator light.
func getObject(ctx context.Context, c pb.ClusterClient, id storage.BlobID, size int, verify bool) (int, error) {
	stream, err := c.GetObject(ctx, &pb.GetObjectRequest{Id: id[:], Length: -1})
	if err != nil {
		return 0, err
	}
	n := 0
	var data []byte
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
		n += len(chunk.Data)
		if verify {
			data = append(data, chunk.Data...)
		}
	}
	if n != size {
		return n, fmt.Errorf("object %s: read %d bytes, want %d", id, n, size)
	}
	if verify && storage.Sum(data) != id {
		return n, errors.New("object " + id.String() + ": content does not match its ID")
	}
	return n, nil
}
