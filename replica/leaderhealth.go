package replica

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
)

// A leader that is alive but slow — a lossy link, an overloaded host, a
// dying disk — keeps its heartbeats flowing, so Raft never replaces it, yet
// every write and every read barrier in the cluster waits on it. The
// followers see it: their health probes of the leader take far longer than
// those of the other nodes. Each follower that sees this tells the leader,
// and a leader that hears it from half of its followers hands leadership
// to another voter. One slow follower cannot depose a healthy leader, as it
// finds every node equally slow.
//
// On an overloaded host (every node competing for two cores) probes are
// slow at random, one node at a time, and a transfer is itself a stall of
// every write: the first version of this moved leadership every 30 s there.
// So a follower complains only after finding the leader slow on every
// check for slowLeaderSustain, a complaint in which the other nodes were
// slow too is ignored (that is the host or the network, and no other
// leader would do better), and a leader hands over only after leading for
// slowLeaderTenure and at most once per slowLeaderCooldown.

const (
	// slowLeaderWindow: complaints older than this no longer count.
	slowLeaderWindow = 5 * time.Second
	// slowLeaderSustain: how long a follower must find the leader slow,
	// without a break, before it complains.
	slowLeaderSustain = 10 * time.Second
	// slowLeaderTenure: a leader younger than this does not hand over for
	// slowness, so leadership cannot bounce between slow nodes (followers
	// also restart slowLeaderSustain when the leader changes).
	slowLeaderTenure = 15 * time.Second
	// slowLeaderCooldown bounds how often one node hands leadership over
	// for slowness.
	slowLeaderCooldown = 5 * time.Minute
)

type slowLeader struct {
	mu           sync.Mutex
	reports      map[string]time.Time // follower → last complaint
	lastTransfer time.Time
	leaderSince  time.Time // when this node last became leader; zero if not leader
}

// complaint records that voter from (one of voters, this leader's
// followers) finds this leader slow while the other nodes answer it in
// others, and says whether to hand leadership over now.
func (sl *slowLeader) complaint(now time.Time, from string, others time.Duration, voters map[string]bool) (transfer bool, complaints int) {
	if others >= slowRTT {
		return false, 0 // everything is slow from there: not this leader's fault
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.reports == nil {
		sl.reports = map[string]time.Time{}
	}
	sl.reports[from] = now
	for id, at := range sl.reports {
		if now.Sub(at) > slowLeaderWindow || !voters[id] {
			delete(sl.reports, id)
			continue
		}
		complaints++
	}
	tenured := !sl.leaderSince.IsZero() && now.Sub(sl.leaderSince) >= slowLeaderTenure
	transfer = complaints*2 >= len(voters) && tenured && now.Sub(sl.lastTransfer) > slowLeaderCooldown
	if transfer {
		sl.lastTransfer = now
		clear(sl.reports)
	}
	return transfer, complaints
}

// slowWatch is a follower's view of whether the leader has been slow long
// enough to complain.
type slowWatch struct {
	id    string    // the leader found slow
	since time.Time // since when, without a break
}

// observe records one check of leader id (empty: none known) and reports
// whether it has been slow on every check for slowLeaderSustain.
func (w *slowWatch) observe(now time.Time, id string, slow bool) bool {
	if id == "" || !slow {
		w.id = ""
		return false
	}
	if w.id != id {
		w.id, w.since = id, now
	}
	return now.Sub(w.since) >= slowLeaderSustain
}

// leading records whether this node leads now, for slowLeaderTenure.
func (sl *slowLeader) leading(now time.Time, leader bool) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	switch {
	case !leader:
		sl.leaderSince = time.Time{}
	case sl.leaderSince.IsZero():
		sl.leaderSince = now
	}
}

// watchLeader complains to the leader, about once a second, while this
// node's probes find it slow.
func (n *Node) watchLeader() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var watch slowWatch
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		n.slow.leading(now, n.IsLeader())
		if n.IsLeader() {
			watch.observe(now, "", false)
			continue
		}
		_, id := n.Meta.Leader()
		var rtt, others time.Duration
		slow := false
		if id != "" {
			rtt, others, slow = n.Health.Slow(id)
		}
		if !watch.observe(now, id, slow) {
			continue
		}
		n.log.Warn("raft leader looks slow; asking it to hand over", "leader", id, "leader_rtt", rtt, "others_rtt", others)
		c, err := n.leaderClient()
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		_, err = c.LeaderSlow(ctx, &pb.LeaderSlowRequest{Node: n.cfg.ID, LeaderRttMicros: rtt.Microseconds(), OthersRttMicros: others.Microseconds()})
		cancel()
		if err != nil {
			n.log.Debug("telling the leader it is slow", "leader", id, "err", err)
		}
	}
}

// leaderSlow records a follower's complaint and hands leadership over
// once half of the followers have complained within slowLeaderWindow.
func (n *Node) leaderSlow(req *pb.LeaderSlowRequest) error {
	if !n.IsLeader() {
		return status.Error(codes.FailedPrecondition, "not the raft leader")
	}
	f := n.Meta.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	voters := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.cfg.ID {
			voters[string(s.ID)] = true
		}
	}
	if !voters[req.Node] {
		return nil // non-voters' views are not counted
	}
	transfer, complaints := n.slow.complaint(time.Now(), req.Node, time.Duration(req.OthersRttMicros)*time.Microsecond, voters)
	if !transfer {
		return nil
	}
	n.log.Warn("followers find this leader slow; handing leadership over",
		"complaints", complaints, "followers", len(voters), "from", req.Node,
		"rtt_seen", time.Duration(req.LeaderRttMicros)*time.Microsecond, "others_rtt", time.Duration(req.OthersRttMicros)*time.Microsecond)
	go func() { // not goRun: Close may be waiting on the group already
		if err := n.Meta.TransferLeadership(); err != nil {
			n.log.Warn("leadership transfer failed", "err", err)
			return
		}
		_, id := n.Meta.Leader()
		n.log.Info("leadership handed over", "new_leader", id)
	}()
	return nil
}

// watchLeaderConn makes this follower quick to replace a leader whose
// process is gone. Raft alone learns of a dead leader only from silence:
// with the 1 s heartbeat timeout that a busy host needs (DefaultRaftTiming)
// and pre-vote waiting for a second follower, that takes 2–3 s. But when
// the leader's process dies its cluster port refuses connections, and this
// node's connection to it fails at once. Then, and only then, the heartbeat
// timeout is lowered to the lease (500 ms by default): Raft checks at once
// and calls the election after half a second of silence instead of one to
// three. It goes back to normal as soon as any leader is reachable again.
//
// A false alarm (only this node's link to the leader broke) costs nothing:
// pre-vote fails while the other followers still hear the leader.
func (n *Node) watchLeaderConn() {
	r := n.Meta.Raft()
	normal := r.ReloadableConfig()
	fast := normal
	fast.HeartbeatTimeout = min(normal.HeartbeatTimeout, max(n.raftLease, 10*time.Millisecond))
	if fast.HeartbeatTimeout >= normal.HeartbeatTimeout {
		return // nothing to gain
	}
	var dead string // the leader address found dead while fast
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		addr, id := n.Meta.Leader()
		if dead != "" {
			// Back to normal once a leader answers: another one, or the
			// same one back.
			if addr != "" && (addr != dead || n.connState(addr) == connectivity.Ready) {
				if err := r.ReloadConfig(normal); err != nil {
					n.log.Warn("restoring the raft heartbeat timeout", "err", err)
					continue
				}
				dead = ""
			}
			continue
		}
		if addr == "" || n.IsLeader() || addr == n.cfg.Advertise {
			continue
		}
		if n.connState(addr) != connectivity.TransientFailure {
			continue
		}
		if err := r.ReloadConfig(fast); err != nil {
			n.log.Warn("lowering the raft heartbeat timeout", "err", err)
			continue
		}
		dead = addr
		n.log.Info("raft leader's port refuses connections; calling an election after brief silence", "leader", id, "heartbeat_timeout", fast.HeartbeatTimeout)
	}
}

// connState returns the state of this node's connection to addr, asking
// an idle one to connect so that a dead peer shows as a failure at once.
func (n *Node) connState(addr string) connectivity.State {
	conn, err := n.pool.Conn(addr)
	if err != nil {
		return connectivity.Shutdown
	}
	st := conn.GetState()
	if st == connectivity.Idle {
		conn.Connect()
	}
	return st
}
