package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Each node's data directory is its own tmpfs when the disk-full fault is
// on, so that filling it up hits that node only. A node stores some 45 MB
// a minute under the load (nothing is deleted), so 4 GiB holds a 30-minute
// run; tmpfs takes memory only for what is written.
const nodeFSSize = 4 << 30

func mountNodeFS(c *cluster) string {
	if os.Geteuid() != 0 {
		return "not root: cannot mount a tmpfs per node"
	}
	for _, nd := range c.nodes() {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", nodeFSSize), "tmpfs", nd.dir).CombinedOutput(); err != nil {
			unmountNodeFS(c)
			return fmt.Sprintf("mount -t tmpfs: %v: %s", err, lastLine(string(out)))
		}
		nd.tmpfs = true
		_ = os.Chmod(nd.dir, 0o755)
		nd.chown()
	}
	return ""
}

// mountOneFS gives a fresh node (see the replace fault) its own tmpfs too.
func mountOneFS(nd *node) error {
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", nodeFSSize), "tmpfs", nd.dir).CombinedOutput(); err != nil {
		return fmt.Errorf("mount -t tmpfs: %v: %s", err, lastLine(string(out)))
	}
	nd.tmpfs = true
	_ = os.Chmod(nd.dir, 0o755)
	nd.chown()
	return nil
}

func unmountNodeFS(c *cluster) {
	for _, nd := range c.all() {
		if nd.tmpfs {
			if out, err := exec.Command("umount", "-l", nd.dir).CombinedOutput(); err != nil {
				logf("umount %s: %v: %s", nd.dir, err, out)
			}
			nd.tmpfs = false
		}
	}
}

// fillDisk leaves only leave bytes free on nd's file system.
func fillDisk(nd *node, leave int64) (string, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(nd.dir, &st); err != nil {
		return "", err
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	size := free - leave
	if size <= 0 {
		return "", fmt.Errorf("only %d bytes free already", free)
	}
	p := filepath.Join(nd.dir, "chaos-ballast")
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		os.Remove(p)
		return "", fmt.Errorf("fallocate %d: %w", size, err)
	}
	return p, nil
}
