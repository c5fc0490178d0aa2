package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"hastore/testing/idleload"
)

// Scale mode (-idle-clients N): N IMAPS clients in IDLE (testing/idleload,
// ten devices per user) spread over every node through the whole run;
// each reconnects to the next node when it loses its connection. Its own
// users (idleNNNN@chaos.test) get LMTP deliveries at scaleRate, whose
// 250→EXISTS push latency on every IDLE device is measured. It reports,
// per fault, the clients the fault cut off (orphans) and the time until
// each was IDLE again; the nodes' RSS; push latency; Raft elections. The
// nodes' address space is capped (prlimit) so that a node whose memory
// runs away dies of it rather than taking the host down.

const (
	scaleDevices = 10
	scaleRate    = 5 // deliveries per second to the scale users
	scaleNodeAS  = 8 << 30
)

type scaleLoad struct {
	c         *cluster
	pool      *idleload.Pool
	users     []idleload.User
	storm     time.Duration
	reached   int
	stormDone bool

	mu         sync.Mutex
	deliveries []idleload.Delivery
	rssMax     map[string]int64 // sampled VmRSS, per node ID
	hwm        map[string]int64 // VmHWM (peak RSS) last read, per node ID
	guard      []string
	elStart    [2]int
	loadMax    float64
	idleAtEnd  int    // taken when the load stops, before healing restarts nodes
	elections  [2]int // started, won: from the storm to the end of the load
	recoveries []idleload.Recovery
	outages    []idleload.Recovery // not over when the load stopped
}

// stop takes the figures that belong to the load's end.
func (sl *scaleLoad) stop() {
	sl.idleAtEnd = sl.pool.Idle()
	sl.recoveries, sl.outages = sl.pool.Recoveries(), sl.pool.Outages()
	st, won := idleload.Elections(sl.logs()...)
	sl.elections = [2]int{st - sl.elStart[0], won - sl.elStart[1]}
}

// enableIMAPS gives every node (and every fresh one a replace fault
// starts) an IMAPS listener with a self-signed certificate, and caps the
// nodes' address space; it returns the clients' TLS configuration.
func enableIMAPS(c *cluster, work string) *tls.Config {
	cfg, err := idleload.SelfSigned(filepath.Join(work, "imaps-cert.pem"), filepath.Join(work, "imaps-key.pem"))
	if err != nil {
		fatalf("IMAPS certificate: %v", err)
	}
	c.imapsCert, c.imapsKey = filepath.Join(work, "imaps-cert.pem"), filepath.Join(work, "imaps-key.pem")
	c.nodeAS = scaleNodeAS
	for _, nd := range c.nodes() {
		c.addIMAPS(nd)
	}
	return cfg
}

// addIMAPS adds an IMAPS listener to nd's arguments (scale mode only).
func (c *cluster) addIMAPS(nd *node) {
	if c.imapsCert == "" {
		return
	}
	nd.imaps = freeAddrs(1)[0]
	nd.args = append(nd.args, "--imaps", nd.imaps, "--mail-tls-cert", c.imapsCert, "--mail-tls-key", c.imapsKey)
}

func (nd *node) pid() int {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil || nd.cmd.Process == nil {
		return 0
	}
	return nd.cmd.Process.Pid
}

// startScale creates the scale users, starts the clients and waits (up to
// five minutes) until all are IDLE: the login storm.
func startScale(ctx context.Context, c *cluster, clients int, tlsCfg *tls.Config) *scaleLoad {
	sl := &scaleLoad{c: c, rssMax: map[string]int64{}, hwm: map[string]int64{}}
	nUsers := (clients + scaleDevices - 1) / scaleDevices
	for i := range nUsers {
		u := fmt.Sprintf("idle%04d@%s", i, domain)
		sl.users = append(sl.users, idleload.User{Addr: u, Password: "pw-" + u})
	}
	t := time.Now()
	if err := idleload.AddUsers(ctx, c.admin, domain, sl.users, func(n int) { logf("scale: %d/%d users created", n, nUsers) }); err != nil {
		fatalf("scale users: %v", err)
	}
	logf("scale: %d users created in %v", nUsers, time.Since(t).Round(time.Millisecond))
	n := len(c.nodes())
	sl.pool = idleload.New(idleload.Config{
		Addrs: make([]string, n), TLS: tlsCfg, Users: sl.users, Devices: scaleDevices,
		Addr: func(i int) string { return c.nodes()[i].imaps }, // follows a replaced slot
	})
	go sl.sample(ctx)
	sl.elStart[0], sl.elStart[1] = idleload.Elections(sl.logs()...)
	logf("scale: login storm of %d IMAPS clients", sl.pool.Size())
	start := time.Now()
	sl.pool.Start(ctx)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	timeout := time.After(5 * time.Minute)
	for {
		select {
		case <-sl.pool.AllIdle():
			sl.storm, sl.stormDone = time.Since(start), true
			sl.reached = len(sl.pool.FirstIdle())
			logf("scale: all %d clients IDLE after %v", sl.pool.Size(), sl.storm.Round(time.Millisecond))
			return sl
		case <-tick.C:
			started, failed := sl.pool.Attempts()
			logf("scale: %d/%d IDLE, %d sessions started, %d failed", sl.pool.Idle(), sl.pool.Size(), started, failed)
		case <-timeout:
			sl.storm = time.Since(start)
			sl.reached = len(sl.pool.FirstIdle())
			logf("scale: only %d of %d clients IDLE after %v; going on", sl.reached, sl.pool.Size(), sl.storm.Round(time.Second))
			return sl
		case <-ctx.Done():
			return sl
		}
	}
}

func (sl *scaleLoad) logs() []string {
	var out []string
	for _, nd := range sl.c.all() {
		out = append(out, nd.logPath)
	}
	return out
}

// sample reads every node's RSS four times a second, and SIGKILLs the
// largest node should the host run short of memory.
func (sl *scaleLoad) sample(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sl.mu.Lock()
		sl.loadMax = max(sl.loadMax, idleload.LoadAvg())
		sl.mu.Unlock()
		var big *node
		var bigRSS int64
		for _, nd := range sl.c.all() {
			pid := nd.pid()
			if pid == 0 {
				continue
			}
			v, err := idleload.RSS(pid)
			if err != nil {
				continue
			}
			h, _ := idleload.PeakRSS(pid)
			sl.mu.Lock()
			sl.rssMax[nd.id] = max(sl.rssMax[nd.id], v)
			sl.hwm[nd.id] = max(sl.hwm[nd.id], h)
			sl.mu.Unlock()
			if v > bigRSS {
				big, bigRSS = nd, v
			}
		}
		if avail := idleload.MemAvailable(); big != nil && avail > 0 && avail < 3<<30 {
			logf("scale: host memory guard: SIGKILL %s (RSS %s, host MemAvailable %s)", big.id, idleload.MB(bigRSS), idleload.MB(avail))
			_ = syscall.Kill(-big.pid(), syscall.SIGKILL)
			sl.mu.Lock()
			sl.guard = append(sl.guard, fmt.Sprintf("%s at RSS %s", big.id, idleload.MB(bigRSS)))
			sl.mu.Unlock()
		}
	}
}

// deliverWorker delivers to random scale users at scaleRate through random
// nodes until ctx ends, measuring IDLE push latency.
func (sl *scaleLoad) deliverWorker(ctx context.Context, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 5150))
	tick := time.NewTicker(time.Second / scaleRate)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var lmtp []string
		for _, nd := range sl.c.nodes() {
			lmtp = append(lmtp, nd.lmtp)
		}
		u, start := r.IntN(len(sl.users)), r.IntN(len(lmtp))
		wg.Go(func() {
			d := sl.pool.Deliver(context.WithoutCancel(ctx), u, lmtp, start, 30*time.Second)
			sl.mu.Lock()
			sl.deliveries = append(sl.deliveries, d)
			sl.mu.Unlock()
		})
	}
}

// scaleReport is the scale mode's part of the report.
type scaleReport struct {
	Clients, Reached                int
	Storm                           time.Duration
	StormDone                       bool
	IdleAtEnd                       int
	Faults                          []scaleFault
	RSSMax, PeakRSS                 map[string]int64
	Sent, OK, Temp, Perm, Net       int
	PushP50, PushP99, PushMax       time.Duration
	PushMeasured, PushMissed        int
	ElectionsStarted, ElectionsWon  int
	LoadMax                         float64
	GuardKills                      []string
	SessionsStarted, SessionsFailed int64
	GeneratorRSS                    int64
}

type scaleFault struct {
	Kind, Target  string
	Orphans       int // clients that lost their connection while it lasted (or within 10 s after)
	NotBack       int // of those, not IDLE again when the load stopped
	P50, P99, Max time.Duration
}

func (sl *scaleLoad) report(inj *injector) scaleReport {
	r := scaleReport{Clients: sl.pool.Size(), Reached: sl.reached, Storm: sl.storm, StormDone: sl.stormDone,
		IdleAtEnd: sl.idleAtEnd}
	r.SessionsStarted, r.SessionsFailed = sl.pool.Attempts()
	r.GeneratorRSS, _ = idleload.PeakRSS(syscall.Getpid())
	inj.mu.Lock()
	faults := append([]*fault(nil), inj.faults...)
	inj.mu.Unlock()
	// An outage belongs to the last fault that had started when it began,
	// if that fault had not been over for more than 10 s.
	owner := func(lost time.Time) int {
		for i := len(faults) - 1; i >= 0; i-- {
			f := faults[i]
			if f.Start.IsZero() || lost.Before(f.Start) {
				continue
			}
			end := f.Healed
			if end.IsZero() {
				end = lost // still going on
			}
			if lost.Before(end.Add(10 * time.Second)) {
				return i
			}
			return -1
		}
		return -1
	}
	took := make([][]time.Duration, len(faults))
	notBack := make([]int, len(faults))
	for _, x := range sl.recoveries {
		if i := owner(x.Lost); i >= 0 {
			took[i] = append(took[i], x.Took)
		}
	}
	for _, x := range sl.outages {
		if i := owner(x.Lost); i >= 0 {
			notBack[i]++
		}
	}
	for i, f := range faults {
		sf := scaleFault{Kind: f.Kind, Target: f.Target, Orphans: len(took[i]) + notBack[i], NotBack: notBack[i]}
		sf.P50, sf.P99, sf.Max = idleload.Percentiles(took[i])
		r.Faults = append(r.Faults, sf)
	}
	sl.mu.Lock()
	r.RSSMax, r.PeakRSS, r.GuardKills, r.LoadMax = sl.rssMax, sl.hwm, sl.guard, sl.loadMax
	var push []time.Duration
	for _, d := range sl.deliveries {
		r.Sent++
		switch {
		case d.Code == 250:
			r.OK++
		case d.Code/100 == 4:
			r.Temp++
		case d.Code/100 == 5:
			r.Perm++
		default:
			r.Net++
		}
		if d.Measured {
			r.PushMeasured++
			r.PushMissed += d.Missed
			if d.Notified > 0 {
				push = append(push, d.Push)
			}
		}
	}
	sl.mu.Unlock()
	r.PushP50, r.PushP99, r.PushMax = idleload.Percentiles(push)
	r.ElectionsStarted, r.ElectionsWon = sl.elections[0], sl.elections[1]
	return r
}

func (r scaleReport) print(w io.Writer) {
	fmt.Fprintf(w, "\nscale: %d IMAPS IDLE clients (%d per user) over every node; figures are noisy (shared host)\n", r.Clients, scaleDevices)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if r.StormDone {
		fmt.Fprintf(tw, "login storm: all IDLE after\t%v\n", idleload.Round(r.Storm))
	} else {
		fmt.Fprintf(tw, "login storm: IDLE / clients\t%d / %d after %v (never all)\n", r.Reached, r.Clients, idleload.Round(r.Storm))
	}
	fmt.Fprintf(tw, "sessions started / failed\t%d / %d\n", r.SessionsStarted, r.SessionsFailed)
	fmt.Fprintf(tw, "IDLE at the end of the load\t%d / %d\n", r.IdleAtEnd, r.Clients)
	fmt.Fprintf(tw, "deliveries 250 / sent (4xx, 5xx, network)\t%d / %d (%d, %d, %d)\n", r.OK, r.Sent, r.Temp, r.Perm, r.Net)
	fmt.Fprintf(tw, "IDLE push 250→EXISTS all devices p50 / p99 / max\t%v / %v / %v (%d measured, %d device pushes missed)\n",
		idleload.Round(r.PushP50), idleload.Round(r.PushP99), idleload.Round(r.PushMax), r.PushMeasured, r.PushMissed)
	fmt.Fprintf(tw, "raft elections started / won during the run\t%d / %d\n", r.ElectionsStarted, r.ElectionsWon)
	fmt.Fprintf(tw, "load average max\t%.1f\n", r.LoadMax)
	fmt.Fprintf(tw, "load generator peak RSS\t%s\n", idleload.MB(r.GeneratorRSS))
	var ids []string
	for id := range r.PeakRSS {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(tw, "%s RSS max sampled / VmHWM\t%s / %s\n", id, idleload.MB(r.RSSMax[id]), idleload.MB(r.PeakRSS[id]))
	}
	for _, g := range r.GuardKills {
		fmt.Fprintf(tw, "killed by the host memory guard\t%s\n", g)
	}
	tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tTARGET\tORPHANS\tNOT BACK\tBACK IN IDLE p50 / p99 / max")
	for _, f := range r.Faults {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%v / %v / %v\n", f.Kind, f.Target, f.Orphans, f.NotBack, idleload.Round(f.P50), idleload.Round(f.P99), idleload.Round(f.Max))
	}
	tw.Flush()
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "chaos-scale %s\n", b)
}
