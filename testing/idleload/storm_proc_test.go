//go:build linux

package idleload_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hastore/testing/cluster"
	"hastore/testing/idleload"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.RemoveHastoreBinary()
	os.Exit(code)
}

// TestProcLoginStormHashesOncePerUser: a login storm on a real 3-node
// cluster — every user's devices connect over IMAPS to all three nodes at
// once, LOGIN, SELECT, IDLE — costs about one argon2id hash per user in
// the whole cluster, not one per node that got one of the user's devices
// (up to 3 per user): the nodes share verified logins and say which they
// are hashing (mailbox/credcache.go). The count is the nodes' own counter
// (hastore_password_hashes_total on /metrics), taken before and after.
func TestProcLoginStormHashesOncePerUser(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-process cluster and 360 IMAPS clients")
	}
	const (
		users   = 60
		devices = 6 // two per node
		domain  = "storm.test"
	)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	tlsCfg, err := idleload.SelfSigned(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ports := cluster.FreePorts(t, 6)
	imaps, metrics := ports[:3], ports[3:]
	c := cluster.StartProcesses(t, cluster.ProcOptions{Nodes: 3, NodeArgs: func(i int) []string {
		return []string{"--imaps", imaps[i], "--mail-tls-cert", certFile, "--mail-tls-key", keyFile,
			"--hostname", "localhost", "--metrics", metrics[i]}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	admin := func(ctx context.Context, stdin string, args ...string) ([]byte, error) {
		full := append([]string{"admin", "--addr", strings.Join(c.Addrs, ","), "--cluster-key-file", c.KeyFile}, args...)
		cmd := exec.CommandContext(ctx, c.Bin, full...)
		cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HASTORE_CRED=")
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			return out.Bytes(), fmt.Errorf("hastore admin %s: %v: %s", strings.Join(args, " "), err, errOut.Bytes())
		}
		return out.Bytes(), nil
	}
	var us []idleload.User
	for i := range users {
		a := fmt.Sprintf("u%03d@%s", i, domain)
		us = append(us, idleload.User{Addr: a, Password: "pw-" + a})
	}
	if err := idleload.AddUsers(ctx, admin, domain, us, nil); err != nil {
		t.Fatal(err)
	}
	count := func() (total int64, per []idleload.AuthCount) {
		for i, m := range metrics {
			a, err := idleload.ScrapeAuth(ctx, m)
			if err != nil {
				t.Fatalf("node %d: %v", i+1, err)
			}
			total += a.Hashes
			per = append(per, a)
		}
		return total, per
	}
	before, per0 := count()

	pool := idleload.New(idleload.Config{Addrs: imaps, TLS: tlsCfg, Users: us, Devices: devices})
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	start := time.Now()
	pool.Start(pctx)
	select {
	case <-pool.AllIdle():
	case <-time.After(5 * time.Minute):
		s, f := pool.Attempts()
		t.Fatalf("%d of %d clients IDLE after 5 minutes (%d sessions, %d failed)", pool.Idle(), pool.Size(), s, f)
	}
	took := time.Since(start)
	after, per1 := count()
	hashes := after - before
	var nodes []string
	for i := range per1 {
		nodes = append(nodes, fmt.Sprintf("n%d %s", i+1, per1[i].Sub(per0[i])))
	}
	t.Logf("%d clients of %d users IDLE after %v: %d argon2id hashes in the cluster (per node hashes / cache hits / misses / slot timeouts: %s)",
		pool.Size(), users, took.Round(time.Millisecond), hashes, strings.Join(nodes, "; "))
	if hashes < users {
		t.Errorf("%d hashes for %d users' first logins: a password no node verified must be hashed", hashes, users)
	}
	// Each user's first login is hashed once; a few more may race (two
	// nodes starting the same user within the moment their words take to
	// cross), never one per node.
	if limit := users * 3 / 2; hashes > int64(limit) {
		t.Errorf("%d argon2id hashes for %d users' logins over 3 nodes (%.2f per user), want at most %d",
			hashes, users, float64(hashes)/users, limit)
	}
}
