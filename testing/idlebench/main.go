// Command idlebench measures availability at hosting scale: a real
// cluster of `hastore serve` processes, thousands of IMAPS clients in IDLE
// spread over its nodes (a login storm, then steady deliveries with their
// IDLE push latency), optionally a SIGKILL of the busiest node and CPU hogs
// beside the cluster, and the Raft elections all this causes. It prints a
// table and a JSON line; see docs/availability.md ("Scale benchmark").
//
//	go run ./testing/idlebench -bin /tmp/hastore-main -users 900 -devices 10 -kill
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"hastore/testing/benchproc"
	"hastore/testing/idleload"
)

type config struct {
	bin, shards, serveArgs, work string
	cpuProfile                   string
	profileFor                   time.Duration
	nodes, users, devices, hogs  int
	nodeAS, hostReserve          int64
	kill, keep                   bool
	duration, afterKill, settle  time.Duration
	stormTimeout, pushWait       time.Duration
	rate                         float64
}

const domain = "idle.test"

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "", "hastore binary to measure (default: build ./cmd/hastore of this tree)")
	flag.StringVar(&cfg.shards, "shards", "2+1", "erasure scheme")
	flag.StringVar(&cfg.serveArgs, "serve-args", "", "extra flags for every `hastore serve` (space-separated)")
	flag.StringVar(&cfg.cpuProfile, "cpu-profile", "", "save a CPU profile of every node during the storm into this directory (the binary needs the pprof hook: the one built without -bin has it)")
	flag.DurationVar(&cfg.profileFor, "profile-for", 20*time.Second, "with -cpu-profile: how long each profile covers from the storm's start")
	flag.StringVar(&cfg.work, "work", "", "directory for the nodes' data and logs (default: a temporary one, removed)")
	flag.IntVar(&cfg.nodes, "nodes", 3, "cluster nodes")
	flag.IntVar(&cfg.users, "users", 100, "mail users")
	flag.IntVar(&cfg.devices, "devices", 10, "IDLE clients (devices) per user")
	flag.IntVar(&cfg.hogs, "cpu-hog", 0, "busy-loop processes to run beside the cluster for the whole run")
	flag.BoolVar(&cfg.kill, "kill", false, "SIGKILL the node holding the most IDLE clients after the steady phase")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (node logs)")
	flag.DurationVar(&cfg.duration, "duration", 60*time.Second, "steady phase: deliveries at -rate with IDLE push latency")
	flag.DurationVar(&cfg.afterKill, "after-kill", 60*time.Second, "with -kill: how long deliveries go on after the kill")
	flag.DurationVar(&cfg.settle, "settle", 10*time.Second, "pause after the storm before RSS is read as settled")
	flag.DurationVar(&cfg.stormTimeout, "storm-timeout", 10*time.Minute, "give up waiting for every client to be IDLE after this")
	flag.DurationVar(&cfg.pushWait, "push-wait", 30*time.Second, "a push not seen within this after the 250 counts as missed")
	flag.Float64Var(&cfg.rate, "rate", 20, "deliveries per second (LMTP, random users, random nodes)")
	nodeMem := flag.String("node-mem", "8G", "address-space cap (prlimit --as) of each node, so a runaway node dies instead of the host (0: none)")
	reserve := flag.String("host-reserve", "3G", "SIGKILL the largest node should the host's MemAvailable fall below this")
	flag.Parse()
	cfg.nodeAS, cfg.hostReserve = parseSize(*nodeMem), parseSize(*reserve)
	if cfg.rate <= 0 || cfg.users < 1 || cfg.devices < 1 || cfg.nodes < 1 {
		fmt.Fprintln(os.Stderr, "idlebench: -rate, -users, -devices and -nodes must be positive")
		os.Exit(2)
	}
	benchproc.SetName("idlebench")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	benchproc.HandleSignals(cancel, "the cluster, the clients and the CPU hogs")
	defer benchproc.Cleanup()

	r := &report{Config: cfg, Clients: cfg.users * cfg.devices, RunnableAtStart: idleload.Runnable(), Cores: runtime.NumCPU()}
	work := cfg.work
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "idlebench-"); err != nil {
			benchproc.Fatalf("%v", err)
		}
		if !cfg.keep {
			benchproc.AtCleanup(func() { os.RemoveAll(work) })
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		benchproc.Fatalf("%v", err)
	}
	if cfg.bin == "" {
		benchproc.Progress("building cmd/hastore")
		mode := benchproc.NoPprof
		if cfg.cpuProfile != "" {
			mode = benchproc.PprofPlain
		}
		b, err := benchproc.BuildHastore(work, mode)
		if err != nil {
			benchproc.Fatalf("%v", err)
		}
		cfg.bin = b
	}
	r.Bin = cfg.bin
	raiseNoFile(cfg.users*cfg.devices + 1000)

	c, tlsCfg := startCluster(ctx, cfg, work)
	var users []idleload.User
	for i := range cfg.users {
		u := fmt.Sprintf("u%04d@%s", i, domain)
		users = append(users, idleload.User{Addr: u, Password: "pw-" + u})
	}
	t0 := time.Now()
	if err := idleload.AddUsers(ctx, c.admin, domain, users, func(n int) { benchproc.Progress("%d/%d users created", n, len(users)) }); err != nil {
		benchproc.Fatalf("%v", err)
	}
	benchproc.Progress("%d users created in %v", cfg.users, time.Since(t0).Round(time.Millisecond))

	if cfg.hogs > 0 {
		stop, err := idleload.StartHogs(cfg.hogs)
		if err != nil {
			benchproc.Fatalf("%v", err)
		}
		benchproc.AtCleanup(stop)
		benchproc.Progress("%d CPU hogs started", cfg.hogs)
	}
	smp := startSampler(ctx, cfg, c)
	elStart, wonStart := c.electionLines(work)
	var imaps, lmtp []string
	for _, nd := range c.nodes {
		imaps = append(imaps, nd.imaps)
		lmtp = append(lmtp, nd.lmtp)
	}
	pool := idleload.New(idleload.Config{Addrs: imaps, TLS: tlsCfg, Users: users, Devices: cfg.devices})
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()

	// ---- 1: login storm ----
	time.Sleep(2 * time.Second) // a baseline RSS sample
	base := smp.last()
	auth0 := c.authCounts(ctx)
	cpu0 := c.cpuTimes()
	benchproc.Progress("login storm: %d IMAPS clients at once", pool.Size())
	stormStart := time.Now()
	pool.Start(pctx)
	if cfg.cpuProfile != "" {
		if err := os.MkdirAll(cfg.cpuProfile, 0o755); err != nil {
			benchproc.Fatalf("%v", err)
		}
		for _, nd := range c.nodes {
			go cpuProfile(ctx, nd, cfg.profileFor, filepath.Join(cfg.cpuProfile, "storm-"+nd.id+".cpu.pprof"))
		}
	}
	tick := time.NewTicker(5 * time.Second)
wait:
	for {
		select {
		case <-pool.AllIdle():
			break wait
		case <-tick.C:
			s, f := pool.Attempts()
			benchproc.Progress("  %d/%d IDLE, %d sessions started, %d failed; RSS %s", pool.Idle(), pool.Size(), s, f, smp.lastRSS())
			if len(c.exits("")) == len(c.nodes) {
				benchproc.Logf("storm: every node has exited")
				break wait
			}
		case <-time.After(time.Until(stormStart.Add(cfg.stormTimeout))):
			benchproc.Logf("storm: not every client IDLE within %v", cfg.stormTimeout)
			break wait
		case <-ctx.Done():
			return
		}
	}
	tick.Stop()
	r.Storm.Total = time.Since(stormStart)
	for i, t := range c.cpuTimes() {
		r.Storm.CPU = append(r.Storm.CPU, t-cpu0[i])
	}
	first := pool.FirstIdle()
	r.Storm.Reached = len(first)
	r.Storm.P50, r.Storm.P99, r.Storm.Max = idleload.Percentiles(first)
	r.Storm.Sessions, r.Storm.Failed = pool.Attempts()
	r.Storm.LoginsPerSec = float64(len(first)) / r.Storm.Total.Seconds()
	peak := smp.peakSince(stormStart)
	benchproc.Progress("storm over in %v; settling %v", r.Storm.Total.Round(time.Millisecond), cfg.settle)
	time.Sleep(cfg.settle)
	settled := smp.last()
	auth1 := c.authCounts(ctx)
	for i := range c.nodes {
		r.Auth = append(r.Auth, nodeAuth{Node: c.nodes[i].id, Storm: auth1[i].Sub(auth0[i])})
	}
	on := pool.IdleOn()
	smp.mu.Lock()
	for i, nd := range c.nodes {
		nr := nodeRSS{Node: nd.id, Base: base.nodes[i], Peak: peak.nodes[i], HWM: smp.hwm[nd.id], Settled: settled.nodes[i], Clients: on[i]}
		if on[i] > 0 {
			nr.PerConn = (nr.Settled - nr.Base) / int64(on[i])
		}
		r.RSS = append(r.RSS, nr)
	}
	smp.mu.Unlock()
	r.GenRSSPeak = peak.self
	r.GenRSSSettled = settled.self
	el, won := c.electionLines(work)
	r.Elections.Storm = [2]int{el - elStart, won - wonStart}
	elStart, wonStart = el, won

	if len(c.exits("")) == len(c.nodes) {
		benchproc.Logf("every node has exited: no steady or kill phase")
		cfg.duration, cfg.kill = 0, false
	}

	// ---- 2: steady deliveries ----
	benchproc.Progress("steady: %.0f deliveries/s for %v", cfg.rate, cfg.duration)
	var steady []idleload.Delivery
	if cfg.duration > 0 {
		steady = deliver(ctx, pool, lmtp, cfg, cfg.duration)
	}
	r.Steady = summarize(steady, time.Time{})
	el, won = c.electionLines(work)
	r.Elections.Steady = [2]int{el - elStart, won - wonStart}
	elStart, wonStart = el, won

	// ---- 3: kill the busiest node ----
	if cfg.kill {
		on := pool.IdleOn()
		victim := 0
		for i := range on {
			if on[i] > on[victim] && c.nodes[i].proc.Alive() {
				victim = i
			}
		}
		orphans := pool.IdleClientsOn(victim)
		r.Kill = &killReport{Node: c.nodes[victim].id, Orphans: len(orphans)}
		var dres []idleload.Delivery
		done := make(chan struct{})
		go func() { dres = deliver(ctx, pool, lmtp, cfg, cfg.afterKill); close(done) }()
		time.Sleep(2 * time.Second)
		benchproc.Progress("kill: SIGKILL %s holding %d of %d IDLE clients", c.nodes[victim].id, len(orphans), pool.Idle())
		killAt := time.Now()
		_ = syscall.Kill(-c.nodes[victim].proc.Pid(), syscall.SIGKILL)
		deadline := killAt.Add(cfg.afterKill + 60*time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			back := 0
			for i := range orphans {
				if ok, n := pool.IsIdle(i); ok && n != victim {
					back++
				}
			}
			r.Kill.Back = back
			if back == len(orphans) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		var rec []time.Duration
		for _, x := range pool.Recoveries() {
			if x.From == victim && !x.Lost.Before(killAt) {
				rec = append(rec, x.Took)
			}
		}
		r.Kill.P50, r.Kill.P99, r.Kill.Max = idleload.Percentiles(rec)
		r.Kill.AllBack = time.Since(killAt)
		if r.Kill.Back < len(orphans) {
			r.Kill.AllBack = 0
		}
		<-done
		r.Kill.Deliveries = summarize(dres, killAt)
		r.Kill.PeakRSS = smp.peakSince(killAt)
		auth2 := c.authCounts(ctx)
		for i := range c.nodes {
			r.Auth[i].Kill = auth2[i].Sub(auth1[i])
		}
		el, won = c.electionLines(work)
		r.Elections.Kill = [2]int{el - elStart, won - wonStart}
	}
	r.LoadMax, r.LoadMean = smp.load()
	if r.Kill != nil {
		r.NodeExits = c.exits(r.Kill.Node)
	} else {
		r.NodeExits = c.exits("")
	}
	smp.mu.Lock()
	r.GuardKills = smp.guardKills
	smp.mu.Unlock()
	pcancel()
	r.print(c)
	if cfg.keep {
		fmt.Printf("node logs kept in %s\n", work)
	}
}

// deliver runs deliveries at cfg.rate for d (random user, random first
// node) and returns their outcomes.
func deliver(ctx context.Context, pool *idleload.Pool, lmtp []string, cfg config, d time.Duration) []idleload.Delivery {
	var mu sync.Mutex
	var out []idleload.Delivery
	var wg sync.WaitGroup
	var inflight atomic.Int64
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.rate))
	defer tick.Stop()
	end := time.After(d)
loop:
	for {
		select {
		case <-end:
			break loop
		case <-ctx.Done():
			break loop
		case <-tick.C:
			if inflight.Load() > 2000 {
				continue // the cluster is not keeping up; the rate shows it
			}
			u, start := rng.IntN(cfg.users), rng.IntN(len(lmtp))
			inflight.Add(1)
			wg.Go(func() {
				defer inflight.Add(-1)
				res := pool.Deliver(ctx, u, lmtp, start, cfg.pushWait)
				mu.Lock()
				out = append(out, res)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return out
}

// parseSize parses a byte count with an optional K, M or G suffix.
func parseSize(s string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	n, err := strconv.ParseInt(strings.TrimRight(s, "KMG"), 10, 64)
	if err != nil || n < 0 {
		benchproc.Fatalf("bad size %q: want e.g. 8G", s)
	}
	return n * mult
}

// raiseNoFile lifts the open-files limit to at least n (the clients'
// sockets); the nodes inherit it.
func raiseNoFile(n int) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	if l.Cur < uint64(n) {
		l.Cur = min(max(uint64(n), l.Cur), l.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur < uint64(n) {
			benchproc.Logf("open-files limit %d is below the %d the clients need", l.Cur, n)
		}
	}
}

// ---- sampling ----

type sample struct {
	at    time.Time
	nodes []int64
	self  int64
	load  float64
}

type sampler struct {
	mu         sync.Mutex
	samples    []sample
	guardKills []string
	hwm        map[string]int64 // VmHWM last read, per node: its peak RSS so far
}

func startSampler(ctx context.Context, cfg config, c *cluster) *sampler {
	s := &sampler{hwm: map[string]int64{}}
	take := func() {
		x := sample{at: time.Now(), load: idleload.LoadAvg()}
		for _, nd := range c.nodes {
			v, _ := idleload.RSS(nd.proc.Pid())
			x.nodes = append(x.nodes, v)
			if h, err := idleload.PeakRSS(nd.proc.Pid()); err == nil {
				s.mu.Lock()
				s.hwm[nd.id] = h
				s.mu.Unlock()
			}
		}
		x.self, _ = idleload.RSS(os.Getpid())
		if avail := idleload.MemAvailable(); cfg.hostReserve > 0 && avail > 0 && avail < cfg.hostReserve {
			big := 0
			for i, v := range x.nodes {
				if v > x.nodes[big] {
					big = i
				}
			}
			if c.nodes[big].proc.Alive() {
				_ = syscall.Kill(-c.nodes[big].proc.Pid(), syscall.SIGKILL)
				s.mu.Lock()
				s.guardKills = append(s.guardKills, fmt.Sprintf("%s (RSS %s, host MemAvailable %s)", c.nodes[big].id, idleload.MB(x.nodes[big]), idleload.MB(avail)))
				s.mu.Unlock()
				benchproc.Logf("host memory guard: SIGKILLed %s (RSS %s), host MemAvailable %s", c.nodes[big].id, idleload.MB(x.nodes[big]), idleload.MB(avail))
			}
		}
		s.mu.Lock()
		s.samples = append(s.samples, x)
		s.mu.Unlock()
	}
	take()
	go func() {
		t := time.NewTicker(250 * time.Millisecond) // memory runs away within a second in a storm
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				take()
			}
		}
	}()
	return s
}

func (s *sampler) lastRSS() string {
	var parts []string
	for _, v := range s.last().nodes {
		parts = append(parts, idleload.MB(v))
	}
	return strings.Join(parts, ", ")
}

func (s *sampler) last() sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples[len(s.samples)-1]
}

// peakSince returns the per-process maxima of the samples since t.
func (s *sampler) peakSince(t time.Time) sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p sample
	for _, x := range s.samples {
		if x.at.Before(t) {
			continue
		}
		if p.nodes == nil {
			p.nodes = make([]int64, len(x.nodes))
		}
		for i, v := range x.nodes {
			p.nodes[i] = max(p.nodes[i], v)
		}
		p.self = max(p.self, x.self)
	}
	return p
}

func (s *sampler) load() (mx, mean float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.samples {
		mx = max(mx, x.load)
		mean += x.load
	}
	if len(s.samples) > 0 {
		mean /= float64(len(s.samples))
	}
	return mx, mean
}

// ---- report ----

type report struct {
	Config          config `json:"-"`
	Bin             string `json:"bin"`
	Clients         int    `json:"clients"`
	Cores           int    `json:"cores"`
	RunnableAtStart int    `json:"runnable_at_start"`
	Storm           struct {
		Total, P50, P99, Max time.Duration
		Reached              int
		Sessions, Failed     int64
		LoginsPerSec         float64
		// CPU time used until all were IDLE: per node, then the load
		// generator (this process).
		CPU []time.Duration
	} `json:"storm"`
	RSS           []nodeRSS     `json:"rss"`
	Auth          []nodeAuth    `json:"auth"`
	GenRSSPeak    int64         `json:"generator_rss_peak"`
	GenRSSSettled int64         `json:"generator_rss_settled"`
	Steady        deliveryStats `json:"steady"`
	Kill          *killReport   `json:"kill,omitempty"`
	Elections     struct {
		Storm, Steady, Kill [2]int // started, won
	} `json:"elections"`
	LoadMax    float64  `json:"load_max"`
	LoadMean   float64  `json:"load_mean"`
	NodeExits  []string `json:"node_exits"`  // nodes that died by themselves
	GuardKills []string `json:"guard_kills"` // nodes the host memory guard killed
}

type nodeRSS struct {
	Node                              string
	Base, Peak, HWM, Settled, PerConn int64
	Clients                           int
}

// nodeAuth is a node's password checks in the storm and in the kill
// phase (deltas of its counters; zero if it could not be read).
type nodeAuth struct {
	Node        string
	Storm, Kill idleload.AuthCount
}

type killReport struct {
	Node          string
	Orphans, Back int
	P50, P99, Max time.Duration
	AllBack       time.Duration // 0: not every orphan came back
	Deliveries    deliveryStats
	PeakRSS       sample `json:"-"`
}

type deliveryStats struct {
	Sent, OK, Temp451, Temp, Perm, NetErr, Failovers int
	Measured, Missed, Interrupted                    int
	PushP50, PushP99, PushMax                        time.Duration
	FirstErr                                         string
	// Errors counts failures by their text (addresses and numbers
	// blanked), so a run says why deliveries failed, not just the first.
	Errors map[string]int `json:",omitempty"`
}

func summarize(ds []idleload.Delivery, _ time.Time) deliveryStats {
	var s deliveryStats
	var push []time.Duration
	for _, d := range ds {
		s.Sent++
		s.Failovers += d.Failovers
		switch {
		case d.Code == 250:
			s.OK++
		case d.Code == 451:
			s.Temp451++
		case d.Code/100 == 4:
			s.Temp++
		case d.Code/100 == 5:
			s.Perm++
		default:
			s.NetErr++
		}
		if d.Err != nil {
			if s.FirstErr == "" {
				s.FirstErr = d.Err.Error()
			}
			if s.Errors == nil {
				s.Errors = map[string]int{}
			}
			s.Errors[errClass(d.Err.Error())]++
		}
		if d.Measured {
			s.Measured++
			s.Missed += d.Missed
			s.Interrupted += d.Interrupted
			if d.Notified > 0 {
				push = append(push, d.Push)
			}
		}
	}
	s.PushP50, s.PushP99, s.PushMax = idleload.Percentiles(push)
	return s
}

// errClass blanks what differs between two instances of one failure
// (ports, addresses, object IDs, durations) so they count together.
var digitsRE = regexp.MustCompile(`[0-9a-f]{16,}|[0-9]+`)

func errClass(s string) string { return trunc(digitsRE.ReplaceAllString(s, "N"), 140) }

func pct(a, b int) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(a)/float64(b))
}

func (r *report) print(c *cluster) {
	cfg := r.Config
	fmt.Printf("\nidlebench: %d users × %d devices = %d IMAPS IDLE clients on %d nodes (shards %s), binary %s\n",
		cfg.users, cfg.devices, r.Clients, cfg.nodes, cfg.shards, filepath.Base(r.Bin))
	fmt.Printf("nodes: address space capped at %s each (prlimit --as)\n", idleload.MB(cfg.nodeAS))
	fmt.Printf("host: %d cores, %d runnable processes before the run, %d CPU hogs; load average max %.1f, mean %.1f\n",
		r.Cores, r.RunnableAtStart, cfg.hogs, r.LoadMax, r.LoadMean)
	fmt.Printf("figures are noisy: a shared host with other processes (compilers) running; one run per configuration\n\n")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tMEASURE\tVALUE")
	st := r.Storm
	fmt.Fprintf(tw, "storm\tclients IDLE / total\t%d / %d\n", st.Reached, r.Clients)
	if st.Reached == r.Clients {
		fmt.Fprintf(tw, "storm\ttime until all IDLE\t%v\n", idleload.Round(st.Total))
	} else {
		fmt.Fprintf(tw, "storm\ttime until all IDLE\tnever (gave up after %v)\n", idleload.Round(st.Total))
	}
	fmt.Fprintf(tw, "storm\tper client p50 / p99 / max\t%v / %v / %v\n", idleload.Round(st.P50), idleload.Round(st.P99), idleload.Round(st.Max))
	fmt.Fprintf(tw, "storm\tsessions started / failed (retried)\t%d / %d\n", st.Sessions, st.Failed)
	fmt.Fprintf(tw, "storm\tlogins/s\t%.0f\n", st.LoginsPerSec)
	if len(st.CPU) == len(r.RSS)+1 {
		var parts []string
		for i, n := range r.RSS {
			parts = append(parts, fmt.Sprintf("%s %v", n.Node, idleload.Round(st.CPU[i])))
		}
		fmt.Fprintf(tw, "storm\tCPU time until all IDLE: nodes / load generator\t%s / %v\n", strings.Join(parts, ", "), idleload.Round(st.CPU[len(st.CPU)-1]))
	}
	for _, n := range r.RSS {
		fmt.Fprintf(tw, "rss\t%s before / storm peak (sampled, VmHWM) / settled\t%s / %s, %s / %s\n", n.Node, idleload.MB(n.Base), idleload.MB(n.Peak), idleload.MB(n.HWM), idleload.MB(n.Settled))
		fmt.Fprintf(tw, "rss\t%s per IDLE connection (%d)\t%.1f KiB\n", n.Node, n.Clients, float64(n.PerConn)/1024)
	}
	var hashes int64
	for _, a := range r.Auth {
		hashes += a.Storm.Hashes
		fmt.Fprintf(tw, "auth\t%s storm: argon2id hashes / cache hits / misses / slot timeouts\t%s\n", a.Node, a.Storm)
	}
	fmt.Fprintf(tw, "auth\tstorm: argon2id hashes in the cluster / users\t%d / %d (%.2f per user)\n", hashes, cfg.users, float64(hashes)/float64(cfg.users))
	fmt.Fprintf(tw, "rss\tload generator peak / settled\t%s / %s\n", idleload.MB(r.GenRSSPeak), idleload.MB(r.GenRSSSettled))
	printDeliveries(tw, "steady", r.Steady)
	if k := r.Kill; k != nil {
		fmt.Fprintf(tw, "kill\tnode killed, its IDLE clients\t%s, %d\n", k.Node, k.Orphans)
		fmt.Fprintf(tw, "kill\torphans IDLE again on a survivor\t%d / %d\n", k.Back, k.Orphans)
		fmt.Fprintf(tw, "kill\torphan back in IDLE p50 / p99 / max\t%v / %v / %v\n", idleload.Round(k.P50), idleload.Round(k.P99), idleload.Round(k.Max))
		if k.AllBack > 0 {
			fmt.Fprintf(tw, "kill\tall orphans back after\t%v\n", idleload.Round(k.AllBack))
		} else {
			fmt.Fprintf(tw, "kill\tall orphans back after\tnot within %v\n", cfg.afterKill+60*time.Second)
		}
		printDeliveries(tw, "kill", k.Deliveries)
		for _, a := range r.Auth {
			if a.Node != k.Node {
				fmt.Fprintf(tw, "kill\t%s: argon2id hashes / cache hits / misses / slot timeouts\t%s\n", a.Node, a.Kill)
			}
		}
		for i, nd := range c.nodes {
			if k.PeakRSS.nodes != nil {
				fmt.Fprintf(tw, "kill\t%s RSS peak after the kill\t%s\n", nd.id, idleload.MB(k.PeakRSS.nodes[i]))
			}
		}
	}
	e := r.Elections
	fmt.Fprintf(tw, "raft\telections started / won: storm\t%d / %d\n", e.Storm[0], e.Storm[1])
	fmt.Fprintf(tw, "raft\telections started / won: steady\t%d / %d\n", e.Steady[0], e.Steady[1])
	if r.Kill != nil {
		fmt.Fprintf(tw, "raft\telections started / won: kill\t%d / %d\n", e.Kill[0], e.Kill[1])
	}
	for _, x := range r.NodeExits {
		fmt.Fprintf(tw, "nodes	exited by itself	%s\n", x)
	}
	for _, x := range r.GuardKills {
		fmt.Fprintf(tw, "nodes	killed by the host memory guard	%s\n", x)
	}
	tw.Flush()
	b, _ := json.Marshal(r)
	fmt.Printf("\nJSON %s\n", b)
}

func printDeliveries(tw *tabwriter.Writer, phase string, s deliveryStats) {
	if s.Sent == 0 {
		fmt.Fprintf(tw, "%s\tdeliveries\tnone (phase skipped)\n", phase)
		return
	}
	fmt.Fprintf(tw, "%s\tdeliveries 250 / sent\t%d / %d (%s)\n", phase, s.OK, s.Sent, pct(s.OK, s.Sent))
	fmt.Fprintf(tw, "%s\t451 / other 4xx / 5xx / network\t%d / %d / %d / %d\n", phase, s.Temp451, s.Temp, s.Perm, s.NetErr)
	if s.FirstErr != "" {
		fmt.Fprintf(tw, "%s\tfirst error\t%s\n", phase, trunc(s.FirstErr, 100))
	}
	classes := slices.Collect(maps.Keys(s.Errors))
	slices.SortFunc(classes, func(a, b string) int { return s.Errors[b] - s.Errors[a] })
	for i, c := range classes {
		if i == 5 {
			fmt.Fprintf(tw, "%s\terrors\t… %d more kinds\n", phase, len(classes)-i)
			break
		}
		fmt.Fprintf(tw, "%s\terrors ×%d\t%s\n", phase, s.Errors[c], c)
	}
	fmt.Fprintf(tw, "%s\tMX failovers (connection refused)\t%d\n", phase, s.Failovers)
	fmt.Fprintf(tw, "%s\tIDLE push 250→EXISTS on all devices p50 / p99 / max\t%v / %v / %v (%d measured)\n", phase,
		idleload.Round(s.PushP50), idleload.Round(s.PushP99), idleload.Round(s.PushMax), s.Measured)
	fmt.Fprintf(tw, "%s\tpushes missed / device disconnected first\t%d / %d\n", phase, s.Missed, s.Interrupted)
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
