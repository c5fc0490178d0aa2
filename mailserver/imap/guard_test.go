package imap_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap"
	"hastore/mailserver/mailbox"
	"hastore/testing/cluster"
)

// rawClient is an IMAP connection driven line by line.
type rawClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// dialFrom connects from a chosen loopback address (127.0.0.x), so one
// test can be several client networks.
func dialFrom(t *testing.T, src, addr string, useTLS bool) *rawClient {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	var c net.Conn
	var err error
	if useTLS {
		c, err = tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawClient{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawClient) line() string {
	rc.t.Helper()
	l, err := rc.r.ReadString('\n')
	if err != nil {
		rc.t.Fatalf("reading: %v (got %q)", err, l)
	}
	return l
}

func (rc *rawClient) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("writing %q: %v", s, err)
	}
}

// until reads lines until one starts with prefix and returns it.
func (rc *rawClient) until(prefix string) string {
	rc.t.Helper()
	for {
		if l := rc.line(); strings.HasPrefix(l, prefix) {
			return l
		}
	}
}

// cmd sends a tagged command and returns its tagged answer.
func (rc *rawClient) cmd(tag, command string) string {
	rc.t.Helper()
	rc.send(tag + " " + command + "\r\n")
	return rc.until(tag + " ")
}

// closed reports whether the server closed the connection (EOF) within d.
func (rc *rawClient) closed(d time.Duration) bool {
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	for {
		if _, err := rc.r.ReadString('\n'); err != nil {
			return err == io.EOF || strings.Contains(err.Error(), "reset")
		}
	}
}

type guardEnv struct {
	st *mailbox.Store
}

func startGuardEnv(t *testing.T) *guardEnv {
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	st := mailbox.New(c.Nodes[0].Cluster, c.Nodes[0].Meta, mailbox.Options{
		Hash:     mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1},
		Throttle: mailbox.ThrottleOptions{PerAddress: 1000, PerAccount: 1000, FailDelay: -1},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.AddDomain(ctx, "guard.test"); err != nil {
		t.Fatal(err)
	}
	if err := st.AddUser(ctx, "g@guard.test", "pw", 0); err != nil {
		t.Fatal(err)
	}
	return &guardEnv{st: st}
}

func (e *guardEnv) listen(t *testing.T, cfg imap.Config) (plain, implicitTLS string) {
	t.Helper()
	tlsCfg, _ := selfSigned(t)
	cfg.IMAP, cfg.IMAPS, cfg.TLS, cfg.AllowInsecureAuth = "127.0.0.1:0", "127.0.0.1:0", tlsCfg, true
	srv, err := imap.Listen(e.st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	a := srv.Addrs()
	return a["imap"].String(), a["imaps"].String()
}

// TestGuards runs the defences against hostile or idle clients against
// real connections to a node of an in-process cluster.
func TestGuards(t *testing.T) {
	e := startGuardEnv(t)
	t.Run("conn-limits", func(t *testing.T) { testConnLimits(t, e) })
	t.Run("login-timeout", func(t *testing.T) { testLoginTimeout(t, e) })
	t.Run("idle-timeout", func(t *testing.T) { testIdleTimeout(t, e) })
	t.Run("append-memory", func(t *testing.T) { testAppendMemory(t, e) })
	t.Run("append-budget", func(t *testing.T) { testAppendBudget(t, e) })
	t.Run("bad-input", func(t *testing.T) { testBadInput(t, e) })
}

// testConnLimits: 3 per client network and 5 in total, over both ports;
// the connection past a limit gets "* BYE" and is closed while other
// networks are still served, and a closed connection frees its place.
func testConnLimits(t *testing.T, e *guardEnv) {
	plain, tlsAddr := e.listen(t, imap.Config{MaxConnections: 5, MaxConnectionsPerIP: 3})
	var held []*rawClient
	for i := range 3 {
		rc := dialFrom(t, "127.0.0.1", plain, i == 2) // one over IMAPS: one budget for both ports
		if l := rc.line(); !strings.HasPrefix(l, "* OK") {
			t.Fatalf("connection %d from 127.0.0.1: greeting %q", i, l)
		}
		held = append(held, rc)
		if i == 1 {
			plain, tlsAddr = tlsAddr, plain
		}
	}
	plain, tlsAddr = tlsAddr, plain
	for _, useTLS := range []bool{false, true} {
		addr := plain
		if useTLS {
			addr = tlsAddr
		}
		rc := dialFrom(t, "127.0.0.1", addr, useTLS)
		if l := rc.line(); !strings.HasPrefix(l, "* BYE") {
			t.Fatalf("4th connection from 127.0.0.1 (TLS %v): %q, want * BYE", useTLS, l)
		}
		if !rc.closed(5 * time.Second) {
			t.Fatal("refused connection left open")
		}
	}
	for i := range 2 {
		rc := dialFrom(t, "127.0.0.2", plain, false)
		if l := rc.line(); !strings.HasPrefix(l, "* OK") {
			t.Fatalf("connection %d from 127.0.0.2 while 127.0.0.1 is at its limit: %q", i, l)
		}
		held = append(held, rc)
	}
	rc := dialFrom(t, "127.0.0.3", plain, false)
	if l := rc.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("6th connection in total: %q, want * BYE", l)
	}
	// A logged-out connection gives its place back.
	if l := held[0].cmd("a", "LOGOUT"); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("LOGOUT: %q", l)
	}
	held[0].closed(5 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		rc := dialFrom(t, "127.0.0.3", plain, false)
		l := rc.line()
		if strings.HasPrefix(l, "* OK") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a LOGOUT, a new connection still gets %q", l)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testLoginTimeout: a client that keeps sending NOOP but never logs in is
// dropped after LoginTimeout; one that logged in is not.
func testLoginTimeout(t *testing.T, e *guardEnv) {
	plain, _ := e.listen(t, imap.Config{LoginTimeout: 2 * time.Second})
	lazy := dialFrom(t, "127.0.0.1", plain, false)
	lazy.line()
	user := dialFrom(t, "127.0.0.1", plain, false)
	user.line()
	if l := user.cmd("l", "LOGIN g@guard.test pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN: %q", l)
	}
	start := time.Now()
	bye := false
	for i := 0; time.Since(start) < 6*time.Second; i++ {
		tag := fmt.Sprintf("n%d", i)
		if _, err := io.WriteString(lazy.c, tag+" NOOP\r\n"); err != nil {
			break
		}
		l, err := lazy.r.ReadString('\n')
		if err != nil {
			break
		}
		if strings.HasPrefix(l, "* BYE") {
			bye = true
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	took := time.Since(start)
	if !bye || took > 4*time.Second {
		t.Fatalf("a client sending NOOPs without logging in: BYE %v after %v; want BYE after the 2 s login timeout", bye, took)
	}
	if !lazy.closed(5 * time.Second) {
		t.Fatal("connection left open after BYE")
	}
	if l := user.cmd("n", "NOOP"); !strings.HasPrefix(l, "n OK") {
		t.Fatalf("logged-in client after the login timeout: NOOP answered %q", l)
	}
}

// testIdleTimeout: with IdleTimeout set, a logged-in client that says
// nothing, and one in IDLE, are disconnected.
func testIdleTimeout(t *testing.T, e *guardEnv) {
	plain, _ := e.listen(t, imap.Config{IdleTimeout: time.Second})
	silent := dialFrom(t, "127.0.0.1", plain, false)
	silent.line()
	if l := silent.cmd("l", "LOGIN g@guard.test pw"); !strings.HasPrefix(l, "l OK") {
		t.Fatalf("LOGIN: %q", l)
	}
	idle := dialFrom(t, "127.0.0.1", plain, false)
	idle.line()
	idle.cmd("l", "LOGIN g@guard.test pw")
	idle.cmd("s", "SELECT INBOX")
	idle.send("i IDLE\r\n")
	idle.until("+")
	for name, rc := range map[string]*rawClient{"silent": silent, "idle": idle} {
		if !rc.closed(5 * time.Second) {
			t.Errorf("%s session still open 5 s after a 1 s idle timeout", name)
		}
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// testAppendMemory: APPENDs announcing large literals and then stalling
// hold about what they sent, not what they announced.
func testAppendMemory(t *testing.T, e *guardEnv) {
	plain, _ := e.listen(t, imap.Config{MaxMessageBytes: 64 << 20})
	const conns, announced = 4, 60 << 20
	var cs []*rawClient
	for range conns {
		rc := dialFrom(t, "127.0.0.1", plain, false)
		rc.line()
		rc.cmd("l", "LOGIN g@guard.test pw")
		cs = append(cs, rc)
	}
	before := heapAlloc()
	for _, rc := range cs {
		rc.send(fmt.Sprintf("a APPEND INBOX {%d}\r\n", announced))
		if l := rc.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("APPEND: %q, want +", l)
		}
		rc.send("Subject: stalled\r\n")
	}
	time.Sleep(500 * time.Millisecond) // the sessions reach their Append
	grew := int64(heapAlloc()) - int64(before)
	t.Logf("%d APPENDs announcing %d MiB each, stalled after a line: heap %+.1f MiB", conns, announced>>20, float64(grew)/(1<<20))
	if grew > 16<<20 {
		t.Fatalf("stalled APPENDs grew the heap by %d MiB; they announced %d MiB in all but sent a line each", grew>>20, conns*announced>>20)
	}
}

// testAppendBudget: while one APPEND holds the whole buffer budget,
// another answers NO [LIMIT]; once the first completes, it succeeds.
func testAppendBudget(t *testing.T, e *guardEnv) {
	defer imap.SetAppendWait(500 * time.Millisecond)()
	const max = 4 << 20
	plain, _ := e.listen(t, imap.Config{MaxMessageBytes: max, MaxAppendBuffer: max})
	big := dialFrom(t, "127.0.0.1", plain, false)
	big.line()
	big.cmd("l", "LOGIN g@guard.test pw")
	msg := "Subject: big\r\n\r\n" + strings.Repeat("x", max-16-2) + "\r\n"
	big.send(fmt.Sprintf("a APPEND INBOX {%d}\r\n", len(msg)))
	big.until("+")
	big.send(msg[:3<<20]) // past half: its buffer is the whole budget
	time.Sleep(300 * time.Millisecond)

	small := dialFrom(t, "127.0.0.1", plain, false)
	small.line()
	small.cmd("l", "LOGIN g@guard.test pw")
	one := "Subject: small\r\n\r\nhello\r\n"
	// No "+": refused before the client uploads anything.
	small.send(fmt.Sprintf("b APPEND INBOX {%d}\r\n", len(one)))
	if l := small.line(); !strings.HasPrefix(l, "b NO [LIMIT]") {
		t.Fatalf("APPEND while the budget is held: %q, want b NO [LIMIT] (and no +)", l)
	}
	big.send(msg[3<<20:] + "\r\n")
	if l := big.until("a "); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("the big APPEND: %q", l)
	}
	small.send(fmt.Sprintf("c APPEND INBOX {%d}\r\n", len(one)))
	small.until("+")
	small.send(one + "\r\n")
	if l := small.until("c "); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("APPEND after the budget came back: %q", l)
	}
}

// testBadInput: the client's errors are answered BAD (or NO with a code),
// never NO [SERVERBUG], at once, and leave the session usable; input that
// cannot be an IMAP client's ends the connection.
func testBadInput(t *testing.T, e *guardEnv) {
	plain, _ := e.listen(t, imap.Config{})
	rc := dialFrom(t, "127.0.0.1", plain, false)
	rc.line()
	rc.cmd("l", "LOGIN g@guard.test pw")
	rc.cmd("s", "SELECT INBOX")
	for _, c := range []struct{ line, tag string }{
		{"x SEARCH 0", "x"},
		{"x UID SEARCH 0:*", "x"},
		{"x SEARCH 1:0", "x"},
		{"x FETCH 0 FLAGS", "x"},
		{"x STORE 0 +FLAGS (\\Seen)", "x"},
		{`x LIST "" "&Jjo"`, "x"},
		{`x LIST "&Jjo" "*"`, "x"},
		{`x LSUB "" "&Jjo"`, "x"},
		{`x CREATE "&Jjo"`, "x"},
		{`x STATUS "&-x&" (MESSAGES)`, "x"},
		{`x APPEND INBOX "not a date" {1}`, "x"}, // no "+": the literal is never sent
		{"x SEARCH SINCE 32-Foo-2020", "x"},
		{"x FETCH 1 (BODY[1.0])", "x"},
		{"x FETCH 1 (FLAGS", "x"},
		{"x NOSUCHCOMMAND", "x"},
		{"x ", "x"},            // a tag without a command
		{"lonetag", "lonetag"}, // no command at all
		{"", "*"},              // an empty line
	} {
		rc.send(c.line + "\r\n")
		l := rc.line()
		for strings.HasPrefix(l, "* ") && c.tag != "*" {
			l = rc.line()
		}
		t.Logf("%q: %s", c.line, strings.TrimSpace(l))
		if !strings.HasPrefix(l, c.tag+" BAD ") || strings.Contains(l, "SERVERBUG") {
			t.Errorf("%q: %q, want %s BAD", c.line, l, c.tag)
		}
	}
	if l := rc.cmd("n", "NOOP"); !strings.HasPrefix(l, "n OK") {
		t.Fatalf("NOOP after bad input: %q", l)
	}

	// Before login, a line that is not a command: BAD, BYE, closed (it
	// may be another protocol's client).
	pre := dialFrom(t, "127.0.0.1", plain, false)
	pre.line()
	pre.send("(((\r\n")
	if l := pre.line(); !strings.HasPrefix(l, "* BAD") {
		t.Errorf("garbage before login: %q, want * BAD", l)
	}
	if l := pre.line(); !strings.HasPrefix(l, "* BYE") {
		t.Errorf("garbage before login: %q, want * BYE", l)
	}
	if !pre.closed(5 * time.Second) {
		t.Error("garbage before login: connection left open")
	}

	// An unclosed quote is answered at the end of its line, not after a
	// timeout.
	fresh := dialFrom(t, "127.0.0.1", plain, false)
	fresh.line()
	_ = fresh.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	fresh.send("q LOGIN \"g@guard.test pw\r\n")
	if l := fresh.line(); !strings.HasPrefix(l, "q BAD") {
		t.Fatalf("unclosed quote: %q, want BAD at once", l)
	}
	if l := fresh.cmd("q2", `LOGIN "g@guard.test" "pw"`); !strings.HasPrefix(l, "q2 OK") {
		t.Fatalf("LOGIN after an unclosed quote: %q", l)
	}

	// A synchronizing literal too large for LOGIN gets no "+" (the client
	// must not send it) but NO [TOOBIG] at once; the connection stays.
	fresh = dialFrom(t, "127.0.0.1", plain, false)
	fresh.line()
	before := heapAlloc()
	_ = fresh.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	fresh.send("x LOGIN {4294967295}\r\n")
	l := fresh.line()
	t.Logf("LOGIN {4294967295}: %s", strings.TrimSpace(l))
	if !strings.HasPrefix(l, "x NO [TOOBIG]") {
		t.Fatalf("LOGIN {4294967295}: %q, want NO [TOOBIG]", l)
	}
	if after := heapAlloc(); after > before+16<<20 {
		t.Errorf("heap grew by %d MiB on LOGIN {4294967295}", (after-before)>>20)
	}
	fresh.send("y LOGIN {12}\r\n")
	if l := fresh.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("LOGIN with a small literal: %q, want +", l)
	}
	fresh.send("g@guard.test pw\r\n")
	if l := fresh.until("y "); !strings.HasPrefix(l, "y OK") {
		t.Fatalf("LOGIN with a small literal after a refused one: %q", l)
	}

	// A non-synchronizing literal too large is already on its way: BAD,
	// BYE, closed.
	fresh = dialFrom(t, "127.0.0.1", plain, false)
	fresh.line()
	fresh.send("x LOGIN {4294967295+}\r\nsome bytes of it")
	if l := fresh.line(); !strings.HasPrefix(l, "x BAD") {
		t.Fatalf("LOGIN {4294967295+}: %q, want BAD", l)
	}
	if l := fresh.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("LOGIN {4294967295+}: %q, want BYE", l)
	}
	if !fresh.closed(5 * time.Second) {
		t.Fatal("LOGIN {4294967295+}: connection left open")
	}

	// A command line over the limit: BAD, BYE, closed.
	fresh = dialFrom(t, "127.0.0.1", plain, false)
	fresh.line()
	fresh.send("x LOGIN " + strings.Repeat("a", 64<<10) + " pw\r\n")
	if l := fresh.line(); !strings.HasPrefix(l, "x BAD") {
		t.Fatalf("64 KiB command: %q, want BAD", l)
	}
	if !fresh.closed(5 * time.Second) {
		t.Fatal("64 KiB command: connection left open")
	}
}
