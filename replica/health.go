package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"hastore/metrics"
	"hastore/replica/meta"
	"hastore/replica/placement"
	"hastore/storage"
)

// Health keeps this node's view of which members are reachable and how much
// space each has, by probing every member about once a second. Writes use it
// to pick nodes; reads use it to try reachable nodes first. It is advisory:
// a node believed up may still fail a call, and the caller then marks it
// suspect.
type Health struct {
	self     string
	md       Metadata
	peers    Peers
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu    sync.Mutex
	nodes map[string]*nodeHealth
}

type nodeHealth struct {
	up        bool
	probed    bool // at least one probe finished
	downSince time.Time
	lastErr   string
	usage     storage.Usage
	rtts      [2]time.Duration // the last successful probes' round trips
	nrtt      int
	timeouts  int // probes in a row that ran out of time while the node was up
}

// fastestRecent returns the faster of the last two probe round trips: a node
// is called slow only if every recent probe was.
func (nh *nodeHealth) fastestRecent() (time.Duration, bool) {
	if nh.nrtt < len(nh.rtts) {
		return 0, false
	}
	return slices.Min(nh.rtts[:]), true
}

// NodeHealth is a snapshot of one member's health.
type NodeHealth struct {
	ID, Address string
	State       meta.NodeState
	Up          bool
	DownSince   time.Time
	LastError   string
	Usage       storage.Usage
}

// NewHealth returns a prober; call Run to start probing.
func NewHealth(self string, md Metadata, peers Peers, log *slog.Logger) *Health {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Health{self: self, md: md, peers: peers, interval: time.Second, log: log, now: time.Now, nodes: map[string]*nodeHealth{}}
}

// Run probes the members until ctx ends.
func (h *Health) Run(ctx context.Context) {
	for {
		wait := h.interval
		if !h.ProbeAll(ctx) {
			wait = h.interval / 4 // no members recorded yet: a new cluster
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// ProbeAll probes every active member once, in parallel. It reports
// whether there were any members to probe.
func (h *Health) ProbeAll(ctx context.Context) bool {
	nodes, err := h.md.Nodes()
	if err != nil {
		h.log.Warn("health: reading membership", "err", err)
		return false
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n.State != meta.NodeActive {
			// A removed member is no longer probed: forget what the last
			// probes said, or it would look up forever.
			h.mu.Lock()
			delete(h.nodes, n.ID)
			h.mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, max(h.interval, time.Second))
			defer cancel()
			var u storage.Usage
			start := time.Now()
			svc, err := h.peers.Shards(n.ID)
			if err == nil {
				u, err = svc.Usage(pctx)
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil && errors.Is(err, context.DeadlineExceeded) && h.tolerate(n.ID, err) {
				return
			}
			h.record(n.ID, u, err)
			if err == nil {
				h.recordRTT(n.ID, time.Since(start))
			}
		}()
	}
	wg.Wait()
	return len(nodes) > 0
}

// probeTimeoutsToDown is how many probes in a row must run out of time
// before a node that was up is called unreachable. A refused connection
// says "down" at once; a late answer on a loaded host (load average 30 on
// two cores happens) says only "slow", and calling a slow node down
// takes it out of every write plan: with a node or two already lost, the
// cluster then refuses writes it could have made (seen in a 9,000-client
// chaos run). Two misses bound the cost for a node that is really hung.
const probeTimeoutsToDown = 2

// tolerate reports whether a probe that ran out of time should be
// ignored: the node was up and this is not yet the probeTimeoutsToDown-th
// miss in a row.
func (h *Health) tolerate(id string, err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	nh := h.nodes[id]
	if nh == nil || !nh.up {
		return false
	}
	nh.timeouts++
	if nh.timeouts < probeTimeoutsToDown {
		h.log.Debug("probe ran out of time; node still counted up", "member", id, "misses", nh.timeouts, "err", err)
		return true
	}
	return false
}

func (h *Health) record(id string, u storage.Usage, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	nh := h.nodes[id]
	if nh == nil {
		nh = &nodeHealth{}
		h.nodes[id] = nh
	}
	nh.probed = true
	if err == nil {
		if !nh.up {
			h.log.Info("node reachable", "member", id)
		}
		nh.up, nh.usage, nh.lastErr, nh.downSince, nh.timeouts = true, u, "", time.Time{}, 0
		return
	}
	if nh.up || nh.downSince.IsZero() {
		h.log.Warn("node unreachable", "member", id, "err", err)
		nh.downSince = h.now()
	}
	nh.up, nh.lastErr, nh.timeouts = false, err.Error(), 0
}

func (h *Health) recordRTT(id string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if nh := h.nodes[id]; nh != nil {
		nh.rtts[nh.nrtt%len(nh.rtts)] = d
		nh.nrtt++
		if nh.nrtt >= 2*len(nh.rtts) {
			nh.nrtt -= len(nh.rtts) // keep the ring index small
		}
	}
}

// Thresholds of Slow: a node whose last two probes both took longer than
// both is slow.
const (
	slowRTT      = 150 * time.Millisecond
	slowVsOthers = 5
)

// Slow reports whether the last two probes of node both took longer than
// 150 ms and five times the median of the other nodes' (this node's own
// excluded), with the figures compared. Load on this machine slows every
// probe alike and so does not make one node slow.
func (h *Health) Slow(id string) (rtt, others time.Duration, slow bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	nh := h.nodes[id]
	if nh == nil || !nh.up {
		return 0, 0, false
	}
	rtt, ok := nh.fastestRecent()
	if !ok {
		return 0, 0, false
	}
	var rest []time.Duration
	for other, oh := range h.nodes {
		if other == id || other == h.self || !oh.up {
			continue
		}
		if d, ok := oh.fastestRecent(); ok {
			rest = append(rest, d)
		}
	}
	if len(rest) == 0 {
		return rtt, 0, false
	}
	slices.Sort(rest)
	others = rest[len(rest)/2]
	return rtt, others, rtt > slowRTT && rtt > slowVsOthers*others
}

// Suspect marks a node down after a failed call, until a probe reaches it
// again.
func (h *Health) Suspect(id string, err error) {
	if err == nil {
		return
	}
	h.record(id, storage.Usage{}, err)
}

// Up reports whether the node looked reachable at the last probe.
func (h *Health) Up(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	nh := h.nodes[id]
	return nh != nil && nh.up
}

// KnownDown reports whether the node was probed and found unreachable (a
// member never probed yet is not known down: it may have just joined).
func (h *Health) KnownDown(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	nh := h.nodes[id]
	return nh != nil && nh.probed && !nh.up
}

// DownSince returns when the node became unreachable (zero if up or never
// probed).
func (h *Health) DownSince(id string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if nh := h.nodes[id]; nh != nil && !nh.up {
		return nh.downSince
	}
	return time.Time{}
}

// Live returns the active members that are up, weighted by free space, in
// ID order.
func (h *Health) Live() []placement.Node {
	nodes, err := h.md.Nodes()
	if err != nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []placement.Node
	selfPending := false
	for _, n := range nodes {
		nh := h.nodes[n.ID]
		if n.State == meta.NodeActive && nh == nil && n.ID == h.self {
			// This node has not probed itself yet (it became a member
			// after the last round): it is as reachable as status says
			// it is, and leaving it out would refuse writes that two
			// reachable nodes can take. Its weight is set below.
			selfPending = true
			continue
		}
		if n.State != meta.NodeActive || nh == nil || !nh.up {
			continue
		}
		// Weighted by raw free space: a node down to its reserve is still
		// chosen and refuses the shard with ErrNoSpace, and the write moves
		// on to another node.
		out = append(out, placement.Node{ID: n.ID, Weight: float64(max(nh.usage.DiskFree, 0))})
	}
	if selfPending {
		w := 1.0
		for _, o := range out {
			w = max(w, o.Weight)
		}
		out = append(out, placement.Node{ID: h.self, Weight: w})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Snapshot returns the health of every member, in ID order.
func (h *Health) Snapshot() []NodeHealth {
	nodes, _ := h.md.Nodes()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]NodeHealth, 0, len(nodes))
	for _, n := range nodes {
		nh := NodeHealth{ID: n.ID, Address: n.Address, State: n.State}
		if s := h.nodes[n.ID]; s != nil {
			nh.Up, nh.DownSince, nh.LastError, nh.Usage = s.up, s.downSince, s.lastErr, s.usage
		}
		out = append(out, nh)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Readiness thresholds: a node more than maxApplyLag committed entries
// behind in applying them serves stale metadata for a noticeable while.
const maxApplyLag = 1000

// Ready reports nil when this node can serve clients: it is an active
// member, knows a Raft leader, has applied (nearly) all it knows
// committed, its shard store answers and its disk is above the reserve.
// Otherwise the error says which of these failed, for /readyz and the
// operator reading it.
func (n *Node) Ready() error {
	nodes, err := n.Meta.Nodes()
	if err != nil {
		return fmt.Errorf("reading membership: %w", err)
	}
	member := false
	for _, m := range nodes {
		if m.ID == n.cfg.ID {
			if m.State != meta.NodeActive {
				return fmt.Errorf("node %s was removed from the cluster", n.cfg.ID)
			}
			member = true
		}
	}
	if !member {
		return fmt.Errorf("node %s is not (yet) a member of the cluster", n.cfg.ID)
	}
	if _, leader := n.Meta.Leader(); leader == "" {
		return errors.New("no Raft leader known: no quorum reachable, or an election under way")
	}
	r := n.Meta.Raft()
	if commit, applied := r.CommitIndex(), n.Meta.AppliedIndex(); commit > applied+maxApplyLag {
		return fmt.Errorf("catching up: %d committed metadata entries not applied yet", commit-applied)
	}
	u, err := n.DB.Usage()
	if err != nil {
		return fmt.Errorf("shard store: %w", err)
	}
	if res := n.DB.Reserve(); u.DiskFree <= res {
		return fmt.Errorf("disk at its reserve: %d bytes free, %d kept back; new shards go to other nodes", u.DiskFree, res)
	}
	return nil
}

// MetricsSnapshot reports the node's state for the metrics endpoint.
func (n *Node) MetricsSnapshot() metrics.NodeSnapshot {
	r := n.Meta.Raft()
	s := metrics.NodeSnapshot{
		Node:         n.cfg.ID,
		RaftState:    r.State().String(),
		Term:         r.CurrentTerm(),
		CommitIndex:  r.CommitIndex(),
		AppliedIndex: n.Meta.AppliedIndex(),
		LastContact:  -1,
	}
	_, s.Leader = n.Meta.Leader()
	if r.State() != raft.Leader {
		if t := r.LastContact(); !t.IsZero() {
			s.LastContact = time.Since(t)
		}
	}
	s.Objects, _ = n.Meta.ObjectCount()
	c := n.Cluster
	s.UnderReplicated = c.UnderReplicated()
	s.RepairQueue = len(c.repair.queue)
	s.LostHere = c.repair.lost.len()
	s.StoreReplaced = c.repair.storeReplaced.Load()
	if u, err := n.DB.Usage(); err == nil {
		s.Store = metrics.StoreSnapshot{Shards: u.Shards, Used: u.Bytes, DiskFree: u.DiskFree, DiskTotal: u.DiskTotal}
	}
	s.Store.Reserve = n.DB.Reserve()
	s.Store.Corruptions = n.DB.Corruptions()
	st := n.DB.Stats()
	s.Store.Puts, s.Store.Deletes, s.Store.Syncs = st.Puts, st.Deletes, st.Syncs
	for _, h := range n.Health.Snapshot() {
		if h.State != meta.NodeActive {
			continue
		}
		up := h.Up || h.ID == n.cfg.ID
		s.Members = append(s.Members, metrics.MemberSnapshot{ID: h.ID, Up: up, DiskFree: h.Usage.DiskFree})
	}
	pass := func(p Progress) metrics.PassSnapshot {
		return metrics.PassSnapshot{Running: p.Phase == "running", Done: p.Done, Total: p.Total, Found: p.Found, Unfixed: p.Unfixed}
	}
	s.Repair, s.Scrub = pass(c.RepairProgress()), pass(c.ScrubProgress())
	return s
}

// selfStatus fills in what only this node knows of itself: its disk
// against its reserve and whether its shard store was replaced.
func (n *Node) selfStatus(ns *NodeStatus) {
	ns.Self = true
	if u, err := n.DB.Usage(); err == nil {
		ns.DiskUsed, ns.DiskFree = u.Bytes, u.DiskFree
	} else {
		ns.Error = err.Error()
	}
	ns.Reserve = n.DB.Reserve()
	ns.StoreReplaced = n.Cluster.repair.storeReplaced.Load()
	ns.LostObjects = int64(n.Cluster.repair.lost.len())
}
