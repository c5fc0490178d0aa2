package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
)

// ---- cleanup: on normal exit, on fatal errors and on Ctrl-C ----

var (
	cleanupMu   sync.Mutex
	cleanupFns  []func()
	cleanupOnce sync.Once
)

// atCleanup registers fn to run (last registered first) when the program
// ends, however it ends short of SIGKILL.
func atCleanup(fn func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanupFns = append(cleanupFns, fn)
}

func cleanup() {
	cleanupOnce.Do(func() {
		cleanupMu.Lock()
		fns := cleanupFns
		cleanupFns = nil
		cleanupMu.Unlock()
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
	})
}

// stopping is set once a signal arrived: the measurements still running
// then fail, and must neither print nor race the signal handler's exit.
var stopping atomic.Bool

func fatalf(format string, args ...any) {
	if stopping.Load() {
		select {} // the signal handler cleans up and exits
	}
	fmt.Fprintf(os.Stderr, "clusterbench: "+format+"\n", args...)
	cleanup()
	os.Exit(1)
}

// handleSignals stops the nodes and removes the temporary directories on
// Ctrl-C, SIGTERM or a closed terminal.
func handleSignals(cancel context.CancelFunc) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		stopping.Store(true)
		fmt.Fprintf(os.Stderr, "\nclusterbench: %v: stopping nodes and removing temporary files\n", s)
		cancel()
		cleanup()
		os.Exit(130)
	}()
}

// ---- building the binary ----

// pprofHook is compiled into the hastore binary (through go build -overlay,
// so the source tree is untouched) only when -cpuprofile is given: it serves
// net/http/pprof on the address in HASTORE_BENCH_PPROF.
const pprofHook = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
)

func init() {
	addr := os.Getenv("HASTORE_BENCH_PPROF")
	if addr == "" {
		return
	}
	runtime.SetMutexProfileFraction(10)
	runtime.SetBlockProfileRate(100000) // one sample per 100µs blocked
	go func() { _ = http.ListenAndServe(addr, nil) }()
}
`

// moduleRoot returns the directory of hastore's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the hastore module (run from its tree)")
	}
	return filepath.Dir(mod), nil
}

// buildHastore builds cmd/hastore into dir, with the pprof hook if asked.
func buildHastore(dir string, withPprof bool) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "hastore")
	args := []string{"build", "-o", bin}
	if withPprof {
		hook := filepath.Join(dir, "zz_clusterbench_pprof.go")
		if err := os.WriteFile(hook, []byte(pprofHook), 0o600); err != nil {
			return "", err
		}
		ov, _ := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(root, "cmd", "hastore", "zz_clusterbench_pprof.go"): hook}})
		ovFile := filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(ovFile, ov, 0o600); err != nil {
			return "", err
		}
		args = append(args, "-overlay", ovFile)
	}
	args = append(args, "./cmd/hastore")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// ---- node processes ----

type node struct {
	id, addr, pprofAddr, dir, logPath string
	cmd                               *exec.Cmd
	exited                            chan struct{}
	waitErr                           error
	conn                              *grpc.ClientConn
	client                            pb.ClusterClient
}

// freeAddrs returns n loopback addresses whose ports were free a moment ago.
func freeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

func (n *node) start(bin, keyFile, peers, scheme string) error {
	logf, err := os.Create(n.logPath)
	if err != nil {
		return err
	}
	n.cmd = exec.Command(bin, "serve", "--node", n.id, "--data", n.dir, "--listen", n.addr,
		"--peers", peers, "--cluster-key-file", keyFile, "--shards", scheme, "--log-level", "warn")
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.Env = os.Environ()
	if n.pprofAddr != "" {
		n.cmd.Env = append(n.cmd.Env, "HASTORE_BENCH_PPROF="+n.pprofAddr)
	}
	// Own process group: Ctrl-C reaches only us, and we stop the nodes in
	// order. Pdeathsig: should we be SIGKILLed, the kernel kills them.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	n.exited = make(chan struct{})
	go func() {
		n.waitErr = n.cmd.Wait()
		logf.Close()
		close(n.exited)
	}()
	return nil
}

func (n *node) alive() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// stop asks the node to shut down and kills it if it has not within a few
// seconds.
func (n *node) stop() {
	if n.cmd == nil || n.cmd.Process == nil || !n.alive() {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
}

func (n *node) logTail() string {
	b, _ := os.ReadFile(n.logPath)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// cpuSeconds returns the user+system CPU time of the process so far, from
// /proc/PID/stat (utime and stime, fields 14 and 15, in USER_HZ = 100 ticks).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return (ut + st) / 100, nil
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// hostTimes returns the host's busy and total CPU ticks from /proc/stat
// (idle and iowait count as not busy) and its number of CPUs.
func hostTimes() (busy, total float64, cpus int) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "cpu") && len(line) > 3 && line[3] >= '0' && line[3] <= '9' {
			cpus++
		}
		if strings.HasPrefix(line, "cpu ") {
			for i, f := range strings.Fields(line)[1:] {
				v, _ := strconv.ParseFloat(f, 64)
				if i >= 8 { // guest time is already counted in user
					break
				}
				total += v
				if i != 3 && i != 4 { // idle, iowait
					busy += v
				}
			}
		}
	}
	return busy, total, cpus
}

// meter samples CPU use around a cell.
type meter struct {
	nodes            []*node
	nodeCPU          []float64
	self             float64
	hostBusy, hostTo float64
}

func startMeter(nodes []*node) *meter {
	m := &meter{nodes: nodes}
	for _, n := range nodes {
		c, _ := cpuSeconds(n.cmd.Process.Pid)
		m.nodeCPU = append(m.nodeCPU, c)
	}
	m.self = selfCPU()
	m.hostBusy, m.hostTo, _ = hostTimes()
	return m
}

func (m *meter) stop(r *result) {
	for i, n := range m.nodes {
		c, err := cpuSeconds(n.cmd.Process.Pid)
		if err != nil {
			c = m.nodeCPU[i] // exited: reported separately
		}
		r.nodeCPU = append(r.nodeCPU, c-m.nodeCPU[i])
	}
	r.selfCPU = selfCPU() - m.self
	b, t, cpus := hostTimes()
	if t > m.hostTo {
		r.hostBusy = (b - m.hostBusy) / (t - m.hostTo)
	}
	r.hostCores = cpus
}

// fetchPprof saves a profile from a node's pprof server; query is e.g.
// "profile?seconds=3" (CPU) or "mutex?seconds=3" (a delta over 3 s).
func fetchPprof(ctx context.Context, addr, query, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/debug/pprof/"+query, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("pprof %s %s: %s: %s", addr, query, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
