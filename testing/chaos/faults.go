package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
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
	Err        string        `json:"err,omitempty"`
}

func schedule(seed uint64, n int, dur time.Duration, kinds []string) []fault {
	r := rand.New(rand.NewPCG(seed, 42))
	every := max(6*time.Second, min(30*time.Second, dur/8))
	var out []fault
	for at := 5 * time.Second; at+every/2 < dur; at += every {
		f := fault{At: at, Kind: kinds[r.IntN(len(kinds))], Node: r.IntN(n)}
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
	for _, o := range c.nodes {
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
		nd := in.c.nodes[f.Node]
		l := in.c.leader()
		if f.Kind == "kill-leader" {
			if l != nil {
				nd = l
			} else {
				f.Err = "no leader found; killed the scheduled node instead"
			}
		}
		f.WasLeader = l != nil && (l == nd || (f.Kind == "kill2" && l == in.c.nodes[f.Node2]))
		f.Target = nd.id
		f.Start = time.Now()
		logf("FAULT %s %s (hold %v)", f.Kind, nd.id, f.Hold.Round(time.Millisecond))
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
			nd2 := in.c.nodes[f.Node2]
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
		logf("HEALED %s %s after %v", f.Kind, nd.id, f.Healed.Sub(f.Start).Round(time.Millisecond))
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
