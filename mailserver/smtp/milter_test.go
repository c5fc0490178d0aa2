package smtp_test

import (
	"context"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver/mailstate"
	"hastore/mailserver/smtp"
)

// fakeMilter is go-milter's server side playing a content filter: what
// it does at the end of the message is the test case's verdict; what it
// was shown is recorded.
type fakeMilter struct {
	milter.NoOpMilter
	f *milterFake
}

type milterFake struct {
	mu      sync.Mutex
	verdict func(m *milter.Modifier) (milter.Response, error)
	delay   time.Duration
	// seen, for the last message
	helo, from string
	rcpts      []string
	headers    []string
	body       []byte
	chunks     int
	maxChunk   int
}

func (m fakeMilter) Helo(name string, _ *milter.Modifier) (milter.Response, error) {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	m.f.helo, m.f.rcpts, m.f.headers, m.f.body, m.f.chunks, m.f.maxChunk = name, nil, nil, nil, 0, 0
	return milter.RespContinue, nil
}

func (m fakeMilter) MailFrom(from string, _ *milter.Modifier) (milter.Response, error) {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	m.f.from = from
	return milter.RespContinue, nil
}

func (m fakeMilter) RcptTo(r string, _ *milter.Modifier) (milter.Response, error) {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	m.f.rcpts = append(m.f.rcpts, r)
	return milter.RespContinue, nil
}

func (m fakeMilter) Header(name, value string, _ *milter.Modifier) (milter.Response, error) {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	m.f.headers = append(m.f.headers, name+": "+value)
	return milter.RespContinue, nil
}

func (m fakeMilter) Headers(textproto.MIMEHeader, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (m fakeMilter) BodyChunk(c []byte, _ *milter.Modifier) (milter.Response, error) {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	m.f.body = append(m.f.body, c...)
	m.f.chunks++
	m.f.maxChunk = max(m.f.maxChunk, len(c))
	return milter.RespContinue, nil
}

func (m fakeMilter) Body(mod *milter.Modifier) (milter.Response, error) {
	m.f.mu.Lock()
	verdict, delay := m.f.verdict, m.f.delay
	m.f.mu.Unlock()
	time.Sleep(delay)
	return verdict(mod)
}

func startFakeMilter(t *testing.T) (*milterFake, string) {
	t.Helper()
	f := &milterFake{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &milter.Server{
		NewMilter: func() milter.Milter { return fakeMilter{f: f} },
		Actions:   milter.OptAddHeader | milter.OptChangeHeader | milter.OptQuarantine,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f, "tcp:" + ln.Addr().String()
}

func (f *milterFake) set(delay time.Duration, verdict func(m *milter.Modifier) (milter.Response, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verdict, f.delay = verdict, delay
}

// mailbox returns the messages of user's mailbox by name, and its special use.
func (e *deliveryEnv) mailbox(t *testing.T, user, name string) ([]string, string) {
	t.Helper()
	v := e.store.View()
	mb, ok, err := v.Mailbox(user, name)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return nil, ""
	}
	var out []string
	if err := v.Messages(user, mb.ID, func(m mailstate.MailMessage) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := e.store.Body(ctx, m)
		out = append(out, string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out, mb.SpecialUse
}

func contains(msgs []string, s string) bool {
	for _, m := range msgs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// TestMilterVerdicts: each milter verdict has its effect on the reply and
// on what is stored where.
func TestMilterVerdicts(t *testing.T) {
	e := startDelivery(t)
	fake, addr := startFakeMilter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// alice has no Junk: the first spam for her creates it.
	if mb, ok, err := e.store.Mailbox("alice@example.test", "Junk"); err != nil || !ok {
		t.Fatalf("alice's Junk: %v %v", ok, err)
	} else if err := e.store.DeleteMailbox(ctx, "alice@example.test", mb.ID); err != nil {
		t.Fatal(err)
	}
	cfg := &smtp.MilterConfig{Addrs: []string{addr}, Timeout: 2 * time.Second, JunkHeader: "X-Spam"}
	mx := e.listen(t, smtp.Config{Milter: cfg}).Addr().String()

	accept := func(m *milter.Modifier) (milter.Response, error) { return milter.RespAccept, nil }
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 4000) // 256 000 bytes
	for _, tc := range []struct {
		name    string
		delay   time.Duration
		verdict func(m *milter.Modifier) (milter.Response, error)
		to      string
		extra   string // header lines of the sent message
		body    string
		code    int
		enh     gosmtp.EnhancedCode
		text    string
		inbox   bool   // stored in INBOX
		junk    bool   // stored in Junk
		stored  string // also found in the stored message
	}{
		{name: "accept with headers", to: "bob@example.test", code: 250, inbox: true, stored: "X-Spam-Score: 1.5\r\n",
			verdict: func(m *milter.Modifier) (milter.Response, error) {
				if err := m.AddHeader("X-Spam-Score", "1.5"); err != nil {
					return nil, err
				}
				return milter.RespAccept, nil
			}},
		{name: "change subject", to: "bob@example.test", code: 250, inbox: true, stored: "Subject: [SPAM] change subject\r\n",
			verdict: func(m *milter.Modifier) (milter.Response, error) {
				if err := m.ChangeHeader(1, "Subject", "[SPAM] change subject"); err != nil {
					return nil, err
				}
				return milter.RespAccept, nil
			}},
		{name: "reject with the milter's text", to: "bob@example.test", code: 554, enh: gosmtp.EnhancedCode{5, 7, 1}, text: "Spam message rejected",
			verdict: func(m *milter.Modifier) (milter.Response, error) {
				return milter.NewResponseStr('y', "554 5.7.1 Spam message rejected"), nil
			}},
		{name: "plain reject", to: "bob@example.test", code: 550, enh: gosmtp.EnhancedCode{5, 7, 1}, text: "content filter",
			verdict: func(m *milter.Modifier) (milter.Response, error) { return milter.RespReject, nil }},
		{name: "tempfail", to: "bob@example.test", code: 451, enh: gosmtp.EnhancedCode{4, 7, 1}, text: "try again later",
			verdict: func(m *milter.Modifier) (milter.Response, error) { return milter.RespTempFail, nil }},
		{name: "discard", to: "bob@example.test", code: 250,
			verdict: func(m *milter.Modifier) (milter.Response, error) { return milter.RespDiscard, nil }},
		{name: "spam header files into Junk", to: "alice@example.test", code: 250, junk: true, stored: "X-Spam: Yes\r\n",
			verdict: func(m *milter.Modifier) (milter.Response, error) {
				if err := m.AddHeader("X-Spam", "Yes"); err != nil {
					return nil, err
				}
				return milter.RespAccept, nil
			}},
		{name: "sender's own spam header counts for nothing", to: "bob@example.test", extra: "X-Spam: Yes\r\n", code: 250, inbox: true, verdict: accept},
		{name: "quarantine files into Junk", to: "bob@example.test", code: 250, junk: true,
			verdict: func(m *milter.Modifier) (milter.Response, error) {
				if err := m.Quarantine("spam"); err != nil {
					return nil, err
				}
				return milter.RespAccept, nil
			}},
		{name: "milter too slow: 451", to: "bob@example.test", delay: 4 * time.Second, code: 451, enh: gosmtp.EnhancedCode{4, 7, 1}, text: "Content filter unavailable", verdict: accept},
		{name: "large body in chunks", to: "bob@example.test", body: big, code: 250, inbox: true, verdict: accept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake.set(tc.delay, tc.verdict)
			beforeInbox, _ := e.mailbox(t, tc.to, "INBOX")
			beforeJunk, _ := e.mailbox(t, tc.to, "Junk")
			body := tc.body
			if body == "" {
				body = "hello\r\n"
			}
			msg := "From: someone@remote.test\r\nTo: " + tc.to + "\r\nSubject: " + tc.name + "\r\n" + tc.extra + "\r\n" + body
			start := time.Now()
			_, err := send(t, mx, "someone@remote.test", []string{tc.to}, msg)
			took := time.Since(start)
			wantReply(t, tc.name, err, tc.code, tc.enh, tc.text)
			if err := e.store.CatchUp(ctx); err != nil {
				t.Fatal(err)
			}
			inbox, _ := e.mailbox(t, tc.to, "INBOX")
			junk, use := e.mailbox(t, tc.to, "Junk")
			if got := len(inbox) - len(beforeInbox); got != map[bool]int{true: 1}[tc.inbox] {
				t.Errorf("%d new messages in INBOX, want inbox=%v", got, tc.inbox)
			}
			if got := len(junk) - len(beforeJunk); got != map[bool]int{true: 1}[tc.junk] {
				t.Errorf("%d new messages in Junk, want junk=%v", got, tc.junk)
			}
			if tc.junk && use != `\Junk` {
				t.Errorf("Junk's special use %q, want \\Junk", use)
			}
			stored := inbox
			if tc.junk {
				stored = junk
			}
			if tc.stored != "" && (len(stored) == 0 || !strings.Contains(stored[len(stored)-1], tc.stored)) {
				t.Errorf("stored message lacks %q: %q", tc.stored, stored)
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if fake.helo != "client.test" || fake.from != "someone@remote.test" || len(fake.rcpts) != 1 || fake.rcpts[0] != tc.to {
				t.Errorf("milter saw HELO %q MAIL %q RCPT %q", fake.helo, fake.from, fake.rcpts)
			}
			if !contains(fake.headers, "Subject: "+tc.name) || !contains(fake.headers, "Received: from client.test") {
				t.Errorf("milter saw headers %q", fake.headers)
			}
			if string(fake.body) != body {
				t.Errorf("milter saw a body of %d bytes, want %d", len(fake.body), len(body))
			}
			if fake.maxChunk > milter.MaxBodyChunk || len(body) > milter.MaxBodyChunk && fake.chunks < (len(body)+milter.MaxBodyChunk-1)/milter.MaxBodyChunk {
				t.Errorf("body in %d chunks of at most %d bytes", fake.chunks, fake.maxChunk)
			}
			if tc.delay > 0 && took > tc.delay+2*time.Second {
				t.Errorf("answered after %s with a milter timeout of %s", took, cfg.Timeout)
			}
		})
	}
}

// TestMilterUnreachable: a milter that cannot be reached defers mail
// (451) by default, and lets it through with OnError accept.
func TestMilterUnreachable(t *testing.T) {
	e := startDelivery(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "tcp:" + ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		onError smtp.MilterOnError
		code    int
		inbox   int
	}{{smtp.MilterTempFail, 451, 0}, {smtp.MilterAccept, 250, 1}} {
		before := len(e.inbox(t, "bob@example.test"))
		mx := e.listen(t, smtp.Config{Milter: &smtp.MilterConfig{Addrs: []string{dead}, OnError: tc.onError}}).Addr().String()
		_, err := send(t, mx, "someone@remote.test", []string{"bob@example.test"}, testMessage("unreachable"))
		wantReply(t, "unreachable milter", err, tc.code, gosmtp.EnhancedCode{4, 7, 1}, "Content filter unavailable")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := e.store.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		if got := len(e.inbox(t, "bob@example.test")) - before; got != tc.inbox {
			t.Errorf("on error %v: %d new messages, want %d", tc.onError, got, tc.inbox)
		}
	}
}

// TestMilterLMTP: on LMTP a refusal is every recipient's status.
func TestMilterLMTP(t *testing.T) {
	e := startDelivery(t)
	fake, addr := startFakeMilter(t)
	fake.set(0, func(m *milter.Modifier) (milter.Response, error) {
		return milter.NewResponseStr('y', "550 5.7.1 Virus found"), nil
	})
	lmtp := e.listen(t, smtp.Config{Mode: smtp.LMTP, Milter: &smtp.MilterConfig{Addrs: []string{addr}}}).Addr().String()
	c := dialLMTP(t, lmtp)
	defer c.Close()
	if err := c.Mail("someone@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"bob@example.test", "alice@example.test"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(testMessage("lmtp"))); err != nil {
		t.Fatal(err)
	}
	_, err = w.CloseWithLMTPResponse()
	lerr, ok := err.(gosmtp.LMTPDataError)
	if !ok || len(lerr) != 2 {
		t.Fatalf("LMTP DATA: %v, want both recipients refused", err)
	}
	for rcpt, se := range lerr {
		if se.Code != 550 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 7, 1}) || !strings.Contains(se.Message, "Virus found") {
			t.Errorf("%s: %d %v %q, want 550 5.7.1 with the milter's text", rcpt, se.Code, se.EnhancedCode, se.Message)
		}
	}
	if n := len(e.inbox(t, "bob@example.test")); n != 0 {
		t.Errorf("%d messages stored", n)
	}
}
