package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/klauspost/reedsolomon"

	"hastore/metrics"
	"hastore/replica/meta"
	"hastore/storage"
)

// get is Get (metrics.go), uncounted.
func (c *Cluster) get(ctx context.Context, id storage.BlobID) ([]byte, error) {
	o, err := c.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	data, err := c.getWhole(ctx, o)
	if errors.Is(err, storage.ErrTooFewShards) {
		// Repair may have moved shards since this node applied the
		// record: catch up and try once more with fresh placement.
		if c.catchUp(ctx) == nil {
			if o2, ok, _ := c.meta.Object(id); ok && !slices.Equal(o2.Placement, o.Placement) {
				return c.getWhole(ctx, o2)
			}
		}
	}
	return data, err
}

func (c *Cluster) getWhole(ctx context.Context, o meta.Object) ([]byte, error) {
	need := o.K
	if o.Layout == storage.LayoutReplica {
		need = 1
	}
	got, bad, err := c.gather(ctx, o, c.preference(o, nil), need, func(ctx context.Context, svc ShardService, k storage.ShardKey) (any, error) {
		return svc.GetShard(ctx, k)
	})
	if len(bad) > 0 {
		c.repair.enqueue(o.ID)
	}
	if err != nil {
		return nil, err
	}
	shards := make([]*storage.Shard, 0, len(got))
	for _, v := range got {
		shards = append(shards, v.(*storage.Shard))
	}
	data, _, err := storage.Decode(o.ID, shards)
	if err != nil {
		c.repair.enqueue(o.ID)
		return nil, fmt.Errorf("reading object %s: %w", o.ID, err)
	}
	return data, nil
}

// readAt is ReadAt (metrics.go), uncounted.
func (c *Cluster) readAt(ctx context.Context, id storage.BlobID, off, n int64) ([]byte, error) {
	o, err := c.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	if off < 0 || n < 0 || off > o.Size {
		return nil, fmt.Errorf("%w: range %d+%d of object %s of %d bytes", storage.ErrInvalid, off, n, id, o.Size)
	}
	n = min(n, o.Size-off)
	if n == 0 {
		return []byte{}, nil
	}
	out := make([]byte, n)
	if err := c.readObjectInto(ctx, o, off, out); err != nil {
		return nil, err
	}
	return out, nil
}

// ReadInto reads bytes [off, off+len(p)) of the object into p and returns
// how many it read: fewer than len(p) only at the object's end (then with
// io.EOF, like io.ReaderAt). It is ReadAt without the result's allocation
// and copy: the caller's buffer, a pooled one say, receives each shard's
// verified bytes directly.
func (c *Cluster) ReadInto(ctx context.Context, id storage.BlobID, off int64, p []byte) (int, error) {
	start := time.Now()
	n, err := c.readInto(ctx, id, off, p)
	if err == io.EOF {
		metrics.ObserveObject("read", start, nil)
	} else {
		metrics.ObserveObject("read", start, err)
	}
	return n, err
}

func (c *Cluster) readInto(ctx context.Context, id storage.BlobID, off int64, p []byte) (int, error) {
	o, err := c.lookup(ctx, id)
	if err != nil {
		return 0, err
	}
	if off < 0 || off > o.Size {
		return 0, fmt.Errorf("%w: range %d+%d of object %s of %d bytes", storage.ErrInvalid, off, len(p), id, o.Size)
	}
	n := min(int64(len(p)), o.Size-off)
	if n > 0 {
		if err := c.readObjectInto(ctx, o, off, p[:n]); err != nil {
			return 0, err
		}
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// readObjectInto fills p with the object's bytes from off; the range is
// within the object. Each data shard's part of the range is one piece,
// read (or rebuilt) and copied straight into its place in p.
func (c *Cluster) readObjectInto(ctx context.Context, o meta.Object, off int64, p []byte) error {
	n := int64(len(p))
	if o.Layout == storage.LayoutReplica {
		got, bad, err := c.gather(ctx, o, c.preference(o, nil), 1, func(ctx context.Context, svc ShardService, k storage.ShardKey) (any, error) {
			return svc.ReadShard(ctx, k, off, n)
		})
		if len(bad) > 0 {
			c.repair.enqueue(o.ID)
		}
		if err != nil {
			return err
		}
		for _, v := range got {
			b := v.([]byte)
			if int64(len(b)) != n {
				return fmt.Errorf("%w: object %s: a replica gave %d bytes of %d", storage.ErrCorrupt, o.ID, len(b), n)
			}
			copy(p, b)
			return nil
		}
	}
	per := (o.Size + int64(o.K) - 1) / int64(o.K) // payload length of each shard
	type piece struct {
		i      int
		a, b   int64 // span of shard i's payload
		dstOff int64 // where it goes in p
	}
	var pieces []piece
	for pos := off; pos < off+n; {
		i := int(pos / per)
		a := pos - int64(i)*per
		b := min(per, off+n-int64(i)*per)
		pieces = append(pieces, piece{i, a, b, pos - off})
		pos += b - a
	}
	fill := func(ctx context.Context, pc piece) error {
		return c.readPiece(ctx, o, pc.i, pc.a, p[pc.dstOff:pc.dstOff+pc.b-pc.a])
	}
	// One piece after the other: under load, pieces in parallel only
	// share the same bandwidth and CPU, and each takes longer — closer to
	// ShardTimeout and to the hedge delay that multiplies the work.
	for _, pc := range pieces {
		if err := fill(ctx, pc); err != nil {
			return err
		}
	}
	return nil
}

// readPiece fills dst with bytes [a, a+len(dst)) of data shard i's payload.
// It asks shard i's node first, which copies the verified bytes straight
// into dst where its ShardService can (shardIntoReader); if that fails, or
// has not answered after the hedge delay (a slow or partitioned node;
// hedge.go), or the node is known to be down, it rebuilds the bytes from
// the same span of k other shards, and keeps whichever comes first. A
// rebuild that wins takes dst back from the direct read (storage.Guard)
// before copying into it, so nothing writes to dst once this returns.
func (c *Cluster) readPiece(ctx context.Context, o meta.Object, i int, a int64, dst []byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the loser
	n := int64(len(dst))
	fetch := func(ctx context.Context, svc ShardService, k storage.ShardKey) (any, error) {
		return svc.ReadShard(ctx, k, a, n)
	}
	var guard storage.Guard
	fetchInto := func(ctx context.Context, svc ShardService, k storage.ShardKey) (any, error) {
		if r, ok := svc.(shardIntoReader); ok {
			return nil, r.ReadShardInto(ctx, k, a, dst, &guard)
		}
		return svc.ReadShard(ctx, k, a, n)
	}
	type result struct {
		p      []byte
		inDst  bool // the bytes are in dst already
		err    error
		direct bool
	}
	results := make(chan result, 2)
	pending, rebuilding := 0, false
	rebuild := func() {
		rebuilding = true
		pending++
		go func() {
			p, err := c.rebuildPiece(ctx, o, i, fetch)
			results <- result{p: p, err: err}
		}()
	}
	if node := o.Placement[i]; node != "" && (node == c.self || c.health.Up(node)) {
		pending++
		go func() {
			got, _, err := c.gather(ctx, o, []int{i}, 1, fetchInto)
			if err != nil {
				results <- result{err: err, direct: true}
				return
			}
			if got[i] == nil { // fetchInto filled dst
				results <- result{inDst: true, direct: true}
				return
			}
			results <- result{p: got[i].([]byte), direct: true}
		}()
	} else {
		c.repair.enqueue(o.ID)
		rebuild()
	}
	hedge := time.NewTimer(c.hedgeDelay())
	defer hedge.Stop()
	var errs []error
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				if r.inDst {
					return nil
				}
				// Cancel first: the direct read's ErrAbandoned then
				// comes after its context ended and is not held
				// against its node.
				cancel()
				guard.Abandon()
				if int64(len(r.p)) != n {
					return fmt.Errorf("%w: object %s shard %d: %d bytes for a span of %d", storage.ErrCorrupt, o.ID, i, len(r.p), n)
				}
				copy(dst, r.p)
				return nil
			}
			errs = append(errs, r.err)
			if r.direct {
				c.repair.enqueue(o.ID)
				if !rebuilding {
					rebuild()
				}
			}
		case <-hedge.C:
			if !rebuilding {
				rebuild()
			}
		}
	}
	return errors.Join(errs...)
}

// rebuildPiece rebuilds a span of data shard i from the same span of k
// other shards.
func (c *Cluster) rebuildPiece(ctx context.Context, o meta.Object, i int, fetch fetchFunc) ([]byte, error) {
	got, _, err := c.gather(ctx, o, c.preference(o, []int{i}), o.K, fetch)
	if err != nil {
		return nil, err
	}
	spans := make([][]byte, o.K+o.M)
	for idx, v := range got {
		spans[idx] = v.([]byte)
	}
	enc, err := reedsolomon.New(o.K, o.M)
	if err != nil {
		return nil, err
	}
	// Reed–Solomon works byte position by byte position, so the same
	// span of any k shards rebuilds that span of the missing one.
	if err := enc.ReconstructData(spans); err != nil {
		return nil, fmt.Errorf("%w: object %s shard %d: %v", storage.ErrTooFewShards, o.ID, i, err)
	}
	return spans[i], nil
}

// preference orders the object's shard indexes for reading: data shards
// before parity (a systematic code needs no decoding when all data shards
// are healthy), this node's before others, reachable nodes before
// unreachable ones; indexes in skip are left out.
func (c *Cluster) preference(o meta.Object, skip []int) []int {
	var idx []int
	for i, node := range o.Placement {
		if node != "" && !slices.Contains(skip, i) {
			idx = append(idx, i)
		}
	}
	rank := func(i int) int {
		r := 0
		if i >= o.K && o.Layout == storage.LayoutErasure {
			r += 4
		}
		if o.Placement[i] != c.self {
			r++
		}
		if !c.health.Up(o.Placement[i]) {
			r += 8
		}
		return r
	}
	slices.SortStableFunc(idx, func(x, y int) int { return rank(x) - rank(y) })
	return idx
}

type fetchFunc func(ctx context.Context, svc ShardService, k storage.ShardKey) (any, error)

// gather fetches shards in the order given until need of them succeeded. It
// starts need fetches at once; each failure starts the next candidate, and
// when the fetches in flight are slow (the hedge delay) one spare is started too,
// so one slow node costs a hedge delay, not a timeout. It returns the
// results by shard index and the indexes that failed with corrupt or
// missing data (to be repaired).
func (c *Cluster) gather(ctx context.Context, o meta.Object, order []int, need int, fetch fetchFunc) (map[int]any, []int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the fetches still in flight once we have enough
	type result struct {
		index int
		v     any
		err   error
	}
	results := make(chan result, len(order))
	next, inflight := 0, 0
	start := func() bool {
		if next >= len(order) {
			return false
		}
		i := order[next]
		next++
		inflight++
		go func() {
			fctx, fcancel := context.WithTimeout(ctx, c.opt.ShardTimeout)
			defer fcancel()
			svc, err := c.peers.Shards(o.Placement[i])
			var v any
			if err == nil {
				began := time.Now()
				v, err = fetch(fctx, svc, storage.ShardKey{Blob: o.ID, Index: i})
				if err == nil {
					c.latency.observe(o.Placement[i], time.Since(began))
				}
			}
			results <- result{i, v, err}
		}()
		return true
	}
	for range need {
		start()
	}
	got := map[int]any{}
	var bad []int
	var errs []error
	delay := c.hedgeDelay()
	hedge := time.NewTimer(delay)
	defer hedge.Stop()
	for len(got) < need {
		if inflight == 0 {
			return got, bad, fmt.Errorf("%w: object %s: %d of %d needed shards readable: %w", storage.ErrTooFewShards, o.ID, len(got), need, errors.Join(errs...))
		}
		select {
		case r := <-results:
			inflight--
			if r.err == nil {
				got[r.index] = r.v
				continue
			}
			node := o.Placement[r.index]
			errs = append(errs, fmt.Errorf("shard %d on %s: %w", r.index, node, r.err))
			if errors.Is(r.err, storage.ErrCorrupt) || errors.Is(r.err, storage.ErrNotFound) {
				metrics.BadShards.WithLabelValues(badKind(r.err)).Inc()
				bad = append(bad, r.index)
				c.log.Warn("bad shard, rebuilding from others", "object", o.ID, "shard", r.index, "node", node, "err", r.err)
			} else if ctx.Err() == nil {
				c.health.Suspect(node, r.err)
			}
			start()
		case <-hedge.C:
			if start() {
				metrics.Hedges.Inc()
			}
			hedge.Reset(delay)
		case <-ctx.Done():
			return got, bad, ctx.Err()
		}
	}
	if len(errs) > 0 {
		metrics.DegradedReads.Inc()
	}
	return got, bad, nil
}
