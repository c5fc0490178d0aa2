package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// node is one `hastore serve` process of the cluster under test.
type node struct {
	idx                    int
	id                     string
	dir, logPath, keyFile  string
	cluster                string // where it listens (gRPC+Raft)
	adv                    string // what it advertises: its delaying proxy
	proxy                  *delayProxy
	tmpfs                  bool // its data directory is its own tmpfs
	smtp, lmtp, imap, http string
	imaps                  string // scale mode only (scale.go)
	uid                    int    // run as this uid (0: as ourselves)
	args                   []string
	mu                     sync.Mutex
	cmd                    *exec.Cmd
	done                   chan struct{}
}

type cluster struct {
	bin, dir string
	scheme   string
	k, m     int
	key      []byte
	asUIDs   bool
	// ns is the current membership, slot by slot; a replace fault swaps
	// one slot's node for a fresh one (under nsMu), so workers always get
	// a consistent snapshot from nodes(). retired holds the nodes taken
	// out, so that cleanup still stops them.
	nsMu    sync.RWMutex
	ns      []*node
	retired []*node
	nextID  int           // number of the next fresh node ID (n<nextID>)
	slots   []*delayProxy // per slot: a stable address forwarding to the slot's current node (for the FUSE mount)
	// Scale mode (scale.go): the IMAPS certificate every node gets, and
	// the cap on each node's address space (prlimit --as; 0: none).
	imapsCert, imapsKey string
	nodeAS              int64
}

// nodes returns the current members, slot by slot (a snapshot).
func (c *cluster) nodes() []*node {
	c.nsMu.RLock()
	defer c.nsMu.RUnlock()
	return append([]*node(nil), c.ns...)
}

// all returns the current members and the retired ones.
func (c *cluster) all() []*node {
	c.nsMu.RLock()
	defer c.nsMu.RUnlock()
	return append(append([]*node(nil), c.ns...), c.retired...)
}

// swap puts fresh in slot i and retires the node that was there; the
// slot's stable address now forwards to fresh.
func (c *cluster) swap(i int, fresh *node) *node {
	c.nsMu.Lock()
	old := c.ns[i]
	fresh.idx = i
	c.ns[i] = fresh
	c.retired = append(c.retired, old)
	var sp *delayProxy
	if i < len(c.slots) {
		sp = c.slots[i]
	}
	c.nsMu.Unlock()
	if sp != nil {
		sp.retarget(fresh.cluster)
	}
	return old
}

// retire adds nd to the retired nodes (stopped at cleanup).
func (c *cluster) retire(nd *node) {
	c.nsMu.Lock()
	c.retired = append(c.retired, nd)
	c.nsMu.Unlock()
}

// isRetired says whether id is a node taken out by a replace fault.
func (c *cluster) isRetired(id string) bool {
	c.nsMu.RLock()
	defer c.nsMu.RUnlock()
	for _, nd := range c.retired {
		if nd.id == id {
			return true
		}
	}
	return false
}

// slotAddrs are the stable per-slot addresses (see swap).
func (c *cluster) slotAddrs() []string {
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	if c.slots == nil {
		for _, nd := range c.ns {
			a := freeAddrs(1)[0]
			px, err := newDelayProxy(a, nd.cluster)
			if err != nil {
				fatalf("slot proxy: %v", err)
			}
			c.slots = append(c.slots, px)
		}
	}
	var out []string
	for _, px := range c.slots {
		out = append(out, px.l.Addr().String())
	}
	return out
}

func freeAddrs(n int) []string {
	var ls []net.Listener
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fatalf("free port: %v", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

func port(a string) int { _, p, _ := strings.Cut(a, ":"); n, _ := strconv.Atoi(p); return n }

func buildHastore(dir string) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "hastore")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/hastore")
	cmd.Dir = root
	if o, err := cmd.CombinedOutput(); err != nil {
		fatalf("go build: %v\n%s", err, o)
	}
	return bin
}

// newCluster lays out n nodes. When runAsUIDs, node i runs as uid
// 61000+i so that iptables' owner match can cut its outgoing traffic.
func newCluster(bin, dir string, n int, scheme string, runAsUIDs bool) *cluster {
	k, m := 0, 0
	if _, err := fmt.Sscanf(scheme, "%d+%d", &k, &m); err != nil || k < 1 || m < 0 {
		fatalf("bad -shards %q", scheme)
	}
	c := &cluster{bin: bin, dir: dir, scheme: scheme, k: k, m: m}
	addrs := freeAddrs(6 * n)
	key, err := exec.Command(bin, "admin", "keygen").Output()
	if err != nil {
		fatalf("hastore admin keygen: %v", err)
	}
	c.key, c.asUIDs, c.nextID = key, runAsUIDs, n+1
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, addrs[6*i+5]))
	}
	for i := range n {
		c.ns = append(c.ns, c.newNode(i, i+1, addrs[6*i:6*i+6], "--peers", strings.Join(peers, ",")))
	}
	if runAsUIDs {
		_ = os.Chmod(dir, 0o755)
		_ = os.Chmod(bin, 0o755)
	}
	return c
}

// grace is the nodes' --grace: shorter than the default hour so that
// deleted objects whose shards sat on a removed node are purged (and stop
// counting as under-replicated) within the run; see the replace fault.
const grace = 60 * time.Second

// newNode lays out node n<num> in slot i with the six addresses a
// (cluster, smtp, lmtp, imap, http, advertised proxy); how is "--peers
// LIST" for the initial members or "--join ADDR" for a fresh one.
func (c *cluster) newNode(i, num int, a []string, how, arg string) *node {
	nd := &node{idx: i, id: fmt.Sprintf("n%d", num), cluster: a[0], smtp: a[1], lmtp: a[2], imap: a[3], http: a[4], adv: a[5]}
	px, err := newDelayProxy(nd.adv, nd.cluster)
	if err != nil {
		fatalf("proxy: %v", err)
	}
	nd.proxy = px
	nd.dir = filepath.Join(c.dir, nd.id)
	nd.logPath = filepath.Join(c.dir, nd.id+".log")
	nd.keyFile = filepath.Join(c.dir, nd.id+".key")
	if err := os.MkdirAll(nd.dir, 0o755); err != nil {
		fatalf("%v", err)
	}
	if err := os.WriteFile(nd.keyFile, c.key, 0o600); err != nil {
		fatalf("%v", err)
	}
	if c.asUIDs {
		nd.uid = 61000 + num
		_ = os.Chown(nd.keyFile, nd.uid, nd.uid)
		nd.chown()
	}
	nd.args = []string{"serve", "--node", nd.id, "--data", nd.dir, "--listen", nd.cluster, "--advertise", nd.adv,
		how, arg, "--cluster-key-file", nd.keyFile, "--insecure",
		"--shards", c.scheme, "--repair-interval", "2s", "--down-out", "30s", "--grace", grace.String(),
		"--smtp", nd.smtp, "--lmtp", nd.lmtp, "--imap", nd.imap, "--http", nd.http,
		"--hostname", "mx" + strconv.Itoa(num) + ".chaos.test", "--allow-insecure-auth",
		"--mail-max-connections-per-ip", "500"}
	c.addIMAPS(nd)
	return nd
}

// freshNode lays out a new node (new ID, empty data directory, new
// ports and uid) that joins the cluster through via; it is not started.
func (c *cluster) freshNode(via *node) *node {
	c.nsMu.Lock()
	num := c.nextID
	c.nextID++
	c.nsMu.Unlock()
	return c.newNode(-1, num, freeAddrs(6), "--join", via.cluster)
}

func (nd *node) chown() {
	if nd.uid == 0 {
		return
	}
	_ = filepath.Walk(nd.dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			_ = os.Lchown(p, nd.uid, nd.uid)
		}
		return nil
	})
}

func (c *cluster) start(nd *node) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		return
	}
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fatalf("%v", err)
	}
	fmt.Fprintf(logf, "==== chaos: starting %s at %s\n", nd.id, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(c.bin, nd.args...)
	if c.nodeAS > 0 {
		cmd = exec.Command("prlimit", append([]string{fmt.Sprintf("--as=%d", c.nodeAS), "--", c.bin}, nd.args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HOME="+nd.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if nd.uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(nd.uid), Gid: uint32(nd.uid)}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		fatalf("starting %s: %v", nd.id, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	nd.cmd, nd.done = cmd, done
}

// halt signals the node's process group and waits for it to exit.
func (c *cluster) halt(nd *node, sig syscall.Signal) {
	nd.mu.Lock()
	cmd, done := nd.cmd, nd.done
	nd.cmd = nil
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func (nd *node) running() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.done:
		return false
	default:
		return true
	}
}

func (c *cluster) stopAll() {
	for _, nd := range c.all() {
		c.halt(nd, syscall.SIGKILL)
		nd.proxy.close()
	}
	c.nsMu.Lock()
	for _, px := range c.slots {
		px.close()
	}
	c.nsMu.Unlock()
}

// admin runs `hastore admin` against every node's address.
func (c *cluster) admin(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	var addrs []string
	for _, nd := range c.nodes() {
		addrs = append(addrs, nd.cluster)
	}
	full := append([]string{"admin", "--addr", strings.Join(addrs, ","), "--cluster-key-file", c.nodes()[0].keyFile}, args...)
	cmd := exec.CommandContext(ctx, c.bin, full...)
	cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=")
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return o.Bytes(), fmt.Errorf("hastore admin %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.Bytes(), nil
}

type status struct {
	Nodes []struct {
		ID       string `json:"id"`
		Up       bool   `json:"up"`
		RaftRole string `json:"raft_role"`
	} `json:"nodes"`
	Objects         int64  `json:"objects"`
	UnderReplicated int64  `json:"under_replicated"`
	Leader          string `json:"leader"`
}

func (c *cluster) status(timeout time.Duration) (*status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := c.admin(ctx, "", "--timeout", timeout.String(), "status", "--json")
	if err != nil {
		return nil, err
	}
	var st status
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("status --json: %v in %q", err, out)
	}
	return &st, nil
}

func (c *cluster) leader() *node {
	st, err := c.status(5 * time.Second)
	if err != nil {
		return nil
	}
	for _, nd := range c.nodes() {
		if nd.id == st.Leader {
			return nd
		}
	}
	return nil
}

// healthy: a leader, every running node up, nothing under-replicated.
func (c *cluster) healthy(needRedundancy bool) error {
	st, err := c.status(5 * time.Second)
	if err != nil {
		return err
	}
	if st.Leader == "" {
		return fmt.Errorf("no leader")
	}
	up := map[string]bool{}
	for _, n := range st.Nodes {
		up[n.ID] = n.Up
	}
	for _, nd := range c.nodes() {
		if nd.running() && !up[nd.id] {
			return fmt.Errorf("%s not seen up", nd.id)
		}
	}
	if needRedundancy && st.UnderReplicated != 0 {
		return fmt.Errorf("%d objects under-replicated", st.UnderReplicated)
	}
	if needRedundancy {
		// A member the harness no longer runs (a replaced node whose
		// removal did not take) is a dead voter waiting to cost the
		// cluster its quorum: not healthy.
		current := map[string]bool{}
		for _, nd := range c.nodes() {
			current[nd.id] = true
		}
		for _, n := range st.Nodes {
			if !current[n.ID] {
				return fmt.Errorf("%s is still a member though it was replaced", n.ID)
			}
		}
	}
	return nil
}

func waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func waitListening(timeout time.Duration, addrs ...string) error {
	return waitFor(timeout, func() error {
		for _, a := range addrs {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
}
