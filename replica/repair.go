package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"hastore/metrics"
	"hastore/replica/meta"
	"hastore/replica/placement"
	"hastore/storage"
)

// Progress is how far a repair or scrub pass has come.
type Progress struct {
	Phase    string // "idle", "running", "done"
	Done     int64  // objects (repair) or shards (scrub) handled
	Total    int64
	Bytes    int64 // bytes rebuilt or verified
	Found    int64 // problems found: objects needing work (repair), bad or missing shards (scrub)
	Repaired int64 // shards rebuilt or moved
	Unfixed  int64 // of those found, how many still need work at the end
	Err      string
	Started  time.Time
	Finished time.Time
}

type progressVar struct {
	mu sync.Mutex
	p  Progress
}

func (v *progressVar) get() Progress {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.p
}

func (v *progressVar) update(fn func(*Progress)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fn(&v.p)
}

// repairer rebuilds missing, corrupt and misplaced shards. Work comes from
// readers that met a bad shard (enqueue), from periodic scans of every
// object record (on the Raft leader only, so nodes do not race each
// other), and from scrub. Everything it does is idempotent: a pass stopped
// halfway simply runs again.
type repairer struct {
	c      *Cluster
	queue  chan storage.BlobID
	limit  *rateLimiter
	repair progressVar
	scrub  progressVar
	// runMu serialises whole passes: one repair and one scrub at a time.
	repairMu, scrubMu sync.Mutex
	under             sync.Mutex
	underCount        int64
	lost              lostSet // shards known missing on this node (identity.go)
	// storeReplaced is set when this node started with a shard store other
	// than the one the cluster recorded for it (identity.go): reported by
	// status and the metrics until the process restarts.
	storeReplaced atomic.Bool
}

func (l *lostSet) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)
}

func newRepairer(c *Cluster) *repairer {
	r := &repairer{c: c, queue: make(chan storage.BlobID, 4096), limit: newRateLimiter(c.opt.RepairRate)}
	r.repair.p.Phase, r.scrub.p.Phase = "idle", "idle"
	return r
}

// enqueue asks for the object to be checked soon. It never blocks: when the
// queue is full the periodic scan and scrub still find the problem.
func (r *repairer) enqueue(id storage.BlobID) {
	select {
	case r.queue <- id:
	default:
	}
}

// RepairProgress and ScrubProgress report the last or current pass.
func (c *Cluster) RepairProgress() Progress { return c.repair.repair.get() }
func (c *Cluster) ScrubProgress() Progress  { return c.repair.scrub.get() }

// UnderReplicated returns how many objects had a shard that was unplaced,
// misplaced or on an unreachable node at the last scan.
func (c *Cluster) UnderReplicated() int64 {
	c.repair.under.Lock()
	defer c.repair.under.Unlock()
	return c.repair.underCount
}

// RunBackground runs the repair queue, a periodic repair scan when isLeader
// says so, and a periodic scrub of this node's shards, until ctx ends.
func (c *Cluster) RunBackground(ctx context.Context, isLeader func() bool, scanEvery, scrubEvery time.Duration) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case id := <-c.repair.queue:
				if o, ok, _ := c.meta.Object(id); ok {
					if _, err := c.repairObject(ctx, o, true); err != nil && ctx.Err() == nil {
						c.log.Warn("repair", "object", id, "err", err)
					}
				}
			}
		}
	}()
	scan := time.NewTicker(scanEvery)
	defer scan.Stop()
	scrub := time.NewTicker(scrubEvery)
	defer scrub.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-scan.C:
			if isLeader() {
				if _, err := c.Repair(ctx, nil); err != nil && ctx.Err() == nil {
					c.log.Warn("repair scan", "err", err)
				}
			} else {
				c.countUnderReplicated()
			}
		case <-scrub.C:
			if _, err := c.Scrub(ctx, nil); err != nil && ctx.Err() == nil {
				c.log.Warn("scrub", "err", err)
			}
		}
	}
}

// shardProblem says why a placement entry needs work, or "" if it needs
// none now.
func (c *Cluster) shardProblem(o meta.Object, i int, members map[string]meta.Node) (problem string, urgent bool) {
	node := o.Placement[i]
	switch {
	case node == "":
		return "unplaced", true
	case members[node].State != meta.NodeActive:
		return "on removed node " + node, true
	case slices.Index(o.Placement, node) != i:
		return "shares node " + node + " with another shard", true
	case !c.health.Up(node):
		// Expected back with its node, unless it has been gone too long.
		since := c.health.DownSince(node)
		return "on unreachable node " + node, !since.IsZero() && c.opt.Now().Sub(since) > c.opt.DownOut
	}
	return "", false
}

// repairParallel is how many objects a repair pass works on at once.
const repairParallel = 16

// needsRepair reports whether any shard of o has a problem a repair pass
// would act on now.
func (c *Cluster) needsRepair(o meta.Object, members map[string]meta.Node) bool {
	for i := range o.Placement {
		if _, urgent := c.shardProblem(o, i, members); urgent {
			return true
		}
	}
	return false
}

func (c *Cluster) members() (map[string]meta.Node, error) {
	nodes, err := c.meta.Nodes()
	if err != nil {
		return nil, err
	}
	m := make(map[string]meta.Node, len(nodes))
	for _, n := range nodes {
		m[n.ID] = n
	}
	return m, nil
}

func (c *Cluster) countUnderReplicated() {
	members, err := c.members()
	if err != nil {
		return
	}
	var n int64
	_ = c.meta.WalkObjects(func(o meta.Object) error {
		if o.Refs == 0 {
			return nil // deleted: purged after the grace period, not repaired
		}
		if c.repair.lost.has(o.ID) {
			n++
			return nil
		}
		for i := range o.Placement {
			if p, _ := c.shardProblem(o, i, members); p != "" {
				n++
				break
			}
		}
		return nil
	})
	c.repair.under.Lock()
	c.repair.underCount = n
	c.repair.under.Unlock()
}

// Repair runs one pass over every object record: it rebuilds shards that
// are unplaced, on removed nodes, doubled up on one node, or on nodes gone
// longer than DownOut; and it purges objects deleted longer than the grace
// period ago. report, if not nil, is called as the pass goes.
func (c *Cluster) Repair(ctx context.Context, report func(Progress)) (Progress, error) {
	r := c.repair
	r.repairMu.Lock()
	defer r.repairMu.Unlock()
	var objs []meta.Object
	if err := c.meta.WalkObjects(func(o meta.Object) error { objs = append(objs, o); return nil }); err != nil {
		return Progress{}, err
	}
	r.repair.update(func(p *Progress) {
		*p = Progress{Phase: "running", Total: int64(len(objs)), Started: c.opt.Now()}
	})
	var (
		mu       sync.Mutex // problems, lastErr and report
		problems int64
		lastErr  error
		wg       sync.WaitGroup
		slots    = make(chan struct{}, repairParallel)
	)
	members, _ := c.members()
	done := func(fixed int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			problems++
			lastErr = err
		}
		r.repair.update(func(p *Progress) {
			p.Done++
			p.Repaired += int64(fixed)
			if fixed > 0 || err != nil {
				p.Found++
			}
		})
		if report != nil {
			report(r.repair.get())
		}
	}
	for _, o := range objs {
		if ctx.Err() != nil {
			break
		}
		if o.Refs > 0 && members != nil && !c.needsRepair(o, members) ||
			o.Refs == 0 && (o.Deleted == 0 || time.Unix(0, o.Deleted).After(c.opt.Now().Add(-c.opt.Grace))) {
			done(0, nil) // healthy, or deleted but within the grace period
			continue
		}
		// Objects are repaired several at a time: one at a time, the
		// per-object round trips (k reads, a write, a Raft commit) and
		// not the disks or the network bounded how fast redundancy came
		// back (a 30-minute chaos run left 130,000 small objects to move
		// after a node was replaced). RepairRate still bounds the bytes.
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			var fixed int
			var err error
			if o.Refs == 0 {
				err = c.purge(ctx, o)
			} else {
				fixed, err = c.repairObject(ctx, o, false)
			}
			done(fixed, err)
		}()
	}
	wg.Wait()
	c.countUnderReplicated()
	r.repair.update(func(p *Progress) {
		p.Phase, p.Finished, p.Unfixed = "done", c.opt.Now(), problems
		if lastErr != nil {
			p.Err = lastErr.Error()
		}
		if ctx.Err() != nil {
			p.Err = ctx.Err().Error()
		}
	})
	if report != nil {
		report(r.repair.get())
	}
	if p := r.repair.get(); p.Found > 0 || p.Err != "" {
		args := []any{"objects", p.Total, "needing_work", p.Found, "shards_rebuilt", p.Repaired, "bytes", p.Bytes,
			"unfixed", p.Unfixed, "took", p.Finished.Sub(p.Started).Round(time.Millisecond)}
		if p.Err != "" {
			args = append(args, "last_err", p.Err)
		}
		lvl := c.log.Info
		if p.Unfixed > 0 {
			lvl = c.log.Warn
		}
		lvl("repair pass finished", args...)
	}
	return r.repair.get(), ctx.Err()
}

// purge removes an object deleted longer than the grace period ago: first
// its record, through Raft (so a concurrent put either revives it before or
// recreates it after), then its shards — only those written before the
// object was deleted, so a new write of the same content is never touched.
func (c *Cluster) purge(ctx context.Context, o meta.Object) error {
	cutoff := c.opt.Now().Add(-c.opt.Grace)
	if o.Deleted == 0 || time.Unix(0, o.Deleted).After(cutoff) {
		return nil
	}
	res, err := c.propose(ctx, meta.Purge{ID: o.ID, OlderThan: cutoff.UnixNano()})
	if err != nil || !res.Purged {
		return err
	}
	deleted := time.Unix(0, o.Deleted)
	var errs []error
	for i, node := range o.Placement {
		if node == "" {
			continue
		}
		svc, err := c.peers.Shards(node)
		if err == nil {
			err = svc.DeleteShard(ctx, storage.ShardKey{Blob: o.ID, Index: i}, deleted)
		}
		if err != nil {
			// The node's own scrub collects it later as an orphan.
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		c.log.Info("purge: some shards left for their nodes' collectors", "object", o.ID, "err", errors.Join(errs...))
	}
	return nil
}

// repairObject makes every shard of o present, intact and on its own live
// node, as far as the live nodes allow. With verify it also reads every
// placed shard and rebuilds those that are missing or corrupt. It returns
// how many shards it rebuilt.
func (c *Cluster) repairObject(ctx context.Context, o meta.Object, verify bool) (int, error) {
	n, err := c.repairShards(ctx, o, verify)
	switch {
	case err != nil && ctx.Err() == nil:
		metrics.Repairs.WithLabelValues("error").Inc()
	case err == nil && n > 0:
		metrics.Repairs.WithLabelValues("repaired").Inc()
	}
	return n, err
}

// repairShards is repairObject, uncounted.
func (c *Cluster) repairShards(ctx context.Context, o meta.Object, verify bool) (int, error) {
	members, err := c.members()
	if err != nil {
		return 0, err
	}
	type job struct {
		index  int
		target string // "" → choose a new node
	}
	var jobs []job
	for i := range o.Placement {
		if p, urgent := c.shardProblem(o, i, members); p != "" {
			if urgent {
				jobs = append(jobs, job{index: i})
			}
			continue
		}
		if verify {
			svc, err := c.peers.Shards(o.Placement[i])
			if err == nil {
				_, err = svc.GetShard(ctx, storage.ShardKey{Blob: o.ID, Index: i})
			}
			if errors.Is(err, storage.ErrCorrupt) || errors.Is(err, storage.ErrNotFound) {
				jobs = append(jobs, job{index: i, target: o.Placement[i]})
			}
		}
	}
	if len(jobs) == 0 {
		return 0, nil
	}
	data, err := c.getWhole(ctx, o)
	if err != nil {
		return 0, fmt.Errorf("repairing object %s: %w", o.ID, err)
	}
	codec := storage.Codec{Scheme: storage.Scheme{K: o.K, M: o.M}}
	if o.Layout == storage.LayoutReplica {
		codec.SmallObject = len(data) + 1
	}
	recs, err := codec.EncodeID(o.ID, data, c.opt.Now())
	if err != nil {
		return 0, err
	}
	if len(recs) != len(o.Placement) {
		return 0, fmt.Errorf("repairing object %s: %d shards recorded, %d rebuilt", o.ID, len(o.Placement), len(recs))
	}
	fixed := 0
	var errs []error
	for _, j := range jobs {
		c.repair.limit.wait(ctx, int64(recs[j.index].Len()))
		target := j.target
		if target == "" {
			target = c.newHome(o)
			if target == "" {
				errs = append(errs, fmt.Errorf("shard %d: no live node without a shard of this object", j.index))
				continue
			}
		}
		if err := c.putShard(ctx, target, recs[j.index]); err != nil {
			c.health.Suspect(target, err)
			errs = append(errs, err)
			continue
		}
		if target != o.Placement[j.index] {
			res, err := c.propose(ctx, meta.SetPlacement{ID: o.ID, Index: j.index, Old: o.Placement[j.index], New: target})
			if err != nil {
				// Someone else moved it first; our copy is an orphan for the collector.
				errs = append(errs, err)
				if res.Object.Placement != nil {
					o = res.Object
				}
				continue
			}
			o.Placement[j.index] = target
		}
		fixed++
		c.repair.repair.update(func(p *Progress) { p.Bytes += int64(recs[j.index].Len()) })
	}
	if fixed > 0 {
		// Debug: a pass that moves a removed node's data repairs every
		// object it held, and one line each buried the log (1,326 lines
		// for one node removal). Repair logs one summary per pass.
		c.log.Debug("repaired object", "object", o.ID, "shards", fixed)
	}
	return fixed, errors.Join(errs...)
}

// newHome picks a live node holding no shard of o, or "".
func (c *Cluster) newHome(o meta.Object) string {
	var cand []placement.Node
	for _, n := range c.health.Live() {
		if !slices.Contains(o.Placement, n.ID) {
			cand = append(cand, n)
		}
	}
	if best := placement.Choose(o.ID[:], cand, 1); len(best) == 1 {
		return best[0]
	}
	return ""
}

// Scrub reads and verifies every shard stored on this node. A corrupt shard
// is rebuilt from the others; a shard that no record names on this node
// and older than the grace period is an orphan (a write that never
// committed, or a purged object) and is deleted; a shard the records expect
// here but missing is rebuilt.
func (c *Cluster) Scrub(ctx context.Context, report func(Progress)) (Progress, error) {
	r := c.repair
	r.scrubMu.Lock()
	defer r.scrubMu.Unlock()
	self, err := c.peers.Shards(c.self)
	if err != nil {
		return Progress{}, err
	}
	var headers []storage.Header
	if err := self.ListShards(ctx, func(h storage.Header) error { headers = append(headers, h); return nil }); err != nil {
		return Progress{}, err
	}
	// Orphans are judged against the records; this node's copy of them may
	// lag (just restarted, say). Only a copy confirmed current against the
	// leader may condemn a shard; without one, scrub only verifies.
	current := c.catchUp(ctx) == nil
	have := make(map[storage.ShardKey]bool, len(headers))
	expected := map[storage.ShardKey]meta.Object{}
	if err := c.meta.WalkObjects(func(o meta.Object) error {
		for i, n := range o.Placement {
			if n == c.self {
				expected[storage.ShardKey{Blob: o.ID, Index: i}] = o
			}
		}
		return nil
	}); err != nil {
		return Progress{}, err
	}
	r.scrub.update(func(p *Progress) {
		*p = Progress{Phase: "running", Total: int64(len(headers)), Started: c.opt.Now()}
	})
	cutoff := c.opt.Now().Add(-c.opt.Grace)
	var problems int64
	toRepair := map[storage.BlobID]meta.Object{}
	for _, h := range headers {
		if ctx.Err() != nil {
			break
		}
		k := h.Key()
		have[k] = true
		c.repair.limit.wait(ctx, h.PayloadLen)
		_, err := self.GetShard(ctx, k)
		o, referenced := expected[k]
		switch {
		case !referenced && current && h.Written.Before(cutoff):
			if derr := self.DeleteShard(ctx, k, cutoff); derr == nil {
				c.log.Info("scrub: deleted orphan shard", "shard", k)
			}
		case errors.Is(err, storage.ErrCorrupt):
			c.log.Warn("scrub: corrupt shard", "shard", k, "err", err)
			problems++
			if referenced {
				toRepair[o.ID] = o
			} else if current {
				_ = self.DeleteShard(ctx, k, time.Time{})
			}
		case err != nil && ctx.Err() == nil:
			problems++
		}
		r.scrub.update(func(p *Progress) { p.Done++; p.Bytes += h.PayloadLen })
		if report != nil {
			report(r.scrub.get())
		}
	}
	for k, o := range expected {
		if !have[k] && o.Refs > 0 {
			c.log.Warn("scrub: shard missing", "shard", k)
			problems++
			toRepair[o.ID] = o
		}
	}
	var repaired, unfixed int64
	for _, o := range toRepair {
		n, err := c.repairObject(ctx, o, true)
		repaired += int64(n)
		if err != nil {
			unfixed++
			c.log.Warn("scrub: repair", "object", o.ID, "err", err)
		}
	}
	r.scrub.update(func(p *Progress) {
		p.Phase, p.Finished, p.Repaired, p.Found = "done", c.opt.Now(), repaired, problems
		p.Unfixed = unfixed
		if ctx.Err() != nil {
			p.Err = ctx.Err().Error()
		}
	})
	if report != nil {
		report(r.scrub.get())
	}
	return r.scrub.get(), ctx.Err()
}

// rateLimiter spaces out background work to a byte rate, so repair and
// scrub never starve clients of disk and network.
type rateLimiter struct {
	mu   sync.Mutex
	rate int64
	next time.Time
}

func newRateLimiter(bytesPerSec int64) *rateLimiter { return &rateLimiter{rate: bytesPerSec} }

func (l *rateLimiter) wait(ctx context.Context, n int64) {
	if l.rate <= 0 {
		return
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
	l.mu.Unlock()
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}
