package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NodeSnapshot is what a cluster node reports at each scrape.
type NodeSnapshot struct {
	Node string
	// RaftState is "Leader", "Follower", "Candidate" or "Shutdown".
	RaftState string
	Leader    string // leader's ID; empty when there is none
	Term      uint64
	// CommitIndex is the last log index this node knows committed,
	// AppliedIndex the last it applied to its state.
	CommitIndex, AppliedIndex uint64
	// LastContact is how long ago a follower last heard from the leader;
	// negative when unknown (a leader, or never).
	LastContact time.Duration

	Objects         int64 // live and deleted-in-grace object records
	UnderReplicated int64 // objects short of a healthy shard at the last count
	RepairQueue     int   // objects queued for repair now
	LostHere        int   // objects missing a shard on this node's store, being rebuilt
	// StoreReplaced is set when the node started with a shard store other
	// than the one the cluster recorded (wiped, replaced or moved aside).
	StoreReplaced bool

	Store         StoreSnapshot
	Members       []MemberSnapshot
	Repair, Scrub PassSnapshot
}

// StoreSnapshot is this node's shard store.
type StoreSnapshot struct {
	Shards, Used         int64
	DiskFree, DiskTotal  int64
	Reserve              int64 // free bytes that puts leave alone
	Corruptions          int64 // badger panics recovered (a damaged file)
	Puts, Deletes, Syncs int64
}

// AtReserve reports whether the disk is down to the reserve: the store
// refuses new shards.
func (s StoreSnapshot) AtReserve() bool { return s.DiskFree <= s.Reserve }

// MemberSnapshot is another member as this node's probes see it.
type MemberSnapshot struct {
	ID       string
	Up       bool
	DiskFree int64
}

// PassSnapshot is the progress of a repair or scrub pass.
type PassSnapshot struct {
	Running     bool
	Done, Total int64
	Found       int64 // problems found by the current or last pass
	Unfixed     int64 // of those, still needing work at its end
}

// MailSnapshot is a node's mail frontends.
type MailSnapshot struct {
	Node             string
	IMAPConnections  int
	HashSlotsInUse   int64
	HashSlots        int
	Hashes           int64
	LoginCacheHits   int64
	LoginCacheMisses int64
	HashSlotTimeouts int64
}

// QueueSnapshot is the outbound mail queue as a node's replica holds it
// (cluster-wide: every node reports the same figures once caught up).
type QueueSnapshot struct {
	Node          string
	Entries       int     // messages queued
	Deferred      int     // of those, tried and waiting for a retry
	OldestSeconds float64 // age of the oldest entry (0: empty)
}

var (
	srcMu        sync.Mutex
	nodeSources  []func() NodeSnapshot
	mailSources  []func() MailSnapshot
	queueSources = map[int]func() (QueueSnapshot, bool){}
	queueNext    int
)

// AddNode adds a node whose state is read at every scrape.
func AddNode(fn func() NodeSnapshot) {
	srcMu.Lock()
	defer srcMu.Unlock()
	nodeSources = append(nodeSources, fn)
}

// AddMail adds a node's mail frontends, read at every scrape.
func AddMail(fn func() MailSnapshot) {
	srcMu.Lock()
	defer srcMu.Unlock()
	mailSources = append(mailSources, fn)
}

// AddQueue adds a node's outbound queue, read at every scrape (a source
// answering false is left out of that scrape). The returned func removes
// it (a queue stopped before its process ends); calling it again does
// nothing.
func AddQueue(fn func() (QueueSnapshot, bool)) (remove func()) {
	srcMu.Lock()
	defer srcMu.Unlock()
	id := queueNext
	queueNext++
	queueSources[id] = fn
	return func() {
		srcMu.Lock()
		defer srcMu.Unlock()
		delete(queueSources, id)
	}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append([]string{"node"}, labels...), nil)
}

var (
	dRaftState   = desc("hastore_raft_state", "1 for the Raft state this node is in (leader, follower, candidate, shutdown), 0 for the others.", "state")
	dHasLeader   = desc("hastore_raft_has_leader", "1 if this node knows a Raft leader, 0 if it does not (no quorum, or an election under way).")
	dLeader      = desc("hastore_raft_leader", "1, labelled with the leader's ID as this node sees it.", "leader")
	dTerm        = desc("hastore_raft_term", "The current Raft term; it grows by one per election.")
	dCommit      = desc("hastore_raft_commit_index", "The last Raft log index this node knows committed.")
	dApplied     = desc("hastore_raft_applied_index", "The last Raft log index this node applied to its metadata.")
	dLag         = desc("hastore_raft_apply_lag", "Committed log entries not yet applied on this node (commit index - applied index).")
	dContact     = desc("hastore_raft_last_contact_seconds", "Seconds since this follower last heard from the leader (absent on a leader).")
	dObjects     = desc("hastore_objects", "Object records in the metadata.")
	dUnder       = desc("hastore_objects_under_replicated", "Objects short of a healthy shard (missing, misplaced, on an unreachable node) at the last count.")
	dQueue       = desc("hastore_repair_queue_length", "Objects queued for repair on this node (readers that met a bad shard).")
	dLost        = desc("hastore_store_lost_objects", "Objects missing a shard in this node's store after it was wiped or replaced, being rebuilt.")
	dReplaced    = desc("hastore_store_replaced", "1 if this node started with a shard store other than the one the cluster recorded (wiped, replaced or moved aside).")
	dUsed        = desc("hastore_store_used_bytes", "Bytes of shard records in this node's store.")
	dShards      = desc("hastore_store_shards", "Shard records in this node's store.")
	dFree        = desc("hastore_store_disk_free_bytes", "Free bytes on the filesystem of this node's store.")
	dTotal       = desc("hastore_store_disk_total_bytes", "Size of the filesystem of this node's store.")
	dReserve     = desc("hastore_store_reserve_bytes", "Free bytes the store keeps back; at or below it the store refuses new shards.")
	dAtReserve   = desc("hastore_store_at_reserve", "1 if this node's disk is down to its reserve: it takes no new shards.")
	dCorrupt     = desc("hastore_store_corruptions_total", "Damaged store files met (badger panics recovered) since start.")
	dPuts        = desc("hastore_store_shard_puts_total", "Shards written to this node's store since start.")
	dDeletes     = desc("hastore_store_shard_deletes_total", "Shards deleted from this node's store since start.")
	dSyncs       = desc("hastore_store_syncs_total", "Group-commit fsync rounds of this node's store since start.")
	dMemberUp    = desc("hastore_member_up", "1 if this node's probes reach the member, 0 if not.", "member")
	dMemberFree  = desc("hastore_member_disk_free_bytes", "Free disk bytes the member reported at the last probe.", "member")
	dPassRunning = desc("hastore_pass_running", "1 while a repair or scrub pass runs on this node.", "pass")
	dPassDone    = desc("hastore_pass_done", "Objects (repair) or shards (scrub) handled by the current or last pass.", "pass")
	dPassTotal   = desc("hastore_pass_total", "Objects (repair) or shards (scrub) the current or last pass set out to handle.", "pass")
	dPassFound   = desc("hastore_pass_found", "Problems the current or last pass found.", "pass")
	dPassUnfixed = desc("hastore_pass_unfixed", "Problems the last pass found and could not fix.", "pass")

	dIMAPConns   = desc("hastore_imap_connections", "IMAP connections open now (both ports).")
	dSlotsInUse  = desc("hastore_hash_slots_in_use", "Password hashes (argon2id) being computed now.")
	dSlots       = desc("hastore_hash_slots", "Password hashes that may run at once (--mail-hash-slots).")
	dHashes      = desc("hastore_password_hashes_total", "Password hash computations run (logins the cache could not answer, new passwords).")
	dCacheHits   = desc("hastore_login_cache_hits_total", "Logins answered by the login cache without hashing.")
	dCacheMisses = desc("hastore_login_cache_misses_total", "Logins of known users the login cache could not answer.")
	dSlotTimeout = desc("hastore_hash_slot_timeouts_total", "Logins refused with a temporary failure because every hash slot stayed busy (--mail-hash-wait).")

	dQueueEntries  = desc("hastore_mail_queue_entries", "Outbound messages queued in the cluster (as this node's replica holds the queue).")
	dQueueDeferred = desc("hastore_mail_queue_deferred_entries", "Queued outbound messages tried at least once and waiting for a retry (a remote answered 4xx or could not be reached).")
	dQueueOldest   = desc("hastore_mail_queue_oldest_seconds", "Age of the oldest queued outbound message (0 when the queue is empty).")
)

// sourceCollector reads the sources at scrape time.
type sourceCollector struct{}

func (sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dRaftState, dHasLeader, dLeader, dTerm, dCommit, dApplied, dLag, dContact, dObjects, dUnder,
		dQueue, dLost, dReplaced, dUsed, dShards, dFree, dTotal, dReserve, dAtReserve, dCorrupt, dPuts, dDeletes, dSyncs,
		dMemberUp, dMemberFree, dPassRunning, dPassDone, dPassTotal, dPassFound, dPassUnfixed,
		dIMAPConns, dSlotsInUse, dSlots, dHashes, dCacheHits, dCacheMisses, dSlotTimeout,
		dQueueEntries, dQueueDeferred, dQueueOldest} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (sourceCollector) Collect(ch chan<- prometheus.Metric) {
	srcMu.Lock()
	nodes, mails := append([]func() NodeSnapshot(nil), nodeSources...), append([]func() MailSnapshot(nil), mailSources...)
	ids := make([]int, 0, len(queueSources))
	for id := range queueSources {
		ids = append(ids, id)
	}
	slices.Sort(ids) // a stable order of sources; the registry sorts the series anyway
	queues := make([]func() (QueueSnapshot, bool), len(ids))
	for i, id := range ids {
		queues[i] = queueSources[id]
	}
	srcMu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, fn := range nodes {
		s := fn()
		n := s.Node
		for _, st := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
			gauge(dRaftState, b2f(s.RaftState == st), n, lower(st))
		}
		gauge(dHasLeader, b2f(s.Leader != ""), n)
		if s.Leader != "" {
			gauge(dLeader, 1, n, s.Leader)
		}
		gauge(dTerm, float64(s.Term), n)
		gauge(dCommit, float64(s.CommitIndex), n)
		gauge(dApplied, float64(s.AppliedIndex), n)
		lag := int64(s.CommitIndex) - int64(s.AppliedIndex)
		gauge(dLag, float64(max(lag, 0)), n)
		if s.LastContact >= 0 {
			gauge(dContact, s.LastContact.Seconds(), n)
		}
		gauge(dObjects, float64(s.Objects), n)
		gauge(dUnder, float64(s.UnderReplicated), n)
		gauge(dQueue, float64(s.RepairQueue), n)
		gauge(dLost, float64(s.LostHere), n)
		gauge(dReplaced, b2f(s.StoreReplaced), n)
		st := s.Store
		gauge(dUsed, float64(st.Used), n)
		gauge(dShards, float64(st.Shards), n)
		gauge(dFree, float64(st.DiskFree), n)
		gauge(dTotal, float64(st.DiskTotal), n)
		gauge(dReserve, float64(st.Reserve), n)
		gauge(dAtReserve, b2f(st.AtReserve()), n)
		counter(dCorrupt, float64(st.Corruptions), n)
		counter(dPuts, float64(st.Puts), n)
		counter(dDeletes, float64(st.Deletes), n)
		counter(dSyncs, float64(st.Syncs), n)
		for _, m := range s.Members {
			gauge(dMemberUp, b2f(m.Up), n, m.ID)
			gauge(dMemberFree, float64(m.DiskFree), n, m.ID)
		}
		for _, p := range []struct {
			name string
			p    PassSnapshot
		}{{"repair", s.Repair}, {"scrub", s.Scrub}} {
			gauge(dPassRunning, b2f(p.p.Running), n, p.name)
			gauge(dPassDone, float64(p.p.Done), n, p.name)
			gauge(dPassTotal, float64(p.p.Total), n, p.name)
			gauge(dPassFound, float64(p.p.Found), n, p.name)
			gauge(dPassUnfixed, float64(p.p.Unfixed), n, p.name)
		}
	}
	for _, fn := range mails {
		s := fn()
		n := s.Node
		gauge(dIMAPConns, float64(s.IMAPConnections), n)
		gauge(dSlotsInUse, float64(s.HashSlotsInUse), n)
		gauge(dSlots, float64(s.HashSlots), n)
		counter(dHashes, float64(s.Hashes), n)
		counter(dCacheHits, float64(s.LoginCacheHits), n)
		counter(dCacheMisses, float64(s.LoginCacheMisses), n)
		counter(dSlotTimeout, float64(s.HashSlotTimeouts), n)
	}
	for _, fn := range queues {
		s, ok := fn()
		if !ok {
			continue
		}
		gauge(dQueueEntries, float64(s.Entries), s.Node)
		gauge(dQueueDeferred, float64(s.Deferred), s.Node)
		gauge(dQueueOldest, s.OldestSeconds, s.Node)
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func init() { Registry.MustRegister(sourceCollector{}) }
