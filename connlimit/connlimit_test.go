package connlimit

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// strAddr is a net.Addr that is not a *net.TCPAddr, keyed from its String.
type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }

func TestClientKey(t *testing.T) {
	tcp := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1} }
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{tcp("192.0.2.7"), "192.0.2.7/32"},
		{tcp("::ffff:192.0.2.7"), "192.0.2.7/32"},
		{tcp("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64"},
		{tcp("2001:db8:1:2:ffff::9"), "2001:db8:1:2::/64"},
		{tcp("2001:db8:1:3::1"), "2001:db8:1:3::/64"},
		{strAddr("192.0.2.7:993"), "192.0.2.7/32"},
		{strAddr("[::ffff:192.0.2.7]:993"), "192.0.2.7/32"},
		{strAddr("[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:143"), "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "/tmp/x", Net: "unix"}, "invalid Prefix"},
	} {
		if got := clientKey(tc.addr).String(); got != tc.want {
			t.Errorf("clientKey(%v) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

// TestLimiterIPv6 checks the counting itself on addresses loopback cannot
// dial from: an IPv6 /64 is one client, an IPv4-mapped address is its
// IPv4 one.
func TestLimiterIPv6(t *testing.T) {
	key := func(s string) net.Addr { return strAddr(s) }
	l := NewLimiter(4, 2)
	for _, a := range []string{"[2001:db8::1]:1", "[2001:db8::2]:1"} {
		if !l.take(clientKey(key(a))) {
			t.Fatalf("%s refused below the caps", a)
		}
	}
	if l.take(clientKey(key("[2001:db8::3]:1"))) {
		t.Fatal("a third connection from one IPv6 /64 admitted with a per-client cap of 2")
	}
	if !l.take(clientKey(key("[2001:db8:0:1::1]:1"))) {
		t.Fatal("the next /64 refused below the caps")
	}
	if !l.take(clientKey(key("192.0.2.1:1"))) {
		t.Fatal("an IPv4 client refused below the caps")
	}
	if total, from := l.Count(key("[::ffff:192.0.2.1]:2")); total != 4 || from != 1 {
		t.Fatalf("Count(IPv4-mapped) = %d, %d; want 4 in total, 1 from 192.0.2.1", total, from)
	}
	if l.take(clientKey(key("192.0.2.2:1"))) {
		t.Fatal("a fifth connection admitted with a total cap of 4")
	}
	l.release(clientKey(key("[2001:db8::1]:1")))
	if !l.take(clientKey(key("[2001:db8::9]:1"))) {
		t.Fatal("a released place in the /64 not given back")
	}
}

// serve accepts from l until it is closed, handing the connections over.
func serve(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	accepted := make(chan net.Conn, 200)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() { l.Close() })
	return accepted
}

func listen(t *testing.T, lim Limits) (net.Listener, <-chan net.Conn) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listener(raw, lim)
	return l, serve(t, l)
}

// dial opens a connection from the loopback address src.
func dial(t *testing.T, addr, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// kept reports whether the server kept c (a refused one reads EOF soon).
func kept(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	if err == io.EOF {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	t.Fatalf("unexpected read result: %v", err)
	return false
}

func dialFrom(t *testing.T, addr, src string) bool {
	t.Helper()
	return kept(t, dial(t, addr, src))
}

func TestCaps(t *testing.T) {
	shared := NewLimiter(5, 3)
	l, accepted := listen(t, Limits{Shared: shared, Name: "test"})
	addr := l.Addr().String()
	for i := range 3 {
		if !dialFrom(t, addr, "127.0.0.1") {
			t.Fatalf("connection %d from 127.0.0.1 refused under the per-IP cap", i)
		}
	}
	if dialFrom(t, addr, "127.0.0.1") {
		t.Fatal("4th connection from 127.0.0.1 kept: per-IP cap of 3 not enforced")
	}
	for i := range 2 {
		if !dialFrom(t, addr, "127.0.0.2") {
			t.Fatalf("connection %d from 127.0.0.2 refused under the caps", i)
		}
	}
	if dialFrom(t, addr, "127.0.0.3") {
		t.Fatal("6th connection kept: total cap of 5 not enforced")
	}
	if total, from := shared.Count(&net.TCPAddr{IP: net.ParseIP("127.0.0.2")}); total != 5 || from != 2 {
		t.Fatalf("Count = %d, %d; want 5 in total, 2 from 127.0.0.2", total, from)
	}
	// Closing a connection on the server side frees its slot.
	(<-accepted).Close()
	if !dialFrom(t, addr, "127.0.0.3") {
		t.Fatal("connection refused after one was closed")
	}
}

// TestOwnLimiter: Total and PerIP in Limits, without a shared Limiter.
func TestOwnLimiter(t *testing.T) {
	l, _ := listen(t, Limits{Total: 2, PerIP: 1})
	addr := l.Addr().String()
	if !dialFrom(t, addr, "127.0.0.1") {
		t.Fatal("first connection refused")
	}
	if dialFrom(t, addr, "127.0.0.1") {
		t.Fatal("2nd connection from 127.0.0.1 kept: per-IP cap of 1 not enforced")
	}
	if !dialFrom(t, addr, "127.0.0.2") {
		t.Fatal("connection from 127.0.0.2 refused under the caps")
	}
	if dialFrom(t, addr, "127.0.0.3") {
		t.Fatal("3rd connection kept: total cap of 2 not enforced")
	}
}

// TestSharedLimiter: two listeners on one Limiter have one budget, and a
// connection's place comes back once however often it is closed.
func TestSharedLimiter(t *testing.T) {
	shared := NewLimiter(2, 0)
	a, acceptedA := listen(t, Limits{Shared: shared})
	b, _ := listen(t, Limits{Shared: shared})
	if !dialFrom(t, a.Addr().String(), "127.0.0.1") || !dialFrom(t, b.Addr().String(), "127.0.0.2") {
		t.Fatal("refused below the shared cap")
	}
	for _, l := range []net.Listener{a, b} {
		if dialFrom(t, l.Addr().String(), "127.0.0.3") {
			t.Fatalf("3rd connection kept on %v: the listeners do not share the cap of 2", l.Addr())
		}
	}
	c := <-acceptedA
	for range 3 {
		c.Close()
	}
	if total, _ := shared.Count(c.RemoteAddr()); total != 1 {
		t.Fatalf("%d open after closing one of 2 three times, want 1", total)
	}
	if !dialFrom(t, b.Addr().String(), "127.0.0.3") {
		t.Fatal("the place freed on one listener is not usable on the other")
	}
	if dialFrom(t, a.Addr().String(), "127.0.0.4") {
		t.Fatal("a double Close gave back two places")
	}
}

func TestRefuse(t *testing.T) {
	// Refuse does not close: the listener does when it returns.
	l, _ := listen(t, Limits{Total: 1, Refuse: func(c net.Conn) { io.WriteString(c, "busy\n") }})
	dialFrom(t, l.Addr().String(), "127.0.0.1")
	c := dial(t, l.Addr().String(), "127.0.0.1")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if string(b) != "busy\n" || err != nil {
		t.Fatalf("refused connection read %q, %v; want the Refuse hook's words, then EOF", b, err)
	}
}

// TestRefuseTimeout: a Refuse stuck on a client that sends nothing is cut
// off by the deadline, and its connection closed.
func TestRefuseTimeout(t *testing.T) {
	defer func(d time.Duration) { refuseTimeout = d }(refuseTimeout)
	refuseTimeout = 200 * time.Millisecond
	returned := make(chan error, 1)
	l, _ := listen(t, Limits{Total: 1, Refuse: func(c net.Conn) {
		_, err := c.Read(make([]byte, 1))
		returned <- err
	}})
	dialFrom(t, l.Addr().String(), "127.0.0.1")
	c := dial(t, l.Addr().String(), "127.0.0.1")
	select {
	case err := <-returned:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Refuse's read ended with %v, want the deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Refuse still blocked 5 s after a 200 ms deadline")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("refused connection after Refuse returned: %v, want EOF", err)
	}
}

// TestBoundedRefusers: at most maxRefusing Refuse calls run at once (over
// all listeners of a Limiter); beyond them a refused connection is closed
// without a word, and a finished refusal frees its slot.
func TestBoundedRefusers(t *testing.T) {
	var running, most atomic.Int64
	unblock := make(chan struct{})
	refuse := func(c net.Conn) {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-unblock
		io.WriteString(c, "busy\n")
		running.Add(-1)
	}
	shared := NewLimiter(1, 0)
	a, _ := listen(t, Limits{Shared: shared, Refuse: refuse})
	b, _ := listen(t, Limits{Shared: shared, Refuse: refuse})
	if !dialFrom(t, a.Addr().String(), "127.0.0.1") {
		t.Fatal("first connection refused")
	}
	var waiting []net.Conn
	for i := range maxRefusing {
		l := a
		if i%2 == 1 {
			l = b
		}
		waiting = append(waiting, dial(t, l.Addr().String(), "127.0.0.1"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for running.Load() < maxRefusing {
		if time.Now().After(deadline) {
			t.Fatalf("%d Refuse calls running, want %d", running.Load(), maxRefusing)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, l := range []net.Listener{a, b} {
		if dialFrom(t, l.Addr().String(), "127.0.0.1") {
			t.Fatalf("connection past %d refusers left open on %v", maxRefusing, l.Addr())
		}
	}
	if m := most.Load(); m != maxRefusing {
		t.Fatalf("%d Refuse calls ran at once, want at most %d", m, maxRefusing)
	}
	close(unblock)
	for _, c := range waiting {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, _ := io.ReadAll(c); string(b) != "busy\n" {
			t.Fatalf("a waiting refused connection read %q, want busy", b)
		}
	}
	// The slots are free again: a refused connection is answered.
	c := dial(t, b.Addr().String(), "127.0.0.1")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(c); string(b) != "busy\n" {
		t.Fatalf("refused connection after the refusers finished read %q, want busy", b)
	}
}

// TestRefusalLog: a spell of refusals makes one Warn line (per Limiter,
// naming the port's flags), not one per connection.
func TestRefusalLog(t *testing.T) {
	logged := make(lines, 100)
	log := slog.New(slog.NewTextHandler(logged, nil))
	shared := NewLimiter(1, 0)
	a, _ := listen(t, Limits{Shared: shared, Logger: log, Name: "imap"})
	b, _ := listen(t, Limits{Shared: shared, Logger: log, Name: "imap"})
	dialFrom(t, a.Addr().String(), "127.0.0.1")
	for range 3 {
		for _, l := range []net.Listener{a, b} {
			if dialFrom(t, l.Addr().String(), "127.0.0.1") {
				t.Fatal("connection over the cap kept")
			}
		}
	}
	// Each refusal logs before it closes, and each was seen closed.
	var out string
	for len(logged) > 0 {
		out += <-logged
	}
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Fatalf("%d log lines for 6 refusals within 10 s, want 1:\n%s", n, out)
	}
	for _, want := range []string{"--imap-max-connections", "refused_since_last_line=1", "open=1", "max_total=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %q:\n%s", want, out)
		}
	}
}

// lines is a log destination written by the accepting goroutines: the
// text handler writes each line in one Write.
type lines chan string

func (l lines) Write(p []byte) (int, error) {
	select {
	case l <- string(p):
	default: // more lines than the test reads: counted as missing
	}
	return len(p), nil
}
