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
	uid                    int // run as this uid (0: as ourselves)
	args                   []string
	mu                     sync.Mutex
	cmd                    *exec.Cmd
	done                   chan struct{}
}

type cluster struct {
	bin, dir string
	nodes    []*node
	scheme   string
	k, m     int
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
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, addrs[6*i+5]))
	}
	for i := range n {
		nd := &node{idx: i, id: fmt.Sprintf("n%d", i+1), cluster: addrs[6*i], smtp: addrs[6*i+1], lmtp: addrs[6*i+2], imap: addrs[6*i+3], http: addrs[6*i+4], adv: addrs[6*i+5]}
		px, err := newDelayProxy(nd.adv, nd.cluster)
		if err != nil {
			fatalf("proxy: %v", err)
		}
		nd.proxy = px
		nd.dir = filepath.Join(dir, nd.id)
		nd.logPath = filepath.Join(dir, nd.id+".log")
		nd.keyFile = filepath.Join(dir, nd.id+".key")
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			fatalf("%v", err)
		}
		if err := os.WriteFile(nd.keyFile, key, 0o600); err != nil {
			fatalf("%v", err)
		}
		if runAsUIDs {
			nd.uid = 61000 + i + 1
			_ = os.Chown(nd.keyFile, nd.uid, nd.uid)
			nd.chown()
		}
		nd.args = []string{"serve", "--node", nd.id, "--data", nd.dir, "--listen", nd.cluster, "--advertise", nd.adv,
			"--peers", strings.Join(peers, ","), "--cluster-key-file", nd.keyFile,
			"--shards", scheme, "--repair-interval", "2s", "--down-out", "30s",
			"--smtp", nd.smtp, "--lmtp", nd.lmtp, "--imap", nd.imap, "--http", nd.http,
			"--hostname", "mx" + strconv.Itoa(i+1) + ".chaos.test", "--allow-insecure-auth",
			"--mail-max-connections-per-ip", "500"}
		c.nodes = append(c.nodes, nd)
	}
	if runAsUIDs {
		_ = os.Chmod(dir, 0o755)
		_ = os.Chmod(bin, 0o755)
	}
	return c
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
	for _, nd := range c.nodes {
		c.halt(nd, syscall.SIGKILL)
		nd.proxy.close()
	}
}

// admin runs `hastore admin` against every node's address.
func (c *cluster) admin(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	var addrs []string
	for _, nd := range c.nodes {
		addrs = append(addrs, nd.cluster)
	}
	full := append([]string{"admin", "--addr", strings.Join(addrs, ","), "--cluster-key-file", c.nodes[0].keyFile}, args...)
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
	for _, nd := range c.nodes {
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
	for _, nd := range c.nodes {
		if nd.running() && !up[nd.id] {
			return fmt.Errorf("%s not seen up", nd.id)
		}
	}
	if needRedundancy && st.UnderReplicated != 0 {
		return fmt.Errorf("%d objects under-replicated", st.UnderReplicated)
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

func (c *cluster) index(id string) int {
	for i, nd := range c.nodes {
		if nd.id == id {
			return i
		}
	}
	return 0
}
