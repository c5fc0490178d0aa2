package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FUSE load: the site is mounted with the real `hastore mount` (a child
// process) through one stable address per cluster slot (a forwarder that
// follows the slot's node across replace faults), and workers write,
// rename and read files through it. Failover happens inside the mount.

const fuseDir = "fz" // under the site's root: the FUSE workers' files

// fuseFile is one acknowledged file: close(2) (after write and fsync)
// returned nil.
type fuseFile struct {
	name string // latest acknowledged name (relative to the site root)
	alt  string // a rename that failed: the file may be under this name instead
	data []byte
}

type fuseState struct {
	mnt   string
	cmd   *exec.Cmd
	done  chan struct{}
	mu    sync.Mutex
	files [][]*fuseFile // per worker
	seq   int
}

// startMount mounts the site on work/mnt with `hastore mount` and
// registers its unmount (which runs before the nodes are stopped).
func startMount(c *cluster, work string) (*fuseState, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("not root: cannot mount FUSE")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("no /dev/fuse: %v", err)
	}
	mnt := filepath.Join(work, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(work, "mount.log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(c.bin, "mount", "--addr", strings.Join(c.slotAddrs(), ","), "--cluster-key-file", c.nodes()[0].keyFile,
		"--site", siteName, "--retry-for", "30s", mnt)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	fs := &fuseState{mnt: mnt, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); lf.Close(); close(fs.done) }()
	atCleanup(fs.unmount)
	err = waitFor(30*time.Second, func() error {
		select {
		case <-fs.done:
			return errors.New("hastore mount exited")
		default:
		}
		if !isMounted(mnt) {
			return errors.New("not mounted yet")
		}
		return os.MkdirAll(filepath.Join(mnt, fuseDir), 0o755)
	})
	if err != nil {
		return nil, fmt.Errorf("%v\n%s", err, tailLog(logPath))
	}
	return fs, nil
}

func isMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// unmount stops the mount (SIGTERM commits and unmounts), then makes
// sure nothing is left mounted.
func (fs *fuseState) unmount() {
	_ = syscall.Kill(-fs.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-fs.done:
	case <-time.After(40 * time.Second):
		_ = syscall.Kill(-fs.cmd.Process.Pid, syscall.SIGKILL)
		<-fs.done
	}
	if isMounted(fs.mnt) {
		if out, err := exec.Command("umount", "-l", fs.mnt).CombinedOutput(); err != nil {
			logf("umount -l %s: %v: %s", fs.mnt, err, out)
		}
	}
}

// fuseWorker writes, renames and reads back files through the mount.
func (s *state) fuseWorker(ctx context.Context, worker int, seed uint64, pause time.Duration) {
	fs := s.fuse
	r := rand.New(rand.NewPCG(seed, uint64(3000+worker)))
	fs.mu.Lock()
	for len(fs.files) <= worker {
		fs.files = append(fs.files, nil)
	}
	fs.mu.Unlock()
	dir := filepath.Join(fuseDir, fmt.Sprintf("w%d", worker))
	for ctx.Err() == nil {
		if err := os.MkdirAll(filepath.Join(fs.mnt, dir), 0o755); err == nil {
			break
		}
		sleepCtx(ctx, time.Second)
	}
	for ctx.Err() == nil {
		fs.mu.Lock()
		mine := fs.files[worker]
		var pick *fuseFile
		if len(mine) > 0 {
			pick = mine[r.IntN(len(mine))]
		}
		fs.seq++
		seq := fs.seq
		fs.mu.Unlock()
		p := r.Float64()
		switch {
		case pick == nil || p < 0.5:
			s.fuseWrite(worker, r, filepath.Join(dir, fmt.Sprintf("f%05d", seq)))
		case p < 0.65 && pick.alt == "":
			s.fuseRename(worker, pick, fmt.Sprintf("%s.r%d", strings.SplitN(pick.name, ".r", 2)[0], seq))
		case pick.alt == "":
			s.fuseRead(worker, pick)
		}
		sleepCtx(ctx, pause)
	}
}

// record adds a FUSE op; one that took longer than the op timeout counts
// as failed for availability (it is still acknowledged if it returned nil).
func (s *state) recordFuse(kind string, worker int, start time.Time, err error) {
	o := op{Proto: "fuse", Kind: kind, Worker: worker, Start: start, End: time.Now(), Node: "mount", Attempts: 1}
	if err == nil && o.End.Sub(start) > s.opTO {
		err = fmt.Errorf("took %v (over the op timeout)", o.End.Sub(start).Round(time.Millisecond))
	}
	o.OK = err == nil
	if err != nil {
		o.Err = err.Error()
	}
	s.rec.add(o)
}

func fuseContent(r *rand.Rand, name string) []byte {
	var n int
	switch r.IntN(4) {
	case 0:
		n = 1 + r.IntN(100)
	case 1:
		n = 100 + r.IntN(10_000)
	case 2:
		n = 10_000 + r.IntN(200_000)
	default:
		n = 200_000 + r.IntN(1<<20-200_000)
	}
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	copy(b, name) // distinct even when tiny
	return b
}

func (s *state) fuseWrite(worker int, r *rand.Rand, name string) {
	data := fuseContent(r, name)
	start := time.Now()
	err := func() error {
		f, err := os.OpenFile(filepath.Join(s.fuse.mnt, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		_, werr := f.Write(data)
		serr := f.Sync()
		cerr := f.Close()
		return errors.Join(werr, serr, cerr)
	}()
	s.recordFuse("write", worker, start, err)
	if err == nil {
		s.fuse.mu.Lock()
		s.fuse.files[worker] = append(s.fuse.files[worker], &fuseFile{name: name, data: data})
		s.fuse.mu.Unlock()
	}
}

func (s *state) fuseRename(worker int, f *fuseFile, to string) {
	start := time.Now()
	err := os.Rename(filepath.Join(s.fuse.mnt, f.name), filepath.Join(s.fuse.mnt, to))
	s.recordFuse("rename", worker, start, err)
	s.fuse.mu.Lock()
	if err == nil {
		f.name = to
	} else {
		f.alt = to // unknown outcome: either name
	}
	s.fuse.mu.Unlock()
}

func (s *state) fuseRead(worker int, f *fuseFile) {
	start := time.Now()
	b, err := os.ReadFile(filepath.Join(s.fuse.mnt, f.name))
	if err == nil && !bytes.Equal(b, f.data) {
		s.noteCorrupt("FUSE read of /%s: %d bytes (sha %x), wrote %d (sha %x)", f.name, len(b), sha256.Sum256(b), len(f.data), sha256.Sum256(f.data))
		err = errors.New("corrupt content")
	}
	s.recordFuse("read", worker, start, err)
}

// verifyFuse checks every acknowledged file, under its latest acknowledged
// name, over HTTP from the nodes in turn and through the mount.
func (s *state) verifyFuse(v *verdict) {
	if s.fuse == nil {
		return
	}
	s.fuse.mu.Lock()
	var files []*fuseFile
	for _, l := range s.fuse.files {
		files = append(files, l...)
	}
	s.fuse.mu.Unlock()
	cl := &http.Client{}
	nodes := s.c.nodes()
	for i, f := range files {
		v.Acked++
		v.FuseAcked++
		names := []string{f.name}
		if f.alt != "" {
			names = append(names, f.alt)
		}
		found, bad, errs := "", false, []string{}
		for _, name := range names {
			var got []byte
			var status int
			var err error
			for try := range len(nodes) {
				nd := nodes[(i+try)%len(nodes)]
				got, status, err = httpGet(cl, nd, name)
				if err == nil && (status == 200 || status == 404) {
					break
				}
				errs = append(errs, fmt.Sprintf("%s: %v %d", nd.id, err, status))
			}
			if err != nil || status != 200 {
				continue
			}
			if !bytes.Equal(got, f.data) {
				s.noteCorrupt("final HTTP GET /%s: %d bytes (sha %x), wrote %d through FUSE (sha %x)", name, len(got), sha256.Sum256(got), len(f.data), sha256.Sum256(f.data))
				bad = true
				continue
			}
			found = name
			break
		}
		if found == "" {
			if !bad {
				v.Lost++
				v.FuseLost++
				v.LostIDs = append(v.LostIDs, "fuse:/"+strings.Join(names, "|"))
				if len(errs) > 0 && len(v.Errors) < 30 {
					v.Errors = append(v.Errors, fmt.Sprintf("final GET of FUSE file /%s: %s", f.name, strings.Join(errs, "; ")))
				}
			}
			continue
		}
		// and through the mount
		b, err := readTimeout(filepath.Join(s.fuse.mnt, found), 60*time.Second)
		switch {
		case err != nil:
			v.FuseMountBad++
			if len(v.Errors) < 30 {
				v.Errors = append(v.Errors, fmt.Sprintf("final read of /%s through the mount: %v", found, err))
			}
		case !bytes.Equal(b, f.data):
			s.noteCorrupt("final read of /%s through the mount: %d bytes (sha %x), wrote %d (sha %x)", found, len(b), sha256.Sum256(b), len(f.data), sha256.Sum256(f.data))
		}
	}
}

func httpGet(cl *http.Client, nd *node, p string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+nd.http+"/"+p, nil)
	req.Host = siteName
	resp, err := cl.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

// readTimeout reads a file without hanging the verification forever on
// a stuck mount.
func readTimeout(p string, d time.Duration) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() { b, err := os.ReadFile(p); ch <- res{b, err} }()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("no answer in %v", d)
	}
}
