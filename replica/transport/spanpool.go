package transport

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// spanPool holds the buffers the node server reads spans into and sends
// them from (GetShard): gRPC hands a buffer back once the last message
// referring to it is on the wire. Unlike bufferPool's, these are not
// cleared when handed out — the span read into one overwrites all of it
// before anything is sent — and they come in powers of two from 64 KiB to
// 4 MiB; a larger span (a whole-record read) gets a buffer of its own.
type spanPool struct{ tiers [spanTiers]sync.Pool }

const (
	minSpanBuf = 64 << 10
	spanTiers  = 7 // 64 KiB .. 4 MiB
)

var spanBufs = &spanPool{}

var _ mem.BufferPool = spanBufs

// tier returns the smallest tier holding n bytes, or -1.
func spanTier(n int) int {
	if n <= minSpanBuf {
		return 0
	}
	t := bits.Len(uint(n-1)) - bits.Len(uint(minSpanBuf-1))
	if t >= spanTiers {
		return -1
	}
	return t
}

func (p *spanPool) Get(n int) *[]byte {
	t := spanTier(n)
	if t < 0 {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.tiers[t].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, minSpanBuf<<t)
	return &b
}

func (p *spanPool) Put(b *[]byte) {
	c := cap(*b)
	t := spanTier(c)
	if t < 0 || minSpanBuf<<t != c {
		return // not one of ours: let the GC have it
	}
	*b = (*b)[:c]
	p.tiers[t].Put(b)
}
