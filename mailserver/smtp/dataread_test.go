package smtp

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
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
	mu       sync.Mutex
	msgs     []string // the bytes read, or "error: ..."
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
		in := newDataIn(r, s.r.maxBytes, func(err error) {
			s.r.mu.Lock()
			s.r.failed = append(s.r.failed, err)
			s.r.mu.Unlock()
			_ = s.conn.Close()
		})
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
	s.r.msgs = append(s.r.msgs, got.String())
	return nil
}

// converse runs a go-smtp server (LMTP or SMTP) over rec, sends script
// at once (pipelined) and returns every reply line.
func converse(t *testing.T, rec *recorder, lmtp bool, script string) string {
	t.Helper()
	srv := gosmtp.NewServer(rec)
	srv.LMTP = lmtp
	srv.Domain = "test"
	srv.MaxMessageBytes = rec.maxBytes
	srv.MaxLineLength = 20000
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
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		_, _ = io.WriteString(c, script)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the replies: %v (so far %q)", err, out)
	}
	return string(out)
}

// transaction is one pipelined mail transaction carrying data as given
// (already dot-stuffed, without the end-of-data line).
func transaction(lmtp bool, data string) string {
	hello := "EHLO c\r\n"
	if lmtp {
		hello = "LHLO c\r\n"
	}
	return hello + "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n" + data + ".\r\n"
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
	cases := []struct {
		name string
		data string // as sent, dot-stuffed
		max  int64
	}{
		{"empty", "", 0},
		{"one line", "Subject: a\r\n\r\nbody\r\n", 0},
		{"stuffed dots", stuff(".\r\n..\r\n.x\r\nx.\r\n...\r\n.\r\n"), 0},
		{"dot lines unstuffed by hand", "..\r\n.a\r\n", 0},
		{"bare LF", "a\nb\n.\nc\r\n", 0},
		{"CR without LF", "a\rb\r\n\rc\r\n", 0},
		{"line longer than the buffer", long + "\r\n." + long + "\r\n", 0},
		{"no final CRLF", "abc\r\n" + strings.Repeat("y", 5000) + "\r\n", 0},
		{"too large", strings.Repeat("0123456789\r\n", 1000), 5000},
		{"just below the limit", strings.Repeat("a", 98) + "\r\n", 101},
		{"at the limit", strings.Repeat("a", 98) + "\r\n", 100},
		{"too large, long line", strings.Repeat("z", 12000) + "\r\n", 5000},
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
		cases = append(cases, struct {
			name string
			data string
			max  int64
		}{fmt.Sprintf("random %d", i), stuff(b.String()), max})
	}
	for _, lmtp := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("lmtp=%v/%s", lmtp, tc.name), func(t *testing.T) {
				// Two transactions and a QUIT in one write: the second
				// must start exactly after the first's end-of-data line.
				script := transaction(lmtp, tc.data) + transaction(lmtp, "second\r\n")[len("EHLO c\r\n"):] + "QUIT\r\n"
				slow := &recorder{maxBytes: tc.max}
				fast := &recorder{maxBytes: tc.max, fast: true}
				want := converse(t, slow, lmtp, script)
				got := converse(t, fast, lmtp, script)
				if fast.slow > 0 {
					t.Fatalf("go-smtp's DATA reader is not the one dotReader was written for: the fast path was not taken")
				}
				if len(fast.failed) > 0 {
					t.Fatalf("finish failed: %v", fast.failed)
				}
				if got != want {
					t.Fatalf("replies differ\nfast: %q\ngo-smtp: %q", got, want)
				}
				if len(fast.msgs) != len(slow.msgs) || len(fast.msgs) != 2 {
					t.Fatalf("%d messages read, go-smtp's reader read %d (want 2)", len(fast.msgs), len(slow.msgs))
				}
				for i := range fast.msgs {
					if fast.msgs[i] != slow.msgs[i] {
						t.Fatalf("message %d differs\nfast: %.200q\ngo-smtp: %.200q", i, fast.msgs[i], slow.msgs[i])
					}
				}
			})
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
		converse(t, rec, true, transaction(true, tc.data)+"QUIT\r\n")
		if len(rec.msgs) != 1 || rec.msgs[0] != tc.want {
			t.Errorf("%q read as %q, want %q", tc.data, rec.msgs, tc.want)
		}
	}
}

// TestFastDataBrokenConnection: a client gone mid-message gets no
// delivery, and finish reports the failure (its connection is closed).
func TestFastDataBrokenConnection(t *testing.T) {
	rec := &recorder{fast: true}
	script := transaction(true, "abc\r\n.de")
	converse(t, rec, true, script[:len(script)-len(".\r\n")])
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
