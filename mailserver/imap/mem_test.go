package imap_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap"
	"hastore/mailserver/mailbox"
	"hastore/testing/cluster"
)

// TestIdleMemory measures what idle IMAP connections cost the server. It
// runs only when HASTORE_IMAP_MEM_CONNS=N is set:
//
//	HASTORE_IMAP_MEM_CONNS=2000 [HASTORE_IMAP_MEM_USERS=100] [HASTORE_IMAP_MEM_MSGS=1000] \
//	[HASTORE_IMAP_MEM_TRAFFIC=100] [HASTORE_IMAP_MEM_MODE=noidle] \
//	[HASTORE_IMAP_HEAPPROFILE=/tmp/imap.heap] go test -run TestIdleMemory -v ./mailserver/imap/
//
// A child process (this test binary again) opens N implicit-TLS
// connections to one node, spread over the users, each LOGIN, SELECT
// INBOX (MSGS messages) and IDLE; TRAFFIC more messages are delivered to
// every user meanwhile; this process then reports heap, stacks,
// goroutines and RSS per connection (after a GC), and writes a heap profile.
func TestIdleMemory(t *testing.T) {
	if os.Getenv("HASTORE_IMAP_MEM_CLIENT") != "" {
		idleClient(t)
		return
	}
	n, _ := strconv.Atoi(os.Getenv("HASTORE_IMAP_MEM_CONNS"))
	if n <= 0 {
		t.Skip("set HASTORE_IMAP_MEM_CONNS=N to measure N idle IMAP connections")
	}
	users := envInt("HASTORE_IMAP_MEM_USERS", 100)
	msgs := envInt("HASTORE_IMAP_MEM_MSGS", 1000)
	traffic := envInt("HASTORE_IMAP_MEM_TRAFFIC", 100)
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	tlsCfg, _ := selfSigned(t)
	st := mailbox.New(c.Nodes[0].Cluster, c.Nodes[0].Meta, mailbox.Options{
		Hash:     mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1},
		Throttle: mailbox.ThrottleOptions{PerAddress: 1 << 20, PerAccount: 1 << 20, FailDelay: -1},
	})
	srv, err := imap.Listen(st, imap.Config{IMAPS: "127.0.0.1:0", TLS: tlsCfg, MaxConnections: n + 10, MaxConnectionsPerIP: n + 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := st.AddDomain(ctx, "mem.test"); err != nil {
		t.Fatal(err)
	}
	for u := range users {
		if err := st.AddUser(ctx, fmt.Sprintf("u%d@mem.test", u), "pw", 0); err != nil {
			t.Fatal(err)
		}
	}
	deliver := func(i int) {
		t.Helper()
		// Retried: a busy machine sees leader elections (this measures
		// memory, not availability).
		var err error
		for range 10 {
			d := st.NewDelivery()
			for u := range users {
				if err := d.AddRecipient(mailbox.Recipient{Address: fmt.Sprintf("u%d@mem.test", u)}); err != nil {
					t.Fatal(err)
				}
			}
			msg := fmt.Sprintf("From: a@remote.test\r\nSubject: m %d\r\n\r\nbody %d\r\n", i, i)
			if err = d.Body(ctx, []byte(msg), time.Time{}); err == nil {
				if _, err = d.Commit(ctx, true); err == nil {
					return
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatal(err)
	}
	t0 := time.Now()
	for i := range msgs {
		deliver(i)
	}
	t.Logf("%d users, %d messages each, delivered in %v", users, msgs, time.Since(t0).Round(time.Millisecond))

	if os.Getenv("HASTORE_IMAP_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 512 // every connection's allocations show
	}
	before := sampleMem()
	if f := os.Getenv("HASTORE_IMAP_HEAPPROFILE"); f != "" {
		// The baseline, for go tool pprof -diff_base.
		if w, err := os.Create(f + ".base"); err == nil {
			pprof.WriteHeapProfile(w)
			w.Close()
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleMemory$", "-test.v")
	cmd.Env = append(os.Environ(), "HASTORE_IMAP_MEM_CLIENT="+srv.Addrs()["imaps"].String(),
		"HASTORE_IMAP_MEM_CONNS="+strconv.Itoa(n), "HASTORE_IMAP_MEM_USERS="+strconv.Itoa(users), "HASTORE_IMAP_HEAPPROFILE=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, _ := cmd.StdinPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	br := bufio.NewReader(stdout)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		if strings.HasPrefix(line, "ready") {
			break
		}
		if strings.HasPrefix(line, "fail") {
			t.Fatalf("client: %s", line)
		}
	}
	// Mail keeps arriving while the clients idle: every IDLE session is
	// told, and the mailbox event logs see traffic.
	for i := range traffic {
		deliver(msgs + i)
	}
	time.Sleep(2 * time.Second) // the last IDLEs and EXISTS reach the sessions
	// Several GCs: stacks shrink by half per cycle.
	for range 4 {
		runtime.GC()
	}
	after := sampleMem()
	if f := os.Getenv("HASTORE_IMAP_HEAPPROFILE"); f != "" {
		if w, err := os.Create(f); err == nil {
			pprof.WriteHeapProfile(w)
			w.Close()
		}
	}
	per := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / 1024 / float64(n) }
	t.Logf("%d idle IMAPS connections (LOGIN, SELECT INBOX of %d messages, IDLE unless mode %q, then %d more messages each; %d users), per connection:", n, msgs, os.Getenv("HASTORE_IMAP_MEM_MODE"), traffic, users)
	t.Logf("  %-22s %10s %10s %12s", "", "before", "after", "per conn")
	t.Logf("  %-22s %10.1f %10.1f %9.1f KiB", "heap in use (MiB)", mib(before.heap), mib(after.heap), per(before.heap, after.heap))
	t.Logf("  %-22s %10.1f %10.1f %9.1f KiB", "stacks (MiB)", mib(before.stack), mib(after.stack), per(before.stack, after.stack))
	t.Logf("  %-22s %10.1f %10.1f %9.1f KiB", "RSS (MiB)", mib(before.rss), mib(after.rss), per(before.rss, after.rss))
	t.Logf("  %-22s %10d %10d %12.2f", "goroutines", before.goroutines, after.goroutines, float64(after.goroutines-before.goroutines)/float64(n))
}

type memSample struct {
	heap, stack, rss uint64
	goroutines       int
}

func sampleMem() memSample {
	// Collect and hand free pages back, so RSS is what is live (a running
	// node's RSS adds up to GOGC=100's heap headroom on top).
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := memSample{heap: ms.HeapInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				s.rss = kb << 10
			}
		}
	}
	return s
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// idleClient is the child process of TestIdleMemory.
func idleClient(t *testing.T) {
	addr := os.Getenv("HASTORE_IMAP_MEM_CLIENT")
	n := envInt("HASTORE_IMAP_MEM_CONNS", 1)
	users := envInt("HASTORE_IMAP_MEM_USERS", 1)
	// HASTORE_IMAP_MEM_LOGIN="user password" logs every connection in as
	// one user (against a running "hastore dev": its RSS per connection);
	// HASTORE_IMAP_MEM_SOURCES=k spreads them over 127.0.0.1..k (per-IP caps).
	login := strings.Fields(os.Getenv("HASTORE_IMAP_MEM_LOGIN"))
	sources := envInt("HASTORE_IMAP_MEM_SOURCES", 1)
	var conns []net.Conn
	for i := range n {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte((i%sources+1)>>8), byte((i%sources+1)&0xff))}}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			fmt.Printf("fail: conn %d: %v\n", i, err)
			return
		}
		r := bufio.NewReader(c)
		loginCmd := fmt.Sprintf("a LOGIN u%d@mem.test pw\r\n", i%users)
		if len(login) == 2 {
			loginCmd = fmt.Sprintf("a LOGIN %s %s\r\n", login[0], login[1])
		}
		for _, step := range []struct{ cmd, want string }{
			{"", "* OK"},
			{loginCmd, "a OK"},
			{"b SELECT INBOX\r\n", "b OK"},
			{"c IDLE\r\n", "+"},
		} {
			if step.want == "+" && os.Getenv("HASTORE_IMAP_MEM_MODE") == "noidle" {
				break
			}
			if step.cmd != "" {
				io.WriteString(c, step.cmd)
			}
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					fmt.Printf("fail: conn %d: %q: %v\n", i, step.cmd, err)
					return
				}
				if strings.HasPrefix(line, step.want) {
					break
				}
				if f := strings.Fields(line); len(f) > 1 && f[0] != "*" && f[0] != "+" {
					fmt.Printf("fail: conn %d: %q: %s", i, step.cmd, line)
					return
				}
			}
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}
