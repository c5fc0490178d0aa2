// Command imapbench compares hastore's IMAP server with Dovecot 2.3 on the
// same machine in one run, command by command, on the same mailbox: 10,000
// messages (realistic headers, varied From/Subject/Date, threads, some HTML
// and attachments) in one INBOX, served by a loopback cluster of real
// `hastore serve` processes (3 nodes, shards 2+1) and by a private Dovecot
// (maildir, generated config, loopback port) in a temporary directory.
//
//	go run ./testing/imapbench [-messages 10000] [-reps 3] [-appends 20]
//
// Both get the corpus as a Dovecot maildir with a dovecot-uidlist: Dovecot
// serves it as it is, hastore imports it with `hastore admin import`
// (UIDs kept), so the answers of SORT, THREAD and SEARCH are compared too,
// and a difference is flagged in the table. Each command runs -reps times
// on one logged-in connection per system, the systems alternating, so that
// other work on a shared machine falls on both alike; the table gives the
// first (cold: no cache of Dovecot's or hastore's yet) and the median of
// the rest (warm), the ratio hastore/dovecot of the warm figures, and the
// CPU time each system spent per run of the command. `make bench` runs it;
// docs/mail.md ("IMAP performance") describes it.
package main

import (
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"hastore/testing/benchproc"
	"hastore/testing/idleload"
)

const (
	benchDomain = "bench.test"
	benchUser   = "bench@" + benchDomain
	benchPass   = "imapbench-password"
)

type config struct {
	messages, reps, appends, appendSize, nodes int
	scheme, dir, bin, dovecot, only            string
	keep                                       bool
	settle                                     time.Duration
}

func main() {
	benchproc.SetName("imapbench")
	var cfg config
	flag.IntVar(&cfg.messages, "messages", 10000, "messages in the INBOX both systems serve")
	flag.IntVar(&cfg.reps, "reps", 3, "runs of each command per system (the first is reported apart, as cold)")
	flag.IntVar(&cfg.appends, "appends", 20, "APPENDs per run of the APPEND command")
	flag.IntVar(&cfg.appendSize, "append-size", 75000, "size of each appended message in bytes")
	flag.IntVar(&cfg.nodes, "nodes", 3, "hastore nodes (separate hastore serve processes)")
	flag.StringVar(&cfg.scheme, "scheme", "2+1", "hastore erasure scheme K+M (hastore serve --shards)")
	flag.StringVar(&cfg.dir, "dir", "", "parent directory for the data (default: the system temp dir)")
	flag.StringVar(&cfg.bin, "bin", "", "use this hastore binary instead of building cmd/hastore")
	flag.StringVar(&cfg.dovecot, "dovecot", "", "dovecot binary (default: from PATH or /usr/sbin/dovecot)")
	flag.StringVar(&cfg.only, "only", "", "run only one system: hastore or dovecot")
	flag.DurationVar(&cfg.settle, "settle", 10*time.Second, "pause between filling the mailboxes and the first measurement (the import's compactions and repair scans finish, and do not count as the first command's CPU)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the data directories (and print where they are)")
	flag.Parse()
	if cfg.messages < 60 || cfg.reps < 1 || cfg.appends < 1 || cfg.appendSize < 1000 || cfg.nodes < 1 || cfg.settle < 0 {
		benchproc.Fatalf("-messages must be at least 60, -reps, -appends and -nodes positive, -append-size at least 1000")
	}
	if cfg.only != "" && cfg.only != "hastore" && cfg.only != "dovecot" {
		benchproc.Fatalf("-only takes hastore or dovecot")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	benchproc.HandleSignals(cancel, "hastore and dovecot, removing temporary files")
	defer benchproc.Cleanup()
	started := time.Now()

	work, err := os.MkdirTemp(cfg.dir, "imapbench-")
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	benchproc.AtCleanup(func() {
		if cfg.keep {
			fmt.Fprintf(os.Stderr, "imapbench: hastore data kept in %s\n", work)
			return
		}
		_ = os.RemoveAll(work)
	})

	benchproc.Progress("generating %d messages", cfg.messages)
	corp := makeCorpus(cfg.messages)
	// The maildir lives in Dovecot's home (it serves it in place); hastore
	// imports it from there before Dovecot first opens it.
	var dc *dovecot
	maildir := filepath.Join(work, "Maildir")
	if cfg.only != "hastore" {
		dc = prepareDovecot(cfg)
		maildir = dc.maildir
	}
	if err := corp.writeMaildir(maildir); err != nil {
		benchproc.Fatalf("writing the maildir: %v", err)
	}
	benchproc.Progress("corpus: %d messages, %.1f MB, %d unseen, %d with %q", len(corp.msgs), float64(corp.bytes)/1e6, corp.unseen, corp.withWord, SearchWord)

	var targets []*target
	if cfg.only != "dovecot" {
		if cfg.bin == "" {
			benchproc.Progress("building cmd/hastore")
			if cfg.bin, err = benchproc.BuildHastore(work, benchproc.NoPprof); err != nil {
				benchproc.Fatalf("%v", err)
			}
		}
		h, t := startHastore(ctx, cfg, work)
		if _, err := h.admin(ctx, "", "domain", "add", benchDomain); err != nil {
			benchproc.Fatalf("%v", err)
		}
		if _, err := h.admin(ctx, benchPass+"\n", "user", "add", benchUser); err != nil {
			benchproc.Fatalf("%v", err)
		}
		benchproc.Progress("importing the maildir into hastore (hastore admin import)")
		t0 := time.Now()
		out, err := h.admin(ctx, "", "import", "--user", benchUser, maildir)
		if err != nil {
			benchproc.Fatalf("%v", err)
		}
		benchproc.Progress("imported in %v: %s", time.Since(t0).Round(time.Second), lastLine(out))
		targets = append(targets, t)
	}
	if dc != nil {
		targets = append(targets, dc.start(ctx))
	}

	// One session per system, checked to see the whole mailbox; the
	// mailbox for the APPENDs made. Dovecot builds its index here (once,
	// as it would have long before on a real server).
	sess := make([]*client, len(targets))
	for i, t := range targets {
		c, err := login(t.imap)
		if err != nil {
			benchproc.Fatalf("%s: %v", t.name, err)
		}
		sess[i] = c
		lines, err := c.run("SELECT INBOX")
		if err != nil {
			benchproc.Fatalf("%s: %v", t.name, err)
		}
		if n := existsOf(lines); n != cfg.messages {
			benchproc.Fatalf("%s: SELECT INBOX says %d messages, want %d", t.name, n, cfg.messages)
		}
		if _, err := c.run("CREATE Appends"); err != nil {
			benchproc.Fatalf("%s: %v", t.name, err)
		}
	}

	benchproc.Progress("settling for %v", cfg.settle)
	time.Sleep(cfg.settle)
	loadBefore := idleload.LoadAvg()
	appendCount := 0
	results := make([][]result, len(ops))
	for oi, op := range ops {
		results[oi] = make([]result, len(targets))
		for rep := range cfg.reps {
			for k := range targets {
				i := k
				if rep%2 == 1 { // alternate who goes first
					i = len(targets) - 1 - k
				}
				t := targets[i]
				t.procs.CheckAlive(op.name)
				r := &results[oi][i]
				cpu0 := t.procs.CPU(true)
				d, summary, err := op.run(&env{cfg: cfg, sess: sess[i], addr: t.imap, appendBase: &appendCount})
				r.cpu += t.procs.CPU(true) - cpu0
				r.runs++
				if err != nil {
					// A failed command is a result, not the end of the
					// run: it is counted and shown under the table.
					benchproc.Logf("%s: %s (run %d): %v", t.name, op.name, rep+1, err)
					r.errs = append(r.errs, err.Error())
					sess[i] = usable(t, sess[i])
				} else {
					r.times = append(r.times, d)
					// The last run's answer: the first STORE finds some
					// messages flagged already, and Dovecot reports only
					// those whose flags changed.
					r.summary = summary
				}
				if op.after != "" {
					// Untimed, but the next run needs it: retried.
					for try := 1; ; try++ {
						_, err := sess[i].run(op.after)
						if err == nil {
							break
						}
						benchproc.Logf("%s: after %s (try %d): %v", t.name, op.name, try, err)
						r.errs = append(r.errs, "putting back: "+err.Error())
						if try == 5 {
							benchproc.Fatalf("%s: %s failed 5 times", t.name, op.after)
						}
						time.Sleep(2 * time.Second)
						sess[i] = usable(t, sess[i])
					}
				}
			}
		}
		benchproc.Progress("%s done", op.name)
	}
	for i, c := range sess {
		targets[i].procs.CheckAlive("the measurements")
		c.close()
	}

	fmt.Printf("\nIMAP, one connection per system, %d messages in INBOX (%.1f MB), %d runs of each command, %d cores, %s/%s, load average %.1f before the measurements and %.1f after\n",
		cfg.messages, float64(corp.bytes)/1e6, cfg.reps, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, loadBefore, idleload.LoadAvg())
	for _, t := range targets {
		fmt.Printf("  %s\n", t.note)
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "op\t"
	for _, t := range targets {
		header += t.name + " ms\t" + t.name + " 1st ms\t"
	}
	if len(targets) == 2 {
		header += "ratio\t"
	}
	for _, t := range targets {
		header += t.name + " CPU ms\t"
	}
	header += "answer\t"
	fmt.Fprintln(tw, header)
	for oi, op := range ops {
		line := op.name + "\t"
		var warm []time.Duration
		for i := range targets {
			r := results[oi][i]
			w := r.warm()
			warm = append(warm, w)
			if len(r.times) == 0 {
				line += "failed\tfailed\t"
				continue
			}
			line += ms(w)
			if len(r.errs) > 0 {
				line += " (!)"
			}
			line += "\t" + ms(r.times[0]) + "\t"
		}
		if len(targets) == 2 {
			if warm[0] > 0 && warm[1] > 0 {
				line += fmt.Sprintf("%.2f×\t", float64(warm[0])/float64(warm[1]))
			} else {
				line += "–\t"
			}
		}
		for i := range targets {
			line += ms(time.Duration(results[oi][i].cpu*float64(time.Second)/float64(max(results[oi][i].runs, 1)))) + "\t"
		}
		line += answer(results[oi]) + "\t"
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	for oi, op := range ops {
		for i, t := range targets {
			if r := results[oi][i]; len(r.errs) > 0 {
				fmt.Printf("(!) %s, %s: %d failure(s) in %d runs; the first: %s\n", t.name, op.name, len(r.errs), r.runs, r.errs[0])
			}
		}
	}
	warmRuns := fmt.Sprintf("median of runs 2..%d", cfg.reps)
	if cfg.reps == 1 {
		warmRuns = "the one run (-reps 1)"
	}
	fmt.Printf("\nms: %s; 1st: the first run, before any cache; ratio: hastore/dovecot (below 1: hastore faster);\n"+
		"CPU ms: what the system's processes used while the command ran, per run (hastore: all nodes, their background work included); answer: what the last run returned (≠: the systems differ).\n"+
		"The page is FETCH of %d messages' UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (...)], the items Roundcube's message list asks for.\n"+
		"APPEND: %d × %d bytes per run, one synchronizing literal each. Total %v.\n",
		warmRuns, pageSize, cfg.appends, cfg.appendSize, time.Since(started).Round(time.Second))
}

type result struct {
	times   []time.Duration // of the runs that succeeded
	runs    int
	cpu     float64 // seconds, all runs
	summary string
	errs    []string
}

// usable returns c if it still answers, or else a new session.
func usable(t *target, c *client) *client {
	if _, err := c.run("NOOP"); err == nil {
		return c
	}
	c.nc.Close()
	n, err := login(t.imap)
	if err != nil {
		benchproc.Fatalf("%s: logging in again after a failure: %v", t.name, err)
	}
	return n
}

// warm is the median of the runs after the first (the only run with -reps
// 1); 0 when every run failed.
func (r result) warm() time.Duration {
	ts := r.times
	if len(ts) == 0 {
		return 0
	}
	if len(ts) > 1 {
		ts = ts[1:]
	}
	s := slices.Clone(ts)
	slices.Sort(s)
	return s[len(s)/2]
}

func answer(rs []result) string {
	a := rs[0].summary
	for _, r := range rs[1:] {
		if r.summary != a {
			var all []string
			for _, r := range rs {
				all = append(all, r.summary)
			}
			return "≠ " + strings.Join(all, " | ")
		}
	}
	return a
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// ---- the commands ----

const pageSize = 50

// pageItems are what Roundcube's message list fetches
// (rcube_imap_generic::fetchHeaders).
const pageItems = "(UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (DATE FROM TO SUBJECT CONTENT-TYPE CC REPLY-TO LIST-POST DISPOSITION-NOTIFICATION-TO X-PRIORITY)])"

type env struct {
	cfg        config
	sess       *client
	addr       string
	appendBase *int
}

type op struct {
	name string
	run  func(e *env) (time.Duration, string, error)
	// after runs untimed after each run (puts the mailbox back).
	after string
}

// command times one command on the session and summarises its answer.
func command(cmd string, sum func([]string) string) func(e *env) (time.Duration, string, error) {
	return func(e *env) (time.Duration, string, error) {
		t0 := time.Now()
		lines, err := e.sess.run(cmd)
		d := time.Since(t0)
		if err != nil {
			return d, "", err
		}
		return d, sum(lines), nil
	}
}

var ops = []op{
	{name: "SELECT INBOX", run: command("SELECT INBOX", func(l []string) string { return fmt.Sprintf("%d EXISTS", existsOf(l)) })},
	{name: "FETCH 1:* (UID FLAGS)", run: command("FETCH 1:* (UID FLAGS)", fetches)},
	{name: "FETCH page of 50 headers", run: func(e *env) (time.Duration, string, error) {
		n := e.cfg.messages
		return command(fmt.Sprintf("FETCH %d:%d %s", n-pageSize+1, n, pageItems), fetches)(e)
	}},
	{name: "FETCH 1:* (ENVELOPE)", run: command("FETCH 1:* (ENVELOPE)", fetches)},
	// Issue #12's header figure: a client listing every message.
	{name: "FETCH 1:* HEADER.FIELDS (FROM SUBJECT DATE)", run: command("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])", fetches)},
	{name: "UID SORT (REVERSE DATE)", run: command("UID SORT (REVERSE DATE) UTF-8 ALL", numbers("SORT"))},
	{name: "UID THREAD REFERENCES", run: command("UID THREAD REFERENCES UTF-8 ALL", threads)},
	{name: `SEARCH TEXT "` + SearchWord + `"`, run: command(`SEARCH TEXT "`+SearchWord+`"`, numbers("SEARCH"))},
	{name: "SEARCH UNSEEN", run: command("SEARCH UNSEEN", numbers("SEARCH"))},
	{name: `STORE 1:* +FLAGS (\Flagged)`, run: command(`STORE 1:* +FLAGS (\Flagged)`, fetches), after: `STORE 1:* -FLAGS.SILENT (\Flagged)`},
	{name: "APPEND 75 KB × N", run: func(e *env) (time.Duration, string, error) {
		msgs := make([][]byte, e.cfg.appends)
		for i := range msgs {
			msgs[i] = appendMsg(*e.appendBase+i, e.cfg.appendSize)
		}
		t0 := time.Now()
		for _, m := range msgs {
			if err := e.sess.appendMsg("Appends", m); err != nil {
				return 0, "", err
			}
		}
		d := time.Since(t0)
		*e.appendBase += len(msgs)
		return d, fmt.Sprintf("%d appended", len(msgs)), nil
	}},
	{name: "fresh LOGIN + SELECT", run: func(e *env) (time.Duration, string, error) {
		t0 := time.Now()
		c, err := login(e.addr)
		d := time.Since(t0)
		if err != nil {
			return d, "", err
		}
		c.close()
		return d, "ok", nil
	}},
}

func existsOf(lines []string) int {
	for _, l := range lines {
		var n int
		if _, err := fmt.Sscanf(l, "* %d EXISTS", &n); err == nil {
			return n
		}
	}
	return -1
}

func fetches(lines []string) string {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "* ") && strings.Contains(l[:min(len(l), 24)], " FETCH ") {
			n++
		}
	}
	return fmt.Sprintf("%d FETCH", n)
}

// numbers summarises a SORT or SEARCH answer: how many, and a hash of the
// list, so that a different order shows.
func numbers(kind string) func([]string) string {
	return func(lines []string) string {
		for _, l := range lines {
			if rest, ok := strings.CutPrefix(l, "* "+kind); ok {
				f := strings.Fields(rest)
				h := fnv.New32a()
				h.Write([]byte(strings.Join(f, " ")))
				return fmt.Sprintf("%d (#%08x)", len(f), h.Sum32())
			}
		}
		return "no " + kind
	}
}

// threads summarises a THREAD answer: the number of threads (top-level
// parentheses) and a hash of the whole.
func threads(lines []string) string {
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "* THREAD"); ok {
			rest = strings.TrimSpace(rest)
			depth, n := 0, 0
			for _, c := range rest {
				switch c {
				case '(':
					if depth == 0 {
						n++
					}
					depth++
				case ')':
					depth--
				}
			}
			h := fnv.New32a()
			h.Write([]byte(rest))
			return fmt.Sprintf("%d threads (#%08x)", n, h.Sum32())
		}
	}
	return "no THREAD"
}
