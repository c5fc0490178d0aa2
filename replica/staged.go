package replica

import (
	"context"
	"fmt"
	"slices"
	"time"

	"hastore/metrics"
	"hastore/replica/meta"
	"hastore/storage"
)

// StagedPut is a Put cut in two so that the object's record can commit in
// the same Raft entry as the records that reference it: StagePut writes the
// shards (fsynced on the write quorum, as Put does) without proposing
// anything, and Commit proposes the object's PutObject and the caller's
// commands as one atomic meta.Batch. A frontend whose own records hold the
// reference thus pays one Raft commit per stored object instead of two,
// and a rejected or failed commit leaves no reference to release: the
// batch took none.
//
// Until Commit succeeds the object holds no reference of this put's: a
// StagedPut that is dropped leaves only its shards, which the collector
// removes as orphans after the grace period (Options.Grace), like those of
// a Put whose commit failed. Commit it well within that period. A
// StagedPut is used by one goroutine; data must not change until Commit
// returns.
type StagedPut struct {
	c     *Cluster
	data  []byte
	now   time.Time
	start time.Time
	put   meta.PutObject
	// known: the content had a live record when staged, so no shards were
	// written and put names the record as it was.
	known bool
	done  bool
}

// StagePut stores data's shards like Put but does not commit its record;
// see StagedPut.
func (c *Cluster) StagePut(ctx context.Context, data []byte) (*StagedPut, error) {
	start := time.Now()
	now := c.opt.Now()
	id, recs, err := c.codec.Encode(data, now)
	if err != nil {
		metrics.ObserveObject("put", start, err)
		return nil, err
	}
	s := &StagedPut{c: c, data: data, now: now, start: start}
	if o, ok, _ := c.meta.Object(id); ok && o.Refs > 0 {
		// Known content: Commit adds a reference, nothing is written (see
		// put for why the shards are there).
		s.known = true
		s.put = meta.PutObject{Object: o, Now: now.UnixNano()}
		return s, nil
	}
	obj, err := c.writeShards(ctx, id, data, recs, now)
	if err != nil {
		metrics.ObserveObject("put", start, err)
		return nil, err
	}
	s.put = meta.PutObject{Object: obj, Now: now.UnixNano()}
	return s, nil
}

// ID returns the staged object's ID.
func (s *StagedPut) ID() storage.BlobID { return s.put.Object.ID }

// Commit proposes the object's record (a PutObject that adds one
// reference) followed by cmds, which may rely on that reference, as one
// atomic meta.Batch: one Raft entry, wrapped in a request envelope like
// every proposal, so that a retry across leader changes applies it once.
// Result.Batch[0] is the PutObject's result and Result.Batch[i+1] that of
// cmds[i].
//
// Errors: a verdict (Judged) means the batch applied nothing — no
// reference was taken and none of cmds changed anything. Any other error
// before the commit leaves the outcome open: the batch applies whole or
// not at all, so the reference is never split from cmds. When the batch
// committed but the object had to be made whole afterwards (it came back
// from a tombstone, or a record the stage saw live had been purged) and
// that failed, Commit returns the committed result with an error wrapping
// ErrUnavailable: cmds are applied, the body may not be readable yet
// (repair keeps trying).
//
// Commit may be called once.
func (s *StagedPut) Commit(ctx context.Context, cmds ...meta.Command) (res meta.Result, err error) {
	if s.done {
		return meta.Result{}, fmt.Errorf("%w: staged put of %s committed twice", meta.ErrInvalid, s.ID())
	}
	s.done = true
	defer func() { metrics.ObserveObject("put", s.start, err) }()
	batch := meta.Batch{Atomic: true, Cmds: append([]meta.Command{s.put}, cmds...)}
	res, err = s.c.propose(ctx, batch)
	if err != nil {
		return res, fmt.Errorf("committing object %s: %w", s.ID(), err)
	}
	if len(res.Batch) != len(batch.Cmds) {
		return res, fmt.Errorf("%w: committing object %s: %d results for a batch of %d", ErrUnavailable, s.ID(), len(res.Batch), len(batch.Cmds))
	}
	return res, s.settle(ctx, res.Batch[0])
}

// settle does what put does after its PutObject committed: make a revived
// object whole, write a purged one's shards, queue a repair for a
// degraded placement.
func (s *StagedPut) settle(ctx context.Context, pr meta.Result) error {
	c, id := s.c, s.ID()
	switch {
	case pr.Revived:
		return c.reviveRepair(ctx, pr.Object)
	case s.known && pr.Created:
		c.log.Warn("deduplicated put found its object purged; rewriting shards", "object", id)
		recs, err := c.codec.EncodeID(id, s.data, s.now)
		if err != nil {
			return err
		}
		if err := c.writeAt(ctx, id, recs, pr.Object.Placement); err != nil {
			return fmt.Errorf("object %s committed but its shards could not be rewritten: %w", id, err)
		}
	case !s.known:
		if p := s.put.Object.Placement; slices.Contains(p, "") || hasDuplicates(p) {
			c.repair.enqueue(id)
		}
	}
	return nil
}
