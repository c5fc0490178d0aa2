package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"hastore/mailserver/mailstate"
	"hastore/replica"
	"hastore/replica/meta"
	"hastore/replica/transport"
	"hastore/storage"
)

// Options shape a test cluster.
type Options struct {
	Nodes  int    // default 3
	Scheme string // default "2+1"
	// Node adjusts each node's configuration before it starts.
	Node func(cfg *replica.NodeConfig)
}

// InProcess is a cluster of nodes running in the test's process.
type InProcess struct {
	t      testing.TB
	Dir    string
	Key    []byte
	IDs    []string
	Addrs  []string
	Nodes  []*replica.Node // nil while stopped
	Faults []*transport.Faults
	cfgs   []replica.NodeConfig
}

// StartInProcess starts a cluster and waits until it has a leader and
// every node sees every other. It is stopped when the test ends.
func StartInProcess(t testing.TB, opt Options) *InProcess {
	t.Helper()
	if opt.Nodes == 0 {
		opt.Nodes = 3
	}
	if opt.Scheme == "" {
		opt.Scheme = "2+1"
	}
	scheme, err := storage.ParseScheme(opt.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	key, err := transport.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := &InProcess{t: t, Dir: t.TempDir(), Key: key, IDs: NodeIDs(opt.Nodes), Addrs: FreePorts(t, opt.Nodes)}
	peers := map[string]string{}
	for i, id := range c.IDs {
		peers[id] = c.Addrs[i]
	}
	log := testLogger(t)
	for i, id := range c.IDs {
		f := &transport.Faults{}
		cfg := replica.NodeConfig{
			ID: id, DataDir: filepath.Join(c.Dir, id), Listen: c.Addrs[i], Peers: peers, Key: key,
			Cluster: replica.Options{Scheme: scheme, HedgeAfter: 100 * time.Millisecond, ShardTimeout: 5 * time.Second},
			Logger:  log, Faults: f, ScanEvery: 500 * time.Millisecond, ScrubEvery: time.Hour,
			CommandSets: []meta.CommandSet{mailstate.CommandSet()}, // as serve does
			Meta: func(mc *meta.Config) {
				mc.HeartbeatTimeout = 500 * time.Millisecond
				mc.ElectionTimeout = 500 * time.Millisecond
				mc.LeaderLeaseTimeout = 250 * time.Millisecond
			},
		}
		if opt.Node != nil {
			opt.Node(&cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
		c.Faults = append(c.Faults, f)
	}
	c.Nodes = make([]*replica.Node, opt.Nodes)
	t.Cleanup(c.StopAll)
	for i := range c.IDs {
		c.Start(i)
	}
	c.WaitHealthy(30 * time.Second)
	return c
}

// Start starts (or restarts) node i on its data directory.
func (c *InProcess) Start(i int) {
	c.t.Helper()
	if c.Nodes[i] != nil {
		c.t.Fatalf("node %s already running", c.IDs[i])
	}
	n, err := replica.StartNode(c.cfgs[i])
	if err != nil {
		c.t.Fatalf("starting %s: %v", c.IDs[i], err)
	}
	c.Nodes[i] = n
}

// Stop stops node i, as a crash would from the others' point of view.
func (c *InProcess) Stop(i int) {
	if n := c.Nodes[i]; n != nil {
		c.Nodes[i] = nil
		n.Close()
	}
}

// StopAll stops every node.
func (c *InProcess) StopAll() {
	for i := range c.Nodes {
		c.Stop(i)
	}
}

// Running returns the indexes of the running nodes.
func (c *InProcess) Running() []int {
	var out []int
	for i, n := range c.Nodes {
		if n != nil {
			out = append(out, i)
		}
	}
	return out
}

// Leader returns the index of the node that is Raft leader now, or -1.
func (c *InProcess) Leader() int {
	for i, n := range c.Nodes {
		if n != nil && n.IsLeader() {
			return i
		}
	}
	return -1
}

// WaitHealthy waits until there is a leader and every running node sees
// every running node as up.
func (c *InProcess) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	Eventually(c.t, timeout, "cluster healthy", func() error {
		if c.Leader() < 0 {
			return fmt.Errorf("no leader")
		}
		for _, i := range c.Running() {
			live := map[string]bool{}
			for _, n := range c.Nodes[i].Health.Live() {
				live[n.ID] = true
			}
			for _, j := range c.Running() {
				if !live[c.IDs[j]] {
					return fmt.Errorf("%s does not see %s up", c.IDs[i], c.IDs[j])
				}
			}
		}
		return nil
	})
}

// Cut stops traffic between node i and each of others, both ways.
func (c *InProcess) Cut(i int, others ...int) {
	for _, j := range others {
		c.Faults[i].Block(c.Addrs[j])
		c.Faults[j].Block(c.Addrs[i])
	}
}

// Heal lifts every cut.
func (c *InProcess) Heal() {
	for _, f := range c.Faults {
		f.Heal()
	}
}

// DataDir returns node i's data directory.
func (c *InProcess) DataDir(i int) string { return c.cfgs[i].DataDir }

// UnderReplicated asks node i for the under-replicated count after a fresh
// scan.
func (c *InProcess) UnderReplicated(i int) int64 {
	st, err := c.Nodes[i].Status(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	return st.UnderReplicated
}
