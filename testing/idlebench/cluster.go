package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"hastore/testing/benchproc"
)

// node is one `hastore serve` process.
type node struct {
	id, cluster, lmtp, imaps string
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
	pool, err := selfSigned(certFile, keyPEM)
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
	addrs, err := benchproc.FreeAddrs(3 * cfg.nodes)
	if err != nil {
		benchproc.Fatalf("free ports: %v", err)
	}
	var peers []string
	for i := range cfg.nodes {
		nd := &node{id: fmt.Sprintf("n%d", i+1), cluster: addrs[3*i], lmtp: addrs[3*i+1], imaps: addrs[3*i+2]}
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
			"--peers", strings.Join(peers, ","), "--cluster-key-file", c.keyFile, "--shards", cfg.shards,
			"--lmtp", nd.lmtp, "--imaps", nd.imaps, "--mail-tls-cert", certFile, "--mail-tls-key", keyPEM,
			"--hostname", "localhost"}
		argv = append(argv, strings.Fields(cfg.serveArgs)...)
		if cfg.nodeAS > 0 {
			// A cap on the node's address space, so that a node whose
			// memory runs away dies of it (as under a container's
			// limit) instead of taking the shared host down.
			argv = append([]string{"prlimit", fmt.Sprintf("--as=%d", cfg.nodeAS), "--"}, argv...)
		}
		p, err := benchproc.Start("node "+nd.id, filepath.Join(work, nd.id+".log"), []string{"HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE="}, argv...)
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
	return c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(64)}
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

// addUsers creates the domain and users, a few admin calls at a time.
func (c *cluster) addUsers(ctx context.Context, domain string, users []string, password func(string) string) {
	if _, err := c.admin(ctx, "", "domain", "add", domain); err != nil {
		benchproc.Fatalf("%v", err)
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for u := range work {
				var err error
				for try := 0; try < 5; try++ {
					if _, err = c.admin(ctx, password(u)+"\n", "user", "add", u); err == nil || strings.Contains(err.Error(), "exists") {
						err = nil
						break
					}
					time.Sleep(time.Second)
				}
				if err != nil {
					benchproc.Fatalf("%v", err)
				}
			}
		})
	}
	for i, u := range users {
		work <- u
		if (i+1)%100 == 0 {
			benchproc.Progress("%d/%d users created", i+1, len(users))
		}
	}
	close(work)
	wg.Wait()
}

// electionLines counts, over the nodes' logs, the Raft elections started
// and won so far (hashicorp/raft's "entering candidate state" and
// "election won" lines).
func (c *cluster) electionLines(dir string) (started, won int) {
	for _, nd := range c.nodes {
		b, _ := os.ReadFile(filepath.Join(dir, nd.id+".log"))
		started += strings.Count(string(b), "entering candidate state")
		won += strings.Count(string(b), "election won")
	}
	return started, won
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

// selfSigned writes a self-signed certificate for 127.0.0.1 and returns a
// pool that trusts it.
func selfSigned(certFile, keyFile string) (*x509.CertPool, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idlebench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
}
