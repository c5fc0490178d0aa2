//go:build linux

package fuse_test

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	webfuse "hastore/webfs/fuse"
)

// TestFailover SIGKILLs the node a mount talks to (the Raft leader, the
// hardest case: the cluster must elect another before it takes changes)
// in the middle of a cp -r into the mount: the copy completes without an
// error, with the right contents, as another mount through the surviving
// nodes sees them.
func TestFailover(t *testing.T) {
	needFUSE(t)
	mustTool(t, "cp")
	c := startCluster(t)
	const site = "failover.test"
	c.addSite(t, site)
	target := c.Leader()
	if target < 0 {
		t.Fatal("no leader")
	}
	others := []int{(target + 1) % 3, (target + 2) % 3}
	mnt, _ := c.mount(t, site, webfuse.Options{}, target, others[0], others[1])
	src := filepath.Join(t.TempDir(), "src")
	genTree(t, src, 300, 7)

	// Large files are written (and committed on close) meanwhile, so
	// that the kill likely lands in the middle of streaming one.
	bigs := make([][]byte, 5)
	for i := range bigs {
		bigs[i] = make([]byte, 6<<20+i)
		rand.NewChaCha8([32]byte{byte(i)}).Read(bigs[i])
	}
	bigDone := make(chan error, 1)
	go func() {
		for i, b := range bigs {
			if err := os.WriteFile(filepath.Join(mnt, fmt.Sprintf("big%d", i)), b, 0o644); err != nil {
				bigDone <- err
				return
			}
		}
		bigDone <- nil
	}()

	start := time.Now()
	cmd := exec.Command("cp", "-rv", src, filepath.Join(mnt, "copy"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	copied := 0
	for copied < 60 && sc.Scan() {
		copied++
	}
	t.Logf("killing node %s (the leader, the node the mount talks to) after %d files copied, %v in", c.IDs[target], copied, time.Since(start))
	c.Kill(target)
	killed := time.Now()
	for sc.Scan() {
		copied++
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("cp -r across the failover: %v\n%s", err, stderr.String())
	}
	t.Logf("cp -r finished %v after the kill (%d lines)", time.Since(killed), copied)
	if err := <-bigDone; err != nil {
		t.Fatalf("writing large files across the failover: %v", err)
	}
	sameTree(t, src, filepath.Join(mnt, "copy"), false)

	// What the cluster holds, through the surviving nodes only.
	other, _ := c.mount(t, site, webfuse.Options{}, others...)
	sameTree(t, src, filepath.Join(other, "copy"), false)
	for i, want := range bigs {
		if got, err := os.ReadFile(filepath.Join(other, fmt.Sprintf("big%d", i))); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("big%d: %d bytes, %v; want the %d bytes written", i, len(got), err, len(want))
		}
	}
}
