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
)

// ---- cleanup: on normal exit, on fatal errors and on Ctrl-C ----

var (
	cleanupMu   sync.Mutex
	cleanupFns  []func()
	cleanupOnce sync.Once
	stopping    atomic.Bool
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

func fatalf(format string, args ...any) {
	if stopping.Load() {
		select {} // the signal handler cleans up and exits
	}
	fmt.Fprintf(os.Stderr, "webbench: "+format+"\n", args...)
	cleanup()
	os.Exit(1)
}

func progress(format string, args ...any) {
	if stopping.Load() {
		return
	}
	fmt.Fprintf(os.Stderr, "webbench: %s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

// handleSignals stops the servers and wrk and removes the temporary
// directory on Ctrl-C, SIGTERM or a closed terminal.
func handleSignals(cancel context.CancelFunc) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		stopping.Store(true)
		fmt.Fprintf(os.Stderr, "\nwebbench: %v: stopping hastore, nginx and wrk, removing temporary files\n", s)
		cancel()
		cleanup()
		os.Exit(130)
	}()
}

// ---- child processes ----

// proc is a child process in its own process group (Ctrl-C reaches only
// us, and we stop the children in order); Pdeathsig makes the kernel kill it
// should we be SIGKILLed.
type proc struct {
	name, logPath string
	cmd           *exec.Cmd
	exited        chan struct{}
	waitErr       error
}

func startProc(name, logPath string, env []string, argv ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, logPath: logPath}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p.exited = make(chan struct{})
	go func() {
		p.waitErr = p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM (SIGQUIT for nginx's graceful stop is not needed: TERM
// is its fast stop) and, if the process has not exited within a few
// seconds, SIGKILLs its whole process group.
func (p *proc) stop() {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return
	}
	if p.alive() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	// Whatever the leader left behind in its group (nginx's workers).
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// groupCPU returns the CPU seconds (user+system) used so far by the live
// members of p's process group (nginx's master and workers).
func (p *proc) groupCPU() float64 {
	pgid := p.cmd.Process.Pid
	ents, _ := os.ReadDir("/proc")
	var sum float64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStat(pid)
		if err != nil || len(f) < 13 {
			continue
		}
		// f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
		if g, _ := strconv.Atoi(f[2]); g != pgid {
			continue
		}
		for _, i := range []int{11, 12} {
			v, _ := strconv.ParseFloat(f[i], 64)
			sum += v
		}
	}
	return sum / 100 // USER_HZ
}

func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// hostTimes returns the host's busy and total CPU ticks from /proc/stat.
func hostTimes() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		if i >= 8 {
			break
		}
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
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

// waitListening waits until every address accepts TCP connections.
func waitListening(ctx context.Context, p *proc, timeout time.Duration, addrs ...string) error {
	deadline := time.Now().Add(timeout)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if !p.alive() {
				return fmt.Errorf("%s exited: %v\n--- its log ---\n%s", p.name, p.waitErr, p.logTail())
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s: %s not listening within %v: %v", p.name, a, timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// ---- building hastore ----

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

// pprofHook is compiled into the hastore binary (through go build -overlay,
// so the source tree is untouched) only with -profile: it serves
// net/http/pprof on the address in HASTORE_BENCH_PPROF.
const pprofHook = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("HASTORE_BENCH_PPROF")
	if addr == "" {
		return
	}
	go func() { _ = http.ListenAndServe(addr, nil) }()
}
`

func buildHastore(dir string, withPprof bool) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "hastore")
	args := []string{"build", "-o", bin}
	if withPprof {
		hook := filepath.Join(dir, "zz_webbench_pprof.go")
		if err := os.WriteFile(hook, []byte(pprofHook), 0o600); err != nil {
			return "", err
		}
		ov, _ := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(root, "cmd", "hastore", "zz_webbench_pprof.go"): hook}})
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

// fetchPprof saves a profile from a node's pprof server; query is e.g.
// "profile?seconds=10".
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
