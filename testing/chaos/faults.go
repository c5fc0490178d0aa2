package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// fault is one entry of the seeded schedule.
type fault struct {
	At     time.Duration `json:"at"`     // after the load started
	Kind   string        `json:"kind"`   // kill, kill-leader, partition, loss, corrupt
	Node   int           `json:"node"`   // index (kill-leader: chosen at run time)
	Node2  int           `json:"-"`      // kill2: the other node
	Hold   time.Duration `json:"hold"`   // how long the node stays down / cut off
	Target string        `json:"target"` // node ID actually hit
	Start  time.Time     `json:"start"`
	Healed time.Time     `json:"healed"`
	// Redundancy: from the fault's start to under_replicated 0 with every node up.
	Redundancy time.Duration `json:"time_to_full_redundancy"`
	Shards     int           `json:"shards_corrupted,omitempty"`
	Note       string        `json:"note,omitempty"`
	WasLeader  bool          `json:"target_was_leader"`
	Throughput float64       `json:"throughput_pct_of_baseline"` // successful ops/s while it lasted
	// Of the client operations sent first to a node this fault took down
	// while it lasted: how many, and the slowest of those that then
	// succeeded on another node (the client's whole wait, detection
	// included).
	HitOps      int           `json:"ops_sent_to_downed_node"`
	FailoverMax time.Duration `json:"max_failover_of_those"`
	Err         string        `json:"err,omitempty"`
}

func schedule(seed uint64, n int, dur time.Duration, kinds []string) []fault {
	r := rand.New(rand.NewPCG(seed, 42))
	every := max(6*time.Second, min(30*time.Second, dur/8))
	var out []fault
	// Kinds are drawn without replacement until each has had its turn, so
	// a short run still sees as many different kinds as it has faults.
	var bag []string
	next := func() string {
		if len(bag) == 0 {
			bag = slices.Clone(kinds)
			r.Shuffle(len(bag), func(i, j int) { bag[i], bag[j] = bag[j], bag[i] })
		}
		k := bag[0]
		bag = bag[1:]
		return k
	}
	for at := 5 * time.Second; at+every/2 < dur; at += every {
		f := fault{At: at, Kind: next(), Node: r.IntN(n)}
		f.Node2 = (f.Node + 1 + r.IntN(n-1)) % n // kill2's second node
		f.Hold = 2*time.Second + time.Duration(r.Int64N(int64(every/2)))
		out = append(out, f)
	}
	return out
}

// ---- partitions: iptables rules on the node's cluster port ----

type firewall struct {
	mu    sync.Mutex
	rules [][]string // active rules (as -A arguments)
}

// canPartition installs iptables if needed (idempotent) and checks that
// the owner match works; it returns why not otherwise.
func canPartition(asUIDs bool) string {
	if os.Geteuid() != 0 {
		return "not root (iptables needs CAP_NET_ADMIN, and nodes must run as their own uids)"
	}
	if !asUIDs {
		return "nodes not run as distinct uids"
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		logf("installing iptables (apt-get install -y iptables)")
		cmd := exec.Command("apt-get", "install", "-y", "iptables")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Sprintf("apt-get install iptables: %v: %s", err, lastLine(string(out)))
		}
	}
	test := []string{"OUTPUT", "-p", "tcp", "--dport", "1", "-m", "owner", "--uid-owner", "61999", "-j", "DROP"}
	if out, err := exec.Command("iptables", append([]string{"-A"}, test...)...).CombinedOutput(); err != nil {
		return fmt.Sprintf("iptables does not work here: %v: %s", err, lastLine(string(out)))
	}
	_ = exec.Command("iptables", append([]string{"-D"}, test...)...).Run()
	return ""
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// isolate cuts nd off from the other nodes: nothing reaches its cluster
// port, its replies are dropped, and its own connections to the others'
// cluster ports (it runs as its own uid) are dropped.
// With loss > 0 only that share of the packets is dropped (packet loss).
func (fw *firewall) isolate(c *cluster, nd *node, loss float64) error {
	p := strconv.Itoa(port(nd.cluster))
	var stat []string
	if loss > 0 {
		stat = []string{"-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(loss, 'f', 2, 64)}
	}
	rule := func(r ...string) []string { return append(append(r, stat...), "-j", "DROP") }
	rules := [][]string{
		rule("OUTPUT", "-p", "tcp", "--dport", p),
		rule("OUTPUT", "-p", "tcp", "--sport", p),
	}
	for _, o := range c.nodes() {
		if o != nd {
			for _, a := range []string{o.cluster, o.adv} {
				rules = append(rules, rule("OUTPUT", "-p", "tcp", "--dport", strconv.Itoa(port(a)), "-m", "owner", "--uid-owner", strconv.Itoa(nd.uid)))
			}
		}
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for _, r := range rules {
		if out, err := exec.Command("iptables", append([]string{"-I"}, r...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables -I %s: %v: %s", strings.Join(r, " "), err, out)
		}
		fw.rules = append(fw.rules, r)
	}
	return nil
}

// split cuts the nodes of a off from those of b (both ways) while each
// side still talks internally and clients still reach every node: every
// node dials its peers' advertised addresses as its own uid, so dropping
// a's connections to b's ports and b's to a's cuts all traffic between
// the sides.
func (fw *firewall) split(a, b []*node) error {
	var rules [][]string
	cut := func(from, to *node) {
		for _, addr := range []string{to.cluster, to.adv} {
			rules = append(rules, []string{"OUTPUT", "-p", "tcp", "--dport", strconv.Itoa(port(addr)), "-m", "owner", "--uid-owner", strconv.Itoa(from.uid), "-j", "DROP"})
		}
	}
	for _, x := range a {
		for _, y := range b {
			cut(x, y)
			cut(y, x)
		}
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for _, r := range rules {
		if out, err := exec.Command("iptables", append([]string{"-I"}, r...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables -I %s: %v: %s", strings.Join(r, " "), err, out)
		}
		fw.rules = append(fw.rules, r)
	}
	return nil
}

func (fw *firewall) healAll() {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for _, r := range fw.rules {
		if out, err := exec.Command("iptables", append([]string{"-D"}, r...)...).CombinedOutput(); err != nil {
			logf("iptables -D %s: %v: %s", strings.Join(r, " "), err, out)
		}
	}
	fw.rules = nil
}

// ---- bit rot: flip a byte in a few shards of a stopped node ----

func corruptShards(nd *node, r *rand.Rand, n int) (int, error) {
	opts := badger.DefaultOptions(filepath.Join(nd.dir, "shards")).WithLogger(nil)
	db, err := badger.Open(opts)
	if err != nil {
		return 0, err
	}
	defer nd.chown()
	defer db.Close()
	var keys [][]byte
	_ = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'r'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if len(keys) == 0 {
		return 0, fmt.Errorf("no shards in %s", nd.dir)
	}
	done := 0
	for range n {
		k := keys[r.IntN(len(keys))]
		err := db.Update(func(txn *badger.Txn) error {
			item, err := txn.Get(k)
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil || len(v) == 0 {
				return err
			}
			v[r.IntN(len(v))] ^= 0x5a
			return txn.Set(k, v)
		})
		if err != nil {
			return done, err
		}
		done++
	}
	return done, nil
}

// slowDelay is what a slow link adds to every chunk sent to a node's cluster port, both ways.
const slowDelay = 200 * time.Millisecond

// ---- the injector ----

type injector struct {
	c      *cluster
	fw     *firewall
	seed   uint64
	mu     sync.Mutex
	faults []*fault
	redWG  sync.WaitGroup
	t0     time.Time
}

func (in *injector) run(stop <-chan struct{}, sched []fault) {
	r := rand.New(rand.NewPCG(in.seed, 7))
	for i := range sched {
		f := sched[i]
		select {
		case <-stop:
			return
		case <-time.After(time.Until(in.t0.Add(f.At))):
		}
		select { // a fault that ran late (replace takes a while) must not start after the load
		case <-stop:
			return
		default:
		}
		nodes := in.c.nodes()
		nd := nodes[f.Node]
		l := in.c.leader()
		if f.Kind == "kill-leader" {
			if l != nil {
				nd = l
			} else {
				f.Err = "no leader found; killed the scheduled node instead"
			}
		}
		var minority, majority []*node
		if f.Kind == "split" {
			minority, majority = splitGroups(nodes, f.Node, f.Node2)
		}
		f.WasLeader = l != nil && (l == nd || (f.Kind == "kill2" && l == nodes[f.Node2]) || (f.Kind == "split" && slices.Contains(minority, l)))
		f.Target = nd.id // kill2 adds its second node below
		if f.Kind == "split" {
			f.Target = ids(minority)
		}
		f.Start = time.Now()
		logf("FAULT %s %s (hold %v)", f.Kind, f.Target, f.Hold.Round(time.Millisecond))
		switch f.Kind {
		case "kill", "kill-leader":
			in.c.halt(nd, syscall.SIGKILL)
			sleepOrStop(stop, f.Hold)
			in.c.start(nd)
		case "partition":
			if err := in.fw.isolate(in.c, nd, 0); err != nil {
				f.Err = err.Error()
			}
			sleepOrStop(stop, f.Hold)
			in.fw.healAll()
		case "kill2": // m >= 2: two nodes down at once
			nd2 := in.c.nodes()[f.Node2]
			f.Target += "+" + nd2.id
			in.c.halt(nd, syscall.SIGKILL)
			in.c.halt(nd2, syscall.SIGKILL)
			sleepOrStop(stop, f.Hold)
			in.c.start(nd)
			in.c.start(nd2)
		case "slow":
			nd.proxy.delay.Store(int64(slowDelay))
			sleepOrStop(stop, f.Hold)
			nd.proxy.delay.Store(0)
		case "disk-full":
			if !nd.tmpfs { // a fresh node whose tmpfs could not be mounted: never fill the real disk
				f.Err = nd.id + " has no tmpfs of its own; not filled"
				break
			}
			ballast, err := fillDisk(nd, 64<<20)
			f.Start = time.Now() // filling takes a while: the fault starts when the disk is full
			if err != nil {
				f.Err = err.Error()
			} else {
				var st syscall.Statfs_t
				if syscall.Statfs(nd.dir, &st) == nil {
					f.Note = fmt.Sprintf("%d MiB left free", int64(st.Bavail)*int64(st.Bsize)>>20)
				}
			}
			sleepOrStop(stop, f.Hold)
			if ballast != "" {
				_ = os.Remove(ballast)
			}
		case "loss":
			if err := in.fw.isolate(in.c, nd, 0.3); err != nil {
				f.Err = err.Error()
			}
			sleepOrStop(stop, f.Hold)
			in.fw.healAll()
		case "split":
			f.Note = fmt.Sprintf("%s | %s", ids(minority), ids(majority))
			if err := in.fw.split(minority, majority); err != nil {
				f.Err = err.Error()
			}
			sleepOrStop(stop, f.Hold)
			in.fw.healAll()
		case "replace":
			fresh, err := in.replace(nd, f.Hold, stop)
			if fresh != nil {
				f.Target = nd.id + ">" + fresh.id
			}
			if err != nil {
				f.Err = err.Error()
			}
		case "corrupt":
			in.c.halt(nd, syscall.SIGTERM)
			n, err := corruptShards(nd, r, 3)
			f.Shards = n
			if err != nil {
				f.Err = err.Error()
			}
			in.c.start(nd)
		}
		f.Healed = time.Now()
		logf("HEALED %s %s after %v", f.Kind, f.Target, f.Healed.Sub(f.Start).Round(time.Millisecond))
		fp := &f
		in.mu.Lock()
		in.faults = append(in.faults, fp)
		in.mu.Unlock()
		in.redWG.Add(1)
		go func() {
			defer in.redWG.Done()
			err := waitFor(120*time.Second, func() error { return in.c.healthy(true) })
			in.mu.Lock()
			if err == nil {
				fp.Redundancy = time.Since(fp.Start)
			} else if fp.Err == "" {
				fp.Err = "full redundancy not reached within 120s: " + err.Error()
			}
			in.mu.Unlock()
		}()
	}
}

func sleepOrStop(stop <-chan struct{}, d time.Duration) {
	select {
	case <-stop:
	case <-time.After(d):
	}
}

// splitGroups divides the cluster into a minority (the two scheduled
// nodes, then more by index until it has (n-1)/2) and the majority.
func splitGroups(nodes []*node, a, b int) (minority, majority []*node) {
	want := max(1, (len(nodes)-1)/2)
	in := map[int]bool{}
	for _, i := range []int{a, b} {
		if len(in) < want {
			in[i] = true
		}
	}
	for i := 0; len(in) < want; i++ {
		in[(a+i)%len(nodes)] = true
	}
	for i, nd := range nodes {
		if in[i] {
			minority = append(minority, nd)
		} else {
			majority = append(majority, nd)
		}
	}
	return minority, majority
}

func ids(l []*node) string {
	var s []string
	for _, nd := range l {
		s = append(s, nd.id)
	}
	return strings.Join(s, "+")
}

// replace takes nd out for good and puts a fresh node in its place, the
// way docs/operations.md says to replace a failed node: nd fails
// (SIGKILL) and stays down for hold; then a fresh node (new ID, empty
// data directory, new ports and uid) is started with --join and, once the
// cluster sees it up, takes nd's slot (the load's clients and the FUSE
// mount's forwarder switch to it); then `admin node remove` drops nd and
// re-protects its data. Only nd is ever unavailable.
func (in *injector) replace(nd *node, hold time.Duration, stop <-chan struct{}) (*node, error) {
	c := in.c
	c.halt(nd, syscall.SIGKILL)
	sleepOrStop(stop, hold)
	var via *node
	for _, o := range c.nodes() {
		if o != nd && o.running() {
			via = o
			break
		}
	}
	if via == nil {
		c.start(nd)
		return nil, fmt.Errorf("no running node to join through")
	}
	fresh := c.freshNode(via)
	if nd.tmpfs {
		if err := mountOneFS(fresh); err != nil {
			logf("replace: %s gets no tmpfs: %v", fresh.id, err)
		}
	}
	c.start(fresh)
	err := waitFor(90*time.Second, func() error {
		if !fresh.running() {
			return fmt.Errorf("%s exited: %s", fresh.id, lastLine(tailLog(fresh.logPath)))
		}
		st, err := c.status(5 * time.Second)
		if err != nil {
			return err
		}
		for _, n := range st.Nodes {
			if n.ID == fresh.id {
				if !n.Up {
					return fmt.Errorf("%s joined, not seen up yet", fresh.id)
				}
				return waitListening(time.Second, fresh.smtp, fresh.lmtp, fresh.imap, fresh.http)
			}
		}
		return fmt.Errorf("%s has not joined yet", fresh.id)
	})
	if err != nil {
		// Give up: the fresh node goes, the old one comes back. Its join
		// may have reached the cluster all the same (it is slow, not
		// refused, under load): remove it, as an operator would, or it
		// stays a dead member that a later change may make a voter.
		c.halt(fresh, syscall.SIGKILL)
		c.retire(fresh)
		c.start(nd)
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if _, rerr := c.admin(rctx, "", "node", "remove", fresh.id); rerr != nil {
			logf("replace: removing the abandoned %s: %v", fresh.id, lastLine(rerr.Error()))
		}
		rcancel()
		return fresh, fmt.Errorf("fresh node %s did not join: %v", fresh.id, err)
	}
	c.swap(nd.idx, fresh)
	logf("replace: %s joined and took %s's place; removing %s", fresh.id, nd.id, nd.id)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var rmErr error
	for attempt := 1; attempt <= 3; attempt++ {
		_, err := c.admin(ctx, "", "node", "remove", nd.id)
		if err == nil {
			rmErr = nil
			break
		}
		// stderr holds the progress lines, then what went wrong
		msg := strings.TrimSpace(err.Error())
		if i := strings.LastIndexAny(msg, "\r\n"); i >= 0 {
			msg = strings.TrimSpace(msg[i+1:])
		}
		rmErr = fmt.Errorf("node remove %s: %s", nd.id, strings.TrimSuffix(msg, " ()"))
		logf("replace: %v (attempt %d of 3)", rmErr, attempt)
		if ctx.Err() != nil {
			break
		}
		time.Sleep(2 * time.Second)
	}
	// A removed node's data is gone for good: until the cluster has
	// rebuilt it, the node counts as down, and the next fault must not
	// take more nodes (never more than M at once). An operator, too,
	// waits for the rebuild before replacing the next node.
	if err := waitFor(10*time.Minute, func() error { return c.healthy(true) }); err != nil {
		logf("replace: not fully redundant 10 minutes after removing %s: %v", nd.id, err)
	}
	return fresh, rmErr
}
