package meta

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testCluster runs Stores over raft's in-memory transport with real
// raft-wal, snapshot and badger directories.
type testCluster struct {
	t     *testing.T
	base  string
	mu    sync.Mutex
	nodes map[string]*testNode
	tune  func(*Config)
}

type testNode struct {
	restores atomic.Int32 // Restored events: full loads from a snapshot
	id       string
	addr     raft.ServerAddress
	dir      string
	trans    *raft.InmemTransport
	store    *Store
}

func newTestCluster(t *testing.T, tune func(*Config)) *testCluster {
	// TempDir first: cleanups run last-in first-out, and the stores must be
	// closed before their directories are removed.
	c := &testCluster{t: t, base: t.TempDir(), nodes: make(map[string]*testNode), tune: tune}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n.store != nil {
				n.store.Close()
			}
		}
	})
	return c
}

// start opens node id (creating it on first use) and connects its
// transport with every other node's, both ways.
func (c *testCluster) start(id string, bootstrap []raft.Server) *testNode {
	c.t.Helper()
	c.mu.Lock()
	n := c.nodes[id]
	if n == nil {
		n = &testNode{id: id, addr: raft.ServerAddress("inmem-" + id), dir: filepath.Join(c.base, id)}
		c.nodes[id] = n
	}
	_, n.trans = raft.NewInmemTransport(n.addr)
	for _, o := range c.nodes {
		if o != n && o.trans != nil {
			n.trans.Connect(o.addr, o.trans)
			o.trans.Connect(n.addr, n.trans)
		}
	}
	c.mu.Unlock()
	cfg := Config{
		NodeID:             id,
		Dir:                n.dir,
		Transport:          n.trans,
		Bootstrap:          bootstrap,
		Logger:             testLogger(c.t).With("test_node", id),
		HeartbeatTimeout:   400 * time.Millisecond,
		ElectionTimeout:    400 * time.Millisecond,
		LeaderLeaseTimeout: 200 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		Badger:             smallBadger,
		OnApply: func(ev Event) {
			if ev.Restored {
				n.restores.Add(1)
			}
		},
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		c.t.Fatalf("Open %s: %v", id, err)
	}
	n.store = s
	return n
}

func (c *testCluster) servers(ids ...string) []raft.Server {
	var ss []raft.Server
	for _, id := range ids {
		ss = append(ss, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress("inmem-" + id), Suffrage: raft.Voter})
	}
	return ss
}

func (c *testCluster) stop(id string) {
	c.t.Helper()
	n := c.nodes[id]
	if err := n.store.Close(); err != nil {
		c.t.Fatalf("Close %s: %v", id, err)
	}
	n.store = nil
	c.disconnect(n)
}

// crash stops a node without the FSM's clean shutdown.
func (c *testCluster) crash(id string) {
	c.t.Helper()
	n := c.nodes[id]
	s := n.store
	if err := s.raft.Shutdown().Error(); err != nil {
		c.t.Fatal(err)
	}
	if err := s.wal.Close(); err != nil {
		c.t.Fatal(err)
	}
	crashClose(s.fsm)
	n.store = nil
	c.disconnect(n)
}

func (c *testCluster) disconnect(n *testNode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.nodes {
		if o != n && o.trans != nil {
			o.trans.Disconnect(n.addr)
		}
	}
	n.trans.Close()
	n.trans = nil
}

// leader waits for one running node to lead and the others to know it.
func (c *testCluster) leader() *testNode {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var lead *testNode
		agree := true
		for _, n := range c.nodes {
			if n.store == nil {
				continue
			}
			if n.store.IsLeader() {
				lead = n
			}
		}
		if lead != nil {
			for _, n := range c.nodes {
				if n.store != nil && n != lead {
					if _, id := n.store.Leader(); id != lead.id {
						agree = false
					}
				}
			}
			if agree {
				return lead
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no leader within 10s")
	return nil
}

// converge waits until every running node has applied the leader's read
// index and then compares their whole user state.
func (c *testCluster) converge(ctx context.Context) {
	c.t.Helper()
	lead := c.leader()
	idx, err := lead.store.LeaderCommitIndex(ctx)
	if err != nil {
		c.t.Fatalf("LeaderCommitIndex: %v", err)
	}
	want := dump(c.t, lead.store.fsm, false)
	for _, n := range c.nodes {
		if n.store == nil || n == lead {
			continue
		}
		if err := n.store.WaitApplied(ctx, idx); err != nil {
			c.t.Fatalf("%s: WaitApplied(%d): %v", n.id, idx, err)
		}
		equalDumps(c.t, n.id+" vs leader "+lead.id, want, dump(c.t, n.store.fsm, false))
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestClusterFailover: proposals on the leader, ErrNotLeader with the leader
// named on followers, forwarding, follower read-your-writes, leader loss
// with no committed write lost, and catch-up of the restarted node.
func TestClusterFailover(t *testing.T) {
	ctx := ctxFor(t, 40*time.Second)
	c := newTestCluster(t, nil)
	boot := c.servers("n1", "n2", "n3")
	for _, id := range []string{"n1", "n2", "n3"} {
		c.start(id, boot)
	}
	lead := c.leader()

	// Concurrent proposals, as concurrent deliveries would make them.
	const writers, perWriter = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*perWriter) // two proposals per step: a full channel would block the writers forever
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				o := testObject(fmt.Sprintf("w%d-%d", w, i))
				if _, err := lead.store.Propose(ctx, PutObject{Object: o, Now: time.Now().UnixNano()}); err != nil {
					errs <- err
				}
				if _, err := lead.store.Propose(ctx, PutObject{Object: o, Now: time.Now().UnixNano()}); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Propose on leader: %v", err)
	}
	if res, err := lead.store.Propose(ctx, DecRef{ID: blobID("missing"), Now: 1}); !errors.Is(err, ErrNotFound) || res.Status != StatusNotFound || res.Index == 0 {
		t.Fatalf("DecRef of unknown ID: %+v, %v", res, err)
	}

	var follower *testNode
	for _, n := range c.nodes {
		if n != lead {
			follower = n
			break
		}
	}
	cmd := TenantPut{Tenant: "acme", Key: "from-follower", Value: []byte("v")}
	_, err := follower.store.Propose(ctx, cmd)
	var nle *NotLeaderError
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &nle) || nle.LeaderID != lead.id || nle.LeaderAddr != string(lead.addr) {
		t.Fatalf("Propose on follower: %v (%+v), want ErrNotLeader naming %s at %s", err, nle, lead.id, lead.addr)
	}
	if !errors.Is(err, raft.ErrNotLeader) {
		t.Fatalf("NotLeaderError does not match raft.ErrNotLeader")
	}
	if _, err := follower.store.LeaderCommitIndex(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("LeaderCommitIndex on follower: %v", err)
	}
	// Forward as the gRPC layer will, then read the write on the follower.
	data, err := EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	out, index, err := lead.store.ApplyEncoded(ctx, data)
	if err != nil {
		t.Fatalf("ApplyEncoded: %v", err)
	}
	res, err := DecodeResult(out)
	if err != nil || res.Status != StatusOK || res.Index != index {
		t.Fatalf("forwarded result %+v, %v (index %d)", res, err, index)
	}
	if err := follower.store.WaitApplied(ctx, index); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := follower.store.TenantGet("acme", "from-follower"); !ok || string(v) != "v" {
		t.Fatal("follower does not see the forwarded write after WaitApplied")
	}
	if _, _, err := lead.store.ApplyEncoded(ctx, []byte{1, 200}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ApplyEncoded of garbage: %v", err)
	}
	c.converge(ctx)

	// Lose the leader.
	lost := lead.id
	start := time.Now()
	c.stop(lost)
	lead = c.leader()
	t.Logf("new leader %s after %v", lead.id, time.Since(start).Round(time.Millisecond))
	for w := 0; w < writers; w++ {
		for i := 0; i < perWriter; i++ {
			o, ok, err := lead.store.Object(blobID(fmt.Sprintf("w%d-%d", w, i)))
			if err != nil || !ok || o.Refs != 2 {
				t.Fatalf("after failover object w%d-%d: %+v ok=%v err=%v", w, i, o, ok, err)
			}
		}
	}
	if n, _ := lead.store.ObjectCount(); n != writers*perWriter {
		t.Fatalf("ObjectCount after failover = %d", n)
	}
	for i := 0; i < 20; i++ {
		if _, err := lead.store.Propose(ctx, DecRef{ID: blobID(fmt.Sprintf("w0-%d", i%perWriter)), Now: int64(i + 1)}); err != nil && !errors.Is(err, ErrConflict) {
			t.Fatal(err)
		}
	}

	// The old leader comes back as a follower and catches up.
	c.start(lost, nil)
	c.converge(ctx)
	if s := c.nodes[lost].store; s.fsm.Discarded() {
		t.Fatal("clean restart discarded FSM state")
	}

	// A follower crash before any snapshot: its FSM starts empty and raft
	// replays the whole log into it.
	var victim string
	for _, n := range c.nodes {
		if n != lead {
			victim = n.id
		}
	}
	c.crash(victim)
	c.start(victim, nil)
	if s := c.nodes[victim].store; !s.fsm.Discarded() || c.nodes[victim].restores.Load() != 0 {
		t.Fatalf("crashed follower: discarded=%v restores=%d, want true, 0 (no snapshot yet)", s.fsm.Discarded(), c.nodes[victim].restores.Load())
	}
	c.converge(ctx)
}

// TestClusterSnapshotsAndMembership: log compaction behind snapshots, a
// joining node fed by snapshot install, a crashed node rebuilt from
// snapshot and log, a cleanly restarted node keeping its state, and the
// voter policy.
func TestClusterSnapshotsAndMembership(t *testing.T) {
	ctx := ctxFor(t, 40*time.Second)
	c := newTestCluster(t, func(cfg *Config) {
		cfg.TrailingLogs = 4
		cfg.SnapshotThreshold = 1 << 20 // only the explicit snapshots below
		cfg.SnapshotInterval = time.Hour
	})
	boot := c.servers("n1", "n2", "n3")
	for _, id := range []string{"n1", "n2", "n3"} {
		c.start(id, boot)
	}
	lead := c.leader()
	propose := func(from, to int) {
		for i := from; i < to; i++ {
			o := testObject(fmt.Sprintf("s%d", i))
			cmds := []Command{PutObject{Object: o, Now: int64(i + 1)}, TenantPut{Tenant: "t", Key: fmt.Sprintf("k%d", i), Value: []byte("v")}}
			if i%5 == 0 {
				cmds = append(cmds, DecRef{ID: o.ID, Now: int64(i + 2)})
			}
			if _, err := lead.store.Propose(ctx, Batch{Cmds: cmds}); err != nil {
				t.Fatalf("propose %d: %v", i, err)
			}
		}
	}
	propose(0, 100)
	c.converge(ctx)
	for _, n := range c.nodes {
		if err := n.store.Raft().Snapshot().Error(); err != nil {
			t.Fatalf("%s snapshot: %v", n.id, err)
		}
	}
	propose(100, 120)

	// n4 joins after compaction: it can only be fed by a snapshot.
	c.start("n4", nil)
	if err := lead.store.Join(ctx, "n4", "inmem-n4"); err != nil {
		t.Fatalf("Join n4: %v", err)
	}
	if err := lead.store.Join(ctx, "n4", "inmem-n4"); err != nil {
		t.Fatalf("Join n4 again: %v", err)
	}
	checkSuffrage(t, lead.store, map[string]raft.ServerSuffrage{"n1": raft.Voter, "n2": raft.Voter, "n3": raft.Voter, "n4": raft.Nonvoter})
	c.converge(ctx)
	if first, _ := lead.store.wal.FirstIndex(); first <= 1 {
		t.Fatalf("leader log still starts at %d; the test needs it compacted", first)
	}
	if n := c.nodes["n4"].restores.Load(); n != 1 {
		t.Fatalf("n4 restored %d snapshots, want 1 (installed from the leader)", n)
	}

	// A crashed follower starts from nothing and is rebuilt from its own
	// snapshot plus the log, without counting anything twice.
	var crashed, restarted string
	for _, n := range c.nodes {
		if n != lead && n.id != "n4" {
			if crashed == "" {
				crashed = n.id
			} else {
				restarted = n.id
			}
		}
	}
	c.crash(crashed)
	propose(120, 130)
	c.start(crashed, nil)
	if !c.nodes[crashed].store.fsm.Discarded() {
		t.Fatal("crashed node kept its FSM state")
	}
	if n := c.nodes[crashed].restores.Load(); n < 1 {
		t.Fatal("crashed node was not rebuilt from its snapshot")
	}
	c.converge(ctx)
	c.stop(restarted)
	propose(130, 140)
	before := c.nodes[restarted].restores.Load()
	c.start(restarted, nil)
	if c.nodes[restarted].store.fsm.Discarded() {
		t.Fatal("cleanly stopped node discarded its FSM state")
	}
	if c.nodes[restarted].restores.Load() != before {
		t.Fatal("cleanly restarted node reloaded its snapshot instead of keeping its state")
	}
	c.converge(ctx)
	for _, n := range c.nodes {
		o, _, _ := n.store.Object(blobID("s7"))
		if o.Refs != 1 {
			t.Fatalf("%s: refs of s7 = %d, want 1", n.id, o.Refs)
		}
	}

	// The fifth member makes five voters.
	c.start("n5", nil)
	if err := lead.store.Join(ctx, "n5", "inmem-n5"); err != nil {
		t.Fatalf("Join n5: %v", err)
	}
	checkSuffrage(t, lead.store, map[string]raft.ServerSuffrage{"n1": raft.Voter, "n2": raft.Voter, "n3": raft.Voter, "n4": raft.Voter, "n5": raft.Voter})
	propose(140, 145)
	c.converge(ctx)

	// Removing one leaves four members: three voters.
	var victim string
	for _, n := range c.nodes {
		if n != lead {
			victim = n.id
			break
		}
	}
	if err := lead.store.RemoveNode(ctx, victim); err != nil {
		t.Fatalf("RemoveNode %s: %v", victim, err)
	}
	c.stop(victim)
	voters := 0
	servers, _ := lead.store.configuration()
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if len(servers) != 4 || voters != 3 {
		t.Fatalf("after removal: %d servers, %d voters; want 4, 3", len(servers), voters)
	}
}

func checkSuffrage(t *testing.T, s *Store, want map[string]raft.ServerSuffrage) {
	t.Helper()
	servers, err := s.configuration()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]raft.ServerSuffrage)
	for _, srv := range servers {
		got[string(srv.ID)] = srv.Suffrage
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("configuration %v, want %v", got, want)
	}
}

func TestProposeErrors(t *testing.T) {
	c := newTestCluster(t, nil)
	n := c.start("solo", c.servers("solo"))
	lead := c.leader()
	if lead != n {
		t.Fatal("single node did not lead")
	}
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.store.Propose(expired, TenantPut{Tenant: "t", Key: "k"}); !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("Propose with a dead context: %v; want Canceled and not ErrUnknownOutcome (nothing was proposed)", err)
	}
	if _, err := n.store.Propose(context.Background(), Batch{Cmds: []Command{Batch{}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Propose of a nested batch: %v", err)
	}
	res, err := n.store.Propose(context.Background(), Batch{Atomic: true, Cmds: []Command{TenantPut{Tenant: "t", Key: "k"}, DecRef{ID: blobID("x"), Now: 1}}})
	if !errors.Is(err, ErrAborted) || len(res.Batch) != 2 {
		t.Fatalf("aborted batch: %+v, %v", res, err)
	}
	s := n.store
	c.stop("solo")
	if _, err := s.Propose(context.Background(), TenantPut{Tenant: "t", Key: "k"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Propose after Close: %v, want ErrClosed", err)
	}
	if err := s.WaitApplied(context.Background(), 1<<40); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitApplied after Close: %v, want ErrClosed", err)
	}
}

// TestFailoverWithDefaultTimeouts checks the production timeouts against
// the goal of a new leader within about 2–3 s of losing one.
func TestFailoverWithDefaultTimeouts(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a real election")
	}
	c := newTestCluster(t, func(cfg *Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout, cfg.CommitTimeout = 0, 0, 0, 0
	})
	boot := c.servers("d1", "d2", "d3")
	for _, id := range []string{"d1", "d2", "d3"} {
		c.start(id, boot)
	}
	lead := c.leader()
	res, err := lead.store.Propose(ctxFor(t, 5*time.Second), TenantPut{Tenant: "t", Key: "k", Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.stop(lead.id)
	lead = c.leader()
	took := time.Since(start)
	t.Logf("new leader %s after %v", lead.id, took.Round(time.Millisecond))
	// 3 s plus headroom for the race detector and a loaded machine.
	if took > 4*time.Second {
		t.Errorf("election took %v with default timeouts", took)
	}
	if lead.store.AppliedIndex() < res.Index {
		if err := lead.store.WaitApplied(ctxFor(t, 5*time.Second), res.Index); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok, _ := lead.store.TenantGet("t", "k"); !ok || string(v) != "v" {
		t.Fatal("committed write lost in failover")
	}
}
