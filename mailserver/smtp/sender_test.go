package smtp_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver/smtp"
)

// submit sends one message over submission, logged in as user, and
// returns the first refusal (nil: 250 to DATA).
func submit(t *testing.T, addr, user, from string, to []string, body string) error {
	t.Helper()
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", user, "secret-password")); err != nil {
		t.Fatalf("AUTH as %s: %v", user, err)
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	return w.Close()
}

// wantReply checks err is the SMTP reply code/enhanced with text in it
// (code 250: err is nil).
func wantReply(t *testing.T, what string, err error, code int, enhanced gosmtp.EnhancedCode, text string) {
	t.Helper()
	if code == 250 {
		if err != nil {
			t.Errorf("%s: %v, want 250", what, err)
		}
		return
	}
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		t.Errorf("%s: %v, want %d %v", what, err, code, enhanced)
		return
	}
	if se.Code != code || se.EnhancedCode != enhanced || !strings.Contains(se.Message, text) {
		t.Errorf("%s: %d %v %q, want %d %v containing %q", what, se.Code, se.EnhancedCode, se.Message, code, enhanced, text)
	}
}

// TestMXLocalSender: on the MX port, an unauthenticated client may not
// use a local domain's envelope sender unless AllowLocalSenders; the null
// sender and remote senders pass.
func TestMXLocalSender(t *testing.T) {
	e := startDelivery(t)
	strict := e.listen(t, smtp.Config{Mode: smtp.MX}).Addr().String()
	lax := e.listen(t, smtp.Config{Mode: smtp.MX, AllowLocalSenders: true}).Addr().String()
	lmtp := e.listen(t, smtp.Config{Mode: smtp.LMTP}).Addr().String()
	rejected := gosmtp.EnhancedCode{5, 7, 1}
	for _, c := range []struct {
		name, addr, from string
		code             int
	}{
		{"local sender", strict, "alice@example.test", 550},
		{"local sender, other case", strict, "Alice@EXAMPLE.Test", 550},
		{"unknown user of a local domain", strict, "nobody@example.test", 550},
		{"null sender", strict, "", 250},
		{"remote sender", strict, "someone@remote.test", 250},
		{"subdomain of a local domain", strict, "someone@sub.example.test", 250},
		{"local sender allowed by the flag", lax, "alice@example.test", 250},
	} {
		before := len(e.inbox(t, "bob@example.test"))
		_, err := send(t, c.addr, c.from, []string{"bob@example.test"}, testMessage(strings.ReplaceAll(c.name, " ", "-")))
		wantReply(t, c.name, err, c.code, rejected, "<"+c.from+">: sender address is local; send through submission (port 587) with authentication")
		after := len(e.inbox(t, "bob@example.test"))
		if stored := after > before; stored != (c.code == 250) {
			t.Errorf("%s: stored %v (INBOX %d -> %d)", c.name, stored, before, after)
		}
	}
	// LMTP: the MTA in front decided.
	lc := gosmtp.NewClientLMTP(dialFrom(t, "", lmtp))
	defer lc.Close()
	if err := lc.Hello("mta.test"); err != nil {
		t.Fatal(err)
	}
	if err := lc.Mail("alice@example.test", nil); err != nil {
		t.Errorf("LMTP local sender: %v, want 250", err)
	}
}

// TestSubmissionSender: the envelope sender and the header From: of a
// submitted message must be the authenticated user's (or user+tag).
func TestSubmissionSender(t *testing.T) {
	e := startDelivery(t)
	// A tiny in-memory part: large messages' header is read from the
	// spool file.
	addr := e.listen(t, smtp.Config{Mode: smtp.Submission, AllowInsecureAuth: true, MessageInMemory: 1024}).Addr().String()
	msg := func(header string) string {
		return header + "To: bob@example.test\r\nSubject: s\r\n\r\nhello\r\n"
	}
	large := msg("From: alice@example.test\r\n") + strings.Repeat("The quick brown fox jumps over the lazy dog.\r\n", 2000)
	notOwned := "sender address not owned by the authenticated user"
	for _, c := range []struct {
		name, from, body string
		code             int
		enhanced         gosmtp.EnhancedCode
		text             string
	}{
		{"own address", "alice@example.test", msg("From: alice@example.test\r\n"), 250, gosmtp.EnhancedCode{}, ""},
		{"own address, other case", "ALICE@example.TEST", msg("From: Alice@Example.Test\r\n"), 250, gosmtp.EnhancedCode{}, ""},
		{"own +tag", "alice+news@example.test", msg("From: alice+news@example.test\r\n"), 250, gosmtp.EnhancedCode{}, ""},
		{"display name and comment", "alice@example.test", msg("From: \"Alice Example\" <alice@example.test> (work)\r\n"), 250, gosmtp.EnhancedCode{}, ""},
		{"one of several From addresses", "alice@example.test", msg("From: Bob <bob@example.test>, Alice <alice@example.test>\r\n"), 250, gosmtp.EnhancedCode{}, ""},
		{"large message from the spool file", "alice@example.test", large, 250, gosmtp.EnhancedCode{}, ""},
		{"null sender, own From", "", msg("From: alice@example.test\r\n"), 250, gosmtp.EnhancedCode{}, ""},
		{"another local user's MAIL FROM", "bob@example.test", msg("From: bob@example.test\r\n"), 553, gosmtp.EnhancedCode{5, 7, 1}, "<bob@example.test>: " + notOwned},
		{"remote MAIL FROM", "someone@remote.test", msg("From: someone@remote.test\r\n"), 553, gosmtp.EnhancedCode{5, 7, 1}, "<someone@remote.test>: " + notOwned},
		{"prefix of the user's name", "alicex@example.test", msg("From: alicex@example.test\r\n"), 553, gosmtp.EnhancedCode{5, 7, 1}, notOwned},
		{"+tag on another domain", "alice+x@remote.test", msg("From: alice+x@remote.test\r\n"), 553, gosmtp.EnhancedCode{5, 7, 1}, notOwned},
		{"header From of someone else", "alice@example.test", msg("From: Bob <bob@example.test>\r\n"), 550, gosmtp.EnhancedCode{5, 7, 1}, "header From: address not owned"},
		{"header From missing", "alice@example.test", msg("Sender: alice@example.test\r\n"), 550, gosmtp.EnhancedCode{5, 7, 1}, "no From: header"},
		{"header From unparsable", "alice@example.test", msg("From: <<alice@example.test\r\n"), 550, gosmtp.EnhancedCode{5, 7, 1}, "From: header unparsable"},
		{"no header at all", "alice@example.test", "just a body line\r\n", 550, gosmtp.EnhancedCode{5, 7, 1}, "From:"},
	} {
		before := len(e.inbox(t, "bob@example.test"))
		err := submit(t, addr, "alice@example.test", c.from, []string{"bob@example.test"}, c.body)
		wantReply(t, c.name, err, c.code, c.enhanced, c.text)
		after := len(e.inbox(t, "bob@example.test"))
		if stored := after > before; stored != (c.code == 250) {
			t.Errorf("%s: stored %v (INBOX %d -> %d)", c.name, stored, before, after)
		}
	}
	// Remote recipients are still refused on submission.
	err := submit(t, addr, "alice@example.test", "alice@example.test", []string{"friend@remote.test"}, msg("From: alice@example.test\r\n"))
	wantReply(t, "remote recipient", err, 550, gosmtp.EnhancedCode{5, 7, 1}, "remote domains")
}
