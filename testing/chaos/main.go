// Command chaos is hastore's availability proof: it starts a cluster of
// real `hastore serve` processes (default 5 nodes, 3+2), drives mail and web
// load through every node with clients that fail over to the next node
// when theirs fails (as clients behind DNS round robin do), injects faults
// on a seeded, printed schedule, then heals everything and verifies.
//
//	go run ./testing/chaos [-nodes 5 -shards 3+2 -duration 5m -seed N -json out.json -png out.png]
//	CHAOS_DURATION=60s make chaos
//
// Load: LMTP and SMTP deliveries to 19 users (every attempt a distinct
// message, recorded with its bytes), IMAP INBOX sessions (SELECT, FETCH of
// headers and of one body, STORE \Seen), three IMAP clients on different
// nodes sharing one mailbox (APPEND, UID STORE of \Seen/\Flagged, STORE
// \Deleted + UID EXPUNGE, SELECT + FETCH 1:* as a read), IMAP IDLE on one
// node woken by an LMTP delivery through another, HTTP GETs of the
// 300 files of a site, and FUSE: the site mounted (as root, when /dev/fuse
// exists) with the real `hastore mount` child process, whose --addr lists
// one stable forwarding address per cluster slot (so it follows a slot's
// node across replace faults; failover between them is the mount's own),
// and two workers that write new files of 1 byte to 1 MiB of distinct
// random content (create, write, fsync, close: acknowledged when all
// returned nil), rename acknowledged files to new names (acknowledged when
// rename returned nil; a failed rename leaves either name acceptable) and
// read acknowledged files back, comparing bytes. Every operation is
// recorded (start, end, node, attempts, result); a FUSE op that took
// longer than -op-timeout counts as failed for availability.
//
// Faults (-faults, one at a time, each healed before the next; kill2 is
// the only one with two nodes down, and only when M >= 2): kill (SIGKILL,
// restart after the hold), kill-leader (the Raft leader from `admin status
// --json`), kill2, partition (iptables drops everything to and from the
// node's cluster port, and — the node runs as its own uid — its own
// connections to the others), loss (the same rules with 30 % random drop),
// slow (each node advertises a delaying TCP proxy in front of its cluster
// port; 200 ms per chunk both ways while it lasts), corrupt (SIGTERM, a
// byte flipped in 3 random shard records in its badger store, restart),
// disk-full (each node's data directory is its own 4 GiB tmpfs, filled to
// 64 MiB free), split (the cluster cut in two with the same iptables owner
// rules: a minority of (n-1)/2 nodes — the scheduled node and its second
// node — cannot reach the majority nor the majority it, each side talks
// internally and clients still reach every node, so clients of minority
// nodes time out or get errors and fail over; only when (n-1)/2 <= M),
// replace (the node is SIGKILLed as a failed machine; after the hold a
// fresh node with a new ID, uid, ports and empty data directory starts with
// `serve --join`; once the cluster sees it up it takes the old node's slot,
// which the load's clients and the mount's forwarder switch to; then
// `admin node remove` takes the old one out and re-protects its data; only
// the old node is ever unavailable). Partition, loss and split need root
// and iptables (installed with apt-get when missing), disk-full needs
// mount; a kind that cannot run is skipped with the reason printed. The
// nodes run with --grace 60s, so that shards of deleted objects on a
// removed node are purged within the run (until they are, they count as
// under-replicated).
//
// Verification, after healing and waiting for under_replicated 0: every
// acknowledged message is in its INBOX exactly once with the bytes sent
// (Return-Path/Received/Delivered-To the server prepends aside); every HTTP
// body and IMAP body served during the run and afterwards was the right
// bytes; every acknowledged FUSE file is served over HTTP (from the nodes
// in turn) under its latest acknowledged name with the bytes written (a
// missing one counts as lost, other bytes as corrupt) and reads back the
// same through the mount; no UID ever named two messages in a mailbox (UIDVALIDITY
// unchanged); the shared mailbox's history is linearizable (porcupine,
// model: UIDs ascending on APPEND, flags, EXPUNGE of \Deleted; failed
// operations may or may not have happened). A final `admin scrub` checks
// every shard.
//
// Report: faults per kind, each with its duration, the successful ops/s
// while it lasted against the baseline and the time until the cluster was
// fully redundant again; per protocol ops, availability (an op that
// succeeded on another node within -op-timeout counts as a success),
// p50/p99/max latency, failover latency and the longest gap without a
// successful op; lost/corrupt/duplicate counts. -json writes the same with
// the per-second series; acked and lost include the FUSE files; the PNG shows successful ops/s per protocol (http
// blue, imap green, lmtp orange, smtp purple, idle grey, fuse cyan) with fault starts in red and
// heals in green. The last line is
//
//	chaos: acked=N lost=N corrupt=N duplicate=N refshort=N availability=P% linearizable=yes|no|unknown
//
// (refshort: content objects of the site with fewer references than its
// inodes use them) and the exit status is 1 if anything was lost, corrupt,
// duplicated, short of references, a UID reused or the history not
// linearizable (2 if the harness itself failed).
// It stops the nodes, removes its iptables rules, unmounts its tmpfs and
// deletes its temporary directory on exit and on Ctrl-C (-keep keeps the
// data and node logs).
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"hastore/testing/idleload"
)

func main() {
	nodes := flag.Int("nodes", 5, "cluster nodes")
	scheme := flag.String("shards", "3+2", "erasure scheme K+M")
	duration := flag.Duration("duration", 5*time.Minute, "load duration (CHAOS_DURATION overrides the default)")
	seed := flag.Uint64("seed", 0, "seed of the fault schedule and the load (0: random, printed)")
	jsonOut := flag.String("json", "", "write the report as JSON here")
	pngOut := flag.String("png", "", "write the ops/s chart here (default: chaos-SEED.png in the system temp dir; \"none\": no chart)")
	faultsFlag := flag.String("faults", "kill,kill-leader,kill2,partition,split,loss,slow,corrupt,disk-full,replace", "fault kinds to inject (kill2: two nodes at once, only with M >= 2; split: the cluster cut into a minority of (n-1)/2 nodes and the rest, only with (n-1)/2 <= M; replace: a node killed, a fresh one joined in its place, the old one removed; loss: 30% of one node's cluster packets dropped; slow: 200 ms added to its cluster traffic by a proxy; disk-full: its tmpfs filled to 64 MiB free)")
	keep := flag.Bool("keep", false, "keep the data directory and logs")
	attemptTO := flag.Duration("attempt-timeout", 4*time.Second, "a client gives up on a node after this long and tries the next")
	opTO := flag.Duration("op-timeout", 10*time.Second, "an operation (with its failovers) that has not succeeded after this long counts as failed")
	idleClients := flag.Int("idle-clients", 0, "scale mode: this many IMAPS clients in IDLE (10 per user) over every node through the faults (see scale.go)")
	cpuHog := flag.Int("cpu-hog", 0, "busy-loop processes to run beside the cluster during the load")
	flag.Parse()
	if v := os.Getenv("CHAOS_DURATION"); v != "" && !isSet("duration") {
		d, err := time.ParseDuration(v)
		if err != nil {
			fatalf("CHAOS_DURATION: %v", err)
		}
		*duration = d
	}
	if *seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*seed = binary.LittleEndian.Uint64(b[:]) % 1e9
	}
	handleSignals()
	defer cleanup()
	switch *pngOut {
	case "":
		*pngOut = filepath.Join(os.TempDir(), fmt.Sprintf("chaos-%d.png", *seed))
	case "none":
		*pngOut = ""
	}

	work, err := os.MkdirTemp("", "chaos-")
	if err != nil {
		fatalf("%v", err)
	}
	atCleanup(func() {
		if *keep {
			logf("data and logs kept in %s", work)
			return
		}
		_ = os.RemoveAll(work)
	})
	// (the per-node tmpfs, if any, is unmounted before this runs: cleanups run last first)
	logf("seed %d, %d nodes, scheme %s, duration %v, work dir %s", *seed, *nodes, *scheme, *duration, work)
	logf("building cmd/hastore")
	bin := buildHastore(work)

	asUIDs := os.Geteuid() == 0
	c := newCluster(bin, work, *nodes, *scheme, asUIDs)
	if c.m < 1 {
		fatalf("scheme %s tolerates no node loss", *scheme)
	}
	atCleanup(c.stopAll)
	var scaleTLS *tls.Config
	if *idleClients > 0 {
		scaleTLS = enableIMAPS(c, work)
	}
	fw := &firewall{}
	atCleanup(fw.healAll)

	var kinds []string
	skipped := map[string]string{}
	for _, k := range strings.Split(*faultsFlag, ",") {
		k = strings.TrimSpace(k)
		switch k {
		case "partition", "loss", "split":
			if why := canPartition(asUIDs); why != "" {
				skipped[k] = why
				logf("SKIP fault kind %s: %s", k, why)
				continue
			}
			if k == "split" && (*nodes-1)/2 > c.m {
				skipped[k] = fmt.Sprintf("a minority of %d nodes is more than M=%d unavailable at once", (*nodes-1)/2, c.m)
				logf("SKIP fault kind split: %s", skipped[k])
				continue
			}
		case "disk-full":
			if why := mountNodeFS(c); why != "" {
				skipped[k] = why
				logf("SKIP fault kind disk-full: %s", why)
				continue
			}
			atCleanup(func() { c.stopAll(); unmountNodeFS(c) })
		case "kill2":
			if c.m < 2 || *nodes-2 <= *nodes/2 {
				skipped[k] = fmt.Sprintf("needs M >= 2 and a Raft majority left with two nodes down (scheme %s, %d nodes)", *scheme, *nodes)
				logf("SKIP fault kind kill2: %s", skipped[k])
				continue
			}
		case "kill", "kill-leader", "corrupt", "slow", "replace":
		case "":
			continue
		default:
			fatalf("unknown fault kind %q", k)
		}
		kinds = append(kinds, k)
	}
	if len(kinds) == 0 {
		fatalf("no fault kind left to inject")
	}

	for _, nd := range c.nodes() {
		c.start(nd)
	}
	if err := waitFor(90*time.Second, func() error { return c.healthy(false) }); err != nil {
		fatalf("cluster not healthy: %v\n%s", err, tailLog(c.nodes()[0].logPath))
	}
	for _, nd := range c.nodes() {
		if err := waitListening(30*time.Second, nd.smtp, nd.lmtp, nd.imap, nd.http); err != nil {
			fatalf("%s: %v", nd.id, err)
		}
	}
	s := setup(c, *seed)
	s.attTO, s.opTO = *attemptTO, *opTO
	if *cpuHog > 0 {
		stopHogs, err := idleload.StartHogs(*cpuHog)
		if err != nil {
			fatalf("%v", err)
		}
		atCleanup(stopHogs)
		logf("%d CPU hogs started", *cpuHog)
	}
	scaleCtx, scaleCancel := context.WithCancel(context.Background())
	defer scaleCancel()
	var scale *scaleLoad
	if *idleClients > 0 {
		scale = startScale(scaleCtx, c, *idleClients, scaleTLS)
	}
	if fs, err := startMount(c, work); err != nil {
		skipped["FUSE writes"] = err.Error()
		logf("SKIP FUSE load: %v", err)
	} else {
		s.fuse = fs
		logf("site %s mounted on %s", siteName, fs.mnt)
	}
	sched := schedule(*seed, *nodes, *duration, kinds)
	fmt.Printf("fault schedule (seed %d):\n", *seed)
	for _, f := range sched {
		target := c.nodes()[f.Node].id
		switch f.Kind {
		case "kill-leader":
			target = "leader"
		case "kill2":
			target += "+" + c.nodes()[f.Node2].id
		case "split":
			minority, _ := splitGroups(c.nodes(), f.Node, f.Node2)
			target = ids(minority)
		}
		fmt.Printf("  +%-6v %-12s %-6s hold %v\n", f.At, f.Kind, target, f.Hold.Round(time.Millisecond))
	}

	// ---- load and faults ----
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t0 := time.Now()
	goW := func(fn func()) { wg.Add(1); go func() { defer wg.Done(); fn() }() }
	for w := range *nodes {
		goW(func() { s.deliverWorker(ctx, w, true, *seed, 50*time.Millisecond) })
	}
	for w := range 2 {
		goW(func() { s.deliverWorker(ctx, *nodes+w, false, *seed, 100*time.Millisecond) })
	}
	for w := range *nodes {
		goW(func() { s.httpWorker(ctx, w, *seed, 20*time.Millisecond) })
	}
	for w := range 2 {
		goW(func() { s.inboxWorker(ctx, w, *seed, 200*time.Millisecond) })
	}
	for w := range 3 {
		goW(func() { s.sharedWorker(ctx, w, *seed, 100*time.Millisecond) })
	}
	for w := range 2 {
		goW(func() { s.idleWorker(ctx, w, *seed, 200*time.Millisecond) })
	}
	if s.fuse != nil {
		for w := range 2 {
			goW(func() { s.fuseWorker(ctx, w, *seed, 200*time.Millisecond) })
		}
	}
	if scale != nil {
		goW(func() { scale.deliverWorker(ctx, *seed) })
	}
	inj := &injector{c: c, fw: fw, seed: *seed, t0: t0}
	stop := make(chan struct{})
	injDone := make(chan struct{})
	go func() { inj.run(stop, sched); close(injDone) }()
	tick := time.NewTicker(10 * time.Second)
	end := time.After(*duration)
loop:
	for {
		select {
		case <-end:
			break loop
		case <-tick.C:
			logf("progress: %d ops so far", s.rec.count())
		}
	}
	close(stop)
	<-injDone
	cancel()
	// The load ends here: operations cut short by the cancel are not
	// recorded, and the seconds spent waiting for the workers to return
	// (a FUSE call finishing, say) must not count as seconds without a
	// successful operation.
	loadEnd := time.Now()
	if scale != nil {
		scale.stop()
		scaleCancel() // its clients would only add logins to the healing
	}
	wg.Wait()
	logf("load stopped after %v; healing", loadEnd.Sub(t0).Round(time.Millisecond))

	// ---- heal ----
	fw.healAll()
	for _, nd := range c.nodes() {
		if !nd.running() {
			c.halt(nd, syscall.SIGKILL)
			c.start(nd)
		}
	}
	healStart := time.Now()
	// Up to 10 minutes: after a long run a late replace leaves every
	// object of the removed node to rebuild; the time it took is reported.
	lastLog := time.Now()
	healErr := waitFor(10*time.Minute, func() error {
		err := c.healthy(true)
		if err != nil && time.Since(lastLog) > 30*time.Second {
			lastLog = time.Now()
			logf("healing: %v", err)
		}
		return err
	})
	healTook := time.Since(healStart)
	if healErr != nil {
		logf("WARNING: not fully redundant %v after healing: %v", healTook.Round(time.Second), healErr)
		if st, err := c.status(10 * time.Second); err == nil {
			for _, n := range st.Nodes {
				for _, nd := range c.nodes() {
					if nd.id == n.ID && !n.Up {
						logf("node %s is down (process running: %v)", n.ID, nd.running())
					}
				}
			}
		}
	} else {
		logf("full redundancy %v after healing", healTook.Round(time.Millisecond))
	}
	inj.redWG.Wait()

	// ---- verify ----
	v := s.verify()
	vis := filepath.Join(os.TempDir(), fmt.Sprintf("chaos-%d-linearizability.html", *seed))
	if *pngOut != "" {
		vis = strings.TrimSuffix(*pngOut, filepath.Ext(*pngOut)) + "-linearizability.html"
	}
	// Long runs have long histories: porcupine gets more time to decide.
	lin, nHist := s.checkLinearizable(max(2*time.Minute, *duration/3), vis)
	rep := s.report(t0, loadEnd, inj, v, lin, nHist, skipped, *seed, healTook, healErr)
	rep.Scrub = finalScrub(c)
	rep.print(os.Stdout)
	if scale != nil {
		scale.report(inj).print(os.Stdout)
	}
	if *jsonOut != "" {
		if err := rep.writeJSON(*jsonOut); err != nil {
			logf("json: %v", err)
		}
	}
	if *pngOut != "" {
		if err := s.writePNG(*pngOut, t0, loadEnd, inj.faults); err != nil {
			logf("png: %v", err)
		} else {
			abs, _ := filepath.Abs(*pngOut)
			logf("chart: %s (ops/s: http blue, imap green, lmtp orange, smtp purple, idle grey, fuse cyan; red line = fault start, green = healed; ticks every 10 s)", abs)
		}
	}
	fmt.Printf("chaos: acked=%d lost=%d corrupt=%d duplicate=%d refshort=%d availability=%.4f%% linearizable=%s\n",
		v.Acked, v.Lost, rep.Corrupt, v.Duplicate, v.RefProblems, rep.Availability, linearWord(lin))
	bad := v.Lost > 0 || rep.Corrupt > 0 || v.Duplicate > 0 || v.RefProblems > 0 || lin != "yes" || len(v.Reused) > 0 ||
		healErr != nil || v.FinalHTTPBad > 0 || len(v.Errors) > 0
	if bad && !*keep {
		// keep the node logs for a look
		logs := filepath.Join(os.TempDir(), fmt.Sprintf("chaos-%d-logs", *seed))
		_ = os.MkdirAll(logs, 0o755)
		for _, nd := range c.nodes() {
			if b, err := os.ReadFile(nd.logPath); err == nil {
				_ = os.WriteFile(filepath.Join(logs, nd.id+".log"), b, 0o644)
			}
		}
		logf("node logs kept in %s", logs)
	}
	cleanup()
	if bad {
		os.Exit(1)
	}
}

func isSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func tailLog(p string) string {
	b, _ := os.ReadFile(p)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func (r *recorder) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.ops) }

// setup creates the domain, the users, the shared mailbox and the site.
func setup(c *cluster, seed uint64) *state {
	s := &state{c: c, rec: &recorder{}, pw: map[string]string{}, files: map[string][]byte{},
		opTO: 10 * time.Second, attTO: 4 * time.Second, msgs: map[string]*message{},
		uidMap: map[string]map[uint32]string{}, uidValid: map[string]uint32{}, shared: &history{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.admin(ctx, "", "domain", "add", domain); err != nil {
		fatalf("%v", err)
	}
	for i := range 20 {
		u := fmt.Sprintf("u%02d", i)
		s.users = append(s.users, u)
		s.pw[u] = fmt.Sprintf("pw-%s-%d", u, seed)
		if _, err := c.admin(ctx, s.pw[u]+"\n", "user", "add", u+"@"+domain); err != nil {
			fatalf("%v", err)
		}
	}
	r := mrand.New(mrand.NewPCG(seed, 99))
	dir := filepath.Join(c.dir, "site")
	for i := range 300 {
		p := fmt.Sprintf("f/%02d/file%03d.txt", i%10, i)
		n := 100 + r.IntN(30000)
		if i%50 == 0 {
			n = 200000 + r.IntN(300000) // a few large ones (erasure-coded)
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte('a' + r.IntN(26))
		}
		s.files[p] = b
		s.paths = append(s.paths, p)
		fp := filepath.Join(dir, p)
		_ = os.MkdirAll(filepath.Dir(fp), 0o755)
		if err := os.WriteFile(fp, b, 0o644); err != nil {
			fatalf("%v", err)
		}
	}
	if _, err := c.admin(ctx, "", "site", "add", siteName); err != nil {
		fatalf("%v", err)
	}
	if out, err := c.admin(ctx, "", "site", "put", siteName, dir); err != nil {
		fatalf("%v\n%s", err, out)
	}
	// the shared mailbox
	cl, err := s.login(ctx, c.nodes()[0], s.users[0])
	if err != nil {
		fatalf("IMAP login: %v", err)
	}
	if err := cl.Create(sharedBox, nil).Wait(); err != nil {
		fatalf("IMAP CREATE %s: %v", sharedBox, err)
	}
	cl.Close()
	logf("set up domain %s, %d users, site %s with %d files, mailbox %s", domain, len(s.users), siteName, len(s.paths), sharedBox)
	return s
}

// scrubOnlyRemoved says whether a failed `admin scrub` failed only
// because it listed removed nodes as down, and which.
func scrubOnlyRemoved(errText string, retired func(id string) bool) (removed []string, only bool) {
	only = true
	for _, l := range strings.Split(errText, "\n") {
		l = strings.TrimSpace(l)
		l = strings.TrimPrefix(l, "hastore admin scrub: exit status 1: ")
		l = strings.TrimSpace(strings.TrimPrefix(l, "hastore admin:"))
		l = strings.TrimSuffix(l, " ()")
		if id, ok := strings.CutSuffix(l, " is down: not scrubbed"); ok && retired(strings.TrimPrefix(id, "node ")) {
			removed = append(removed, strings.TrimPrefix(id, "node "))
		} else if !scrubProgress.MatchString(l) {
			only = false
		}
	}
	return removed, only && len(removed) > 0
}

var scrubProgress = regexp.MustCompile(`^scrub n[0-9]+: (running|done) [0-9]+/[0-9]+$`)

// finalScrub has every node verify all its shards and reports what the
// cluster says afterwards.
func finalScrub(c *cluster) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t := time.Now()
	out, err := c.admin(ctx, "", "scrub")
	res := strings.TrimSpace(string(out))
	if i := strings.LastIndexAny(res, "\r\n"); i >= 0 {
		res = strings.TrimSpace(res[i+1:])
	}
	if err != nil {
		// `admin scrub` lists the removed (replaced) nodes as down and
		// exits 1; say so rather than "failed" when that is all.
		removed, onlyRemoved := scrubOnlyRemoved(err.Error(), c.isRetired)
		if onlyRemoved {
			return fmt.Sprintf("ok in %v on every member; admin scrub exited 1 only because it lists the removed node(s) %s as down, not scrubbed", time.Since(t).Round(time.Millisecond), strings.Join(removed, ","))
		}
		return fmt.Sprintf("failed after %v: %v (%s)", time.Since(t).Round(time.Millisecond), err, res)
	}
	st, serr := c.status(10 * time.Second)
	under := "?"
	if serr == nil {
		under = fmt.Sprint(st.UnderReplicated)
	}
	if res != "" {
		res = "; " + res
	}
	return fmt.Sprintf("ok in %v, under-replicated afterwards %s%s", time.Since(t).Round(time.Millisecond), under, res)
}

// linearWord is the summary line's linearizability verdict: "unknown"
// (the checker ran out of time on a long history) is not "no", which
// would claim a violation was found.
func linearWord(lin string) string {
	switch lin {
	case "yes", "unknown":
		return lin
	}
	return "no"
}
