package smtp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
	"hastore/mailserver/smtp"
	"hastore/replica/meta"
	"hastore/testing/cluster"
)

// deliveryEnv is a 3-node in-process cluster with example.test's bob and
// alice, and SMTP listeners made by listen.
type deliveryEnv struct {
	c     *cluster.InProcess
	store *mailbox.Store
}

func startDelivery(t *testing.T) *deliveryEnv {
	t.Helper()
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	st := mailbox.New(c.Nodes[0].Cluster, c.Nodes[0].Meta, mailbox.Options{Hash: mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1}})
	// Elections right after start (slow under -race) make a first try
	// fail now and then: retry what is not done yet.
	try := func(what string, fn func(context.Context) error) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := fn(ctx)
			cancel()
			if err == nil || errors.Is(err, mailbox.ErrExists) {
				return
			}
			if !errors.Is(err, mailbox.ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	try("add domain", func(ctx context.Context) error { return st.AddDomain(ctx, "example.test") })
	for _, u := range []string{"bob@example.test", "alice@example.test"} {
		try("add "+u, func(ctx context.Context) error { return st.AddUser(ctx, u, "secret-password", 0) })
	}
	return &deliveryEnv{c: c, store: st}
}

func (e *deliveryEnv) listen(t *testing.T, cfg smtp.Config) *smtp.Server {
	t.Helper()
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.test"
	}
	srv, err := smtp.Listen("127.0.0.1:0", e.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func (e *deliveryEnv) inbox(t *testing.T, user string) []mailstate.MailMessage {
	t.Helper()
	v := e.store.View()
	mb, ok, err := v.Mailbox(user, "INBOX")
	if err != nil || !ok {
		t.Fatalf("INBOX of %s: %v %v", user, ok, err)
	}
	var out []mailstate.MailMessage
	if err := v.Messages(user, mb.ID, func(m mailstate.MailMessage) error { out = append(out, m); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// liveObjects counts the objects with references, on node 0.
func (e *deliveryEnv) liveObjects(t *testing.T) int {
	t.Helper()
	n := 0
	if err := e.c.Nodes[0].Meta.WalkObjects(func(o meta.Object) error {
		if o.Refs > 0 {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// dialFrom connects to addr from the local address ip (any 127.x.y.z
// works on Linux loopback), so tests can play several clients.
func dialFrom(t testing.TB, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if ip != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	return c
}

// send delivers one message with go-smtp's client and returns the final
// reply's error (nil for 250) and text.
func send(t testing.TB, addr, from string, to []string, body string) (string, error) {
	t.Helper()
	c, err := gosmtp.Dial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_ = c.Quit()
	return resp.StatusText, nil
}

func testMessage(id string) string {
	return "From: someone@remote.test\r\nTo: bob@example.test\r\nSubject: retry " + id + "\r\nMessage-ID: <" + id + "@remote.test>\r\n\r\nbody of " + id + "\r\n"
}

// sendAndHangUp sends a whole message and closes the connection without
// reading the reply, like a client whose timeout fired.
func sendAndHangUp(t *testing.T, addr, to, body string) {
	t.Helper()
	c := dialFrom(t, "", addr)
	defer c.Close()
	r := bufio.NewReader(c)
	expect := func(code string) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %s: %v", code, err)
			}
			if !strings.HasPrefix(line, code) {
				t.Fatalf("got %q, want %s", line, code)
			}
			if len(line) > 3 && line[3] == ' ' {
				return
			}
		}
	}
	expect("220")
	fmt.Fprintf(c, "EHLO client.test\r\n")
	expect("250")
	fmt.Fprintf(c, "MAIL FROM:<someone@remote.test>\r\n")
	expect("250")
	fmt.Fprintf(c, "RCPT TO:<%s>\r\n", to)
	expect("250")
	fmt.Fprintf(c, "DATA\r\n")
	expect("354")
	fmt.Fprintf(c, "%s.\r\n", body)
	// Hang up without the reply; give the server the time to store it
	// before the client "retries" (a retry racing it is stored once too,
	// but then this test would not show the hang-up case).
	time.Sleep(time.Second)
}

// TestRetriedDeliveryStoredOnce: a client that times out and sends the
// same message again gets 250 twice and one stored copy; the retry's body
// is released; other recipients and later resends are stored.
func TestRetriedDeliveryStoredOnce(t *testing.T) {
	e := startDelivery(t)
	// Long enough that a loaded machine finishes the retries inside it;
	// the last step waits it out.
	const window = 30 * time.Second
	srv := e.listen(t, smtp.Config{Mode: smtp.MX, RetryWindow: window})
	lmtp := e.listen(t, smtp.Config{Mode: smtp.LMTP, RetryWindow: window})
	addr := srv.Addr().String()
	bob, alice := "bob@example.test", "alice@example.test"

	start := time.Now()
	objects := e.liveObjects(t)
	sendAndHangUp(t, addr, bob, testMessage("m1"))
	// The server stores the hung-up delivery on its own time; on a loaded
	// machine that can take longer than the client's pause.
	for deadline := time.Now().Add(20 * time.Second); len(e.inbox(t, bob)) == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if got := len(e.inbox(t, bob)); got != 1 {
		t.Fatalf("the hung-up delivery: bob has %d messages, want 1", got)
	}
	for i := 0; i < 2; i++ {
		if _, err := send(t, addr, "someone@remote.test", []string{bob}, testMessage("m1")); err != nil {
			t.Fatalf("retry %d: %v", i, err)
		}
	}
	if got := len(e.inbox(t, bob)); got != 1 {
		t.Fatalf("after two retries bob has %d messages, want 1", got)
	}
	// The retries' bodies (different: each has its own Received: line)
	// hold no references.
	if got := e.liveObjects(t); got != objects+1 {
		t.Fatalf("%d live objects, want %d: a retry's body leaked", got, objects+1)
	}

	// LMTP: the same message to bob again (a retry through another
	// listener) and to alice (new) in one transaction.
	lc := dialLMTP(t, lmtp.Addr().String())
	if err := lc.Mail("someone@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{bob, alice} {
		if err := lc.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := lc.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, testMessage("m1"))
	if resp, err := w.CloseWithLMTPResponse(); err != nil || len(resp) != 2 {
		t.Fatalf("LMTP: %v %v", resp, err)
	}
	lc.Close()
	if b, a := len(e.inbox(t, bob)), len(e.inbox(t, alice)); b != 1 || a != 1 {
		t.Fatalf("after LMTP: bob %d, alice %d messages, want 1 and 1", b, a)
	}
	// Another message is stored.
	if _, err := send(t, addr, "someone@remote.test", []string{bob}, testMessage("m2")); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > window {
		t.Fatalf("the retries took %s, longer than the %s window they were to fall in", time.Since(start), window)
	}
	if got := len(e.inbox(t, bob)); got != 2 {
		t.Fatalf("bob has %d messages, want 2", got)
	}
	// After the window a resend is a new message.
	time.Sleep(window - time.Since(start) + 500*time.Millisecond)
	if _, err := send(t, addr, "someone@remote.test", []string{bob}, testMessage("m1")); err != nil {
		t.Fatal(err)
	}
	if got := len(e.inbox(t, bob)); got != 3 {
		t.Fatalf("after the window bob has %d messages, want 3", got)
	}
}

func dialLMTP(t *testing.T, addr string) *gosmtp.Client {
	t.Helper()
	conn := dialFrom(t, "", addr)
	c := gosmtp.NewClientLMTP(conn)
	if err := c.Hello("mta.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// openData opens a session up to DATA's 354 from ip.
func openData(t testing.TB, ip, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := dialFrom(t, ip, addr)
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute)) // -race reads DATA slowly
	for _, cmd := range []string{"", "EHLO client.test", "MAIL FROM:<a@remote.test>", "RCPT TO:<bob@example.test>", "DATA"} {
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			if line[0] != '2' && line[0] != '3' {
				t.Fatalf("%s: %q", cmd, line)
			}
			if line[3] == ' ' {
				break
			}
		}
	}
	return c, r
}

// TestDataMemoryBounded holds many sessions in the middle of big DATA
// transfers: the process heap grows by about the budget, not by the sum
// of the bodies; the messages finished afterwards are stored.
func TestDataMemoryBounded(t *testing.T) {
	e := startDelivery(t)
	const (
		sessions = 16
		body     = 8 << 20
		budget   = 16 << 20
	)
	srv := e.listen(t, smtp.Config{Mode: smtp.MX, MaxMessageBytes: 64 << 20, DataMemory: budget,
		MaxConnectionsPerIP: -1, MaxConcurrentDataPerNet: -1, SpoolDir: t.TempDir()})
	addr := srv.Addr().String()
	before := heapInUse()

	line := strings.Repeat("x", 998) + "\r\n"
	chunk := []byte(strings.Repeat(line, (1<<20)/len(line)))
	conns := make([]net.Conn, sessions)
	readers := make([]*bufio.Reader, sessions)
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range conns {
		conns[i], readers[i] = openData(t, "", addr)
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			fmt.Fprintf(c, "Subject: big %p\r\n\r\n", c)
			for n := 0; n < body; n += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					errs <- err
					return
				}
			}
		}(conns[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every body has been sent but none finished: the server holds them.
	time.Sleep(500 * time.Millisecond)
	held := heapInUse()
	grew := int64(held) - int64(before)
	t.Logf("heap %d MiB before, %d MiB with %d sessions holding %d MiB bodies (budget %d MiB)", before>>20, held>>20, sessions, body>>20, budget>>20)
	// Bodies are 128 MiB in total; held whole they would show here.
	if limit := int64(budget + 48<<20); grew > limit {
		t.Fatalf("heap grew by %d MiB with %d sessions in DATA, want at most %d MiB (the budget and per-session buffers)", grew>>20, sessions, limit>>20)
	}
	// Two finish and are stored; the rest hang up.
	for i, c := range conns {
		if i >= 2 {
			c.Close()
			continue
		}
		fmt.Fprintf(c, ".\r\n")
	}
	for i := 0; i < 2; i++ {
		_ = conns[i].SetReadDeadline(time.Now().Add(2 * time.Minute))
		reply, err := readers[i].ReadString('\n')
		if err != nil || !strings.HasPrefix(reply, "250 ") {
			t.Fatalf("finished message %d: %q %v", i, reply, err)
		}
		conns[i].Close()
	}
	msgs := e.inbox(t, "bob@example.test")
	if len(msgs) != 2 || msgs[0].Size < body {
		t.Fatalf("bob has %d messages (%+v), want 2 of %d bytes or more", len(msgs), msgs, body)
	}
}

// TestSlowSendersDoNotBlockDelivery: senders trickling DATA from one
// network cannot keep a legitimate delivery from being stored.
func TestSlowSendersDoNotBlockDelivery(t *testing.T) {
	e := startDelivery(t)
	srv := e.listen(t, smtp.Config{Mode: smtp.MX, MaxConcurrentData: 4, MaxConcurrentDataPerNet: 2,
		DataStallTimeout: 2 * time.Second, MinDataBytes: 1024, CommitTimeout: 15 * time.Second, MaxConnectionsPerIP: -1})
	addr := srv.Addr().String()

	// Eight slow senders, from four addresses of one /24 and four of
	// another, each sending a byte a second.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	replies := make(chan string, 8)
	for i := 0; i < 8; i++ {
		ip := fmt.Sprintf("127.0.%d.%d", 1+i%2, 1+i/2)
		c, r := openData(t, ip, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			got := make(chan string, 1)
			go func() {
				line, err := r.ReadString('\n')
				if err != nil {
					line = "closed: " + err.Error()
				}
				got <- line
			}()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case line := <-got:
					replies <- line
					return
				case <-stop:
					replies <- "still open"
					return
				case <-tick.C:
					_, _ = c.Write([]byte("x"))
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the slow ones are in DATA first

	// The legitimate client has the patience of a real MTA for the reply.
	done := make(chan error, 1)
	go func() {
		_, err := send(t, addr, "friend@remote.test", []string{"bob@example.test"}, testMessage("legit"))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("legitimate delivery refused: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("legitimate delivery got no reply in 60 s")
	}
	time.Sleep(3 * time.Second) // every slow sender has been judged by now
	close(stop)
	wg.Wait()
	close(replies)
	for line := range replies {
		if !strings.HasPrefix(line, "421 4.4.2") && !strings.HasPrefix(line, "451 4.7.0") {
			t.Errorf("slow sender: %q, want 421 4.4.2 (too slow) or 451 4.7.0 (network busy)", line)
		}
	}
	if got := len(e.inbox(t, "bob@example.test")); got != 1 {
		t.Fatalf("bob has %d messages, want 1", got)
	}
}

// TestRecipientEnumerationCutOff: a client probing addresses is
// disconnected after MaxUnknownRecipients unknown ones, and its address
// after MaxUnknownRecipientsPerIP across connections.
func TestRecipientEnumerationCutOff(t *testing.T) {
	e := startDelivery(t)
	srv := e.listen(t, smtp.Config{Mode: smtp.MX, MaxUnknownRecipients: 5, MaxUnknownRecipientsPerIP: 8})
	addr := srv.Addr().String()

	probe := func(ip string, n int) (unknown int, last *gosmtp.SMTPError) {
		t.Helper()
		c := gosmtp.NewClient(dialFrom(t, ip, addr))
		defer c.Close()
		if err := c.Hello("probe.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("x@remote.test", nil); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			err := c.Rcpt(fmt.Sprintf("guess%d@example.test", i), nil)
			var se *gosmtp.SMTPError
			if !errors.As(err, &se) {
				return unknown, &gosmtp.SMTPError{Code: 0, Message: fmt.Sprint(err)}
			}
			if se.Code != 550 {
				return unknown, se
			}
			unknown++
		}
		return unknown, nil
	}
	// One connection: four 550s, then 421.
	if n, last := probe("127.0.3.1", 10); n != 4 || last == nil || last.Code != 421 {
		t.Fatalf("first connection: %d unknown answered, then %v; want 4 then 421", n, last)
	}
	// The same address again: three more, then the address limit.
	if n, last := probe("127.0.3.1", 10); n != 3 || last == nil || last.Code != 421 {
		t.Fatalf("second connection: %d unknown answered, then %v; want 3 then 421", n, last)
	}
	// Now even the first RCPT of a new connection is refused, known or not.
	c := gosmtp.NewClient(dialFrom(t, "127.0.3.1", addr))
	defer c.Close()
	_ = c.Hello("probe.test")
	_ = c.Mail("x@remote.test", nil)
	var se *gosmtp.SMTPError
	if err := c.Rcpt("bob@example.test", nil); !errors.As(err, &se) || se.Code != 421 {
		t.Fatalf("third connection's RCPT: %v, want 421", err)
	}
	// Another address is not affected.
	if _, err := send(t, addr, "friend@remote.test", []string{"bob@example.test"}, testMessage("ok")); err != nil {
		t.Fatal(err)
	}
}

// TestIdleConnectionsMakeRoom: when idle connections from many addresses
// fill the connection limit, a new client still gets in and delivers.
func TestIdleConnectionsMakeRoom(t *testing.T) {
	e := startDelivery(t)
	srv := e.listen(t, smtp.Config{Mode: smtp.MX, MaxConnections: 20, MaxConnectionsPerIP: 5, IdleEvictAfter: time.Second})
	addr := srv.Addr().String()
	for i := 0; i < 20; i++ { // held open by the deferred Close
		c := dialFrom(t, fmt.Sprintf("127.0.4.%d", 1+i/5), addr)
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "220") {
			t.Fatalf("idle connection %d: %q %v", i, line, err)
		}
		if i%2 == 0 { // a transaction begun and left idle protects nothing
			fmt.Fprintf(c, "EHLO idle.test\r\nMAIL FROM:<idle@remote.test>\r\n")
		}
	}
	time.Sleep(1500 * time.Millisecond)
	for i := 0; i < 3; i++ {
		if _, err := send(t, addr, "friend@remote.test", []string{"bob@example.test"}, testMessage(fmt.Sprint("room", i))); err != nil {
			t.Fatalf("delivery %d with the limit full of idle connections: %v", i, err)
		}
	}
	if got := len(e.inbox(t, "bob@example.test")); got != 3 {
		t.Fatalf("bob has %d messages, want 3", got)
	}
}

// TestSlowBDATCutOff: CHUNKING (which go-smtp always offers) is held to
// the same pace as DATA.
func TestSlowBDATCutOff(t *testing.T) {
	e := startDelivery(t)
	srv := e.listen(t, smtp.Config{Mode: smtp.MX, DataStallTimeout: 2 * time.Second, MinDataBytes: 1024})
	c := dialFrom(t, "", srv.Addr().String())
	defer c.Close()
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	for _, cmd := range []string{"", "EHLO client.test", "MAIL FROM:<a@remote.test>", "RCPT TO:<bob@example.test>"} {
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line[3] == ' ' {
				break
			}
		}
	}
	// A 100-byte chunk, then a chunk trickling a byte a second.
	fmt.Fprintf(c, "BDAT 100\r\n%s", strings.Repeat("a", 100))
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "250") {
		t.Fatalf("first chunk: %q %v", line, err)
	}
	fmt.Fprintf(c, "BDAT 1000\r\n")
	start := time.Now()
	got := make(chan string, 1)
	go func() {
		line, err := r.ReadString('\n')
		if err != nil {
			line = err.Error()
		}
		got <- line
	}()
	for {
		select {
		case line := <-got:
			if !strings.HasPrefix(line, "421 4.4.2") {
				t.Fatalf("slow chunk answered %q, want 421 4.4.2", line)
			}
			t.Logf("cut off after %s: %q", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(line))
			return
		case <-time.After(time.Second):
			if _, err := c.Write([]byte("b")); err != nil {
				return // closed
			}
		}
	}
}
