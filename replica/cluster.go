package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"hastore/metrics"
	"hastore/replica/meta"
	"hastore/replica/placement"
	"hastore/storage"
)

// ShardService is one node's shards as the cluster sees them, whether the
// node is this process or a peer across the network. Every read returns
// only bytes whose checksums verified on the receiving side.
type ShardService interface {
	PutRecord(ctx context.Context, rec storage.Record) error
	// GetShard returns the whole verified shard.
	GetShard(ctx context.Context, k storage.ShardKey) (*storage.Shard, error)
	// ReadShard returns payload bytes [off, off+n), verified.
	ReadShard(ctx context.Context, k storage.ShardKey, off, n int64) ([]byte, error)
	// DeleteShard deletes the shard if it was written before writtenBefore
	// (zero: unconditionally), so that a purge cannot delete a shard that a
	// newer write of the same content has just stored.
	DeleteShard(ctx context.Context, k storage.ShardKey, writtenBefore time.Time) error
	ListShards(ctx context.Context, fn func(storage.Header) error) error
	Usage(ctx context.Context) (storage.Usage, error)
}

// Metadata is the replicated metadata as the data path reads it; *meta.Store
// provides it. Reads are from this node's applied state.
type Metadata interface {
	Object(id storage.BlobID) (meta.Object, bool, error)
	WalkObjects(fn func(meta.Object) error) error
	Nodes() ([]meta.Node, error)
	WaitApplied(ctx context.Context, index uint64) error
}

// Proposer puts commands through consensus, forwarding to the leader when
// this node is not it, and finds the index a read must wait for.
type Proposer interface {
	Propose(ctx context.Context, cmd meta.Command) (meta.Result, error)
	// ReadIndex returns the leader's commit index: once this node has
	// applied it, every change acknowledged anywhere before the call is
	// visible here.
	ReadIndex(ctx context.Context) (uint64, error)
}

// Peers finds the shard service of a node by ID (this node's own included).
type Peers interface {
	Shards(node string) (ShardService, error)
}

// Options tunes a Cluster; the zero value of each field picks the default.
type Options struct {
	Scheme      storage.Scheme // default 2+1
	SmallObject int            // default storage.DefaultSmallObject; <0 means none
	// HedgeAfter is how long a read waits for a shard before asking a
	// spare node too — at least: while every node answers slowly, reads
	// wait up to 10 times longer (hedge.go).
	HedgeAfter time.Duration // default 150ms
	// ShardTimeout bounds one shard transfer.
	ShardTimeout time.Duration // default 30s
	// StragglerWait is how long a write waits for its last shards once
	// the others are written (at least; twice as long as those took if
	// that is longer). A shard still unwritten then — a slow, lossy or
	// partitioned node — is placed elsewhere, so one bad node does not
	// hold every write for ShardTimeout.
	StragglerWait time.Duration // default 300ms
	// Grace is how long shards of uncommitted writes and of deleted objects
	// are kept before being collected. It must exceed the clock skew
	// between nodes and the longest write.
	Grace time.Duration // default 1h
	// DownOut is how long a node may be unreachable before its shards are
	// rebuilt elsewhere. Until then they are expected back with it.
	DownOut time.Duration // default 10m
	// RepairRate bounds repair and scrub traffic in bytes per second.
	RepairRate int64 // default 64 MiB/s
	Logger     *slog.Logger
	Now        func() time.Time
}

func (o *Options) setDefaults() {
	if o.Scheme == (storage.Scheme{}) {
		o.Scheme = storage.Scheme{K: 2, M: 1}
	}
	if o.SmallObject == 0 {
		o.SmallObject = storage.DefaultSmallObject
	} else if o.SmallObject < 0 {
		o.SmallObject = 0
	}
	if o.HedgeAfter == 0 {
		o.HedgeAfter = 150 * time.Millisecond
	}
	if o.ShardTimeout == 0 {
		o.ShardTimeout = 30 * time.Second
	}
	if o.StragglerWait == 0 {
		o.StragglerWait = 300 * time.Millisecond
	}
	if o.Grace == 0 {
		o.Grace = time.Hour
	}
	if o.DownOut == 0 {
		o.DownOut = 10 * time.Minute
	}
	if o.RepairRate == 0 {
		o.RepairRate = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Errors of the cluster layer, for errors.Is.
var (
	// ErrUnavailable: too few nodes are reachable to do this safely now;
	// the message says how many. Retrying later may succeed.
	ErrUnavailable = errors.New("replica: cluster unavailable")
	// ErrNotFound: no such object.
	ErrNotFound = errors.New("replica: object not found")
)

// Cluster is the object store that every node serves: Put, Get and Delete of
// whole objects named by content, over shards spread across the nodes.
type Cluster struct {
	self   string
	opt    Options
	codec  storage.Codec
	meta   Metadata
	prop   Proposer
	peers  Peers
	health *Health
	log    *slog.Logger
	repair *repairer
	// orphans bounds the failed puts whose reference is being settled.
	orphans chan struct{}
	// readIdx shares read-index round trips between concurrent catch-ups.
	readIdx readIndexer
	// latency sets how long a read waits before hedging (hedge.go).
	latency fetchLatency
}

// NewCluster returns the data path of node self.
func NewCluster(self string, md Metadata, prop Proposer, peers Peers, health *Health, opt Options) (*Cluster, error) {
	opt.setDefaults()
	if err := opt.Scheme.Validate(); err != nil {
		return nil, err
	}
	c := &Cluster{
		self: self, opt: opt, meta: md, prop: prop, peers: peers, health: health, log: opt.Logger,
		codec:   storage.Codec{Scheme: opt.Scheme, SmallObject: opt.SmallObject},
		orphans: make(chan struct{}, 256),
	}
	c.repair = newRepairer(c)
	c.readIdx.fn = func(ctx context.Context) (uint64, error) { return c.prop.ReadIndex(ctx) }
	return c, nil
}

// Scheme returns the erasure scheme new objects are written with.
func (c *Cluster) Scheme() storage.Scheme { return c.opt.Scheme }

// put is Put (metrics.go), uncounted.
func (c *Cluster) put(ctx context.Context, data []byte) (storage.BlobID, error) {
	now := c.opt.Now()
	id, recs, err := c.codec.Encode(data, now)
	if err != nil {
		return storage.BlobID{}, err
	}
	if o, ok, _ := c.meta.Object(id); ok && o.Refs > 0 {
		// Known content: add a reference, write nothing. A live record
		// cannot be purged before this proposal lands (that takes a DecRef
		// and a whole grace period), so its shards are there. A tombstone
		// takes the full path: its shards may be going.
		res, err := c.proposeRef(ctx, meta.PutObject{Object: o, Now: now.UnixNano()})
		if err != nil {
			return storage.BlobID{}, err
		}
		if res.Revived {
			// Its last reference went just before ours came: a tombstone
			// is not repaired, so make it whole as the full path does.
			if err := c.reviveRepair(ctx, res.Object); err != nil {
				return storage.BlobID{}, err
			}
			return id, nil
		}
		if !res.Created {
			return id, nil
		}
		// Purged after all (clocks far apart?): the record now names
		// placement we have not written. Write it before acknowledging.
		c.log.Warn("deduplicated put found its object purged; rewriting shards", "object", id)
		if err := c.writeAt(ctx, id, recs, res.Object.Placement); err != nil {
			return storage.BlobID{}, err
		}
		return id, nil
	}
	obj, err := c.writeShards(ctx, id, data, recs, now)
	if err != nil {
		return storage.BlobID{}, err
	}
	res, err := c.proposeRef(ctx, meta.PutObject{Object: obj, Now: now.UnixNano()})
	if err != nil {
		// The shards are orphans now; the collector removes them after
		// the grace period (the reference, if taken, is dropped again).
		return storage.BlobID{}, fmt.Errorf("committing object %s: %w", id, err)
	}
	if res.Revived {
		// A deleted object came back to life with its old placement (ours
		// are orphans now). Tombstones are neither repaired nor moved off
		// removed nodes, so make it whole before acknowledging.
		if err := c.reviveRepair(ctx, res.Object); err != nil {
			return storage.BlobID{}, err
		}
		return id, nil
	}
	// When PutObject found the object already there (a concurrent put of
	// the same content), its placement won and ours become orphans.
	if slices.Contains(obj.Placement, "") || hasDuplicates(obj.Placement) {
		c.repair.enqueue(id)
	}
	return id, nil
}

// proposeRef proposes the PutObject of a Put. When its outcome is unknown
// Put fails, so a reference it may still take belongs to no one: it is
// settled in the background and dropped again if it was taken (a leak
// otherwise — the caller, told the put failed, never releases it).
func (c *Cluster) proposeRef(ctx context.Context, cmd meta.PutObject) (meta.Result, error) {
	ided, ok := c.prop.(RequestIDProposer)
	if !ok || !ided.RequestIDs() {
		return c.propose(ctx, cmd)
	}
	rid := newRequestID(ctx)
	res, err := c.propose(WithRequestID(ctx, rid), cmd)
	if err != nil && !Judged(err) {
		go c.dropOrphanRef(&UnknownOutcomeError{ID: rid, cmd: cmd, err: err})
	}
	return res, err
}

// dropOrphanRef settles the PutObject of a failed Put and, if it took a
// reference, drops it.
func (c *Cluster) dropOrphanRef(u *UnknownOutcomeError) {
	id := u.cmd.(meta.PutObject).Object.ID
	select {
	case c.orphans <- struct{}{}:
		defer func() { <-c.orphans }()
	default:
		c.log.Warn("too many failed puts being settled; this one's reference may leak", "object", id)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Settle(ctx, u); err != nil {
		if !Judged(err) {
			c.log.Warn("a failed put's reference: outcome still unknown; it may leak", "object", id, "err", err)
		}
		return
	}
	if err := c.Delete(ctx, id); err != nil {
		c.log.Warn("a failed put's reference could not be dropped; it leaks", "object", id, "err", err)
	}
}

// reviveRepair rebuilds the shards of a revived object that are unplaced
// or on nodes no longer members.
func (c *Cluster) reviveRepair(ctx context.Context, o meta.Object) error {
	members, err := c.members()
	if err != nil {
		return err
	}
	for i := range o.Placement {
		if _, urgent := c.shardProblem(o, i, members); urgent {
			if _, err := c.repairObject(ctx, o, false); err != nil {
				return fmt.Errorf("%w: object %s revived from a tombstone but could not be made whole: %v", ErrUnavailable, o.ID, err)
			}
			return nil
		}
	}
	return nil
}

// writeShards writes recs to nodes and returns the object record naming
// where they went. With fewer live nodes than shards it degrades as
// docs/cluster.md describes, and fails if the object could not survive the
// loss of one more node.
func (c *Cluster) writeShards(ctx context.Context, id storage.BlobID, data []byte, recs []storage.Record, now time.Time) (meta.Object, error) {
	h, _, err := storage.ParseHeader(recs[0].Head)
	if err != nil {
		return meta.Object{}, err
	}
	obj := meta.Object{ID: id, Size: int64(len(data)), K: h.K, M: h.M, Layout: h.Layout}
	failed := map[string]bool{}
	late := map[string]bool{} // failed only by answering late
	patient := false
	written := map[int]string{}
	for attempt := 0; ; attempt++ {
		live := c.liveNodes(failed)
		plan, layout, err := c.plan(id, obj.Layout, h.K, h.M, live)
		if err != nil && len(late) > 0 && !patient {
			// Without the late nodes there is no plan that survives one
			// more loss: a slow node is still a node, so wait for them
			// this time rather than refuse the write.
			for n := range late {
				delete(failed, n)
			}
			late, patient = map[string]bool{}, true
			plan, layout, err = c.plan(id, obj.Layout, h.K, h.M, c.liveNodes(failed))
		}
		if err != nil {
			return meta.Object{}, err
		}
		if layout != obj.Layout {
			// Too few nodes for erasure coding to survive one more loss:
			// store full copies instead (see plan).
			recs, err = (&storage.Codec{Scheme: storage.Scheme{K: 1, M: obj.M}}).EncodeID(id, data, now)
			if err != nil {
				return meta.Object{}, err
			}
			obj.Layout, obj.K = storage.LayoutReplica, 1
			written = map[int]string{}
		}
		errs := c.writePlan(ctx, id, recs, plan, written, patient)
		if len(errs) == 0 {
			obj.Placement = plan
			return obj, nil
		}
		for node, err := range errs {
			if errors.Is(err, storage.ErrInvalid) {
				// Every node would refuse it (too large a shard, say):
				// not a node failure.
				return meta.Object{}, err
			}
			failed[node] = true
			switch {
			case errors.Is(err, errStraggler):
				// Slow, not gone: placed elsewhere for this object
				// only. Marking it down would take it out of every
				// write while the prober still reaches it.
				late[node] = true
			case errors.Is(err, storage.ErrNoSpace):
				// A full node is up, just full.
			default:
				c.health.Suspect(node, err)
			}
		}
		if ctx.Err() != nil || attempt >= 3 {
			return meta.Object{}, fmt.Errorf("%w: writing object %s: %v", ErrUnavailable, id, joinErrs(errs))
		}
	}
}

// writePlan writes every record to its planned node in parallel, skipping
// those already written there, and returns the failures by node.
//
// Once all but m of the shards are written, the rest get StragglerWait (or
// twice the time so far, if longer) before they are abandoned as failed:
// the caller re-plans them onto other nodes. An abandoned shard that lands
// after all is an orphan the collector removes after the grace period.
func (c *Cluster) writePlan(ctx context.Context, id storage.BlobID, recs []storage.Record, plan []string, written map[int]string, patient bool) map[string]error {
	type result struct {
		index int
		node  string
		err   error
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // abandons the stragglers, if any
	results := make(chan result, len(plan))
	pending := map[int]string{}
	for i, node := range plan {
		if node == "" || written[i] == node {
			continue
		}
		pending[i] = node
		go func() {
			results <- result{i, node, c.putShard(ctx, node, recs[i])}
		}()
	}
	m := 0
	if h, _, err := storage.ParseHeader(recs[0].Head); err == nil {
		m = h.M
	}
	errs := map[string]error{}
	var (
		deadline <-chan time.Time
		timer    *time.Timer
		answered int
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(pending) > 0 {
		if timer == nil && !patient && answered > 0 && len(pending) <= m {
			timer = time.NewTimer(max(c.opt.StragglerWait, 2*time.Since(start)))
			deadline = timer.C
		}
		select {
		case r := <-results:
			answered++
			delete(pending, r.index)
			if r.err != nil {
				errs[r.node] = fmt.Errorf("shard %d of %s on node %s: %w", r.index, id, r.node, r.err)
				continue
			}
			written[r.index] = r.node
		case <-deadline:
			waited := time.Since(start).Round(time.Millisecond)
			for i, node := range pending {
				errs[node] = fmt.Errorf("shard %d of %s on node %s: %w after %v while the other shards were written", i, id, node, errStraggler, waited)
			}
			c.log.Warn("write placing slow shards elsewhere", "object", id, "nodes", slices.Sorted(maps.Values(pending)), "waited", waited)
			return errs
		}
	}
	return errs
}

// errStraggler: a shard write was abandoned because its node answered far
// later than the others.
var errStraggler = errors.New("no answer")

// writeAt writes every record to the node the placement names, failing if
// any write fails.
func (c *Cluster) writeAt(ctx context.Context, id storage.BlobID, recs []storage.Record, place []string) error {
	if len(place) != len(recs) {
		return fmt.Errorf("%w: object %s has %d shards recorded, %d encoded (scheme changed?)", ErrUnavailable, id, len(place), len(recs))
	}
	if errs := c.writePlan(ctx, id, recs, place, map[int]string{}, false); len(errs) > 0 {
		return fmt.Errorf("%w: %v", ErrUnavailable, joinErrs(errs))
	}
	return nil
}

func (c *Cluster) putShard(ctx context.Context, node string, rec storage.Record) error {
	svc, err := c.peers.Shards(node)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opt.ShardTimeout)
	defer cancel()
	return svc.PutRecord(ctx, rec)
}

// liveNodes returns the active members that look reachable, weighted by
// free space, leaving out those in exclude.
func (c *Cluster) liveNodes(exclude map[string]bool) []placement.Node {
	var out []placement.Node
	for _, n := range c.health.Live() {
		if !exclude[n.ID] {
			out = append(out, n)
		}
	}
	return out
}

// plan assigns each shard index a node. With at least as many live nodes as
// shards every shard gets its own node. With fewer, erasure shards double
// up on nodes as long as no node holds more than m of them (so losing any
// one more node still leaves k); failing that, the object is stored as m+1
// full copies on as many distinct nodes as there are (at least two when m ≥
// 1), the rest left unplaced for repair. It returns the layout to use.
func (c *Cluster) plan(id storage.BlobID, layout storage.Layout, k, m int, live []placement.Node) ([]string, storage.Layout, error) {
	n := k + m
	if layout == storage.LayoutReplica {
		n = m + 1
	}
	order := placement.Choose(id[:], live, len(live))
	switch {
	case len(order) >= n:
		return order[:n], layout, nil
	case len(order) == 0:
		return nil, layout, fmt.Errorf("%w: no node reachable to store object %s", ErrUnavailable, id)
	case layout == storage.LayoutErasure && (n+len(order)-1)/len(order) <= m:
		plan := make([]string, n)
		for i := range plan {
			plan[i] = order[i%len(order)]
		}
		return plan, layout, nil
	case len(order) >= 2 || m == 0:
		plan := make([]string, m+1)
		copy(plan, order)
		return plan, storage.LayoutReplica, nil
	}
	return nil, layout, fmt.Errorf("%w: only %d node(s) reachable (%v); an object must survive the loss of one more node, which needs at least 2", ErrUnavailable, len(order), order)
}

func hasDuplicates(place []string) bool {
	seen := map[string]bool{}
	for _, n := range place {
		if n == "" {
			continue
		}
		if seen[n] {
			return true
		}
		seen[n] = true
	}
	return false
}

func joinErrs(m map[string]error) error {
	var errs []error
	for _, e := range m {
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// Propose puts a metadata command through consensus (forwarding it to the
// Raft leader if need be) and returns its result; a result whose status is
// not OK comes back as an error too. After it returns, this node has
// applied the command, so local reads see it.
//
// The command goes out under one request ID (the caller's, if its context
// carries one: [WithRequestID]) and is retried across leader changes and
// lost answers until it commits once; after an error that is not a
// verdict on the command (it did not reach a leader within the bound, or
// the context ended) it may or may not have been applied.
func (c *Cluster) Propose(ctx context.Context, cmd meta.Command) (meta.Result, error) {
	return c.propose(ctx, cmd)
}

// ProposeOnce is Propose for a caller that must know whether the command
// applied, because what it does next depends on it (drop the references
// a failed change would have taken over, or plan the change again). The
// command goes out under one request ID and, after an answer that is not a
// verdict, is sent again under that same ID — the state machine applies
// an ID once and answers a repeat with the first result — until a verdict
// comes back, ctx ends or proposeOnceBound passes (a caller without a
// deadline is not held for as long as the cluster has no leader). An
// error wrapping meta.ErrUnknownOutcome (an *UnknownOutcomeError) means
// that happened first (or this node proposes bare commands, see
// Config.NoRequestIDs, and the one try was lost): the command may still
// apply, so the caller must neither redo it nor undo what it would use —
// until Settle tells how it ended.
func (c *Cluster) ProposeOnce(ctx context.Context, cmd meta.Command) (meta.Result, error) {
	ided, ok := c.prop.(RequestIDProposer)
	if !ok || !ided.RequestIDs() {
		res, err := c.propose(ctx, cmd)
		if err != nil && !Judged(err) {
			err = &UnknownOutcomeError{cmd: cmd, err: err}
		}
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, proposeOnceBound)
	defer cancel()
	return c.proposeAs(ctx, newRequestID(ctx), cmd)
}

// proposeOnceBound is how long ProposeOnce keeps sending a command again:
// three times the forwarder's own bound, so a leader change or two fit.
var proposeOnceBound = 3 * proposeBound

// newRequestID returns the ID for a proposal that may be sent again: the
// next one derived from the logical call ctx names (so that a client
// repeating the whole call still applies it once), else a new one.
func newRequestID(ctx context.Context) meta.RequestID { return requestIDFor(ctx) }

// proposeAs sends cmd under request ID id until a verdict or ctx ends.
func (c *Cluster) proposeAs(ctx context.Context, id meta.RequestID, cmd meta.Command) (meta.Result, error) {
	delay := 50 * time.Millisecond
	for {
		// A fresh context naming id makes the first (and only) proposal
		// under it take id itself, so every try is the same request.
		res, err := c.propose(WithRequestID(ctx, id), cmd)
		if err == nil || Judged(err) {
			return res, err
		}
		if ctx.Err() != nil {
			return res, &UnknownOutcomeError{ID: id, cmd: cmd, err: err}
		}
		c.log.Debug("proposal outcome unknown; sending the same request again", "request", id, "err", err)
		select {
		case <-ctx.Done():
			return res, &UnknownOutcomeError{ID: id, cmd: cmd, err: err}
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// Settle finds out how a proposal of unknown outcome ended by sending the
// same request again until a verdict comes back or ctx ends: nil if it
// applied (now, if it had never reached a leader: a command that checks
// what it changes, like an atomic meta.Batch, cannot apply stale), a
// verdict (Judged) if it did not, or another *UnknownOutcomeError. A
// proposal sent without a request ID cannot be settled: Settle returns
// its error at once.
func (c *Cluster) Settle(ctx context.Context, u *UnknownOutcomeError) (meta.Result, error) {
	if u.ID.IsZero() {
		return meta.Result{}, u
	}
	return c.proposeAs(ctx, u.ID, u.cmd)
}

// RequestIDProposer is a Proposer that proposes under the request ID its
// context names (WithRequestID), so that sending a command again with the
// same ID applies it at most once. RequestIDs reports whether it does so
// now (a node may be configured to propose bare commands).
type RequestIDProposer interface {
	Proposer
	RequestIDs() bool
}

// UnknownOutcomeError is the error of a proposal that may or may not have
// applied (ProposeOnce); errors.Is(err, meta.ErrUnknownOutcome) holds.
type UnknownOutcomeError struct {
	// ID is the request ID it went out under; zero if it went out bare,
	// and then it cannot be settled.
	ID  meta.RequestID
	cmd meta.Command
	err error
}

func (e *UnknownOutcomeError) Error() string {
	if e.ID.IsZero() {
		return fmt.Sprintf("%v: %v", meta.ErrUnknownOutcome, e.err)
	}
	return fmt.Sprintf("%v: request %s: %v", meta.ErrUnknownOutcome, e.ID, e.err)
}

func (e *UnknownOutcomeError) Unwrap() []error { return []error{meta.ErrUnknownOutcome, e.err} }

// Judged reports whether err from Propose is a verdict on the command
// (not found, conflict, invalid, aborted): it was decided and changed
// nothing. Any other error leaves the outcome open.
func Judged(err error) bool {
	for _, kind := range []error{meta.ErrNotFound, meta.ErrConflict, meta.ErrInvalid, meta.ErrAborted} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

// CatchUp waits until this node has applied every change committed
// anywhere in the cluster before the call: after it, local metadata reads
// reflect every acknowledged write (read-your-writes across nodes).
func (c *Cluster) CatchUp(ctx context.Context) error { return c.catchUp(ctx) }

// propose puts cmd through consensus and turns a failed result into an
// error.
func (c *Cluster) propose(ctx context.Context, cmd meta.Command) (meta.Result, error) {
	start := time.Now()
	res, err := c.prop.Propose(ctx, cmd)
	metrics.ObserveProposal(start, err, Judged(err) || err == nil && res.Err() != nil)
	if err != nil {
		if Judged(err) {
			return res, err // the command was judged, not lost
		}
		return res, fmt.Errorf("%w: metadata: %v", ErrUnavailable, err)
	}
	return res, res.Err()
}

// lookup finds an object's record. A miss is confirmed against the leader
// (read index) before it is believed, so an object acknowledged on any node
// is found on every node.
func (c *Cluster) lookup(ctx context.Context, id storage.BlobID) (meta.Object, error) {
	if o, ok, err := c.meta.Object(id); err != nil {
		return o, err
	} else if ok && o.Refs > 0 {
		return o, nil
	}
	if err := c.catchUp(ctx); err != nil {
		return meta.Object{}, err
	}
	o, ok, err := c.meta.Object(id)
	if err != nil {
		return o, err
	}
	if !ok || o.Refs == 0 {
		return o, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return o, nil
}

// catchUp waits until this node has applied everything the leader had
// committed when it was called. Concurrent calls share read-index rounds
// (readindex.go says why that never serves a stale read).
func (c *Cluster) catchUp(ctx context.Context) error {
	idx, err := c.readIdx.readIndex(ctx)
	if err != nil {
		return fmt.Errorf("%w: cannot confirm with the raft leader: %v", ErrUnavailable, err)
	}
	return c.meta.WaitApplied(ctx, idx)
}

// Delete drops one reference to the object. When none is left the object's
// shards are deleted after the grace period, unless it is stored again
// before then.
func (c *Cluster) Delete(ctx context.Context, id storage.BlobID) error {
	_, err := c.propose(ctx, meta.DecRef{ID: id, Now: c.opt.Now().UnixNano()})
	if errors.Is(err, meta.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return err
}

// Stat returns the object's record.
func (c *Cluster) Stat(ctx context.Context, id storage.BlobID) (meta.Object, error) {
	return c.lookup(ctx, id)
}
