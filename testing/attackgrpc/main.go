// Command attackgrpc replays issue #11 V3 against a hastore node and prints
// the node's memory (RSS) before, during and after: strangers without the
// cluster key open several connections to the cluster port, each with many
// concurrent calls carrying big requests.
//
//	go build -o /tmp/hastore ./cmd/hastore
//	go run ./testing/attackgrpc -hastore /tmp/hastore
//
// It starts `hastore serve` (one node, temporary data directory) from the
// binary given, so the same run can be pointed at an older build to see the
// difference; -addr and -pid attack a node already running instead. A node
// that checks the key before reading a call refuses every call at once and
// its RSS barely moves; one that reads first holds conns × streams × msg
// bytes. The figures are a benchmark's: printed, never asserted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
)

func main() {
	var (
		bin     = flag.String("hastore", "bin/hastore", "hastore binary to start a node from (unless -addr)")
		addr    = flag.String("addr", "", "attack this cluster port instead of starting a node")
		pid     = flag.Int("pid", 0, "with -addr: the node's process ID, to read its RSS")
		conns   = flag.Int("conns", 8, "connections")
		streams = flag.Int("streams", 16, "concurrent calls per connection")
		msg     = flag.Int("msg", 16<<20-64, "request size in bytes")
		rounds  = flag.Int("rounds", 3, "times each call is repeated")
	)
	flag.Parse()
	if err := run(*bin, *addr, *pid, *conns, *streams, *msg, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "attackgrpc:", err)
		os.Exit(1)
	}
}

func run(bin, addr string, pid, conns, streams, msg, rounds int) error {
	if addr == "" {
		stop, a, p, err := startNode(bin)
		if err != nil {
			return err
		}
		defer stop()
		addr, pid = a, p
	}
	before := rss(pid)
	var peak atomic.Int64
	peak.Store(before)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if r := rss(pid); r > peak.Load() {
					peak.Store(r)
				}
			}
		}
	}()
	start := time.Now()
	codesSeen := map[codes.Code]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	big := &pb.ShardRef{Blob: make([]byte, msg)}
	for range conns {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		c := pb.NewNodeClient(cc)
		for range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					_, err := c.StatShard(ctx, big)
					cancel()
					mu.Lock()
					codesSeen[status.Code(err)]++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	close(done)
	after := rss(pid)
	fmt.Printf("attack: %d connections x %d concurrent calls x %d rounds, %.1f MiB each, no cluster key\n", conns, streams, rounds, float64(msg)/(1<<20))
	fmt.Printf("%-28s %12s\n", "", "node RSS")
	fmt.Printf("%-28s %9.0f MiB\n", "before", mib(before))
	fmt.Printf("%-28s %9.0f MiB\n", "peak during the attack", mib(peak.Load()))
	fmt.Printf("%-28s %9.0f MiB\n", "0.5 s after", mib(after))
	fmt.Printf("%-28s %12s\n", "attack took", elapsed.Round(time.Millisecond))
	var parts []string
	for c, n := range codesSeen {
		parts = append(parts, fmt.Sprintf("%v: %d", c, n))
	}
	fmt.Printf("%-28s %s\n", "answers", strings.Join(parts, ", "))
	return nil
}

// startNode starts a one-node cluster from bin and returns its cluster
// port and process ID once the port answers.
func startNode(bin string) (stop func(), addr string, pid int, err error) {
	dir, err := os.MkdirTemp("", "attackgrpc-")
	if err != nil {
		return nil, "", 0, err
	}
	key, err := transport.GenerateKey()
	if err != nil {
		return nil, "", 0, err
	}
	keyFile := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		return nil, "", 0, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", 0, err
	}
	addr = l.Addr().String()
	l.Close()
	logf, err := os.Create(filepath.Join(dir, "node.log"))
	if err != nil {
		return nil, "", 0, err
	}
	cmd := exec.Command(bin, "serve", "--node", "n1", "--data", filepath.Join(dir, "data"), "--listen", addr, "--cluster-key-file", keyFile, "--insecure")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, "", 0, fmt.Errorf("starting %s: %w", bin, err)
	}
	stop = func() {
		cmd.Process.Signal(os.Interrupt)
		waited := make(chan struct{})
		go func() { cmd.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-waited
		}
		logf.Close()
		os.RemoveAll(dir)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, "", 0, errors.New("the node did not open its cluster port within 30 s; see its log")
		}
	}
	time.Sleep(time.Second) // let it settle (elect itself) before measuring
	return stop, addr, cmd.Process.Pid, nil
}

// rss returns the resident set of process pid in bytes, 0 if unknown.
func rss(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
