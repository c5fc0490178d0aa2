// Command mailbench compares hastore's mail frontends with Dovecot on the
// same machine in the same run: LMTP delivery of 75 KB messages over 8
// connections (messages/s), then IMAP LOGIN, SELECT INBOX and FETCH 1:*
// (FLAGS ENVELOPE RFC822.SIZE) of the mailbox those deliveries filled, and a
// few BODY.PEEK[] fetches — on a loopback cluster of real `hastore serve`
// processes and on a Dovecot (maildir) started with a generated config, its
// own passwd-file passdb/userdb and loopback ports in a temporary directory.
//
//	go run ./testing/mailbench [-messages 10000] [-conc 8] [-size 75000] [-bodies 100] [-rounds 4]
//
// The LMTP deliveries alternate between the systems in -rounds rounds, so
// that other work on a shared machine weighs on both alike; the table sums
// the rounds. -compare OLD-BINARY adds a second hastore cluster run from
// another build into the same rounds, for a before/after ratio measured
// under the same load:
//
//	go build -o /tmp/hastore-old ./cmd/hastore   # on the old commit
//	go run ./testing/mailbench -compare /tmp/hastore-old
//
// Both systems get the same messages (every one distinct: hastore stores
// bodies by content hash) for one user, all to INBOX. It builds cmd/hastore
// into a temporary directory, stops hastore and dovecot and removes its
// temporary files when it ends (also on Ctrl-C; should it be SIGKILLed, the
// kernel kills the children). `make bench` documents it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"hastore/testing/benchproc"
)

type config struct {
	messages, conc, size int
	reps, bodies, rounds int
	warmup               int
	nodes                int
	scheme               string
	dir, bin, dovecot    string
	compare              string
	keep                 bool
	profile              string
	only                 string
}

func main() {
	benchproc.SetName("mailbench")
	var cfg config
	flag.IntVar(&cfg.messages, "messages", 10000, "messages delivered over LMTP, and so the size of the mailbox read over IMAP")
	flag.IntVar(&cfg.conc, "conc", 8, "concurrent LMTP connections")
	flag.IntVar(&cfg.warmup, "warmup", 100, "messages each system delivers before the measured rounds (not counted: a cold start's elections, first compactions and page faults are not what is compared)")
	flag.IntVar(&cfg.rounds, "rounds", 4, "LMTP delivery alternates between the systems in this many rounds (so that a changing load on a shared machine falls on both alike)")
	flag.IntVar(&cfg.size, "size", 75000, "message size in bytes")
	flag.IntVar(&cfg.reps, "fetch-reps", 3, "FETCH 1:* repetitions (the first is cold)")
	flag.IntVar(&cfg.bodies, "bodies", 100, "BODY.PEEK[] fetches of random messages, one command each")
	flag.IntVar(&cfg.nodes, "nodes", 3, "hastore nodes (separate hastore serve processes)")
	flag.StringVar(&cfg.scheme, "scheme", "2+1", "hastore erasure scheme K+M (hastore serve --shards)")
	flag.StringVar(&cfg.dir, "dir", "", "parent directory for the data (default: the system temp dir)")
	flag.StringVar(&cfg.bin, "bin", "", "use this hastore binary instead of building cmd/hastore")
	flag.StringVar(&cfg.dovecot, "dovecot", "", "dovecot binary (default: from PATH or /usr/sbin/dovecot)")
	flag.StringVar(&cfg.compare, "compare", "", "also run a second hastore cluster from this binary (say, an older build) in the same run, its rounds alternating with the others', for a before/after ratio under the same load")
	flag.StringVar(&cfg.only, "only", "", "run only one system: hastore or dovecot")
	flag.StringVar(&cfg.profile, "profile", "", "save CPU, mutex and block profiles of every hastore node during LMTP delivery and FETCH 1:* in this directory (compiles a pprof hook into the binary)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the data directories (and print where they are)")
	flag.Parse()
	if cfg.profile != "" && cfg.bin != "" {
		benchproc.Fatalf("-profile needs the binary built here (it compiles in a pprof hook); drop -bin")
	}
	if cfg.profile != "" && cfg.compare != "" {
		benchproc.Fatalf("-profile and -compare do not go together (the profiles would share names); profile one binary at a time")
	}
	if cfg.compare != "" && cfg.only == "dovecot" {
		benchproc.Fatalf("-compare runs hastore; drop -only dovecot")
	}
	if cfg.profile != "" {
		if err := os.MkdirAll(cfg.profile, 0o750); err != nil {
			benchproc.Fatalf("%v", err)
		}
	}
	if cfg.messages < 1 || cfg.conc < 1 || cfg.size < 1000 || cfg.nodes < 1 || cfg.reps < 1 || cfg.bodies < 0 || cfg.rounds < 1 || cfg.rounds > cfg.messages || cfg.warmup < 0 {
		benchproc.Fatalf("-messages, -conc, -nodes, -fetch-reps, -rounds must be positive (-rounds at most -messages), -size at least 1000")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	benchproc.HandleSignals(cancel, "hastore and dovecot, removing temporary files")
	defer benchproc.Cleanup()
	started := time.Now()

	work, err := os.MkdirTemp(cfg.dir, "mailbench-")
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	benchproc.AtCleanup(func() {
		if cfg.keep {
			fmt.Fprintf(os.Stderr, "mailbench: hastore data kept in %s\n", work)
			return
		}
		_ = os.RemoveAll(work)
	})

	var targets []*target
	if cfg.only != "dovecot" {
		bin := cfg.bin
		if bin == "" {
			benchproc.Progress("building cmd/hastore")
			mode := benchproc.NoPprof
			if cfg.profile != "" {
				mode = benchproc.PprofContention
			}
			if bin, err = benchproc.BuildHastore(work, mode); err != nil {
				benchproc.Fatalf("%v", err)
			}
		}
		targets = append(targets, startHastore(ctx, cfg, bin, work))
		if cfg.compare != "" {
			cdir := filepath.Join(work, "compare")
			if err := os.MkdirAll(cdir, 0o750); err != nil {
				benchproc.Fatalf("%v", err)
			}
			ct := startHastore(ctx, cfg, cfg.compare, cdir)
			ct.name = "hastore " + filepath.Base(cfg.compare)
			ct.note += " (-compare " + cfg.compare + ")"
			targets = append(targets, ct)
		}
	}
	if cfg.only != "hastore" {
		targets = append(targets, startDovecot(ctx, cfg))
	}

	// The systems take turns, round by round, each delivering the next
	// share of the messages: on a shared machine whose load changes
	// during the run, both then meet the same load and the ratio holds.
	if cfg.warmup > 0 {
		for _, t := range targets {
			benchproc.Progress("%s: warming up with %d messages (not counted)", t.name, cfg.warmup)
			r := deliverLMTP(ctx, t, cfg.messages, cfg.messages+cfg.warmup, cfg.conc, cfg.size)
			t.checkAlive("LMTP warm-up")
			if r.errs > 0 {
				benchproc.Progress("%s: %d warm-up errors, first: %v", t.name, r.errs, r.firstErr)
			}
			t.warm = r.delivered
		}
	}
	lm := map[*target]*lmtpResult{}
	var waits []func()
	for round := range cfg.rounds {
		lo, hi := cfg.messages*round/cfg.rounds, cfg.messages*(round+1)/cfg.rounds
		// Who goes first turns too: a system never always follows the
		// same one (whose background work, compactions say, it would meet).
		for k := range targets {
			t := targets[(round+k)%len(targets)]
			benchproc.Progress("%s: round %d/%d: delivering messages %d..%d of %d bytes over %d LMTP connections", t.name, round+1, cfg.rounds, lo, hi-1, cfg.size, cfg.conc)
			if round == 0 {
				waits = append(waits, profileNodes(ctx, cfg, t, "lmtp", 10))
			}
			r := deliverLMTP(ctx, t, lo, hi, cfg.conc, cfg.size)
			t.checkAlive("LMTP delivery")
			benchproc.Progress("%s: %d delivered in %v (%.1f msg/s), %d errors%s", t.name, r.delivered, r.elapsed.Round(time.Millisecond), r.rate(), r.errs, errSuffix(r.firstErr))
			if lm[t] == nil {
				lm[t] = r
			} else {
				lm[t].add(r)
			}
		}
	}
	for _, wait := range waits {
		wait()
	}
	for _, t := range targets {
		if lm[t].delivered == 0 {
			benchproc.Fatalf("%s: nothing delivered: %v", t.name, lm[t].firstErr)
		}
	}
	im := map[*target]*imapResult{}
	for _, t := range targets {
		benchproc.Progress("%s: IMAP LOGIN, SELECT, %d× FETCH 1:* (FLAGS ENVELOPE RFC822.SIZE), %d× BODY.PEEK[]", t.name, cfg.reps, cfg.bodies)
		wait := profileNodes(ctx, cfg, t, "imap", 5)
		r := measureIMAP(ctx, t, t.warm+lm[t].delivered, cfg.reps, cfg.bodies)
		wait()
		t.checkAlive("IMAP")
		benchproc.Progress("%s: SELECT %v, FETCH 1:* %v", t.name, r.selectT.Round(time.Millisecond), roundAll(r.fetchAll))
		im[t] = r
	}
	printTable(cfg, targets, lm, im, time.Since(started))
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return " (first: " + err.Error() + ")"
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func minDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds[1:] {
		m = min(m, d)
	}
	return m
}

// row is one line of the table: a value per target, and whether bigger is
// better (for the ratio's reading).
type row struct {
	name   string
	vals   []float64
	format func(float64) string
	higher bool // higher is better
}

func printTable(cfg config, targets []*target, lm map[*target]*lmtpResult, im map[*target]*imapResult, total time.Duration) {
	f1 := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	fms := func(v float64) string { return ms(time.Duration(v * float64(time.Millisecond))) }
	fpct := func(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) }
	per := func(f func(t *target) float64) []float64 {
		var out []float64
		for _, t := range targets {
			out = append(out, f(t))
		}
		return out
	}
	msOf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rows := []row{
		{"LMTP delivery (messages/s)", per(func(t *target) float64 { return lm[t].rate() }), f1, true},
		{"LMTP delivery (MB/s)", per(func(t *target) float64 { return float64(lm[t].bytes) / 1e6 / lm[t].elapsed.Seconds() }), f1, true},
		{"LMTP latency p50", per(func(t *target) float64 { return msOf(pct(lm[t].lat, 0.5)) }), fms, false},
		{"LMTP latency p99", per(func(t *target) float64 { return msOf(pct(lm[t].lat, 0.99)) }), fms, false},
		{"LMTP server CPU per message", per(func(t *target) float64 { return 1000 * lm[t].serverCPU / float64(lm[t].delivered) }), fms, false},
		{"LMTP server CPU (cores busy)", per(func(t *target) float64 { return lm[t].serverCPU / lm[t].elapsed.Seconds() }), func(v float64) string { return fmt.Sprintf("%.2f", v) }, false},
		{"  mailbench's own CPU during LMTP (cores)", per(func(t *target) float64 { return lm[t].clientCPU / lm[t].elapsed.Seconds() }), func(v float64) string { return fmt.Sprintf("%.2f", v) }, false},
		{"  host busy during LMTP (all cores)", per(func(t *target) float64 { return lm[t].hostBusy }), fpct, false},
		{"IMAP connect + LOGIN", per(func(t *target) float64 { return msOf(im[t].login) }), fms, false},
		{"IMAP SELECT INBOX", per(func(t *target) float64 { return msOf(im[t].selectT) }), fms, false},
		{"FETCH 1:* (FLAGS ENVELOPE RFC822.SIZE), 1st", per(func(t *target) float64 { return msOf(im[t].fetchAll[0]) }), fms, false},
	}
	if cfg.reps > 1 {
		rows = append(rows, row{fmt.Sprintf("FETCH 1:* ..., best of next %d", cfg.reps-1), per(func(t *target) float64 { return msOf(minDur(im[t].fetchAll[1:])) }), fms, false})
	}
	rows = append(rows,
		row{"FETCH 1:* ... (messages/s, best)", per(func(t *target) float64 { return float64(im[t].fetched) / minDur(im[t].fetchAll).Seconds() }), func(v float64) string { return fmt.Sprintf("%.0f", v) }, true},
		row{"FETCH 1:* ... server CPU, 1st", per(func(t *target) float64 { return 1000 * im[t].fetchServerCPU0 }), fms, false},
		row{"FETCH 1:* ... server CPU, mean of next", per(func(t *target) float64 { return 1000 * mean(im[t].fetchServerCPU[1:]) }), fms, false},
		row{"  mailbench's own CPU per FETCH 1:*", per(func(t *target) float64 { return 1000 * mean(im[t].fetchClientCPU) }), fms, false},
	)
	if cfg.bodies > 0 {
		rows = append(rows,
			row{fmt.Sprintf("FETCH n BODY.PEEK[] x%d, mean", cfg.bodies), per(func(t *target) float64 { return msOf(im[t].bodyT) / float64(im[t].bodyN) }), fms, false},
			row{"FETCH n BODY.PEEK[] p99", per(func(t *target) float64 { return msOf(pct(im[t].bodyLat, 0.99)) }), fms, false},
		)
	}

	fmt.Println()
	fmt.Printf("mailbench: %d messages of %d bytes (distinct), LMTP over %d connections in %d alternating rounds after %d uncounted, one user, INBOX; IMAP: one connection, %d× FETCH 1:*, %d× BODY.PEEK[]\n",
		cfg.messages, cfg.size, cfg.conc, cfg.rounds, cfg.warmup, cfg.reps, cfg.bodies)
	for _, t := range targets {
		fmt.Printf("  %s\n", t.note)
	}
	fmt.Printf("  host: %d CPUs, GOMAXPROCS %d, load average at the end %s; whole run %v\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), loadavg(), total.Round(time.Second))
	for _, t := range targets {
		r := lm[t]
		if r.errs > 0 {
			fmt.Printf("  %s: %d LMTP errors, first: %v\n", t.name, r.errs, r.firstErr)
		}
		if int(im[t].exists) != t.warm+r.delivered {
			fmt.Printf("  %s: SELECT saw EXISTS %d, %d delivered (%d of them warming up)\n", t.name, im[t].exists, t.warm+r.delivered, t.warm)
		}
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := "\t"
	for _, t := range targets {
		hdr += t.name + "\t"
	}
	// Each system against the last one (the peer: dovecot, or the
	// -compare build when dovecot is left out).
	short := func(name string) string {
		if i := strings.Index(name, " ("); i >= 0 {
			return name[:i]
		}
		return name
	}
	last := len(targets) - 1
	for _, t := range targets[:max(last, 0)] {
		hdr += "ratio " + short(t.name) + "/" + short(targets[last].name) + "\t"
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r.name))
	}
	fmt.Fprintln(tw, hdr)
	for _, r := range rows {
		line := fmt.Sprintf("%-*s\t", width, r.name) // left-aligned names
		for _, v := range r.vals {
			line += r.format(v) + "\t"
		}
		for _, v := range r.vals[:max(len(r.vals)-1, 0)] {
			peer := r.vals[len(r.vals)-1]
			if peer == 0 {
				line += "\t"
				continue
			}
			ratio := v / peer
			better := (ratio > 1) == r.higher
			word := "worse"
			if better {
				word = "better"
			}
			if ratio > 0.95 && ratio < 1.05 {
				word = "same"
			}
			line += fmt.Sprintf("%.2f× (%s)\t", ratio, word)
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	if len(targets) >= 2 {
		fmt.Printf("\nratio = a system's value ÷ %s's value: for rates higher is better, for times and CPU lower is better; the word says which way it falls for the first.\n", short(targets[last].name))
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// profileNodes starts CPU, mutex and block profiles of secs seconds of every
// hastore node (with -profile); the returned func waits for them.
func profileNodes(ctx context.Context, cfg config, t *target, name string, secs int) func() {
	var wg sync.WaitGroup
	for i, addr := range t.pprofAddrs {
		for _, q := range []struct{ query, suffix string }{{"profile?seconds=", "cpu"}, {"mutex?seconds=", "mutex"}, {"block?seconds=", "block"}} {
			wg.Go(func() {
				path := filepath.Join(cfg.profile, fmt.Sprintf("%s-n%d.%s.pprof", name, i+1, q.suffix))
				if err := benchproc.FetchPprof(ctx, addr, q.query+strconv.Itoa(secs), path); err != nil {
					benchproc.Progress("profile of n%d: %v", i+1, err)
				}
			})
		}
	}
	return wg.Wait
}
