// Command webbench compares the HTTP serving of hastore's web sites with
// nginx serving the same files from local disk, on the same machine in the
// same run: requests/s for a 4 KiB file and MB/s for a 10 MiB file, with
// wrk over keep-alive connections (50 by default).
//
//	go run ./testing/webbench [-duration 10s] [-conns 50] [-threads 2]
//
// It builds cmd/hastore into a temporary directory, starts a loopback
// cluster of 3 `hastore serve --http` processes on free ports, waits for a
// leader, creates a site with `hastore admin site add` and uploads a
// directory holding the two files with `hastore admin site put`, checks that
// every node serves them byte for byte, and starts nginx (generated config,
// `daemon off`, pid and logs in the temporary directory, a free loopback
// port, root = the same local directory, sendfile on, access log off —
// hastore runs with --log-level warn, so it writes no access log either).
// For each file it then runs wrk (with -H 'Host: SITE') against node n1's
// HTTP port, the same wrk command against nginx, and three wrk processes
// side by side, one per node — interleaved, so a burst of load from
// elsewhere on the machine does not fall on one system only. It prints one
// table with the ratios to nginx, and the CPU the server, wrk and the rest
// of the host used in each cell.
//
// It removes its temporary files and stops every process it started when
// it ends (also on Ctrl-C; should it be SIGKILLed, the kernel kills the
// children). With -profile DIR it builds hastore with a net/http/pprof hook
// (through go build -overlay: the source tree is untouched) and saves a CPU
// profile of the measured node during each single-node cell. `make bench` documents it.
//
// With -baseline BIN it also starts a second cluster from that hastore
// binary (an older build, say) with the same files, and measures it in the
// same interleaved run, in a column of its own with its ratios to nginx and
// to this tree's build: a before/after comparison that a busy shared
// machine cannot skew towards one side. -node picks the node measured
// (n1, or the leader or a follower of each cluster: a follower pays a
// round trip to the leader for its read barrier, the leader does not).
//
// wrk, the nodes and nginx share the machine's cores: on a small machine
// the client takes a large share, and the numbers say as much about that as
// about the servers; the table prints the cores used.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"hastore/testing/benchproc"
)

const siteName = "webbench.test"

type config struct {
	duration, warmup time.Duration
	conns, threads   int
	nodes            int
	scheme           string
	wrk, nginx       string
	dir              string
	keep             bool
	profile          string
	skipSpread       bool
	rounds           int
	baseline         string // a hastore binary measured beside this tree's build
	node             string // "n1", "leader" or "follower"
}

type benchFile struct {
	label, name string
	data        []byte
	metric      string // "req/s" or "MiB/s": the headline of its rows
}

// cell is one measurement: a target, a file and how wrk was run.
type cell struct {
	res      *wrkResult
	srvCPU   float64 // cores: CPU seconds of the server processes / wall time
	wrkCPU   float64 // cores
	hostBusy float64 // fraction of all cores busy
	other    float64 // cores busy but not by the servers measured or wrk: the idle system, softirqs, other processes
}

func main() {
	benchproc.SetName("webbench")
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long each wrk measurement runs (whole seconds)")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured wrk run before each target's measurements (0: none)")
	flag.IntVar(&cfg.conns, "conns", 50, "wrk connections (-c); split over the wrk processes of the all-nodes cell")
	flag.IntVar(&cfg.threads, "threads", 2, "wrk threads (-t) of a single wrk process")
	flag.IntVar(&cfg.nodes, "nodes", 3, "hastore nodes")
	flag.StringVar(&cfg.scheme, "shards", "2+1", "hastore erasure scheme K+M (--shards)")
	flag.StringVar(&cfg.wrk, "wrk", "", "wrk binary (default: from PATH)")
	flag.StringVar(&cfg.nginx, "nginx", "", "nginx binary (default: from PATH or /usr/sbin/nginx)")
	flag.StringVar(&cfg.dir, "dir", "", "parent of the temporary directory (default: $TMPDIR)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (node data, logs, nginx config)")
	flag.StringVar(&cfg.profile, "profile", "", "save CPU profiles of node n1 during its cells into this directory")
	flag.BoolVar(&cfg.skipSpread, "n1-only", false, "skip the cells with one wrk per node")
	flag.IntVar(&cfg.rounds, "rounds", 1, "measure every cell this many times, interleaved, and report the median of each figure")
	flag.StringVar(&cfg.baseline, "baseline", "", "also measure a cluster of this hastore binary (e.g. a build of an older commit), interleaved")
	flag.StringVar(&cfg.node, "node", "n1", "node measured by the single-node cells: n1, leader or follower")
	flag.Parse()
	if cfg.node != "n1" && cfg.node != "leader" && cfg.node != "follower" {
		benchproc.Fatalf("-node wants n1, leader or follower")
	}
	if cfg.duration < time.Second || cfg.conns < 1 || cfg.threads < 1 || cfg.nodes < 1 || cfg.rounds < 1 {
		benchproc.Fatalf("want -duration >= 1s, -conns >= 1, -threads >= 1, -nodes >= 1, -rounds >= 1")
	}
	if cfg.threads > cfg.conns {
		cfg.threads = cfg.conns // wrk refuses fewer connections than threads
	}
	if cfg.nodes == 1 {
		cfg.skipSpread = true
	}
	if cfg.wrk == "" {
		p, err := exec.LookPath("wrk")
		if err != nil {
			benchproc.Fatalf("wrk not found (Debian: apt-get install -y wrk; or bash testing/deps.sh bench), or give -wrk PATH")
		}
		cfg.wrk = p
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	benchproc.HandleSignals(cancel, "hastore, nginx and wrk, removing temporary files")

	work, err := os.MkdirTemp(cfg.dir, "webbench-")
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	if !cfg.keep {
		benchproc.AtCleanup(func() { os.RemoveAll(work) })
	} else {
		benchproc.AtCleanup(func() { fmt.Fprintf(os.Stderr, "webbench: kept %s\n", work) })
	}
	// nginx's workers run as nobody: they must reach the files.
	if err := os.Chmod(work, 0o755); err != nil {
		benchproc.Fatalf("%v", err)
	}
	if cfg.profile != "" {
		if err := os.MkdirAll(cfg.profile, 0o755); err != nil {
			benchproc.Fatalf("%v", err)
		}
	}

	// The site: two files of random bytes in a local directory, which
	// nginx serves as is and hastore gets through `site put`.
	www := filepath.Join(work, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		benchproc.Fatalf("%v", err)
	}
	files := []benchFile{
		{label: "4 KiB", name: "small.bin", data: randBytes(4 << 10), metric: "req/s"},
		{label: "10 MiB", name: "large.bin", data: randBytes(10 << 20), metric: "MiB/s"},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(www, f.name), f.data, 0o644); err != nil {
			benchproc.Fatalf("%v", err)
		}
	}

	t0 := time.Now()
	benchproc.Progress("building cmd/hastore")
	mode := benchproc.NoPprof
	if cfg.profile != "" {
		mode = benchproc.PprofPlain
	}
	bin, err := benchproc.BuildHastore(work, mode)
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	benchproc.Progress("built in %v", time.Since(t0).Round(time.Millisecond))

	// ---- hastore ----
	hs := startHastore(ctx, cfg, bin, filepath.Join(work), www, "hastore", cfg.profile != "")
	verify(ctx, hs, files)
	benchproc.Progress("every node serves both files byte for byte")
	var base *target
	if cfg.baseline != "" {
		bdir := filepath.Join(work, "baseline")
		if err := os.Mkdir(bdir, 0o755); err != nil {
			benchproc.Fatalf("%v", err)
		}
		base = startHastore(ctx, cfg, cfg.baseline, bdir, www, "baseline", false)
		verify(ctx, base, files)
		benchproc.Progress("every baseline node serves both files byte for byte")
	}
	ng := startNginx(ctx, cfg, work, www)
	verify(ctx, ng, files)
	benchproc.Progress("nginx serves both files byte for byte")
	warm(ctx, cfg, hs, files)
	if base != nil {
		warm(ctx, cfg, base, files)
	}
	warm(ctx, cfg, ng, files)

	// What else keeps this machine busy: on a shared host other processes
	// take CPU the servers and wrk then lack.
	all := []*target{hs, ng}
	if base != nil {
		all = append(all, base)
	}
	bg := background(all...)
	benchproc.Progress("before measuring: host %.0f%% busy, %.2f cores used by processes other than ours", 100*bg.hostBusy, bg.other)

	// Interleaved (hastore one node, baseline, nginx, hastore on all
	// nodes, per file), so a neighbour's burst of load does not fall on one
	// system only.
	type column struct {
		name string
		t    *target
		idx  []int
		tag  string
	}
	one := func(t *target) []int { return []int{t.pick(cfg.node)} }
	cols := []column{{"hastore " + hs.nodeLabel(cfg.node), hs, one(hs), "n1"}}
	if base != nil {
		cols = append(cols, column{"baseline " + base.nodeLabel(cfg.node), base, one(base), ""})
	}
	cols = append(cols, column{"nginx", ng, []int{0}, ""})
	ngCol := len(cols) - 1
	if !cfg.skipSpread {
		allIdx := make([]int, cfg.nodes)
		for i := range allIdx {
			allIdx[i] = i
		}
		cols = append(cols, column{"hastore all nodes", hs, allIdx, "all"})
	}
	type key struct{ col, file int }
	runs := map[key][]*cell{}
	for round := range cfg.rounds {
		if cfg.rounds > 1 {
			benchproc.Progress("round %d of %d", round+1, cfg.rounds)
		}
		for fi, f := range files {
			for ci, c := range cols {
				runs[key{ci, fi}] = append(runs[key{ci, fi}], measure(ctx, cfg, c.t, f, c.idx, c.tag))
			}
		}
	}
	cells := map[key]*cell{}
	for k, cs := range runs {
		cells[k] = median(cs)
	}
	benchproc.Progress("stopping hastore and nginx")
	for _, t := range all {
		for _, p := range t.procs {
			p.Stop()
		}
	}

	// ---- the table ----
	fmt.Printf("\nwebbench: wrk %d connections, %v per cell; hastore: %d `hastore serve --http` processes, shards %s, leader %s, --log-level warn; nginx %s\n",
		cfg.conns, cfg.duration, cfg.nodes, cfg.scheme, hs.leader, nginxVersion(cfg))
	if base != nil {
		fmt.Printf("baseline: %s, the same cluster shape, leader %s\n", cfg.baseline, base.leader)
	}
	fmt.Printf("host: %d CPUs (GOMAXPROCS of this process %d), %s/%s, %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("cells: single wrk -t%d -c%d; ", cfg.threads, cfg.conns)
	if cfg.rounds > 1 {
		fmt.Printf("each figure the median of %d interleaved rounds; ", cfg.rounds)
	}
	if !cfg.skipSpread {
		fmt.Printf("%d wrk -t1 processes side by side, one per node, %d connections in all; ", cfg.nodes, cfg.conns)
	}
	fmt.Printf("ratio = hastore / nginx (req/s and MiB/s: higher is better; latency: lower is better)\n\n")

	// Ratio columns: each hastore column to nginx, and this build to the
	// baseline.
	type ratioCol struct {
		name     string
		num, den int
	}
	var ratios []ratioCol
	for ci, c := range cols {
		if ci == ngCol {
			continue
		}
		short := "n1"
		switch {
		case c.tag == "all":
			short = "all"
		case c.t == base:
			short = "baseline"
		}
		ratios = append(ratios, ratioCol{short + "/nginx", ci, ngCol})
	}
	if base != nil {
		ratios = append(ratios, ratioCol{"n1/baseline", 0, 1})
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	hdr := []string{"file", "metric"}
	for _, c := range cols {
		hdr = append(hdr, c.name)
	}
	for _, r := range ratios {
		hdr = append(hdr, r.name)
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t")+"\t")
	type row struct {
		name  string
		val   func(*cell) float64
		fmt   func(float64) string
		ratio bool
	}
	mib := func(c *cell) float64 { return c.res.bytesSec / (1 << 20) }
	rps := func(c *cell) float64 { return c.res.reqPerSec }
	ms := func(v float64) string { return fmt.Sprintf("%.2fms", v) }
	rowsFor := func(f benchFile) []row {
		head := []row{
			{"req/s", rps, func(v float64) string { return fmt.Sprintf("%.0f", v) }, true},
			{"MiB/s", mib, func(v float64) string { return fmt.Sprintf("%.1f", v) }, true},
		}
		if f.metric == "MiB/s" {
			head[0], head[1] = head[1], head[0]
		}
		return append(head,
			row{"latency avg", func(c *cell) float64 { return float64(c.res.latAvg) / 1e6 }, ms, true},
			row{"latency p50", func(c *cell) float64 { return float64(c.res.p50) / 1e6 }, ms, true},
			row{"latency p99", func(c *cell) float64 { return float64(c.res.p99) / 1e6 }, ms, true},
			row{"server CPU, cores", func(c *cell) float64 { return c.srvCPU }, func(v float64) string { return fmt.Sprintf("%.2f", v) }, false},
			row{"wrk CPU, cores", func(c *cell) float64 { return c.wrkCPU }, func(v float64) string { return fmt.Sprintf("%.2f", v) }, false},
			row{"other CPU, cores", func(c *cell) float64 { return c.other }, func(v float64) string { return fmt.Sprintf("%.2f", v) }, false},
			row{"host busy", func(c *cell) float64 { return 100 * c.hostBusy }, func(v float64) string { return fmt.Sprintf("%.0f%%", v) }, false},
		)
	}
	var errs []string
	for fi, f := range files {
		for ri, r := range rowsFor(f) {
			label := ""
			if ri == 0 {
				label = f.label
			}
			line := []string{label, r.name}
			for ci := range cols {
				line = append(line, r.fmt(r.val(cells[key{ci, fi}])))
			}
			for _, rc := range ratios {
				den := r.val(cells[key{rc.den, fi}])
				if !r.ratio || den == 0 {
					line = append(line, "")
					continue
				}
				line = append(line, fmt.Sprintf("%.2f", r.val(cells[key{rc.num, fi}])/den))
			}
			fmt.Fprintln(tw, strings.Join(line, "\t")+"\t")
		}
		for ci, c := range cols {
			if cl := cells[key{ci, fi}]; cl != nil && cl.res.errors != "" {
				errs = append(errs, fmt.Sprintf("%s %s: %s", f.label, c.name, cl.res.errors))
			}
			if cl := cells[key{ci, fi}]; cl != nil && cl.res.reqs < 100 {
				errs = append(errs, fmt.Sprintf("%s %s: only %d requests completed: too few to trust (raise -duration)", f.label, c.name, cl.res.reqs))
			}
		}
	}
	tw.Flush()
	fmt.Printf("\nCAVEAT: wrk, the %d hastore nodes and nginx share this machine's %d CPU(s); the client takes a large share of them\n"+
		"(\"wrk CPU\" above), so these are ratios on a CPU-starved box, not capacities. \"other CPU\" is what the host spent\n"+
		"besides the measured server and wrk: softirqs of loopback TCP, the idle other server, and other processes (before\n"+
		"measuring: %.2f cores). Cells run interleaved; nginx serves from the page cache with sendfile.\n", cfg.nodes, runtime.NumCPU(), bg.other)
	if len(errs) > 0 {
		fmt.Printf("\nwarnings:\n  %s\n", strings.Join(errs, "\n  "))
	}
	if cfg.profile != "" {
		fmt.Printf("\nCPU profiles of node n1 in %s (symbolized: go tool pprof -top FILE)\n", cfg.profile)
	}
	benchproc.Cleanup()
}

// median returns a cell whose every figure is the median of that figure
// over cs (measured in interleaved rounds): one burst of load from a
// neighbour moves a mean, not a median. The request count is the total,
// the errors those of every round.
func median(cs []*cell) *cell {
	if len(cs) == 1 {
		return cs[0]
	}
	med := func(f func(*cell) float64) float64 {
		v := make([]float64, len(cs))
		for i, c := range cs {
			v[i] = f(c)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	dur := func(f func(*cell) time.Duration) time.Duration {
		return time.Duration(med(func(c *cell) float64 { return float64(f(c)) }))
	}
	r := &wrkResult{
		reqPerSec: med(func(c *cell) float64 { return c.res.reqPerSec }),
		bytesSec:  med(func(c *cell) float64 { return c.res.bytesSec }),
		latAvg:    dur(func(c *cell) time.Duration { return c.res.latAvg }),
		p50:       dur(func(c *cell) time.Duration { return c.res.p50 }),
		p99:       dur(func(c *cell) time.Duration { return c.res.p99 }),
	}
	var errs []string
	for _, c := range cs {
		r.reqs += c.res.reqs
		if c.res.errors != "" {
			errs = append(errs, c.res.errors)
		}
	}
	r.errors = strings.Join(errs, " | ")
	return &cell{
		res:      r,
		srvCPU:   med(func(c *cell) float64 { return c.srvCPU }),
		wrkCPU:   med(func(c *cell) float64 { return c.wrkCPU }),
		hostBusy: med(func(c *cell) float64 { return c.hostBusy }),
		other:    med(func(c *cell) float64 { return c.other }),
	}
}

// background samples the host for a second while nothing is measured and
// returns its busy fraction and the cores used outside the given targets.
func background(ts ...*target) cell {
	var cpu0 float64
	for _, t := range ts {
		cpu0 += t.cpu()
	}
	b0, tot0, _ := benchproc.HostTimes()
	start := time.Now()
	time.Sleep(time.Second)
	var cpu1 float64
	for _, t := range ts {
		cpu1 += t.cpu()
	}
	b1, tot1, _ := benchproc.HostTimes()
	var c cell
	if tot1 > tot0 {
		c.hostBusy = (b1 - b0) / (tot1 - tot0)
	}
	c.other = max(0, c.hostBusy*float64(runtime.NumCPU())-(cpu1-cpu0)/time.Since(start).Seconds())
	return c
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// warm runs wrk unmeasured for a moment on each file: fills hastore's
// small-file cache and opens its connections, and warms nginx alike.
func warm(ctx context.Context, cfg config, t *target, files []benchFile) {
	if cfg.warmup <= 0 {
		return
	}
	for _, f := range files {
		for _, addr := range t.httpAddrs {
			if _, err := runWrk(ctx, cfg.wrk, "http://"+addr+"/"+f.name, t.host, 1, min(cfg.conns, 8), max(cfg.warmup, time.Second)); err != nil {
				benchproc.Fatalf("%s: warm-up: %v", t.name, err)
			}
		}
	}
	t.checkAlive("the warm-up")
}

// measure runs wrk against the nodes of t given by idx (one wrk process per
// node, side by side) and samples CPU use around it.
func measure(ctx context.Context, cfg config, t *target, f benchFile, idx []int, tag string) *cell {
	benchproc.Progress("%s, %s file, %s: wrk %v", t.name, f.label, map[bool]string{true: "n1", false: fmt.Sprintf("%d wrk processes, one per node", len(idx))}[len(idx) == 1], cfg.duration)
	cpu0 := t.cpu()
	b0, tot0, _ := benchproc.HostTimes()
	start := time.Now()

	profDone := make(chan error, 1)
	if cfg.profile != "" && tag == "n1" && len(t.pprofAddrs) > 0 {
		secs := max(1, int(cfg.duration/time.Second)-2)
		path := filepath.Join(cfg.profile, fmt.Sprintf("n1-%s.cpu.pprof", strings.ReplaceAll(f.label, " ", "")))
		go func() {
			time.Sleep(time.Second)
			profDone <- benchproc.FetchPprof(ctx, t.pprofAddrs[idx[0]], fmt.Sprintf("profile?seconds=%d", secs), path)
		}()
	} else {
		profDone <- nil
	}

	results := make([]*wrkResult, len(idx))
	errc := make(chan error, len(idx))
	for i, n := range idx {
		threads, conns := cfg.threads, cfg.conns
		if len(idx) > 1 {
			threads = 1
			conns = cfg.conns / len(idx)
			if i < cfg.conns%len(idx) {
				conns++
			}
			conns = max(conns, 1)
		}
		go func() {
			r, err := runWrk(ctx, cfg.wrk, "http://"+t.httpAddrs[n]+"/"+f.name, t.host, threads, conns, cfg.duration)
			results[i] = r
			errc <- err
		}()
	}
	for range idx {
		if err := <-errc; err != nil {
			benchproc.Fatalf("%s: %v", t.name, err)
		}
	}
	wall := time.Since(start).Seconds()
	c := &cell{res: merge(results)}
	c.srvCPU = (t.cpu() - cpu0) / wall
	c.wrkCPU = c.res.cpu / wall
	if b1, tot1, _ := benchproc.HostTimes(); tot1 > tot0 {
		c.hostBusy = (b1 - b0) / (tot1 - tot0)
	}
	c.other = max(0, c.hostBusy*float64(runtime.NumCPU())-c.srvCPU-c.wrkCPU)
	if err := <-profDone; err != nil {
		benchproc.Progress("profile: %v", err)
	}
	t.checkAlive("the measurement")
	benchproc.Progress("  %.0f req/s, %.1f MiB/s, p99 %v, server %.2f cores, wrk %.2f cores", c.res.reqPerSec, c.res.bytesSec/(1<<20), c.res.p99, c.srvCPU, c.wrkCPU)
	return c
}

func nginxVersion(cfg config) string {
	bin := cfg.nginx
	if bin == "" {
		if p, err := exec.LookPath("nginx"); err == nil {
			bin = p
		} else {
			bin = "/usr/sbin/nginx"
		}
	}
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	s := strings.TrimSpace(string(out))
	_, v, ok := strings.Cut(s, "nginx/")
	if !ok {
		return s
	}
	return v + " (worker_processes auto)"
}
