package replica

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
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

const (
	// slowLeaderWindow: complaints older than this no longer count.
	slowLeaderWindow = 5 * time.Second
	// slowLeaderCooldown bounds how often leadership moves for slowness,
	// so a cluster where every node is slow does not spend its time in
	// transfers.
	slowLeaderCooldown = 30 * time.Second
)

type slowLeader struct {
	mu           sync.Mutex
	reports      map[string]time.Time // follower → last complaint
	lastTransfer time.Time
}

// watchLeader complains to the leader, about once a second, while this
// node's probes find it slow.
func (n *Node) watchLeader() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if n.IsLeader() {
			continue
		}
		_, id := n.Meta.Leader()
		if id == "" {
			continue
		}
		rtt, others, slow := n.Health.Slow(id)
		if !slow {
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
	now := time.Now()
	sl := &n.slow
	sl.mu.Lock()
	if sl.reports == nil {
		sl.reports = map[string]time.Time{}
	}
	sl.reports[req.Node] = now
	complaints := 0
	for id, at := range sl.reports {
		if now.Sub(at) > slowLeaderWindow || !voters[id] {
			delete(sl.reports, id)
			continue
		}
		complaints++
	}
	transfer := complaints*2 >= len(voters) && now.Sub(sl.lastTransfer) > slowLeaderCooldown
	if transfer {
		sl.lastTransfer = now
		clear(sl.reports)
	}
	sl.mu.Unlock()
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
