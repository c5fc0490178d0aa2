package replica

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/replica/meta"
	"hastore/replica/transport"
	"hastore/storage"
)

// NodeConfig is everything one hastore node needs to start.
type NodeConfig struct {
	ID      string
	DataDir string
	// Listen is the one cluster port: gRPC and Raft. Advertise is the
	// address other nodes use to reach it (default: Listen).
	Listen, Advertise string
	// Peers is the initial cluster, node ID → address, this node included.
	// Nodes started with the same Peers form one cluster. Empty with Join.
	Peers map[string]string
	// Join is the address of a node of an existing cluster to join.
	Join string
	Key  []byte
	// TLS for the cluster port; both nil means plain TCP.
	ServerTLS, ClientTLS *tls.Config
	// MaxConns and MaxConnsPerIP cap the cluster port's connections
	// (transport.Config's fields of the same names; 0: the defaults).
	MaxConns, MaxConnsPerIP int
	Cluster                 Options
	// Storage tunes this node's shard store.
	Storage storage.Options
	// Raft sets the Raft timeouts; zero fields take DefaultRaftTiming's.
	Raft RaftTiming
	// NoRequestIDs makes this node propose bare commands, without the
	// request-ID envelope (meta.Request), and so not resend those whose
	// outcome is unknown. Only for a rolling upgrade from a release that
	// does not know the envelope: such nodes would not apply it.
	NoRequestIDs bool
	// CommandSets are the replicated state machine's plug-in command sets
	// (meta.FSMOptions.CommandSets); every node of a cluster lists the same.
	CommandSets []meta.CommandSet
	// Meta adjusts the Raft configuration last (for tests).
	Meta   func(*meta.Config)
	Logger *slog.Logger
	// Faults, if set, lets tests cut this node off from chosen peers.
	Faults *transport.Faults
	// ScanEvery and ScrubEvery pace the background repair scan (leader)
	// and the scrub of this node's shards.
	ScanEvery, ScrubEvery time.Duration
	// Register, if set, adds the frontends' gRPC services to the node's
	// cluster port before it starts serving. Frontends sit above replica,
	// so they plug in here rather than being imported.
	Register func(s grpc.ServiceRegistrar, n *Node)
}

// RaftTiming is the failure detection of the metadata Raft group.
type RaftTiming struct {
	// Heartbeat: a follower that has heard nothing from the leader for
	// this long (checked every 1-2x Heartbeat, at random) calls an
	// election; the leader sends a heartbeat every Heartbeat/10.
	Heartbeat time.Duration
	// Election: how long a candidate waits for votes before a new round.
	Election time.Duration
	// Lease: a leader that has heard from no quorum for this long steps
	// down. It only bounds how long a cut-off leader keeps taking
	// proposals that cannot commit; reads never rely on it (they confirm
	// leadership with a quorum round, see meta.Store.LeaderCommitIndex).
	Lease time.Duration
}

// DefaultRaftTiming holds on a busy host: the last defaults (300 ms, 300 ms,
// 150 ms lease) saw 93 leader changes in 18 minutes with no node dying on
// two cores at load 15-30, where a goroutine may wait hundreds of
// milliseconds to run. A leader change costs every write and read barrier
// in the cluster a stall, so a spurious one is worse than a slower
// reaction to a real one:
//
//   - Lease 500 ms: a loaded leader whose followers' answers come late no
//     longer steps down at the first 150 ms hiccup (each step-down is a
//     leaderless second or more).
//   - Heartbeat 1 s: a follower needs a full second of silence, and with
//     pre-vote (on: raft.Config.PreVoteDisabled stays false, and our
//     transport supports it) a majority must have lost the leader before
//     anyone's term moves, so one starved follower cannot depose a healthy
//     leader.
//   - Election 1 s: raft's default.
//
// The price is detection: a follower checks every 1-2 s, and pre-vote waits
// for the second follower, so a leader that silently hangs is replaced in
// about 2-3 s. A leader that dies (its port refuses connections) is
// noticed sooner: see watchLeaderConn.
var DefaultRaftTiming = RaftTiming{Heartbeat: time.Second, Election: time.Second, Lease: 500 * time.Millisecond}

func (t RaftTiming) withDefaults() RaftTiming {
	d := DefaultRaftTiming
	if t.Heartbeat > 0 {
		d.Heartbeat = t.Heartbeat
	}
	if t.Election > 0 {
		d.Election = t.Election
	}
	if t.Lease > 0 {
		d.Lease = t.Lease
	}
	return d
}

// Validate reports timings Raft would refuse, in the flags' words.
func (t RaftTiming) Validate() error {
	t = t.withDefaults()
	switch {
	case t.Heartbeat < 10*time.Millisecond || t.Election < 10*time.Millisecond || t.Lease < 10*time.Millisecond:
		return fmt.Errorf("raft timeouts must be at least 10ms (heartbeat %v, election %v, lease %v)", t.Heartbeat, t.Election, t.Lease)
	case t.Lease > t.Heartbeat:
		return fmt.Errorf("--raft-lease %v exceeds --raft-heartbeat %v; Raft needs lease <= heartbeat", t.Lease, t.Heartbeat)
	case t.Election < t.Heartbeat:
		return fmt.Errorf("--raft-election %v is below --raft-heartbeat %v; Raft needs election >= heartbeat", t.Election, t.Heartbeat)
	}
	return nil
}

// Pre-vote (DefaultRaftTiming relies on it) needs the transport's support;
// raft turns it off, with a warning, for a transport without.
var _ raft.WithPreVote = unpipelined{}

// Node is one running hastore cluster member.
type Node struct {
	cfg     NodeConfig
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	DB      *storage.DB
	Meta    *meta.Store
	Cluster *Cluster
	Health  *Health
	Peers   Peers
	pool    *transport.Pool
	mux     *transport.Mux
	grpc    *grpc.Server
	raftTr  *raft.NetworkTransport
	wg      sync.WaitGroup
	slow    slowLeader
	// raftLease is the leader lease in use, the floor of watchLeaderConn's
	// heartbeat timeout (Raft wants heartbeat >= lease).
	raftLease time.Duration
	// removed is closed once this node has read, caught up, that it was
	// removed from the cluster (watchRemoved).
	removed chan struct{}
}

// StartNode opens the node's stores, starts serving on its cluster port and
// joins or forms the cluster. Close stops it.
func StartNode(cfg NodeConfig) (n *Node, err error) {
	if cfg.ID == "" || cfg.DataDir == "" || cfg.Listen == "" {
		return nil, errors.New("node: an ID, a data directory and a listen address are required")
	}
	if cfg.Advertise == "" {
		host, _, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("node: listen address %q: %w", cfg.Listen, err)
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			return nil, fmt.Errorf("node: listen address %q is a wildcard; give the address other nodes should use (--advertise)", cfg.Listen)
		}
		cfg.Advertise = cfg.Listen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ScanEvery == 0 {
		cfg.ScanEvery = 30 * time.Second
	}
	if cfg.ScrubEvery == 0 {
		cfg.ScrubEvery = 24 * time.Hour
	}
	if err := cfg.Raft.Validate(); err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.ID, err)
	}
	log := cfg.Logger.With("node", cfg.ID)
	n = &Node{cfg: cfg, log: log, removed: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	started := n // the error returns below set n to nil
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	// 0700: the metadata (and its Raft snapshots) hold password hashes.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node %s: creating data directory: %w", cfg.ID, err)
	}
	if fi, err := os.Stat(cfg.DataDir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("data directory is open to other users; the metadata in it holds password hashes: run chmod 700 on it",
			"dir", cfg.DataDir, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
	sopt := cfg.Storage
	sopt.Logger = log
	if n.DB, err = storage.Open(filepath.Join(cfg.DataDir, "shards"), sopt); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("node %s: cluster port: %w", cfg.ID, err)
	}
	tcfg := transport.Config{Key: cfg.Key, ServerTLS: cfg.ServerTLS, ClientTLS: cfg.ClientTLS, Faults: cfg.Faults, Logger: log,
		MaxConns: cfg.MaxConns, MaxConnsPerIP: cfg.MaxConnsPerIP, Revoked: n.credRevoked}
	if n.mux, err = transport.NewMux(l, cfg.Advertise, tcfg); err != nil {
		l.Close()
		return nil, err
	}
	n.raftTr = raft.NewNetworkTransport(n.mux.Raft(), 3, 10*time.Second, logWriter{log})

	// meta adds node= itself; given log, every line of it said node= twice.
	mcfg := meta.Config{NodeID: cfg.ID, Dir: filepath.Join(cfg.DataDir, "meta"), Transport: unpipelined{n.raftTr}, Logger: cfg.Logger, CommandSets: cfg.CommandSets}
	if cfg.Join == "" {
		ids := make([]string, 0, len(cfg.Peers))
		for id := range cfg.Peers {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for i, id := range ids {
			s := raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(cfg.Peers[id]), Suffrage: raft.Voter}
			if i >= meta.MaxVoters || (len(ids)%2 == 0 && i == len(ids)-1) {
				s.Suffrage = raft.Nonvoter // keep the voter count odd
			}
			mcfg.Bootstrap = append(mcfg.Bootstrap, s)
		}
		// Raft refuses to bootstrap on a non-voter (ErrNotVoter): it
		// learns the configuration from the voters' leader instead.
		if i := sort.SearchStrings(ids, cfg.ID); i < len(ids) && ids[i] == cfg.ID && mcfg.Bootstrap[i].Suffrage != raft.Voter {
			mcfg.Bootstrap = nil
		}
	}
	// Followers learn the commit index only from AppendEntries, which an
	// idle leader sends every CommitTimeout (50–100 ms by default): a
	// write forwarded from a follower waits that long to be applied there.
	// 5 ms costs ~200 tiny RPCs a second per follower and takes that wait
	// off every forwarded write.
	mcfg.CommitTimeout = 5 * time.Millisecond
	// See DefaultRaftTiming for why these values. Nodes far apart (or a
	// host busier still) want them longer; see --raft-*.
	rt := cfg.Raft.withDefaults()
	mcfg.HeartbeatTimeout, mcfg.ElectionTimeout, mcfg.LeaderLeaseTimeout = rt.Heartbeat, rt.Election, rt.Lease
	if cfg.Meta != nil {
		cfg.Meta(&mcfg)
	}
	if n.Meta, err = meta.Open(mcfg); err != nil {
		return nil, err
	}
	n.raftLease = mcfg.LeaderLeaseTimeout
	if n.pool, err = transport.NewPool(tcfg); err != nil {
		return nil, err
	}
	peers := &peerSet{self: cfg.ID, local: localShards{n.DB}, pool: n.pool, md: n.Meta, static: cfg.Peers}
	n.Peers = peers
	n.Health = NewHealth(cfg.ID, n.Meta, peers, log)
	n.Meta.SetKnownDown(n.Health.KnownDown)
	copt := cfg.Cluster
	copt.Logger = log
	if n.Cluster, err = NewCluster(cfg.ID, n.Meta, &forwarder{n}, peers, n.Health, copt); err != nil {
		return nil, err
	}
	// A client's request-ID header names the logical call whose
	// proposals the forwarder then applies exactly once.
	if n.grpc, err = transport.NewGRPCServer(tcfg, transport.RequestIDServerOptions()...); err != nil {
		return nil, err
	}
	transport.NewNodeServer(cfg.ID, n.DB).Register(n.grpc)
	pb.RegisterClusterServer(n.grpc, &clusterServer{n: n})
	pb.RegisterCredsServer(n.grpc, &credsServer{n: n})
	pb.RegisterBackupServer(n.grpc, &backupServer{n: n})
	if cfg.Register != nil {
		cfg.Register(n.grpc, n)
	}
	n.goRun(func() { _ = n.grpc.Serve(n.mux.GRPC()) })
	n.goRun(func() { n.Health.Run(n.ctx) })
	n.goRun(func() { n.Cluster.RunBackground(n.ctx, n.IsLeader, cfg.ScanEvery, cfg.ScrubEvery) })
	n.goRun(n.keepMembership)
	n.goRun(n.watchLeader)
	n.goRun(n.watchLeaderConn)
	n.goRun(n.checkStoreIdentity)
	n.goRun(n.watchRemoved)
	if cfg.Join != "" {
		if err := n.joinCluster(); err != nil {
			return nil, err
		}
	}
	log.Info("node started", "listen", cfg.Listen, "advertise", cfg.Advertise, "scheme", n.Cluster.Scheme())
	return n, nil
}

func (n *Node) goRun(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

// Close stops serving and closes the stores. In-flight calls are cut off.
func (n *Node) Close() error {
	n.cancel()
	if n.grpc != nil {
		n.grpc.Stop()
	}
	var errs []error
	if n.Meta != nil {
		errs = append(errs, n.Meta.Close())
	}
	if n.raftTr != nil {
		errs = append(errs, n.raftTr.Close())
	}
	if n.mux != nil {
		errs = append(errs, n.mux.Close())
	}
	n.wg.Wait()
	if n.pool != nil {
		errs = append(errs, n.pool.Close())
	}
	if n.DB != nil {
		errs = append(errs, n.DB.Close())
	}
	return errors.Join(errs...)
}

// Addr returns the address the node serves on.
func (n *Node) Addr() string { return n.mux.Addr().String() }

// ID returns the node's ID.
func (n *Node) ID() string { return n.cfg.ID }

// IsLeader reports whether this node is the Raft leader now.
func (n *Node) IsLeader() bool { return n.Meta.State() == raft.Leader }

// joinCluster asks the node at cfg.Join (retrying for a while) to add this
// one to the cluster.
func (n *Node) joinCluster() error {
	if n.Meta.Raft().LastIndex() > 0 {
		return nil // already a member: resuming
	}
	ctx, cancel := context.WithTimeout(n.ctx, 60*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		conn, err := n.pool.Conn(n.cfg.Join)
		if err == nil {
			_, err = pb.NewClusterClient(conn).Join(ctx, &pb.JoinRequest{Id: n.cfg.ID, Address: n.cfg.Advertise})
		}
		if err == nil {
			n.log.Info("joined cluster", "via", n.cfg.Join)
			return nil
		}
		last = err
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("node %s: joining the cluster through %s: %w", n.cfg.ID, n.cfg.Join, last)
}

// keepMembership makes the membership records (data-plane addresses, read
// by placement) follow the Raft configuration: on the leader, every server
// in the configuration gets an active NodeSet record.
func (n *Node) keepMembership() {
	// Often enough that a new cluster can place shards a moment after
	// its first election; a tick that finds nothing to do costs a read.
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if !n.IsLeader() {
			continue
		}
		f := n.Meta.Raft().GetConfiguration()
		if f.Error() != nil {
			continue
		}
		nodes, err := n.Meta.Nodes()
		if err != nil {
			continue
		}
		known := map[string]meta.Node{}
		for _, nd := range nodes {
			known[nd.ID] = nd
		}
		for _, s := range f.Configuration().Servers {
			id, addr := string(s.ID), string(s.Address)
			if k, ok := known[id]; ok && (k.Address == addr || k.State == meta.NodeRemoved) {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			if _, err := n.Meta.Propose(ctx, meta.NodeSet{ID: id, Address: addr, State: meta.NodeActive}); err != nil {
				n.log.Warn("recording member", "member", id, "err", err)
			}
			cancel()
		}
	}
}

var errNoLeader = fmt.Errorf("%w: no raft leader known (election in progress, or fewer than a quorum of voters reachable)", ErrUnavailable)

// leaderClient returns a Cluster client for the current Raft leader.
func (n *Node) leaderClient() (pb.ClusterClient, error) {
	addr, id := n.Meta.Leader()
	if addr == "" {
		return nil, errNoLeader
	}
	conn, err := n.pool.Conn(addr)
	if err != nil {
		return nil, err
	}
	// Wait (briefly) for a connection before sending: a call that fails
	// to connect certainly did not reach the leader and may be retried,
	// while one that fails after sending may have been applied.
	ctx, cancel := context.WithTimeout(n.ctx, time.Second)
	defer cancel()
	for {
		st := conn.GetState()
		switch st {
		case connectivity.Ready:
			return pb.NewClusterClient(conn), nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			// Refused or cut off: most likely the leader just died and
			// this node has not noticed yet. Waiting here for gRPC's
			// reconnect would hold the caller for the whole second; the
			// caller polls for the next leader instead.
			return nil, fmt.Errorf("%w: raft leader %s at %s not reachable", errNoLeader, id, addr)
		}
		conn.Connect()
		if !conn.WaitForStateChange(ctx, st) {
			return nil, fmt.Errorf("%w: raft leader %s at %s not reachable", errNoLeader, id, addr)
		}
	}
}

// Join adds a node to the cluster (on the leader; forwarded otherwise).
func (n *Node) Join(ctx context.Context, id, addr string) error {
	if !n.IsLeader() {
		c, err := n.leaderClient()
		if err != nil {
			return err
		}
		_, err = c.Join(ctx, &pb.JoinRequest{Id: id, Address: addr})
		return err
	}
	if err := n.Meta.Join(ctx, id, addr); err != nil {
		return err
	}
	_, err := n.Meta.Propose(ctx, meta.NodeSet{ID: id, Address: addr, State: meta.NodeActive})
	return err
}

// RemoveNode takes a node out of the cluster for good: it is marked removed
// (so no new shard goes there and its shards count as lost), dropped from
// Raft, and everything it held is rebuilt elsewhere. report sees progress
// in objects: Total those that named the node when the removal began, Done
// those of them that no longer do (moved by this call's repair passes or
// the leader's background repair, which starts as soon as the node is
// marked removed), Repaired the shards this call's passes moved; it is
// called at least every couple of seconds while shards move.
func (n *Node) RemoveNode(ctx context.Context, id string, report func(Progress)) (Progress, error) {
	// The membership is read locally: catch up first, or a node that has
	// just joined (still installing its snapshot) answers "no member" and
	// the node to remove stays a Raft voter — a dead one, which the chaos
	// run showed can cost the cluster its quorum two replacements later.
	if err := n.Cluster.CatchUp(ctx); err != nil {
		return Progress{}, err
	}
	nodes, err := n.Meta.Nodes()
	if err != nil {
		return Progress{}, err
	}
	var addr string
	found := false
	for _, nd := range nodes {
		if nd.ID == id {
			addr, found = nd.Address, true
		}
	}
	if !found {
		return Progress{}, fmt.Errorf("%w: no member %q", ErrNotFound, id)
	}
	// Counted before the node is marked removed: from then on the
	// leader's background repair moves its shards too, and a total taken
	// later would leave out what had already moved (the bar showed 0/0).
	p := Progress{Phase: "running", Total: n.objectsOn(id), Started: time.Now()}
	if _, err := n.Cluster.propose(ctx, meta.NodeSet{ID: id, Address: addr, State: meta.NodeRemoved}); err != nil {
		return Progress{}, err
	}
	if err := n.removeFromRaft(ctx, id); err != nil {
		return Progress{}, err
	}
	var repaired int64 // by the finished passes
	count := func() int64 {
		left := n.objectsOn(id)
		p.Total = max(p.Total, left) // objects written to it just before the mark
		p.Done = p.Total - left
		return left
	}
	for {
		left := count()
		if report != nil {
			report(p)
		}
		if left == 0 {
			p.Phase, p.Finished = "done", time.Now()
			return p, nil
		}
		// A pass reports per object; recounting what still names the
		// node walks every object, so it is done every 2 s at most.
		last := time.Now()
		rp, err := n.Cluster.Repair(ctx, func(rp Progress) {
			if report == nil || time.Since(last) < 2*time.Second {
				return
			}
			last = time.Now()
			count()
			p.Repaired = repaired + rp.Repaired
			report(p)
		})
		if err != nil {
			return p, err
		}
		repaired += rp.Repaired
		p.Repaired = repaired
		if rp.Repaired == 0 && n.objectsOn(id) == left {
			p.Phase, p.Err = "done", fmt.Sprintf("%d objects still have shards on %s: not enough live nodes to move them; add a node and run repair", left, id)
			return p, nil
		}
	}
}

func (n *Node) removeFromRaft(ctx context.Context, id string) error {
	if n.IsLeader() {
		if id == n.cfg.ID {
			if err := n.Meta.TransferLeadership(); err != nil {
				return fmt.Errorf("handing leadership over before removing this node: %w", err)
			}
		} else {
			return n.Meta.RemoveNode(ctx, id)
		}
	}
	// Not (or no longer) the leader: ask it. The removed node is gone
	// from the placement already, so this can be retried freely.
	for ctx.Err() == nil {
		c, err := n.leaderClient()
		if err == nil {
			err = n.forwardRemove(ctx, c, id)
		}
		if err == nil {
			return nil
		}
		if status.Code(err) != codes.Unavailable {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
	return ctx.Err()
}

// forwardRemove has the leader drop id from Raft. The leader treats a
// RemoveNode call for a node already marked removed as exactly that.
func (n *Node) forwardRemove(ctx context.Context, c pb.ClusterClient, id string) error {
	stream, err := c.RemoveNode(ctx, &pb.RemoveNodeRequest{Id: id})
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func (n *Node) objectsOn(id string) int64 {
	var c int64
	_ = n.Meta.WalkObjects(func(o meta.Object) error {
		if o.Refs == 0 {
			// Deleted, waiting out the grace period: not moved (a put
			// that revives it repairs it first, see Cluster.Put).
			return nil
		}
		for _, p := range o.Placement {
			if p == id {
				c++
				break
			}
		}
		return nil
	})
	return c
}

// NodeStatus is one member as Status reports it.
type NodeStatus struct {
	ID, Address        string
	Up                 bool
	State              string
	RaftRole           string
	Voter              bool
	DiskUsed, DiskFree int64
	Error              string
	// Set in the answering node's own entry only (health.go selfStatus).
	Self          bool
	Reserve       int64
	StoreReplaced bool
	LostObjects   int64
}

// ClusterStatus is what `hastore admin status` shows.
type ClusterStatus struct {
	Nodes           []NodeStatus
	Scheme          string
	Objects         int64
	UnderReplicated int64
	Leader          string
	Repair, Scrub   Progress
}

// Status reports the cluster as this node sees it.
func (n *Node) Status(ctx context.Context) (ClusterStatus, error) {
	st := ClusterStatus{Scheme: n.Cluster.Scheme().String(), Repair: n.Cluster.RepairProgress(), Scrub: n.Cluster.ScrubProgress()}
	_, st.Leader = n.Meta.Leader()
	objs, err := n.Meta.ObjectCount()
	if err != nil {
		return st, err
	}
	st.Objects = objs
	n.Cluster.countUnderReplicated()
	st.UnderReplicated = n.Cluster.UnderReplicated()
	roles := map[string]string{}
	voters := map[string]bool{}
	if f := n.Meta.Raft().GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			voters[string(s.ID)] = s.Suffrage == raft.Voter
			roles[string(s.ID)] = "follower"
			if s.Suffrage != raft.Voter {
				roles[string(s.ID)] = "nonvoter"
			}
		}
	}
	if st.Leader != "" {
		roles[st.Leader] = "leader"
	}
	for _, h := range n.Health.Snapshot() {
		if h.State == meta.NodeRemoved {
			continue // no longer a member: not shown, not scrubbed, not "down"
		}
		ns := NodeStatus{ID: h.ID, Address: h.Address, Up: h.Up || h.ID == n.cfg.ID, State: string(h.State),
			RaftRole: roles[h.ID], Voter: voters[h.ID], DiskUsed: h.Usage.Bytes, DiskFree: h.Usage.DiskFree, Error: h.LastError}
		if h.ID == n.cfg.ID {
			n.selfStatus(&ns)
		}
		if ns.RaftRole == "" {
			ns.RaftRole = "none"
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st, nil
}

// unpipelined is the Raft network transport without pipelined
// replication. hashicorp/raft's pipeline (v1.8.0) can deadlock when a
// follower rejects an append while the leader has more in flight:
// pipelineDecode returns and stops reading the pipeline's done channel,
// the decoder parks on it, the next send parks on the full in-progress
// channel, and pipeline.Close, deferred in the very loop that is stuck,
// never runs. The follower then gets heartbeats but no more log entries
// for as long as the leader lives, and Raft's Shutdown waits forever for
// the stuck goroutine (found here as a test whose cleanup hung for 15
// minutes; grafana/pyroscope turned pipelining off for the same reason).
// Replication without the pipeline sends one AppendEntries at a time per
// follower, each carrying up to MaxAppendEntries entries, which a
// cluster on one LAN hardly notices.
type unpipelined struct{ *raft.NetworkTransport }

func (unpipelined) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// forwarder proposes on the local Raft node, and forwards to the leader
// when this node is not it.
type forwarder struct{ n *Node }

// How long a proposal is retried. A leader change makes a proposal's fate
// unknown (raft's "leadership lost", a dropped connection to the leader, no
// answer in time); the request ID (meta.Request) makes resending it safe,
// so Propose resends the same envelope until it commits or fails for good:
//
//   - proposeBound caps the whole call when the caller's context has no
//     earlier deadline. A leader change takes 1–3 s with the default Raft
//     timeouts (see serve's --raft-* flags); 10 s rides out two of them
//     back to back, or one on a loaded host, without the client noticing.
//   - leaderWait caps the time without any reachable leader. A node cut
//     off from the majority finds none once its heartbeat timeout passes;
//     after 4 s (an election's worst case plus margin) it answers
//     "unavailable" so that its clients move to another node, rather than
//     holding them for the whole proposeBound.
//   - attemptTimeout caps one try, so a call to a leader that hangs (cut
//     off without a reset) is abandoned and resent, by then most likely to
//     the next leader.
const (
	proposeBound   = 10 * time.Second
	leaderWait     = 4 * time.Second
	attemptTimeout = 3 * time.Second
)

// Propose puts cmd through Raft exactly once. It wraps cmd in a
// meta.Request whose ID comes from the call's context (transport.
// WithRequestID, set from a client's request-ID header, so a client
// repeating a call on another node gets the first answer) or is new, and
// resends that same envelope across leader changes and ambiguous failures
// until it commits, a definite answer comes back, or the bounds above (or
// ctx) end it. A command's own failure (not found, conflict, invalid,
// aborted) is an answer and is never retried.
func (f *forwarder) Propose(ctx context.Context, cmd meta.Command) (meta.Result, error) {
	var prop meta.Command = cmd
	var id meta.RequestID
	if req, ok := cmd.(meta.Request); ok {
		id = req.ID
	} else if !f.n.cfg.NoRequestIDs {
		id = requestIDFor(ctx)
		prop = meta.Request{ID: id, At: time.Now().UnixNano(), Cmd: cmd}
	}
	data, err := meta.EncodeCommand(prop)
	if err != nil {
		return meta.Result{}, err
	}
	start := time.Now()
	giveUp := start.Add(proposeBound)
	var noLeaderSince time.Time
	delay := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		res, err, retry := f.attempt(ctx, prop, data)
		if retry && id.IsZero() && !retryable(err) {
			// A bare command (NoRequestIDs) may have been applied: only
			// the caller can tell whether to try again.
			return res, err
		}
		if !retry {
			if err == nil && attempt > 1 {
				f.n.log.Debug("proposal committed after retries", "request", id, "attempts", attempt, "took", time.Since(start))
			}
			return res, err
		}
		now := time.Now()
		if errors.Is(err, errNoLeader) {
			if noLeaderSince.IsZero() {
				noLeaderSince = now
			}
		} else {
			noLeaderSince = time.Time{}
		}
		if ctx.Err() != nil || now.After(giveUp) || (!noLeaderSince.IsZero() && now.Sub(noLeaderSince) > leaderWait) {
			if errors.Is(err, errNoLeader) {
				return res, err
			}
			return res, fmt.Errorf("%w: proposal %s not confirmed after %d attempts in %v: %w", ErrUnavailable, id, attempt, now.Sub(start).Round(time.Millisecond), err)
		}
		f.n.log.Debug("retrying proposal", "request", id, "attempt", attempt, "err", err)
		// No leader yet, or leadership moved under us: poll for the next
		// leader (an election takes some 100 ms once the followers have
		// noticed the loss).
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("%w: proposal %s: %w", meta.ErrUnknownOutcome, id, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// RequestIDs reports whether this node wraps proposals in request
// envelopes, so that sending one again cannot apply it twice.
func (f *forwarder) RequestIDs() bool { return !f.n.cfg.NoRequestIDs }

// WithRequestID returns ctx naming one logical call: the proposals a node
// makes with it take request IDs derived from id and their order within
// the call, so repeating the whole call (on any node, with the same id)
// applies none of them twice. gRPC clients set the hastore-request-id
// header instead (transport.WithOutgoingRequestID).
func WithRequestID(ctx context.Context, id meta.RequestID) context.Context {
	return transport.WithRequestID(ctx, id)
}

// requestIDFor returns the ID of the next proposal made under ctx: derived
// from the logical call's ID if ctx names one, else new.
func requestIDFor(ctx context.Context) meta.RequestID {
	if base, seq, ok := transport.NextRequestID(ctx); ok {
		return meta.RequestID(base).Sub(seq)
	}
	return meta.NewRequestID()
}

// attempt proposes once, locally or through the leader; retry says whether
// the outcome is unknown or nothing was proposed, so the same envelope may
// be sent again.
func (f *forwarder) attempt(ctx context.Context, cmd meta.Command, data []byte) (res meta.Result, err error, retry bool) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	res, err = f.n.Meta.Propose(actx, cmd)
	switch {
	case err == nil:
		return res, nil, false
	case errors.Is(err, meta.ErrUnknownOutcome):
		return res, err, true
	case !errors.Is(err, meta.ErrNotLeader):
		return res, err, false
	}
	res, err = f.forward(actx, data)
	if err == nil || ctx.Err() != nil {
		return res, err, false
	}
	return res, err, retryable(err) || retryAfterSend(err)
}

// retryable reports whether a failed proposal certainly did not reach a
// leader.
func retryable(err error) bool {
	if errors.Is(err, errNoLeader) || errors.Is(err, meta.ErrNotLeader) {
		return true
	}
	return status.Code(err) == codes.FailedPrecondition // the peer was not the leader
}

// retryAfterSend reports whether a forwarded proposal may or may not have
// been applied: the connection to the leader failed, the leader lost its
// leadership before the entry committed, or the try timed out. Resending
// is safe only because the envelope's request ID makes the FSM apply it
// once.
func retryAfterSend(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

func (f *forwarder) forward(ctx context.Context, data []byte) (meta.Result, error) {
	c, err := f.n.leaderClient()
	if err != nil {
		return meta.Result{}, err
	}
	reply, err := c.Propose(ctx, &pb.ProposeRequest{Command: data})
	if err != nil {
		return meta.Result{}, err
	}
	if reply.Error != "" {
		return meta.Result{}, fmt.Errorf("leader: %s", reply.Error)
	}
	res, err := meta.DecodeResult(reply.Result)
	if err != nil {
		return res, err
	}
	res.Index = reply.Index
	// Read-your-writes on this node: the caller may look the change up
	// locally right after.
	if err := f.n.Meta.WaitApplied(ctx, reply.Index); err != nil {
		return res, err
	}
	return res, nil
}

func (f *forwarder) ReadIndex(ctx context.Context) (uint64, error) {
	giveUp := time.Now().Add(leaderWait)
	for {
		idx, err := f.n.Meta.LeaderCommitIndex(ctx)
		if !errors.Is(err, meta.ErrNotLeader) {
			return idx, err
		}
		c, err := f.n.leaderClient()
		if err == nil {
			var r *pb.ReadIndexReply
			if r, err = c.ReadIndex(ctx, &pb.ReadIndexRequest{}); err == nil {
				return r.Index, nil
			}
		}
		// A read index changes nothing: any failure may be retried.
		if time.Now().After(giveUp) || ctx.Err() != nil || (!retryable(err) && status.Code(err) != codes.Unavailable) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logWriter turns the Raft transport's log lines into slog records.
type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimSpace(string(p)), "component", "raft-net")
	return len(p), nil
}

// Removed is closed once this node knows it was removed from the cluster
// ('hastore admin node remove'): its shards count as lost and are being
// rebuilt elsewhere, so whatever it still serves (mail, sites) would only
// fail half-way. Its owner should close its listeners and stop.
func (n *Node) Removed() <-chan struct{} { return n.removed }

// watchRemoved closes n.removed once this node knows it was removed. Three
// ways, because a removed node is cut off from the leader at once and may
// miss the last entries:
//
//   - its membership record says removed, confirmed after a read barrier
//     through the leader, or, when no leader answers it any more, by the
//     Raft configuration no longer naming it or by the barrier failing for
//     removedUnconfirmed (the barrier keeps a node catching up on old
//     entries, re-added after a removal, from stopping on a record already
//     superseded);
//   - it has Raft state but has known no leader for leaderlessAsk, and the
//     leader, asked directly every few seconds, has not listed it for
//     removedUnconfirmed (removed nodes vanish from Status): the removal's
//     entries never reached it, or it restarted after a crash and cannot
//     rebuild its metadata without a leader. Only the leader's word counts,
//     and only lasting: a leader elected a moment ago may not have recorded
//     a member that started late yet.
func (n *Node) watchRemoved() {
	const (
		removedUnconfirmed = 30 * time.Second
		leaderlessAsk      = 10 * time.Second
	)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var barrierFailing, leaderless, lastAsk, unlisted time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		state := n.ownState()
		if _, id := n.Meta.Leader(); id != "" {
			leaderless, unlisted = time.Time{}, time.Time{}
		} else if leaderless.IsZero() {
			leaderless = now
		}
		why := ""
		switch {
		case state == meta.NodeRemoved:
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			err := n.Cluster.CatchUp(ctx)
			cancel()
			switch {
			case err == nil && n.ownState() != meta.NodeRemoved:
				barrierFailing = time.Time{}
				continue
			case err == nil:
				why = "its membership record says removed"
			case !n.inRaftConfig():
				why = "its membership record says removed and the Raft configuration no longer names it"
			default:
				if barrierFailing.IsZero() {
					barrierFailing = now
				}
				if now.Sub(barrierFailing) < removedUnconfirmed {
					continue
				}
				why = "its membership record says removed and no leader has answered it since " + barrierFailing.Format(time.RFC3339)
			}
		case n.Meta.Raft().LastIndex() > 0 && !leaderless.IsZero() && now.Sub(leaderless) >= leaderlessAsk && now.Sub(lastAsk) >= 5*time.Second:
			lastAsk = now
			by := n.unlistedBy()
			if by == "" {
				unlisted = time.Time{}
				continue
			}
			if unlisted.IsZero() {
				unlisted = now
			}
			if now.Sub(unlisted) < removedUnconfirmed {
				continue
			}
			why = "the Raft leader " + by + " has not listed it since " + unlisted.Format(time.RFC3339)
		default:
			barrierFailing = time.Time{}
			continue
		}
		n.log.Warn("this node was removed from the cluster", "evidence", why)
		close(n.removed)
		return
	}
}

// ownState is this node's membership state in its local metadata, "" if
// it has no record (not a member yet).
func (n *Node) ownState() meta.NodeState {
	nodes, err := n.Meta.Nodes()
	if err != nil {
		return ""
	}
	for _, m := range nodes {
		if m.ID == n.cfg.ID {
			return m.State
		}
	}
	return ""
}

// unlistedBy asks the other members for the cluster's status and returns
// the leader if it is among them and does not list this node, or "" (no
// answer from the leader, or it lists this node).
func (n *Node) unlistedBy() string {
	// Whom to ask: the members on record, and those of the Raft
	// configuration (a node restarted after a crash has no records until
	// a leader lets it apply its log).
	ask := n.Members()
	if f := n.Meta.Raft().GetConfiguration(); f.Error() == nil {
		for _, sv := range f.Configuration().Servers {
			if id := string(sv.ID); id != n.cfg.ID && ask[id] == "" {
				ask[id] = string(sv.Address)
			}
		}
	}
	for id, addr := range ask {
		conn, err := n.pool.Conn(addr)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 3*time.Second)
		st, err := pb.NewClusterClient(conn).Status(ctx, &pb.StatusRequest{})
		cancel()
		if err != nil || st.Leader != id || len(st.Nodes) == 0 {
			continue
		}
		listed := false
		for _, m := range st.Nodes {
			if m.Id == n.cfg.ID {
				listed = true
			}
		}
		if !listed {
			return id
		}
	}
	return ""
}

func (n *Node) inRaftConfig() bool {
	f := n.Meta.Raft().GetConfiguration()
	if f.Error() != nil {
		return true // unknown: assume still a member
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.ID {
			return true
		}
	}
	return false
}

// HandOverLeadership hands Raft leadership, if this node holds it, to the
// most up-to-date other voter (raft's LeadershipTransfer) and waits until
// this node sees the new leader: a node stopped on purpose then costs the
// cluster one quick election instead of the followers' heartbeat timeout
// and a leaderless pause. It returns the new leader's ID, or "" (and nil)
// when there was nothing to hand over: not the leader, or no other voter.
// ctx bounds the wait; on error the others elect a leader by timeout once
// this node is gone.
func (n *Node) HandOverLeadership(ctx context.Context) (string, error) {
	if !n.IsLeader() {
		return "", nil
	}
	f := n.Meta.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		return "", fmt.Errorf("reading the Raft configuration: %w", err)
	}
	others := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.cfg.ID {
			others++
		}
	}
	if others == 0 {
		return "", nil
	}
	done := make(chan error, 1)
	go func() { done <- n.Meta.TransferLeadership() }()
	select {
	case err := <-done:
		if err != nil {
			return "", err
		}
	case <-ctx.Done():
		return "", fmt.Errorf("leadership transfer unfinished: %w", ctx.Err())
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if _, id := n.Meta.Leader(); id != "" && id != n.cfg.ID {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("leadership handed over, but no new leader heard of yet: %w", ctx.Err())
		case <-t.C:
		}
	}
}
