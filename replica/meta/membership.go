package meta

import (
	"context"
	"fmt"
	"sort"

	"github.com/hashicorp/raft"
)

// MaxVoters is the largest voting set Join builds. Five voters survive two
// failures; more would only slow every commit.
const MaxVoters = 5

// desiredVoters returns how many of n members should vote: the largest odd
// number not above n, capped at MaxVoters. An even count adds a member to
// every quorum without surviving one more failure.
func desiredVoters(n int) int {
	switch {
	case n >= MaxVoters:
		return MaxVoters
	case n < 1:
		return 0
	case n%2 == 0:
		return n - 1
	}
	return n
}

// membershipPlan is the suffrage changes that bring a configuration to
// desiredVoters voters: non-voters promoted (lowest IDs first, so the
// outcome is predictable) or voters demoted (never self, the leader).
// Members known to be down are never promoted and are demoted first: a
// dead voter counts in every quorum and survives nothing. (A chaos run
// promoted a replacement node the operator had already given up on and
// killed, because its ID sorted first.)
type membershipPlan struct {
	promote []raft.Server
	demote  []raft.Server
}

func planMembership(servers []raft.Server, self raft.ServerID, down func(raft.ServerID) bool) membershipPlan {
	if down == nil {
		down = func(raft.ServerID) bool { return false }
	}
	var voters, nonvoters []raft.Server
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, s)
		} else if !down(s.ID) {
			nonvoters = append(nonvoters, s)
		}
	}
	sort.Slice(nonvoters, func(i, j int) bool { return nonvoters[i].ID < nonvoters[j].ID })
	// Demotion takes from the end: live voters by ID, then the down ones.
	sort.Slice(voters, func(i, j int) bool {
		di, dj := down(voters[i].ID), down(voters[j].ID)
		if di != dj {
			return dj
		}
		return voters[i].ID < voters[j].ID
	})
	want := desiredVoters(len(servers))
	var p membershipPlan
	for n := len(voters); n < want && len(nonvoters) > 0; n++ {
		p.promote = append(p.promote, nonvoters[0])
		nonvoters = nonvoters[1:]
	}
	for i := len(voters) - 1; i >= 0 && len(voters)+len(p.promote)-len(p.demote) > want; i-- {
		if voters[i].ID != self {
			p.demote = append(p.demote, voters[i])
		}
	}
	return p
}

// SetKnownDown gives the store a way to tell which members are known to
// be unreachable (the node's health prober), so that membership changes
// never promote a dead node to voter. Without it every member counts as
// reachable.
func (s *Store) SetKnownDown(down func(id string) bool) {
	s.knownDown.Store(&down)
}

func (s *Store) isKnownDown(id raft.ServerID) bool {
	if f := s.knownDown.Load(); f != nil {
		return (*f)(string(id))
	}
	return false
}

// Join adds node id (raft address addr) on the leader, as a voter while
// that keeps the voter count odd and at most MaxVoters, else as a non-voter;
// joining the fourth member, say, adds a non-voter, and the fifth then
// promotes it along with itself. Joining again with the same address is a
// no-op apart from rebalancing, so retries are safe; a new address replaces
// the old one.
//
// Join changes only the raft configuration. Propose a NodeSet to record
// the node's data-plane address for placement.
func (s *Store) Join(ctx context.Context, id, addr string) error {
	if id == "" || addr == "" {
		return fmt.Errorf("meta: join: empty node ID or address")
	}
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	servers, err := s.configuration()
	if err != nil {
		return err
	}
	present := false
	for _, srv := range servers {
		if srv.ID != raft.ServerID(id) {
			continue
		}
		if srv.Address == raft.ServerAddress(addr) {
			present = true
			break
		}
		if err := s.RemoveServer(ctx, id); err != nil {
			return fmt.Errorf("meta: join %s: drop old address %s: %w", id, srv.Address, err)
		}
	}
	if !present {
		// Always add as a non-voter: raft brings a non-voter's log up to
		// date without counting it in quorums, and the rebalance below
		// promotes it if the voter count calls for it.
		if err := s.AddNonvoter(ctx, id, addr); err != nil {
			return fmt.Errorf("meta: join %s at %s: %w", id, addr, err)
		}
	}
	return s.rebalance(ctx)
}

// RemoveNode removes node id from the raft configuration on the leader
// and rebalances voters (promoting a non-voter or demoting a voter to keep
// the count odd). To remove the leader itself, transfer leadership first.
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	if raft.ServerID(id) == raft.ServerID(s.id) {
		return fmt.Errorf("meta: remove node %s: it is this node; transfer leadership (Raft().LeadershipTransfer) and remove it from the new leader", id)
	}
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	if err := s.RemoveServer(ctx, id); err != nil {
		return fmt.Errorf("meta: remove node %s: %w", id, err)
	}
	return s.rebalance(ctx)
}

func (s *Store) rebalance(ctx context.Context) error {
	servers, err := s.configuration()
	if err != nil {
		return err
	}
	p := planMembership(servers, raft.ServerID(s.id), s.isKnownDown)
	for _, srv := range p.promote {
		if err := s.AddVoter(ctx, string(srv.ID), string(srv.Address)); err != nil {
			return fmt.Errorf("meta: promote %s to voter: %w", srv.ID, err)
		}
	}
	for _, srv := range p.demote {
		if err := s.demoteVoter(ctx, string(srv.ID)); err != nil {
			return fmt.Errorf("meta: demote voter %s: %w", srv.ID, err)
		}
	}
	return nil
}

func (s *Store) configuration() ([]raft.Server, error) {
	if s.raft.State() != raft.Leader {
		return nil, s.notLeader()
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, s.raftErr("read configuration", err)
	}
	return f.Configuration().Servers, nil
}
