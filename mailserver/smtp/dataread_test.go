package smtp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// recorder is a go-smtp backend whose sessions read each message either
// through go-smtp's own DATA reader or through dataIn (fast), and record
// what they read.
type recorder struct {
	fast     bool
	maxBytes int64
	maxLine  int // default 20000
	mu       sync.Mutex
	msgs     []string // the bytes read, or "error: ..."
	count    bool     // keep only the number of bytes (benchmarks)
	slow     int      // fast sessions that found no bufio.Reader
	failed   []error  // dataIn.finish failures
}

type recSession struct {
	r    *recorder
	conn *gosmtp.Conn
}

func (r *recorder) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	return &recSession{r: r, conn: c}, nil
}

func (s *recSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (s *recSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (s *recSession) Reset()                                 {}
func (s *recSession) Logout() error                          { return nil }

func (s *recSession) Data(r io.Reader) error {
	src := r
	if s.r.fast {
		in := newDataIn(r, s.conn, s.r.maxBytes, func(err error) {
			s.r.mu.Lock()
			s.r.failed = append(s.r.failed, err)
			s.r.mu.Unlock()
			if errors.Is(err, gosmtp.ErrTooLongLine) {
				_, _ = io.WriteString(s.conn.Conn(), "500 5.4.0 Too long line, closing connection\r\n")
			}
			_ = s.conn.Close()
		})
		if in.limit == nil {
			s.r.mu.Lock()
			s.r.slow++
			s.r.mu.Unlock()
		}
		defer in.finish()
		if in.dot == nil {
			s.r.mu.Lock()
			s.r.slow++
			s.r.mu.Unlock()
		}
		src = in
	}
	// Small reads, as well as big ones, must see the same bytes.
	var got bytes.Buffer
	buf := make([]byte, 1+rand.IntN(9000))
	var err error
	for {
		var n int
		n, err = src.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if err != io.EOF {
		s.r.msgs = append(s.r.msgs, "error: "+err.Error())
		return err
	}
	if s.r.count {
		s.r.msgs = append(s.r.msgs[:0], fmt.Sprint(got.Len()))
		return nil
	}
	s.r.msgs = append(s.r.msgs, got.String())
	return nil
}

// converse runs a go-smtp server (LMTP or SMTP) over rec, sends the
// script's parts, each after the server has asked for the previous one's
// message (354), and returns every reply line.
func converse(t *testing.T, rec *recorder, lmtp bool, parts ...string) string {
	t.Helper()
	srv := gosmtp.NewServer(rec)
	srv.LMTP = lmtp
	srv.Domain = "test"
	srv.MaxMessageBytes = rec.maxBytes
	srv.MaxLineLength = 20000
	if rec.maxLine > 0 {
		srv.MaxLineLength = rec.maxLine
	}
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var mu sync.Mutex
	var out []byte
	var readErr error
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			mu.Lock()
			out = append(out, buf[:n]...)
			readErr = err
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for i, p := range parts {
			for {
				mu.Lock()
				asked := strings.Count(string(out), "\r\n354 ")
				mu.Unlock()
				if asked >= i {
					break
				}
				select {
				case <-ended:
					return // the connection ended: nothing more to send
				case <-time.After(time.Millisecond):
				}
			}
			if _, err := io.WriteString(c, p); err != nil {
				return // the server closed: its replies say why
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	<-ended
	// The server may close with bytes of ours unread (a reset).
	if err := readErr; !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading the replies: %v (so far %q)", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	return string(out)
}

// transaction is one mail transaction carrying data as given (already
// dot-stuffed, without the end-of-data line): the commands, and the
// message for after the 354.
func transaction(lmtp bool, data string) (cmds, msg string) {
	hello := "EHLO c\r\n"
	if lmtp {
		hello = "LHLO c\r\n"
	}
	return hello + "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n", data + ".\r\n"
}

// stuff dot-stuffs lines (each ends in CRLF): what a client sends.
func stuff(msg string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(msg, "\r\n") {
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
	}
	return b.String()
}

// TestFastDataPath checks that dotReader reads what go-smtp's own DATA
// reader reads — the same bytes, the same replies, the next transaction
// found where it starts — on the message shapes that matter to the state
// machine (dots at line starts, bare LF, lines longer than the buffer,
// the size limit), through real go-smtp servers on sockets, and that the
// fast path is taken (a go-smtp upgrade that moves its buffer fails here
// rather than quietly slowing every delivery down).
func TestFastDataPath(t *testing.T) {
	long := strings.Repeat("x", 9000)
	type testCase struct {
		name    string
		data    string // as sent, dot-stuffed
		max     int64
		maxLine int // default 20000
	}
	cases := []testCase{
		{"empty", "", 0, 0},
		{"one line", "Subject: a\r\n\r\nbody\r\n", 0, 0},
		{"stuffed dots", stuff(".\r\n..\r\n.x\r\nx.\r\n...\r\n.\r\n"), 0, 0},
		{"dot lines unstuffed by hand", "..\r\n.a\r\n", 0, 0},
		{"bare LF", "a\nb\n.\nc\r\n", 0, 0},
		{"CR without LF", "a\rb\r\n\rc\r\n", 0, 0},
		{"line longer than the buffer", long + "\r\n." + long + "\r\n", 0, 0},
		{"no final CRLF", "abc\r\n" + strings.Repeat("y", 5000) + "\r\n", 0, 0},
		{"too large", strings.Repeat("0123456789\r\n", 1000), 5000, 0},
		{"just below the limit", strings.Repeat("a", 98) + "\r\n", 101, 0},
		{"at the limit", strings.Repeat("a", 98) + "\r\n", 100, 0},
		{"too large, long line", strings.Repeat("z", 12000) + "\r\n", 5000, 0},
		// go-smtp counts a line's CRLF and its stuffed dot.
		{"lines at the limit", strings.Repeat(strings.Repeat("l", 98)+"\r\n", 50) + "." + strings.Repeat("l", 97) + "\r\n", 0, 100},
	}
	// Random messages from the characters the state machine cares about.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		var b strings.Builder
		for range rng.IntN(400) {
			for range rng.IntN(30) {
				b.WriteByte(".a .\n"[rng.IntN(5)])
			}
			if rng.IntN(50) == 0 {
				b.WriteString(strings.Repeat("w", rng.IntN(9000)))
			}
			b.WriteString("\r\n")
		}
		var max int64
		if i%4 == 3 {
			max = int64(rng.IntN(3000) + 1)
		}
		cases = append(cases, testCase{fmt.Sprintf("random %d", i), stuff(b.String()), max, 0})
	}
	for _, lmtp := range []bool{false, true} {
		for _, tc := range cases {
			// The first failure is enough (a broken hand-over costs a
			// read timeout per case).
			ok := t.Run(fmt.Sprintf("lmtp=%v/%s", lmtp, tc.name), func(t *testing.T) {
				// Two transactions and a QUIT in one write: the second
				// must start exactly after the first's end-of-data line.
				c1, m1 := transaction(lmtp, tc.data)
				c2, m2 := transaction(lmtp, "second\r\n")
				// The second transaction follows the first message in
				// one write: it must start exactly after its end.
				script := []string{c1, m1 + c2[len("EHLO c\r\n"):], m2 + "QUIT\r\n"}
				slow := &recorder{maxBytes: tc.max, maxLine: tc.maxLine}
				fast := &recorder{maxBytes: tc.max, maxLine: tc.maxLine, fast: true}
				want := converse(t, slow, lmtp, script...)
				got := converse(t, fast, lmtp, script...)
				if fast.slow > 0 {
					t.Fatalf("go-smtp's DATA reader or line limit is not the one dotReader was written for: the fast path was not taken")
				}
				if len(fast.failed) > 0 {
					t.Fatalf("finish failed: %v", fast.failed)
				}
				if got != want {
					t.Fatalf("replies differ\nfast: %q\ngo-smtp: %q", got, want)
				}
				if len(fast.msgs) != len(slow.msgs) || len(fast.msgs) != 2 {
					t.Fatalf("%d messages read, go-smtp's reader read %d", len(fast.msgs), len(slow.msgs))
				}
				for i := range fast.msgs {
					if fast.msgs[i] != slow.msgs[i] {
						t.Fatalf("message %d differs\nfast: %.200q\ngo-smtp: %.200q", i, fast.msgs[i], slow.msgs[i])
					}
				}
			})
			if !ok {
				return
			}
		}
	}
}

// TestFastDataCorrections: where go-smtp's reader departs from RFC 5321,
// dotReader does not (a stuffed line ".\rX" keeps its CR; a line after
// "\r\r\n" starts a line, so its dot is stuffing).
func TestFastDataCorrections(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{".\rX\r\n", "\rX\r\n"},
		{"a\r\r\n..b\r\n", "a\r\r\n.b\r\n"},
	} {
		rec := &recorder{fast: true}
		c, m := transaction(true, tc.data)
		converse(t, rec, true, c, m+"QUIT\r\n")
		if len(rec.msgs) != 1 || rec.msgs[0] != tc.want {
			t.Errorf("%q read as %q, want %q", tc.data, rec.msgs, tc.want)
		}
	}
}

// TestFastDataBrokenConnection: a client gone mid-message gets no
// delivery, and finish reports the failure (its connection is closed).
func TestFastDataBrokenConnection(t *testing.T) {
	rec := &recorder{fast: true}
	c, m := transaction(true, "abc\r\n.de")
	converse(t, rec, true, c, m[:len(m)-len(".\r\n")])
	if len(rec.msgs) != 1 || !strings.HasPrefix(rec.msgs[0], "error: ") {
		t.Fatalf("read %q, want an error", rec.msgs)
	}
	if !strings.Contains(rec.msgs[0], io.ErrUnexpectedEOF.Error()) {
		t.Fatalf("read %q, want %v", rec.msgs, io.ErrUnexpectedEOF)
	}
	if len(rec.failed) != 1 {
		t.Fatalf("finish failures %v, want one", rec.failed)
	}
}

// TestFastDataLineTooLong: a message line over the limit is answered
// 500 5.4.0 and the connection closed, as go-smtp does (go-smtp also
// sends a 554 for the message first), and the message is not taken.
func TestFastDataLineTooLong(t *testing.T) {
	for _, data := range []string{
		strings.Repeat("x", 101) + "\r\n",
		"ok\r\n" + strings.Repeat("y", 3000) + "\r\n",
		"bare\n" + strings.Repeat("z", 150) + "\nend\r\n",
		"." + strings.Repeat("d", 100) + "\r\n",
	} {
		for _, fastPath := range []bool{false, true} {
			rec := &recorder{fast: fastPath, maxLine: 100}
			c1, m1 := transaction(true, data)
			c2, m2 := transaction(true, "second\r\n")
			out := converse(t, rec, true, c1, m1+c2, m2+"QUIT\r\n")
			if !strings.HasSuffix(out, "354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n"+map[bool]string{false: "554 5.0.0 <c@d.test> Error: transaction failed: smtp: too long a line in input stream\r\n", true: ""}[fastPath]+"500 5.4.0 Too long line, closing connection\r\n") {
				t.Errorf("fast %v, %.40q...: replies end %q", fastPath, data, out[max(0, len(out)-200):])
			}
			if len(rec.msgs) != 1 || !strings.HasPrefix(rec.msgs[0], "error: ") {
				t.Errorf("fast %v, %.40q...: read %.80q, want one error", fastPath, data, rec.msgs)
			}
		}
	}
}

// TestFastDataLineLimitBack: go-smtp's line check is on again after the
// message: a command line too long beyond what go-smtp had buffered with
// the message is refused. (go-smtp's own reader fails the message too
// when that line arrives in the same read from the socket; dotReader
// does not.)
func TestFastDataLineLimitBack(t *testing.T) {
	rec := &recorder{fast: true, maxLine: 100}
	c, m := transaction(true, "a\r\n")
	out := converse(t, rec, true, c, m+"NOOP "+strings.Repeat("x", 6000)+"\r\nQUIT\r\n")
	if want := "354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n250 2.0.0 <c@d.test> OK: queued\r\n500 5.4.0 Too long line, closing connection\r\n"; !strings.HasSuffix(out, want) {
		t.Fatalf("replies %q, want them to end %q", out, want)
	}
	if len(rec.msgs) != 1 || rec.msgs[0] != "a\r\n" || rec.slow > 0 {
		t.Fatalf("read %q (fast path not taken: %d)", rec.msgs, rec.slow)
	}
}

// BenchmarkDataRead delivers a 75 KB message (mailbench's size) over LMTP
// to a go-smtp server on loopback, one transaction per iteration, read
// through go-smtp's own DATA reader or through dataIn. cpu-ns/op is the
// process's CPU (client and server) per message: the client's share is
// the same in both, so the difference is the server's saving.
//
//	go test -run '^$' -bench DataRead -benchtime 2000x ./mailserver/smtp/
func BenchmarkDataRead(b *testing.B) {
	var msg strings.Builder
	msg.WriteString("From: a@b.test\r\nTo: c@d.test\r\nSubject: bench\r\n\r\n")
	for msg.Len() < 75000 {
		msg.WriteString(strings.Repeat("word ", 14) + "\r\n")
	}
	data := stuff(msg.String()) + ".\r\n"
	for _, fast := range []bool{false, true} {
		name := map[bool]string{false: "go-smtp", true: "dotReader"}[fast]
		b.Run(name, func(b *testing.B) {
			rec := &recorder{fast: fast, count: true}
			srv := gosmtp.NewServer(rec)
			srv.LMTP = true
			srv.Domain = "test"
			srv.MaxLineLength = 2000
			srv.MaxMessageBytes = 50 << 20
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go func() { _ = srv.Serve(l) }()
			defer srv.Close()
			conn, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			c := gosmtp.NewClientLMTP(conn)
			defer c.Close()
			if err := c.Hello("c"); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			cpu0 := processCPU()
			for range b.N {
				if err := c.Mail("a@b.test", nil); err != nil {
					b.Fatal(err)
				}
				if err := c.Rcpt("c@d.test", nil); err != nil {
					b.Fatal(err)
				}
				w, err := c.Data()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.WriteString(w, msg.String()); err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
			if rec.slow > 0 || len(rec.msgs) != 1 {
				b.Fatalf("fast path not taken (%d) or nothing read", rec.slow)
			}
		})
	}
}

// processCPU is this process's user+system CPU time: on a busy shared
// machine a benchmark's wall time says little, its CPU per operation
// more (reported as cpu-ns/op).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
