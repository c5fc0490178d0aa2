//go:build linux

package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
	"hastore/storage"
)

// ProcOptions shape a cluster of OS processes.
type ProcOptions struct {
	Nodes  int    // default 3
	Scheme string // default "2+1"
	// ExtraArgs are added to every node's `hastore serve` command line.
	ExtraArgs []string
	// NodeArgs, if set, adds node i's own flags (its own HTTP or mail
	// ports, say).
	NodeArgs func(i int) []string
	// TLS runs the cluster as production does: a cluster CA, one node
	// credential for 127.0.0.1 shared by the nodes, and an admin
	// credential the harness's clients and Admin use. Without it the
	// nodes run with --insecure and clients use the cluster key.
	TLS bool
}

// Processes is a cluster of `hastore serve` processes of the real binary on
// loopback ports. Every process is killed when the test ends, and if the
// test binary dies first (Pdeathsig).
type Processes struct {
	t       testing.TB
	Bin     string // the hastore binary
	Dir     string
	KeyFile string
	Key     []byte
	// CADir and CredDir, with ProcOptions.TLS, hold the cluster CA and the
	// admin credential.
	CADir, CredDir string
	IDs            []string
	Addrs          []string
	args           [][]string

	mu    sync.Mutex
	procs []*proc // nil while stopped
	conns []*grpc.ClientConn
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // its exit status, once done
}

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// HastoreBinary returns the path of a hastore binary built once per test
// binary from this module (without -race: the nodes are the system under
// test here, the test's own code runs with the race detector).
// HASTORE_BIN names a prebuilt one instead.
func HastoreBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("HASTORE_BIN"); p != "" {
			buildBin, buildErr = filepath.Abs(p)
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("building hastore: no go command on PATH: %w", err)
			return
		}
		if buildDir, err = os.MkdirTemp("", "hastore-proc-test-"); err != nil {
			buildErr = err
			return
		}
		out := filepath.Join(buildDir, "hastore")
		cmd := exec.Command(goTool, "build", "-o", out, "hastore/cmd/hastore")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build hastore/cmd/hastore: %v\n%s", err, b)
			return
		}
		buildBin = out
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

// startFromLockedThread starts cmd from one OS thread that lives as long as
// the test binary. Pdeathsig fires when the thread that forked the child
// exits, not the process; Go may end a thread (one a goroutine locked and
// never unlocked), so the nodes are forked from a thread that never ends.
func startFromLockedThread(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives on
			for r := range spawner.reqs {
				r.err <- r.cmd.Start()
			}
		}()
	})
	r := spawnReq{cmd, make(chan error, 1)}
	spawner.reqs <- r
	return <-r.err
}

// RemoveHastoreBinary deletes the binary HastoreBinary built; for TestMain.
func RemoveHastoreBinary() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// StartProcesses starts a cluster of hastore processes, each with its own
// data directory and log file under a test directory, and waits until
// there is a leader and every node sees every other up.
func StartProcesses(t testing.TB, opt ProcOptions) *Processes {
	t.Helper()
	if opt.Nodes == 0 {
		opt.Nodes = 3
	}
	if opt.Scheme == "" {
		opt.Scheme = "2+1"
	}
	bin := HastoreBinary(t)
	// The directory's removal is registered first so that it runs after the
	// cleanup below, which reads the logs in it.
	c := &Processes{t: t, Bin: bin, Dir: t.TempDir(), IDs: NodeIDs(opt.Nodes), Addrs: FreePorts(t, opt.Nodes)}
	key, err := transport.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c.Key = key
	c.KeyFile = filepath.Join(c.Dir, "cluster.key")
	if err := os.WriteFile(c.KeyFile, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	var peers []string
	for i, id := range c.IDs {
		peers = append(peers, id+"="+c.Addrs[i])
	}
	security := []string{"--insecure"}
	if opt.TLS {
		security = []string{"--cred", c.makeCreds()}
	}
	for i, id := range c.IDs {
		args := []string{"serve", "--node", id, "--data", c.DataDir(i), "--listen", c.Addrs[i],
			"--peers", strings.Join(peers, ","), "--cluster-key-file", c.KeyFile,
			"--shards", opt.Scheme, "--repair-interval", "1s"}
		args = append(args, security...)
		args = append(args, opt.ExtraArgs...)
		if opt.NodeArgs != nil {
			args = append(args, opt.NodeArgs(i)...)
		}
		c.args = append(c.args, args)
	}
	c.procs = make([]*proc, opt.Nodes)
	c.conns = make([]*grpc.ClientConn, opt.Nodes)
	t.Cleanup(c.cleanup)
	for i := range c.IDs {
		c.Start(i)
	}
	c.WaitHealthy(60 * time.Second)
	return c
}

// makeCreds makes the cluster CA, the admin credential (c.CredDir) and
// the nodes' credential, whose directory it returns.
func (c *Processes) makeCreds() string {
	c.t.Helper()
	c.CADir = filepath.Join(c.Dir, "ca")
	ca, err := transport.NewCA(c.CADir)
	if err != nil {
		c.t.Fatal(err)
	}
	nodeDir := filepath.Join(c.Dir, "node-cred")
	c.CredDir = filepath.Join(c.Dir, "admin-cred")
	for dir, req := range map[string]transport.CredRequest{
		nodeDir:   {Role: transport.RoleNode, Hosts: []string{"127.0.0.1"}},
		c.CredDir: {Role: transport.RoleAdmin},
	} {
		issued, err := ca.Issue(req)
		if err != nil {
			c.t.Fatal(err)
		}
		if err := ca.WriteCredential(dir, issued); err != nil {
			c.t.Fatal(err)
		}
	}
	return nodeDir
}

// ClientConfig returns the transport configuration the harness's clients
// use: the admin credential under TLS, the cluster key without.
func (c *Processes) ClientConfig() transport.Config {
	c.t.Helper()
	if c.CredDir == "" {
		return transport.Config{Key: c.Key}
	}
	tc, _, err := transport.LoadCredential(c.CredDir)
	if err != nil {
		c.t.Fatal(err)
	}
	return transport.Config{ClientTLS: tc}
}

// DataDir returns node i's data directory.
func (c *Processes) DataDir(i int) string { return filepath.Join(c.Dir, c.IDs[i]) }

// LogFile returns the file node i's output goes to (appended on restart).
func (c *Processes) LogFile(i int) string { return filepath.Join(c.Dir, c.IDs[i]+".log") }

// Addr returns node i's cluster address.
func (c *Processes) Addr(i int) string { return c.Addrs[i] }

// Start starts (or restarts) node i on its data directory.
func (c *Processes) Start(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[i]; p != nil {
		c.t.Fatalf("node %s is already running (pid %d)", c.IDs[i], p.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(c.LogFile(i), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(logf, "==== harness: starting %s at %s\n", c.IDs[i], time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.Bin, c.args[i]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=")
	// Own process group (so a ^C to the test does not hit the nodes
	// half-way, and the whole group can be killed), and SIGKILL when the
	// test binary dies without running its cleanups (panic, -timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startFromLockedThread(cmd); err != nil {
		logf.Close()
		c.t.Fatalf("starting %s: %v", c.IDs[i], err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.procs[i] = p
}

// Kill SIGKILLs node i and waits until it is gone.
func (c *Processes) Kill(i int) { c.halt(i, syscall.SIGKILL, 10*time.Second) }

// Stop SIGTERMs node i and waits until it has shut down cleanly.
func (c *Processes) Stop(i int) { c.halt(i, syscall.SIGTERM, 30*time.Second) }

func (c *Processes) halt(i int, sig syscall.Signal, wait time.Duration) {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[i]
	c.procs[i] = nil
	c.mu.Unlock()
	if p == nil {
		c.t.Fatalf("node %s is not running", c.IDs[i])
	}
	select {
	case <-p.done:
		c.t.Fatalf("node %s had exited on its own before %v: %v", c.IDs[i], sig, p.err)
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(wait):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		c.t.Fatalf("node %s did not exit within %v of %v", c.IDs[i], wait, sig)
	}
	if sig == syscall.SIGTERM && p.err != nil {
		c.t.Errorf("node %s exited with %v after SIGTERM (want a clean shutdown)", c.IDs[i], p.err)
	}
}

// WaitExit waits until node i exits on its own (as a removed node does),
// and fails the test unless it does so within wait and with status 0.
func (c *Processes) WaitExit(i int, wait time.Duration) {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[i]
	c.mu.Unlock()
	if p == nil {
		c.t.Fatalf("node %s is not running", c.IDs[i])
	}
	select {
	case <-p.done:
	case <-time.After(wait):
		c.t.Fatalf("node %s did not exit on its own within %v\n%s", c.IDs[i], wait, c.tail(i, 30))
	}
	c.mu.Lock()
	c.procs[i] = nil
	c.mu.Unlock()
	if p.err != nil {
		c.t.Errorf("node %s exited with %v (want 0)\n%s", c.IDs[i], p.err, c.tail(i, 30))
	}
}

// Running returns the indexes of the nodes running now.
func (c *Processes) Running() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, p := range c.procs {
		if p != nil {
			out = append(out, i)
		}
	}
	return out
}

// Index returns the index of node id, or -1.
func (c *Processes) Index(id string) int {
	for i, x := range c.IDs {
		if x == id {
			return i
		}
	}
	return -1
}

// checkAlive fails the test if a node the harness did not stop has exited.
func (c *Processes) checkAlive() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.procs {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
			c.t.Fatalf("node %s exited unexpectedly: %v\n%s", c.IDs[i], p.err, c.tail(i, 30))
		default:
		}
	}
}

// Client returns a Cluster API client for node i (one connection per node,
// kept for the test; gRPC reconnects it across restarts).
func (c *Processes) Client(i int) pb.ClusterClient {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns[i] == nil {
		opts, err := transport.DialOptions(c.ClientConfig())
		if err != nil {
			c.t.Fatal(err)
		}
		if c.conns[i], err = grpc.NewClient("passthrough:///"+c.Addrs[i], opts...); err != nil {
			c.t.Fatal(err)
		}
	}
	return pb.NewClusterClient(c.conns[i])
}

// Put stores data through node i.
func (c *Processes) Put(ctx context.Context, i int, data []byte) (storage.BlobID, error) {
	return PutObject(ctx, c.Client(i), data)
}

// Get reads a whole object through node i.
func (c *Processes) Get(ctx context.Context, i int, id storage.BlobID) ([]byte, error) {
	return GetObject(ctx, c.Client(i), id, 0, -1)
}

// ReadAt reads n bytes at off of an object through node i.
func (c *Processes) ReadAt(ctx context.Context, i int, id storage.BlobID, off, n int64) ([]byte, error) {
	return GetObject(ctx, c.Client(i), id, off, n)
}

// Stat describes an object as node i sees it.
func (c *Processes) Stat(ctx context.Context, i int, id storage.BlobID, verify bool) (*pb.ObjectStat, error) {
	return c.Client(i).StatObject(ctx, &pb.StatObjectRequest{Id: id[:], Verify: verify})
}

// Status is node i's view of the cluster.
func (c *Processes) Status(ctx context.Context, i int) (*pb.ClusterStatus, error) {
	return c.Client(i).Status(ctx, &pb.StatusRequest{})
}

// Leader returns the index of the node that is Raft leader by its own
// account and that of every other running node that answers, or -1.
func (c *Processes) Leader() int {
	leader := ""
	for _, i := range c.Running() {
		ctx, cancel := ctxTimeout(3 * time.Second)
		st, err := c.Status(ctx, i)
		cancel()
		if err != nil {
			continue
		}
		if st.Leader == "" || (leader != "" && st.Leader != leader) {
			return -1
		}
		leader = st.Leader
	}
	l := c.Index(leader)
	if l < 0 || !c.isRunning(l) {
		return -1
	}
	return l
}

func (c *Processes) isRunning(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i] != nil
}

// WaitHealthy waits until every running node answers, names a running
// node as leader, and sees every running node up.
func (c *Processes) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	Eventually(c.t, timeout, "cluster healthy", func() error {
		c.checkAlive()
		running := c.Running()
		leader := ""
		for _, i := range running {
			ctx, cancel := ctxTimeout(3 * time.Second)
			st, err := c.Status(ctx, i)
			cancel()
			if err != nil {
				return fmt.Errorf("status of %s: %w", c.IDs[i], err)
			}
			if st.Leader == "" {
				return fmt.Errorf("%s knows no leader", c.IDs[i])
			}
			if leader != "" && st.Leader != leader {
				return fmt.Errorf("%s says %s leads, another says %s", c.IDs[i], st.Leader, leader)
			}
			leader = st.Leader
			up := map[string]bool{}
			for _, n := range st.Nodes {
				up[n.Id] = n.Up
			}
			for _, j := range running {
				if !up[c.IDs[j]] {
					return fmt.Errorf("%s does not see %s up", c.IDs[i], c.IDs[j])
				}
			}
		}
		if l := c.Index(leader); l < 0 || !c.isRunning(l) {
			return fmt.Errorf("leader %q is not a running node", leader)
		}
		return nil
	})
}

// Admin runs `hastore admin` against every node's address (dead ones
// included, as an operator's configuration would list them) with the
// cluster key file, and returns its stdout and stderr.
func (c *Processes) Admin(ctx context.Context, args ...string) (stdout, stderr []byte, err error) {
	if c.CredDir != "" {
		return c.admin(ctx, append([]string{"--cred", c.CredDir}, args...))
	}
	return c.AdminWithKey(ctx, c.KeyFile, args...)
}

// AdminWithKey is Admin with another key file.
func (c *Processes) AdminWithKey(ctx context.Context, keyFile string, args ...string) (stdout, stderr []byte, err error) {
	return c.admin(ctx, append([]string{"--cluster-key-file", keyFile}, args...))
}

func (c *Processes) admin(ctx context.Context, args []string) (stdout, stderr []byte, err error) {
	full := append([]string{"admin", "--addr", strings.Join(c.Addrs, ",")}, args...)
	cmd := exec.CommandContext(ctx, c.Bin, full...)
	cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HASTORE_CRED=")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("hastore %s: %w\nstderr: %s", strings.Join(args, " "), err, e.Bytes())
	}
	return o.Bytes(), e.Bytes(), err
}

// AdminJSON runs an admin command that prints JSON and decodes it into v.
func (c *Processes) AdminJSON(ctx context.Context, v any, args ...string) error {
	out, _, err := c.Admin(ctx, args...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("hastore admin %s: %w in %q", strings.Join(args, " "), err, out)
	}
	return nil
}

// tail returns the last n lines of node i's log.
func (c *Processes) tail(i, n int) string {
	f, err := os.Open(c.LogFile(i))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 2*n {
			lines = append(lines[:0], lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanup kills every node, fails the test if a node crashed (a panic in
// its log), and on failure prints the tail of each node's log.
func (c *Processes) cleanup() {
	c.mu.Lock()
	procs := c.procs
	c.procs = make([]*proc, len(procs))
	conns := c.conns
	c.mu.Unlock()
	for _, cc := range conns {
		if cc != nil {
			cc.Close()
		}
	}
	for _, p := range procs {
		if p != nil {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	for _, p := range procs {
		if p != nil {
			<-p.done
		}
	}
	for i := range c.IDs {
		b, err := os.ReadFile(c.LogFile(i))
		if err != nil {
			continue
		}
		for _, bad := range []string{"panic:", "fatal error:", "DATA RACE"} {
			if j := bytes.Index(b, []byte(bad)); j >= 0 {
				c.t.Errorf("node %s log has %q:\n%s", c.IDs[i], bad, b[j:min(len(b), j+4000)])
			}
		}
	}
	if c.t.Failed() {
		for i := range c.IDs {
			c.t.Logf("---- last lines of %s's log (%s) ----\n%s", c.IDs[i], c.LogFile(i), c.tail(i, 40))
		}
	}
	// HASTORE_KEEP_LOGS=1 keeps every test's node logs.
	if os.Getenv("HASTORE_KEEP_LOGS") != "" {
		keep, err := os.MkdirTemp("", "hastore-proc-logs-")
		if err == nil {
			for i := range c.IDs {
				if b, err := os.ReadFile(c.LogFile(i)); err == nil {
					_ = os.WriteFile(filepath.Join(keep, c.IDs[i]+".log"), b, 0o644)
				}
			}
			c.t.Logf("logs kept in %s", keep)
		}
	}
}
