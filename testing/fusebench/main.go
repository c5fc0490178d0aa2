// Command fusebench prints what a FUSE mount of a site costs next to a
// local directory: small-file work (create, stat, read of many 4 KiB
// files) and 1 MiB sequential write and read (with fio, if installed),
// through `hastore mount` of a loopback cluster of real `hastore serve`
// processes, side by side with the same work on a directory of the local
// disk.
//
//	go run ./testing/fusebench [-files 10000] [-conc 8] [-seq 256MiB] [-randsize 64MiB] [-direct=true] [-nodes 3] [-base hastore-old]
//
// With -base, a second site is mounted with that binary (the cluster runs
// this version) and each row is measured on the local directory, the base
// mount and this one back to back, so that the before/after ratio of a
// change comes from one run on a machine whose load varies.
//
// It needs root (or a fusermount3 that lets the user mount) and /dev/fuse.
// It builds cmd/hastore into a temporary directory, starts the nodes on
// free loopback ports, creates a site, mounts it, and removes everything
// when it ends (also on Ctrl-C).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

var (
	cleanupMu  sync.Mutex
	cleanupFns []func()
)

func atCleanup(fn func()) {
	cleanupMu.Lock()
	cleanupFns = append(cleanupFns, fn)
	cleanupMu.Unlock()
}

func cleanup() {
	cleanupMu.Lock()
	fns := cleanupFns
	cleanupFns = nil
	cleanupMu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fusebench: "+format+"\n", args...)
	cleanup()
	os.Exit(1)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fusebench: "+format+"\n", args...)
}

func main() {
	files := flag.Int("files", 10000, "small files to create, stat and read")
	size := flag.Int("size", 4096, "size of a small file")
	conc := flag.Int("conc", 8, "processes working on the small files at once (each its own directories)")
	seq := flag.String("seq", "256MiB", "size of the fio sequential write and read (1 MiB blocks)")
	nodes := flag.Int("nodes", 3, "cluster nodes")
	direct := flag.Bool("direct", true, "fio with O_DIRECT (no page cache), as the issue's figures")
	randSize := flag.String("randsize", "64MiB", "size of the file each fio random-read job reads (4 jobs)")
	baseLast := flag.Bool("base-last", false, "with -base, measure the base mount after this one (to see what the order costs: a mount measured after another pays for the cluster's work left from it)")
	only := flag.String("rows", "create,stat,read,seqwrite,pacedwrite,seqread,randread", "the rows to measure (stat and read need create)")
	base := flag.String("base", "", "a hastore binary of another version (say, before a change): its mount of a second site is measured too, back to back with this one's, against the same cluster")
	dir := flag.String("dir", "", "parent of the local directory and the cluster's data (default: the temp dir)")
	flag.Parse()
	seqBytes, err := parseSize(*seq)
	if err != nil {
		fatalf("-seq: %v", err)
	}
	randBytes, err := parseSize(*randSize)
	if err != nil {
		fatalf("-randsize: %v", err)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fatalf("no FUSE: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nfusebench: %v: cleaning up\n", s)
		cleanup()
		os.Exit(130)
	}()
	defer cleanup()

	work, err := os.MkdirTemp(*dir, "fusebench-")
	if err != nil {
		fatalf("%v", err)
	}
	atCleanup(func() {
		// The mounts' logs outlive the run (they say why a row failed).
		for _, name := range []string{"mount.log", "mount-base.log"} {
			if b, err := os.ReadFile(filepath.Join(work, name)); err == nil {
				out := filepath.Join(os.TempDir(), "fusebench-"+name)
				if os.WriteFile(out, b, 0o644) == nil {
					progress("%s kept as %s", name, out)
				}
			}
		}
		os.RemoveAll(work)
	})
	progress("building cmd/hastore")
	bin := filepath.Join(work, "hastore")
	if out, err := exec.Command("go", "build", "-o", bin, "hastore/cmd/hastore").CombinedOutput(); err != nil {
		fatalf("go build: %v\n%s", err, out)
	}
	addrs := startCluster(bin, work, *nodes)
	key := filepath.Join(work, "cluster.key")
	admin := func(args ...string) ([]byte, error) {
		return exec.Command(bin, append([]string{"admin", "--addr", strings.Join(addrs, ","), "--cluster-key-file", key}, args...)...).CombinedOutput()
	}
	addSite := func(name string) {
		progress("creating the site %s", name)
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := admin("site", "add", name)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fatalf("site add: %v\n%s", err, out)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	addSite("bench.test")
	mnt := filepath.Join(work, "mnt")
	local := filepath.Join(work, "local")
	baseMnt := filepath.Join(work, "mnt-base")
	for _, d := range []string{mnt, local, baseMnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			fatalf("%v", err)
		}
	}
	mountPID := mountSite(bin, key, addrs, mnt, work, "bench.test", "mount.log")
	basePID := 0
	if *base != "" {
		addSite("base.test")
		basePID = mountSite(*base, key, addrs, baseMnt, work, "base.test", "mount-base.log")
	}

	type row struct {
		what              string
		unit              string
		local, base, fuse float64
		// CPU seconds the mount and the nodes used while the mount's
		// (and the base mount's) measurement ran: unlike rates, they
		// hardly depend on what else the machine runs.
		cpuMount, cpuNodes, cpuBaseMount, cpuBaseNodes float64
	}
	var rows []row
	want := map[string]bool{}
	for _, r := range strings.Split(*only, ",") {
		want[strings.TrimSpace(r)] = true
	}
	measure := func(what, unit string, fn func(root string) (float64, error)) {
		r := row{what: what, unit: unit}
		type target struct {
			root               string
			out                *float64
			pid                int
			cpuMount, cpuNodes *float64
		}
		targets := []target{{local, &r.local, 0, nil, nil}}
		if *base != "" && !*baseLast {
			targets = append(targets, target{baseMnt, &r.base, basePID, &r.cpuBaseMount, &r.cpuBaseNodes})
		}
		targets = append(targets, target{mnt, &r.fuse, mountPID, &r.cpuMount, &r.cpuNodes})
		if *base != "" && *baseLast {
			targets = append(targets, target{baseMnt, &r.base, basePID, &r.cpuBaseMount, &r.cpuBaseNodes})
		}
		for _, tg := range targets {
			progress("%s in %s", what, tg.root)
			m0, n0 := cpuSeconds(tg.pid), nodesCPU()
			v, err := fn(tg.root)
			if err != nil {
				fatalf("%s in %s: %v", what, tg.root, err)
			}
			*tg.out = v
			if tg.pid != 0 {
				*tg.cpuMount, *tg.cpuNodes = cpuSeconds(tg.pid)-m0, nodesCPU()-n0
			}
		}
		rows = append(rows, r)
	}
	data := make([]byte, *size)
	rand.Read(data)
	n := *files
	if want["create"] {
		measure(fmt.Sprintf("create %d × %d B files", n, *size), "files/s", func(root string) (float64, error) {
			return perSecond(n)(parallel(root, n, *conc, func(p string) error { return os.WriteFile(p, data, 0o644) }))
		})
	}
	if want["stat"] {
		measure("stat them (attributes not cached)", "files/s", func(root string) (float64, error) {
			coldCaches()
			return perSecond(n)(parallel(root, n, *conc, func(p string) error { _, err := os.Stat(p); return err }))
		})
	}
	if want["read"] {
		measure("read them (not cached)", "files/s", func(root string) (float64, error) {
			coldCaches()
			return perSecond(n)(parallel(root, n, *conc, func(p string) error {
				b, err := os.ReadFile(p)
				if err == nil && !bytes.Equal(b, data) {
					err = errors.New("read back other bytes")
				}
				return err
			}))
		})
	}
	if fio, err := exec.LookPath("fio"); err == nil {
		if want["seqwrite"] {
			measure(fmt.Sprintf("fio sequential write, 1 MiB blocks, %s, fsync at end", *seq), "MB/s", func(root string) (float64, error) {
				return runFio(fio, root, "write", seqBytes, *direct)
			})
		}
		if want["pacedwrite"] {
			// An application that writes slower than the cluster
			// stores (a download, a backup stream): what is left to
			// do at fsync is what the run's time shows.
			measure("fio sequential write at 20 MB/s, 1 MiB blocks, 256MiB, fsync at end", "s fsync", func(root string) (float64, error) {
				return runFioPaced(fio, root, 256<<20, "20m", *direct)
			})
		}
		if want["seqread"] {
			measure(fmt.Sprintf("fio sequential read, 1 MiB blocks, %s (not cached)", *seq), "MB/s", func(root string) (float64, error) {
				coldCaches()
				return runFio(fio, root, "read", seqBytes, *direct)
			})
		}
		if want["randread"] {
			measure(fmt.Sprintf("fio random read, 4 KiB blocks, 4 jobs × %s, 10 s", *randSize), "IOPS", func(root string) (float64, error) {
				return runFioRand(fio, root, randBytes, *direct)
			})
		}
	} else {
		progress("fio is not installed (Debian package fio): no sequential rows")
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	if *base != "" {
		fmt.Fprintf(tw, "operation\tunit\tlocal dir\tbase mount\thastore mount\tbase/local\tmount/local\tmount/base\tCPU s base: mount+nodes\tCPU s: mount+nodes\t\n")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.3f\t%.3f\t%.2f\t%.1f+%.1f\t%.1f+%.1f\t\n", r.what, r.unit, num(r.local), num(r.base), num(r.fuse), r.base/r.local, r.fuse/r.local, r.fuse/r.base,
				r.cpuBaseMount, r.cpuBaseNodes, r.cpuMount, r.cpuNodes)
		}
	} else {
		fmt.Fprintf(tw, "operation\tunit\tlocal dir\thastore mount\tmount/local\tCPU s: mount+nodes\t\n")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f\t%.1f+%.1f\t\n", r.what, r.unit, num(r.local), num(r.fuse), r.fuse/r.local, r.cpuMount, r.cpuNodes)
		}
	}
	tw.Flush()
	fmt.Printf("(%d-node cluster on loopback, scheme 2+1, %d workers; the mount talks to the Raft leader)\n", *nodes, *conc)
	for _, name := range []string{"mount.log", "mount-base.log"} {
		if b, err := os.ReadFile(filepath.Join(work, name)); err == nil {
			lines := strings.Count(string(b), "\n")
			fmt.Printf("%s: %d lines, %d of them trySplice\n", name, lines, strings.Count(string(b), "trySplice"))
			if lines <= 20 {
				os.Stdout.Write(b)
			}
		}
	}
}

// parallel runs fn on n files spread over conc workers, each in its own
// directories of 100 files, and returns the time it took.
func parallel(root string, n, conc int, fn func(path string) error) (time.Duration, error) {
	for d := 0; d*100 < n; d++ {
		if err := os.MkdirAll(filepath.Join(root, "small", strconv.Itoa(d)), 0o755); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if (i/100)%conc != w {
					continue
				}
				p := filepath.Join(root, "small", strconv.Itoa(i/100), strconv.Itoa(i)+".html")
				if err := fn(p); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return time.Since(start), <-errs
}

// perSecond turns the time n operations took into operations per second.
func perSecond(n int) func(time.Duration, error) (float64, error) {
	return func(d time.Duration, err error) (float64, error) { return float64(n) / d.Seconds(), err }
}

// coldCaches drops the kernel's page, dentry and inode caches (as root),
// and waits out the mount's one-second attribute timeout.
func coldCaches() {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
	time.Sleep(1100 * time.Millisecond)
}

func runFio(fio, dir, rw string, size int64, direct bool) (float64, error) {
	args := []string{"--name=seq", "--directory=" + dir, "--rw=" + rw, "--bs=1M", "--size=" + strconv.FormatInt(size, 10),
		"--ioengine=psync", "--numjobs=1", "--output-format=json", "--direct=" + fioBool(direct)}
	if rw == "write" {
		args = append(args, "--end_fsync=1")
	}
	res, err := fioRun(fio, args)
	if err != nil {
		return 0, err
	}
	bw := res.Read.BwBytes
	if rw == "write" {
		bw = res.Write.BwBytes
	}
	return bw / 1e6, nil
}

// runFioPaced writes size bytes at rate and returns how long the final
// fsync took: the run's time less the time the paced writes take.
func runFioPaced(fio, dir string, size int64, rate string, direct bool) (float64, error) {
	args := []string{"--name=paced", "--directory=" + dir, "--rw=write", "--bs=1M", "--size=" + strconv.FormatInt(size, 10),
		"--ioengine=psync", "--numjobs=1", "--output-format=json", "--direct=" + fioBool(direct), "--end_fsync=1", "--rate=" + rate}
	start := time.Now()
	res, err := fioRun(fio, args)
	if err != nil {
		return 0, err
	}
	_ = res
	// fio's start-up and the paced writes take size/rate; the rest is
	// the fsync (and what the writes fell behind the rate).
	return time.Since(start).Seconds() - float64(size)/rateBytes(rate), nil
}

// rateBytes parses fio's rate ("20m": MiB per second).
func rateBytes(rate string) float64 {
	v, _ := strconv.ParseFloat(strings.TrimSuffix(rate, "m"), 64)
	return v * (1 << 20)
}

// runFioRand reads 4 KiB blocks at random offsets of one file per job, 4
// jobs, for 10 s; the files are laid out (written) first, and the page
// cache is dropped before the reads.
func runFioRand(fio, dir string, size int64, direct bool) (float64, error) {
	args := []string{"--name=rand", "--directory=" + dir, "--rw=randread", "--bs=4k", "--size=" + strconv.FormatInt(size, 10),
		"--ioengine=psync", "--numjobs=4", "--group_reporting", "--output-format=json", "--direct=" + fioBool(direct)}
	// Lay the files out first, so that the timed run only reads.
	if _, err := fioRun(fio, append(args, "--create_only=1")); err != nil {
		return 0, err
	}
	coldCaches()
	res, err := fioRun(fio, append(args, "--time_based", "--runtime=10"))
	if err != nil {
		return 0, err
	}
	return res.Read.IOPS, nil
}

func fioBool(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

type fioJob struct {
	Read struct {
		BwBytes float64 `json:"bw_bytes"`
		IOPS    float64 `json:"iops"`
	} `json:"read"`
	Write struct {
		BwBytes float64 `json:"bw_bytes"`
	} `json:"write"`
}

func fioRun(fio string, args []string) (fioJob, error) {
	out, err := exec.Command(fio, args...).Output()
	if err != nil {
		return fioJob{}, fmt.Errorf("fio: %v\n%s", err, out)
	}
	var res struct {
		Jobs []fioJob `json:"jobs"`
	}
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:] // fio may print notes first
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Jobs) == 0 {
		return fioJob{}, fmt.Errorf("fio output: %v", err)
	}
	return res.Jobs[0], nil
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return v * mult, nil
}

func freeAddrs(n int) []string {
	var ls []net.Listener
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fatalf("%v", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// startCluster starts n hastore serve processes and returns their
// addresses; they are killed at cleanup.
// num prints a figure with the digits that matter.
func num(v float64) string {
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// nodePIDs are the cluster's processes, for nodesCPU.
var nodePIDs []int

// cpuSeconds is the CPU time (user and system) process pid has used.
func cpuSeconds(pid int) float64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func nodesCPU() float64 {
	var t float64
	for _, pid := range nodePIDs {
		t += cpuSeconds(pid)
	}
	return t
}

func startCluster(bin, work string, n int) []string {
	key, err := exec.Command(bin, "admin", "keygen").Output()
	if err != nil {
		fatalf("keygen: %v", err)
	}
	keyFile := filepath.Join(work, "cluster.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		fatalf("%v", err)
	}
	addrs := freeAddrs(n)
	var peers []string
	for i, a := range addrs {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, a))
	}
	progress("starting %d nodes", n)
	for i, a := range addrs {
		id := fmt.Sprintf("n%d", i+1)
		logf, err := os.Create(filepath.Join(work, id+".log"))
		if err != nil {
			fatalf("%v", err)
		}
		cmd := exec.Command(bin, "serve", "--node", id, "--data", filepath.Join(work, id), "--listen", a,
			"--peers", strings.Join(peers, ","), "--cluster-key-file", keyFile, "--insecure", "--shards", "2+1", "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			fatalf("starting %s: %v", id, err)
		}
		nodePIDs = append(nodePIDs, cmd.Process.Pid)
		atCleanup(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
			logf.Close()
		})
	}
	return addrs
}

// mountSite runs hastore mount on mnt and waits until it serves.
func mountSite(bin, key string, addrs []string, mnt, work, site, logName string) int {
	logf, err := os.Create(filepath.Join(work, logName))
	if err != nil {
		fatalf("%v", err)
	}
	cmd := exec.Command(bin, "mount", "--addr", strings.Join(addrs, ","), "--cluster-key-file", key, "--site", site, mnt)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fatalf("hastore mount: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	atCleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		var st, parent syscall.Stat_t
		if syscall.Stat(mnt, &st) == nil && syscall.Stat(filepath.Dir(mnt), &parent) == nil && st.Dev != parent.Dev {
			return cmd.Process.Pid
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(work, logName))
			fatalf("hastore mount exited:\n%s", b)
		case <-ctx.Done():
			fatalf("hastore mount did not mount %s in 30 s", mnt)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
