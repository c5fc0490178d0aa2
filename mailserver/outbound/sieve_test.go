package outbound

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/sieve"
	"hastore/mailserver/smtp"
)

// Sieve at delivery, through real LMTP and SMTP listeners of an
// in-process cluster, with the outbound queue sending to the test's
// remote MTA.

func (e *env) mailListeners(t *testing.T) map[string]net.Addr {
	t.Helper()
	srv, err := mailserver.Start(e.c.Nodes[0], mailserver.Config{Hostname: "mx1.test", SMTP: "127.0.0.1:0", LMTP: "127.0.0.1:0",
		Store: e.stores[0], SMTPTuning: smtp.Config{Outbound: e.queues[0]}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addrs()
}

func (e *env) setSieve(t *testing.T, user, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.stores[0].SetSieve(ctx, user, []byte(script)); err != nil {
		t.Fatalf("SetSieve %s: %v", user, err)
	}
}

// messages returns the flags of each message in user's mailbox box, read
// on node i (nil if the mailbox does not exist).
func (e *env) messages(t *testing.T, i int, user, box string) [][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := e.stores[i]
	if err := st.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	mb, ok, err := st.Mailbox(user, box)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return nil
	}
	ms, err := st.Messages(user, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	out := [][]string{}
	for _, m := range ms {
		out = append(out, m.Flags)
	}
	return out
}

// TestSieveLMTP: over LMTP to three users in one transaction, alice's
// script files the message into an existing folder with flags (and a
// fileinto of a missing folder lands in INBOX), bob's discards it, carol's
// rejects it: the statuses are 250, 250, 550 5.7.1 with carol's reason.
func TestSieveLMTP(t *testing.T) {
	e := startEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := e.stores[0]
	for _, u := range []string{"bob@local.test", "carol@local.test"} {
		if err := st.AddUser(ctx, u, "pw", 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateMailbox(ctx, "alice@local.test", "Reports", ""); err != nil {
		t.Fatal(err)
	}
	e.setSieve(t, "alice@local.test", `require ["fileinto", "imap4flags", "envelope"];
if allof (header :contains "subject" "weekly", envelope :is "from" "robot@remote.test") {
	fileinto :flags ["\\Seen", "$Report"] "Reports";
	fileinto "Missing/Folder";
	stop;
}`)
	e.setSieve(t, "bob@local.test", "discard;\n")
	e.setSieve(t, "carol@local.test", "require \"reject\";\nreject \"I am not taking mail\r\nfrom robots\";\n")
	addr := e.mailListeners(t)["lmtp"].String()

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	lc := gosmtp.NewClientLMTP(conn)
	defer lc.Close()
	if err := lc.Hello("mta.test"); err != nil {
		t.Fatal(err)
	}
	if err := lc.Mail("robot@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	rcpts := []string{"alice@local.test", "bob@local.test", "carol@local.test"}
	for _, r := range rcpts {
		if err := lc.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := lc.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "From: robot@remote.test\r\nTo: alice@local.test, bob@local.test, carol@local.test\r\nSubject: the weekly report\r\nMessage-ID: <w1@remote.test>\r\n\r\nnumbers\r\n")
	resp, err := w.CloseWithLMTPResponse()
	var lerr gosmtp.LMTPDataError
	if !errors.As(err, &lerr) {
		t.Fatalf("LMTP DATA: %v (responses %v), want carol refused", err, resp)
	}
	if resp["alice@local.test"] == nil || resp["bob@local.test"] == nil {
		t.Errorf("alice and bob not answered 250: %v %v", resp, err)
	}
	ce := lerr["carol@local.test"]
	if ce == nil || ce.Code != 550 || ce.EnhancedCode != (gosmtp.EnhancedCode{5, 7, 1}) || !strings.Contains(ce.Message, "I am not taking mail from robots") {
		t.Errorf("carol answered %v, want 550 5.7.1 with the script's reason", ce)
	}

	if got := e.messages(t, 1, "alice@local.test", "Reports"); len(got) != 1 || !slices.Contains(got[0], `\Seen`) || !slices.Contains(got[0], "$Report") {
		t.Errorf("alice's Reports holds %v, want one message flagged \\Seen $Report", got)
	}
	if got := e.messages(t, 1, "alice@local.test", "INBOX"); len(got) != 1 {
		t.Errorf("alice's INBOX holds %d messages, want 1 (the fileinto of a missing folder)", len(got))
	}
	if got := e.messages(t, 1, "alice@local.test", "Missing/Folder"); got != nil {
		t.Errorf("fileinto created the missing folder (%v); it must land in INBOX", got)
	}
	for _, u := range []string{"bob@local.test", "carol@local.test"} {
		if got := e.messages(t, 1, u, "INBOX"); len(got) != 0 {
			t.Errorf("%s's INBOX holds %d messages, want 0", u, len(got))
		}
	}

	// Without a matching test, the implicit keep: INBOX, no flags.
	if err := lc.Mail("human@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := lc.Rcpt("alice@local.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err = lc.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "From: human@remote.test\r\nTo: alice@local.test\r\nSubject: the weekly lunch\r\n\r\nhi\r\n")
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		t.Fatal(err)
	}
	if got := e.messages(t, 1, "alice@local.test", "INBOX"); len(got) != 2 || len(got[1]) != 0 {
		t.Errorf("alice's INBOX holds %v, want 2 messages, the new one unflagged", got)
	}
}

// TestSieveSMTPReject: on the MX, a single recipient's reject is the
// reply to DATA.
func TestSieveSMTPReject(t *testing.T) {
	e := startEnv(t, nil)
	e.setSieve(t, "alice@local.test", "require \"ereject\";\nif address :is \"from\" \"spammer@remote.test\" { ereject \"go away\"; }\n")
	addr := e.mailListeners(t)["smtp"].String()
	err := mxSend(t, addr, "spammer@remote.test", []string{"alice@local.test"},
		strings.NewReader("From: spammer@remote.test\r\nTo: alice@local.test\r\nSubject: buy\r\n\r\nnow\r\n"))
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 7, 1}) || !strings.Contains(se.Message, "go away") {
		t.Fatalf("DATA answered %v, want 550 5.7.1 go away", err)
	}
	if got := e.messages(t, 0, "alice@local.test", "INBOX"); len(got) != 0 {
		t.Errorf("alice's INBOX holds %d messages after a reject, want 0", len(got))
	}
}

// TestSieveVacation: alice is away; over the MX, two messages from one
// sender and one from another bring exactly one reply each, from <>, to
// the remote MTA, and the mail itself is kept.
func TestSieveVacation(t *testing.T) {
	e := startEnv(t, nil)
	e.start(t)
	e.setSieve(t, "alice@local.test", `require "vacation";
vacation :days 7 :subject "Away" "I am away until Monday.";`)
	addr := e.mailListeners(t)["smtp"].String()
	send := func(from, id string) {
		t.Helper()
		msg := "From: " + from + "\r\nTo: alice@local.test\r\nSubject: question " + id + "\r\nMessage-ID: <" + id + "@remote.test>\r\n\r\nare you there?\r\n"
		if err := mxSend(t, addr, from, []string{"alice@local.test"}, strings.NewReader(msg)); err != nil {
			t.Fatalf("sending %s: %v", id, err)
		}
	}
	send("bob@remote.test", "q1")
	send("bob@remote.test", "q2")
	send("dave@remote.test", "q3")

	waitFor(t, "two vacation replies at the remote MTA", 30*time.Second, func() bool { return len(e.sink.Got()) >= 2 })
	waitFor(t, "the queue to drain", 30*time.Second, func() bool { return e.queueLen(t) == 0 })
	time.Sleep(500 * time.Millisecond)
	got := e.sink.Got()
	if len(got) != 2 {
		t.Fatalf("remote MTA received %d replies, want 2 (one per sender)", len(got))
	}
	to := map[string]bool{}
	for _, m := range got {
		if m.From != "" {
			t.Errorf("reply sent from <%s>, want <>", m.From)
		}
		to[strings.Join(m.To, ",")] = true
		s := string(m.Data)
		for _, want := range []string{"Auto-Submitted: auto-replied", "Subject: Away", "I am away until Monday.", "From: alice@local.test"} {
			if !strings.Contains(s, want) {
				t.Errorf("reply lacks %q:\n%s", want, s)
			}
		}
	}
	if !to["bob@remote.test"] || !to["dave@remote.test"] {
		t.Errorf("replies went to %v, want bob and dave", to)
	}
	if !strings.Contains(string(got[0].Data), "In-Reply-To: <q1@remote.test>") && !strings.Contains(string(got[1].Data), "In-Reply-To: <q1@remote.test>") {
		t.Errorf("no reply is In-Reply-To the first message")
	}
	if n := len(e.inbox(t, 1, "alice@local.test")); n != 3 {
		t.Errorf("alice's INBOX holds %d messages, want 3 (vacation keeps the mail)", n)
	}
}

// TestSieveSetRefusesBadScript: a script that does not parse is refused
// with its line and column, and nothing is stored.
func TestSieveSetRefusesBadScript(t *testing.T) {
	e := startEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := e.stores[0].SetSieve(ctx, "alice@local.test", []byte("require \"fileinto\";\nif header :is \"subject\" \"x\" {\n  fileinto \"A\"\n}\n"))
	var pe *sieve.ParseError
	if !errors.Is(err, mailbox.ErrInvalid) || !errors.As(err, &pe) {
		t.Fatalf("SetSieve of a bad script: %v, want ErrInvalid with a *sieve.ParseError", err)
	}
	if pe.Pos.Line < 3 || !strings.Contains(err.Error(), ":") {
		t.Errorf("error %q: want the line of the missing semicolon (3 or 4)", err)
	}
	if _, err := e.stores[0].GetSieve(ctx, "alice@local.test"); !errors.Is(err, mailbox.ErrNotFound) {
		t.Errorf("after a refused set, GetSieve: %v, want ErrNotFound", err)
	}
	if err := e.stores[0].SetSieve(ctx, "nobody@local.test", []byte("keep;")); !errors.Is(err, mailbox.ErrNotFound) {
		t.Errorf("SetSieve for no user: %v, want ErrNotFound", err)
	}
}

// mxSend sends one message over plain SMTP (the test MX offers no TLS).
func mxSend(t *testing.T, addr, from string, to []string, msg io.Reader) error {
	t.Helper()
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mta.remote.test"); err != nil {
		t.Fatal(err)
	}
	return c.SendMail(from, to, msg)
}

// TestSieveRedirect: a redirect is queued to the remote MTA unchanged,
// with the original envelope sender and the loop mark, and no copy is
// kept; a message that already carries the user's mark (it came back) is
// kept in INBOX and not sent again.
func TestSieveRedirect(t *testing.T) {
	e := startEnv(t, nil)
	e.start(t)
	e.setSieve(t, "alice@local.test", "redirect \"bob@remote.test\";\n")
	addr := e.mailListeners(t)["smtp"].String()
	body := "From: carol@remote.test\r\nTo: alice@local.test\r\nSubject: pass it on\r\n\r\nfor bob\r\n"
	if err := mxSend(t, addr, "carol@remote.test", []string{"alice@local.test"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the redirected message at the remote MTA", 30*time.Second, func() bool { return len(e.sink.Got()) >= 1 })
	got := e.sink.Got()[0]
	if got.From != "carol@remote.test" || strings.Join(got.To, ",") != "bob@remote.test" {
		t.Errorf("redirect envelope %q → %v, want carol@remote.test → bob@remote.test", got.From, got.To)
	}
	s := string(got.Data)
	if !strings.Contains(s, mailbox.SieveLoopHeader+": alice@local.test\r\n") || !strings.HasSuffix(s, body) {
		t.Errorf("redirected message lacks the loop mark or the original message:\n%s", s)
	}
	if n := len(e.inbox(t, 0, "alice@local.test")); n != 0 {
		t.Errorf("alice kept %d copies, want 0 (redirect cancels the implicit keep)", n)
	}

	back := mailbox.SieveLoopHeader + ": alice@local.test\r\n" + body
	if err := mxSend(t, addr, "carol@remote.test", []string{"alice@local.test"}, strings.NewReader(back)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the queue to drain", 30*time.Second, func() bool { return e.queueLen(t) == 0 })
	time.Sleep(500 * time.Millisecond)
	if n := len(e.sink.Got()); n != 1 {
		t.Errorf("remote MTA received %d messages, want 1: the looped message was redirected again", n)
	}
	if n := len(e.inbox(t, 0, "alice@local.test")); n != 1 {
		t.Errorf("alice's INBOX holds %d messages, want 1 (the looped message)", n)
	}
}

// TestDeleteUserDropsSieve: deleting a user removes its script and its
// vacation memory from every node, so a user created again under the
// address starts with neither: its mail is kept without a reply.
func TestDeleteUserDropsSieve(t *testing.T) {
	e := startEnv(t, nil)
	e.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const u = "gone@local.test"
	if err := e.stores[0].AddUser(ctx, u, "pw", 0); err != nil {
		t.Fatal(err)
	}
	e.setSieve(t, u, "require \"vacation\";\nvacation :days 7 \"away\";\n")
	addr := e.mailListeners(t)["smtp"].String()
	msg := "From: bob@remote.test\r\nTo: " + u + "\r\nSubject: hi\r\n\r\nhello\r\n"
	if err := mxSend(t, addr, "bob@remote.test", []string{u}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	records := func(i int) []string {
		t.Helper()
		if err := e.stores[i].CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, p := range []string{"s/" + u, "v/" + u + "/"} {
			_ = e.c.Nodes[i].Meta.TenantScan(mailbox.SieveTenant, p, func(k string, _ []byte) error { keys = append(keys, k); return nil })
		}
		return keys
	}
	waitFor(t, "the vacation memory to be written", 30*time.Second, func() bool { return len(records(0)) == 2 })

	if err := e.stores[1].DeleteUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	for i := range e.stores {
		if keys := records(i); len(keys) != 0 {
			t.Errorf("node %d keeps %v of the deleted user", i, keys)
		}
	}
	if err := e.stores[0].AddUser(ctx, u, "pw2", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.stores[2].GetSieve(ctx, u); !errors.Is(err, mailbox.ErrNotFound) {
		t.Errorf("the new user's script: %v, want ErrNotFound", err)
	}
	waitFor(t, "the first vacation reply to be sent", 30*time.Second, func() bool { return e.queueLen(t) == 0 })
	before := len(e.sink.Got())
	if err := mxSend(t, addr, "carol@remote.test", []string{u}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	if n := len(e.inbox(t, 1, u)); n != 1 {
		t.Errorf("the new user's INBOX holds %d messages, want 1", n)
	}
	time.Sleep(time.Second)
	if n := e.queueLen(t); n != 0 || len(e.sink.Got()) != before {
		t.Errorf("the new user's mail brought a reply (%d queued, %d sent): the old script ran", n, len(e.sink.Got())-before)
	}
}
