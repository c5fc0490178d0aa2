package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"hastore/testing/benchproc"
	"hastore/testing/idleload"
)

// node is one `hastore serve` process.
type node struct {
	id, cluster, lmtp, imaps string
	metrics, pprof           string // its /metrics listener; its pprof hook's (if the binary has one)
	proc                     *benchproc.Proc
}

type cluster struct {
	bin, keyFile string
	nodes        []*node
}

// startCluster starts n `hastore serve` processes with LMTP and IMAPS
// (a self-signed certificate for 127.0.0.1 written to work) and waits
// until they are healthy; it returns the TLS configuration clients trust
// that certificate with.
func startCluster(ctx context.Context, cfg config, work string) (*cluster, *tls.Config) {
	certFile, keyPEM := filepath.Join(work, "imap-cert.pem"), filepath.Join(work, "imap-key.pem")
	tlsCfg, err := idleload.SelfSigned(certFile, keyPEM)
	if err != nil {
		benchproc.Fatalf("certificate: %v", err)
	}
	c := &cluster{bin: cfg.bin, keyFile: filepath.Join(work, "cluster.key")}
	key, err := exec.Command(cfg.bin, "admin", "keygen").Output()
	if err != nil {
		benchproc.Fatalf("%s admin keygen: %v", cfg.bin, err)
	}
	if err := os.WriteFile(c.keyFile, key, 0o600); err != nil {
		benchproc.Fatalf("%v", err)
	}
	addrs, err := benchproc.FreeAddrs(5 * cfg.nodes)
	if err != nil {
		benchproc.Fatalf("free ports: %v", err)
	}
	var peers []string
	for i := range cfg.nodes {
		a := addrs[5*i:]
		nd := &node{id: fmt.Sprintf("n%d", i+1), cluster: a[0], lmtp: a[1], imaps: a[2], metrics: a[3], pprof: a[4]}
		c.nodes = append(c.nodes, nd)
		peers = append(peers, nd.id+"="+nd.cluster)
	}
	benchproc.AtCleanup(func() {
		var wg sync.WaitGroup
		for _, nd := range c.nodes {
			if nd.proc != nil {
				wg.Go(nd.proc.Stop)
			}
		}
		wg.Wait()
	})
	benchproc.Progress("starting %d hastore serve processes (%s, shards %s) in %s", cfg.nodes, cfg.bin, cfg.shards, work)
	for _, nd := range c.nodes {
		argv := []string{cfg.bin, "serve", "--node", nd.id, "--data", filepath.Join(work, nd.id), "--listen", nd.cluster,
			"--peers", strings.Join(peers, ","), "--cluster-key-file", c.keyFile, "--insecure", "--shards", cfg.shards,
			"--lmtp", nd.lmtp, "--imaps", nd.imaps, "--mail-tls-cert", certFile, "--mail-tls-key", keyPEM,
			"--hostname", "localhost", "--metrics", nd.metrics}
		argv = append(argv, strings.Fields(cfg.serveArgs)...)
		if cfg.nodeAS > 0 {
			// A cap on the node's address space, so that a node whose
			// memory runs away dies of it (as under a container's
			// limit) instead of taking the shared host down.
			argv = append([]string{"prlimit", fmt.Sprintf("--as=%d", cfg.nodeAS), "--"}, argv...)
		}
		p, err := benchproc.Start("node "+nd.id, filepath.Join(work, nd.id+".log"), []string{"HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=",
			"HASTORE_BENCH_PPROF=" + nd.pprof}, argv...)
		if err != nil {
			benchproc.Fatalf("starting %s: %v", nd.id, err)
		}
		nd.proc = p
	}
	t0 := time.Now()
	if err := waitFor(ctx, 120*time.Second, func() error {
		for _, nd := range c.nodes {
			if !nd.proc.Alive() {
				benchproc.Fatalf("%s", nd.proc.ExitReport())
			}
		}
		return c.healthy(ctx)
	}); err != nil {
		benchproc.Fatalf("cluster not healthy: %v", err)
	}
	for _, nd := range c.nodes {
		if err := benchproc.WaitListening(ctx, nd.proc, 30*time.Second, nd.lmtp, nd.imaps); err != nil {
			benchproc.Fatalf("%v", err)
		}
	}
	benchproc.Progress("cluster healthy after %v", time.Since(t0).Round(time.Millisecond))
	return c, tlsCfg
}

// exits describes the nodes that exited though the benchmark did not kill
// them, with the line of their log that says why.
func (c *cluster) exits(killed string) []string {
	var out []string
	for _, nd := range c.nodes {
		if nd.id == killed || nd.proc.Alive() {
			continue
		}
		why := ""
		b, _ := os.ReadFile(nd.proc.LogPath)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "fatal error") || strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "runtime: out of memory") {
				why += l + "; "
			}
		}
		out = append(out, fmt.Sprintf("%s exited (%v): %s", nd.id, nd.proc.Err(), trunc(why, 160)))
	}
	return out
}

// admin runs `hastore admin ARGS` against every node, stdin fed.
func (c *cluster) admin(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	var addrs []string
	for _, nd := range c.nodes {
		if nd.proc.Alive() {
			addrs = append(addrs, nd.cluster)
		}
	}
	argv := append([]string{"admin", "--addr", strings.Join(addrs, ","), "--cluster-key-file", c.keyFile}, args...)
	cmd := exec.CommandContext(ctx, c.bin, argv...)
	cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=")
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = strings.TrimSpace(string(ee.Stderr))
		}
		return out, fmt.Errorf("hastore admin %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return out, nil
}

// healthy: a leader, and every node seen up.
func (c *cluster) healthy(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := c.admin(cctx, "", "--timeout", "5s", "status", "--json")
	if err != nil {
		return err
	}
	var st struct {
		Nodes []struct {
			ID string `json:"id"`
			Up bool   `json:"up"`
		} `json:"nodes"`
		Leader string `json:"leader"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("status --json: %v", err)
	}
	if st.Leader == "" {
		return fmt.Errorf("no leader")
	}
	up := 0
	for _, n := range st.Nodes {
		if n.Up {
			up++
		}
	}
	if up < len(c.nodes) {
		return fmt.Errorf("%d of %d nodes up", up, len(c.nodes))
	}
	return nil
}

// electionLines counts the Raft elections started and won in the nodes' logs.
func (c *cluster) electionLines(dir string) (started, won int) {
	var logs []string
	for _, nd := range c.nodes {
		logs = append(logs, filepath.Join(dir, nd.id+".log"))
	}
	return idleload.Elections(logs...)
}

func waitFor(ctx context.Context, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
	}
}
