package sieve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// memory is a VacationMemory for tests: the keys already answered.
type memory map[string]bool

func (m memory) Replied(_ context.Context, key string) (bool, error) { return m[key], nil }

// readMessage parses a test message: a testdata file name, or inline text
// ("\n" line ends are fine).
func readMessage(t testing.TB, src string) HeaderMessage {
	t.Helper()
	raw := []byte(src)
	if strings.HasSuffix(src, ".eml") {
		var err error
		if raw, err = os.ReadFile(filepath.Join("testdata", src)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("test message: %v", err)
	}
	body, err := io.ReadAll(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	return HeaderMessage{Fields: m.Header, Bytes: int64(len(raw)), RawBody: body}
}

const (
	msgA = "rfc5228-1.2-message-A.eml"
	msgB = "rfc5228-1.2-message-B.eml"
)

var (
	envA = Envelope{From: "coyote@desert.example.org", To: "roadrunner@acme.example.com"}
	envB = Envelope{From: "b1ff@de.res.example.com", To: "rube@landru.example.com"}
)

// mimeMsg is a multipart/mixed message with one part of the given type,
// extra part header lines and body.
func mimeMsg(ctype, partHeader, body string) string {
	return "From: a@b.example\nContent-Type: multipart/mixed; boundary=\"b1\"\n\npreamble\n--b1\n" +
		"Content-Type: " + ctype + "\n" + partHeader + "\n" + body + "\n--b1--\nepilogue\n"
}

// render writes actions compactly so a table can state them.
func render(acts []Action) string {
	var out []string
	flags := func(f []string) string {
		if len(f) == 0 {
			return ""
		}
		return " [" + strings.Join(f, " ") + "]"
	}
	for _, a := range acts {
		switch a := a.(type) {
		case Keep:
			s := "keep" + flags(a.Flags)
			if a.Implicit {
				s += " (implicit)"
			}
			out = append(out, s)
		case FileInto:
			s := fmt.Sprintf("fileinto %q%s", a.Mailbox, flags(a.Flags))
			if a.Copy {
				s += " :copy"
			}
			out = append(out, s)
		case Redirect:
			s := "redirect " + a.Address
			if a.Copy {
				s += " :copy"
			}
			out = append(out, s)
		case Discard:
			out = append(out, "discard")
		case Reject:
			name := "reject"
			if a.Extended {
				name = "ereject"
			}
			out = append(out, fmt.Sprintf("%s %q", name, a.Reason))
		case Vacation:
			s := fmt.Sprintf("vacation to=%s from=%s subject=%q days=%g reason=%q", a.To, a.From, a.Subject, a.Period.Hours()/24, a.Reason)
			if a.MIME {
				s += " mime"
			}
			out = append(out, s)
		default:
			out = append(out, fmt.Sprintf("%T", a))
		}
	}
	return strings.Join(out, "; ")
}

func runFile(t *testing.T, file string, in Input) ([]Action, error) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(src, Limits{})
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return s.Execute(context.Background(), in)
}

// TestRFCExamples runs every script printed in RFC 5228, 5230, 5232, 3894,
// 5429 and 5233 (testdata names the RFC and section) against the messages
// the RFCs describe and checks the actions their text says result.
func TestRFCExamples(t *testing.T) {
	toMe := "From: friend@other.example\nTo: me@example.com\nDate: Tue, 1 Apr 1997 09:06:31 -0800\nSubject: hello\n\nbody\n"
	hdr := func(lines ...string) string {
		return strings.Join(lines, "\n") + "\n\nbody\n"
	}
	envMe := Envelope{From: "friend@other.example", To: "me@example.com"}
	big := int64(2 << 20)
	cases := []struct {
		name, file, msg string
		env             Envelope
		size            int64 // replaces the message size when not 0
		mem             memory
		want            string
	}{
		{"hash comment, small", "rfc5228-2.3-hash-comment.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"hash comment, 200K", "rfc5228-2.3-hash-comment.sieve", msgA, envA, 200 << 10, nil, "discard"},
		{"bracket comment, small", "rfc5228-2.3-bracket-comment.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"bracket comment, 200K", "rfc5228-2.3-bracket-comment.sieve", msgA, envA, 200 << 10, nil, "discard"},
		{"test list, A", "rfc5228-2.5.1-test-list.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"test list, no Date", "rfc5228-2.5.1-test-list.sieve", hdr("From: x@example.org"), envA, 0, nil, "discard"},
		{"test list, fool", "rfc5228-2.5.1-test-list.sieve", hdr("From: Fool <FOOL@example.com>", "Date: Tue, 1 Apr 1997 09:06:31 -0800"), envA, 0, nil, "discard"},
		{"i;octet, same case", "rfc5228-2.7.3-comparator-octet.sieve", hdr("Subject: You can MAKE MONEY FAST"), envA, 0, nil, "discard"},
		{"i;octet, other case", "rfc5228-2.7.3-comparator-octet.sieve", hdr("Subject: You can Make Money Fast"), envA, 0, nil, "keep (implicit)"},
		{"implicit keep", "rfc5228-2.10.2-implicit-keep.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"elsif discard, A", "rfc5228-3.1-elsif-discard.sieve", msgA, envA, 0, nil, "discard"},
		{"elsif discard, B", "rfc5228-3.1-elsif-discard.sieve", msgB, envB, 0, nil, "discard"},
		{"elsif discard, other", "rfc5228-3.1-elsif-discard.sieve", toMe, envMe, 0, nil, "keep"}, // fileinto "INBOX" is keep
		{"elsif redirect, A", "rfc5228-3.1-elsif-redirect.sieve", msgA, envA, 0, nil, "redirect acm@example.com"},
		{"elsif redirect, B", "rfc5228-3.1-elsif-redirect.sieve", msgB, envB, 0, nil, "redirect postmaster@example.com"},
		{"elsif redirect, other", "rfc5228-3.1-elsif-redirect.sieve", toMe, envMe, 0, nil, "redirect field@example.com"},
		{"require list", "rfc5228-3.2-require-list.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"require twice", "rfc5228-3.2-require-twice.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"fileinto, A", "rfc5228-4.1-fileinto.sieve", msgA, envA, 0, nil, `fileinto "INBOX.harassment"`},
		{"fileinto, B", "rfc5228-4.1-fileinto.sieve", msgB, envB, 0, nil, "keep (implicit)"},
		{"redirect", "rfc5228-4.2-redirect.sieve", msgA, envA, 0, nil, "redirect bart@example.com"},
		{"keep, small", "rfc5228-4.3-keep.sieve", msgA, envA, 0, nil, "keep"},
		{"keep, big", "rfc5228-4.3-keep.sieve", msgA, envA, big, nil, "discard"},
		{"keep not, small", "rfc5228-4.3-keep-not.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"keep not, big", "rfc5228-4.3-keep-not.sieve", msgA, envA, big, nil, "discard"},
		{"discard idiot", "rfc5228-4.4-discard.sieve", hdr(`From: "Some Idiot" <idiot@example.com>`), envA, 0, nil, "discard"},
		{"discard, A", "rfc5228-4.4-discard.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"address tim", "rfc5228-5.1-address.sieve", hdr("From: Tim <TIM@Example.COM>"), envA, 0, nil, "discard"},
		{"address tim in a list", "rfc5228-5.1-address.sieve", hdr("From: a@b.example, tim@example.com"), envA, 0, nil, "discard"},
		{"address, A", "rfc5228-5.1-address.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"envelope tim", "rfc5228-5.4-envelope.sieve", msgA, Envelope{From: "tim@example.com", To: "x@example.com"}, 0, nil, "discard"},
		{"envelope, A", "rfc5228-5.4-envelope.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"envelope, null sender", "rfc5228-5.4-envelope.sieve", msgA, Envelope{To: "x@example.com"}, 0, nil, "keep (implicit)"},
		{"envelope, source route", "rfc5228-5.4-envelope.sieve", msgA, Envelope{From: "@relay.example,@r2.example:tim@example.com", To: "x@example.com"}, 0, nil, "discard"},
		{"exists, A", "rfc5228-5.5-exists.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"exists, no Date", "rfc5228-5.5-exists.sieve", hdr("From: x@example.org"), envA, 0, nil, "discard"},
		{"extended, list", "rfc5228-9-extended.sieve", hdr("Sender: owner-ietf-mta-filters@imc.org", "To: me@example.com"), envMe, 0, nil, `fileinto "filter"`},
		{"extended, company", "rfc5228-9-extended.sieve", hdr("From: boss@example.com", "To: me@other.example"), envMe, 0, nil, "keep"},
		{"extended, not to me (A)", "rfc5228-9-extended.sieve", msgA, envA, 0, nil, `fileinto "spam"`},
		{"extended, to me in company", "rfc5228-9-extended.sieve", toMe, envMe, 0, nil, "keep"},
		{"extended, spam subject", "rfc5228-9-extended.sieve", hdr("From: x@other.example", "To: y@other.example", "Cc: me@example.com", "Subject: Make Money Fast today"), envMe, 0, nil, `fileinto "spam"`},
		{"extended, personal", "rfc5228-9-extended.sieve", hdr("From: x@other.example", "To: y@other.example", "Cc: me@example.com", "Subject: lunch"), envMe, 0, nil, `fileinto "personal"`},

		{"vacation cyrus", "rfc5230-4-vacation.sieve", hdr("From: friend@other.example", "To: me@example.com", "Subject: cyrus bug"), envMe, 0, memory{},
			`vacation to=friend@other.example from=me@example.com subject="Auto: cyrus bug" days=7 reason="I'm out -- send mail to cyrus-bugs"; keep (implicit)`},
		{"vacation other", "rfc5230-4-vacation.sieve", toMe, envMe, 0, memory{},
			`vacation to=friend@other.example from=me@example.com subject="Auto: hello" days=7 reason="I'm out -- call me at +1 304 555 0123"; keep (implicit)`},
		{"vacation, null sender", "rfc5230-4-vacation.sieve", toMe, Envelope{To: "me@example.com"}, 0, memory{}, "keep (implicit)"},
		{"vacation, mailer-daemon", "rfc5230-4-vacation.sieve", toMe, Envelope{From: "MAILER-DAEMON@other.example", To: "me@example.com"}, 0, memory{}, "keep (implicit)"},
		{"vacation, owner-", "rfc5230-4-vacation.sieve", toMe, Envelope{From: "owner-list@other.example", To: "me@example.com"}, 0, memory{}, "keep (implicit)"},
		{"vacation, -request", "rfc5230-4-vacation.sieve", toMe, Envelope{From: "list-request@other.example", To: "me@example.com"}, 0, memory{}, "keep (implicit)"},
		{"vacation, to myself", "rfc5230-4-vacation.sieve", toMe, Envelope{From: "ME@example.com", To: "me@example.com"}, 0, memory{}, "keep (implicit)"},
		{"vacation, auto-submitted", "rfc5230-4-vacation.sieve", hdr("To: me@example.com", "Auto-Submitted: auto-replied"), envMe, 0, memory{}, "keep (implicit)"},
		{"vacation, auto-submitted no", "rfc5230-4-vacation.sieve", hdr("To: me@example.com", "Auto-Submitted: no"), envMe, 0, memory{},
			`vacation to=friend@other.example from=me@example.com subject="Auto: " days=7 reason="I'm out -- call me at +1 304 555 0123"; keep (implicit)`},
		{"vacation, list", "rfc5230-4-vacation.sieve", hdr("To: me@example.com", "List-Id: <l.example.org>"), envMe, 0, memory{}, "keep (implicit)"},
		{"vacation, precedence bulk", "rfc5230-4-vacation.sieve", hdr("To: me@example.com", "Precedence: bulk"), envMe, 0, memory{}, "keep (implicit)"},
		{"vacation, not addressed to me", "rfc5230-4-vacation.sieve", hdr("To: someone@example.com"), envMe, 0, memory{}, "keep (implicit)"},
		{"vacation, cc to me", "rfc5230-4-vacation.sieve", hdr("To: someone@example.com", "Cc: Me <me@example.com>"), envMe, 0, memory{},
			`vacation to=friend@other.example from=me@example.com subject="Auto: " days=7 reason="I'm out -- call me at +1 304 555 0123"; keep (implicit)`},
		{"vacation, no memory", "rfc5230-4-vacation.sieve", toMe, envMe, 0, nil, "keep (implicit)"},
		{"vacation mime", "rfc5230-4.4-mime.sieve", toMe, envMe, 0, memory{},
			`vacation to=friend@other.example from=me@example.com subject="Auto: hello" days=7 reason="Content-Type: multipart/alternative; boundary=foo\r\n\r\n--foo\r\n\r\nI'm at the beach relaxing.  Mmmm, surf...\r\n\r\n--foo\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.0//EN\"\r\n \"http://www.w3.org/TR/REC-html40/strict.dtd\">\r\n<HTML><HEAD><TITLE>How to relax</TITLE>\r\n<BASE HREF=\"http://home.example.com/pictures/\"></HEAD>\r\n<BODY><P>I'm at the <A HREF=\"beach.gif\">beach</A> relaxing.\r\nMmmm, <A HREF=\"ocean.gif\">surf</A>...\r\n</BODY></HTML>\r\n\r\n--foo--\r\n" mime; keep (implicit)`},
		{"vacation :days :addresses, alias", "rfc5230-4.7-days-addresses.sieve", hdr("To: ts4z@landru.example.edu"), Envelope{From: "x@other.example", To: "tjs@example.edu"}, 0, memory{},
			`vacation to=x@other.example from=tjs@example.edu subject="Auto: " days=23 reason="I'm away until October 19.\nIf it's an emergency, call 911, I guess."; keep (implicit)`},
		{"vacation :addresses, not mine", "rfc5230-4.7-days-addresses.sieve", hdr("To: other@example.edu"), Envelope{From: "x@other.example", To: "tjs@example.edu"}, 0, memory{}, "keep (implicit)"},
		{"vacation, boss redirected", "rfc5230-4.7-redirect-else.sieve", hdr("From: boss@example.edu", "To: me@example.com"), envMe, 0, memory{}, "redirect pleeb@isp.example.org"},
		{"vacation, not boss", "rfc5230-4.7-redirect-else.sieve", toMe, envMe, 0, memory{},
			`vacation to=friend@other.example from=me@example.com subject="Auto: hello" days=7 reason="Sorry, I'm away, I'll read your\nmessage when I get around to it."; keep (implicit)`},
		{"vacation, english", "rfc5230-7-language.sieve", hdr("To: me@example.com", "Content-Language: en"), envMe, 0, memory{},
			`vacation to=friend@other.example from=me@example.com subject="Auto: " days=7 reason="I am away this week."; keep (implicit)`},
		{"vacation, spanish", "rfc5230-7-language.sieve", hdr("To: me@example.com", "Content-Language: es"), envMe, 0, memory{},
			`vacation to=friend@other.example from=me@example.com subject="Auto: " days=7 reason="Estoy ausente esta semana."; keep (implicit)`},
		{"vacation, division", "rfc5230-7-subject.sieve", hdr("From: Bob <bob@ourdivision.example.com>", "To: me@example.com"), Envelope{From: "bob@ourdivision.example.com", To: "me@example.com"}, 0, memory{},
			`vacation to=bob@ourdivision.example.com from=me@example.com subject="Gone fishing" days=7 reason="Having lots of fun! Back in a day or two!"; keep (implicit)`},
		{"vacation, outside", "rfc5230-7-subject.sieve", toMe, envMe, 0, memory{},
			`vacation to=friend@other.example from=me@example.com subject="Je suis parti cette semaine" days=7 reason="Je lirai votre message quand je retourne."; keep (implicit)`},

		{"removeflag, MDN", "rfc5232-3.3-removeflag.sieve", hdr("Disposition-Notification-To: mel@example.com"), envA, 0, nil, "keep [$MDNRequired] (implicit)"},
		{"removeflag, MDN from list", "rfc5232-3.3-removeflag.sieve", hdr("Disposition-Notification-To: mel@example.com", "From: imap@cac.washington.example.edu"), envA, 0, nil, `fileinto "INBOX.imap-list"`},
		{"hasflag", "rfc5232-4-hasflag.sieve", msgA, envA, 0, nil,
			`fileinto "t1" [A B]; fileinto "t2" [A B]; ` +
				`fileinto "t3" [NonJunk Junk gnus-forward $Forwarded NotJunk JunkRecorded $Junk $NotJunk]; ` +
				`fileinto "t4" [NonJunk Junk gnus-forward $Forwarded NotJunk JunkRecorded $Junk $NotJunk]; ` +
				`fileinto "t5" [NonJunk Junk gnus-forward $Forwarded NotJunk JunkRecorded $Junk $NotJunk]; ` +
				`fileinto "t6" [NonJunk Junk gnus-forward $Forwarded NotJunk JunkRecorded $Junk $NotJunk]; ` +
				`fileinto "t7" [NonJunk Junk gnus-forward $Forwarded NotJunk JunkRecorded $Junk $NotJunk]`},
		{"addflag forms", "rfc5232-3.2-addflag.sieve", msgA, envA, 0, nil,
			`fileinto "v1" [\Deleted \Answered]; fileinto "v2" [\Deleted \Answered]; fileinto "v3" [\Deleted \Answered]; fileinto "v4" [\Answered \Deleted]; keep [\Answered]`},
		{":flags", "rfc5232-5-flags.sieve", msgA, envA, 0, nil, `fileinto "INBOX.From Boss" [\Deleted]`},
		{"flags extended, big from boss", "rfc5232-9-extended.sieve", hdr("From: boss@company.example.com", "To: me@company.example.com"), envA, big, nil,
			`fileinto "Big messages" [Big \Flagged]; keep [Big \Flagged]`},
		{"flags extended, grandma not to me", "rfc5232-9-extended.sieve", hdr("From: grandma@example.net", "To: family@example.net"), envA, 0, nil,
			`fileinto "GrandMa" [\Answered $MDNSent]; fileinto "spam" [\Answered $MDNSent]`},
		{"flags extended, grandma in company", "rfc5232-9-extended.sieve", hdr("From: grandma@example.net", "To: me@company.example.com"), envA, 0, nil,
			`fileinto "GrandMa" [\Answered $MDNSent]; keep [\Answered $MDNSent]`},
		{"flags extended, grandma cc me", "rfc5232-9-extended.sieve", hdr("From: grandma@example.net", "To: family@example.net", "Cc: me@company.example.com"), envA, 0, nil,
			`fileinto "GrandMa" [\Answered $MDNSent]; fileinto "personal" [\Answered $MDNSent]`},
		{"flags extended, list", "rfc5232-9-extended.sieve", hdr("Sender: owner-ietf-mta-filters@example.org", "To: me@company.example.com"), envA, 0, nil, `keep [\Flagged $Work]`},

		{"fileinto :copy", "rfc3894-3-fileinto-copy.sieve", msgA, envA, 0, nil, `fileinto "incoming" :copy; keep (implicit)`},

		{"ereject", "rfc5429-2.1-ereject.sieve", hdr("From: someone@example.com"), envA, 0, nil, `ereject "I no longer accept mail from this address"`},
		{"ereject, A", "rfc5429-2.1-ereject.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"reject too big", "rfc5429-2.2-reject-size.sieve", msgA, envA, 200 << 10, nil,
			`reject "Your message is too big.  If you want to send me a big attachment,\r\nput it on a public web site and send me a URL.\r\n"`},
		{"reject birdseed", "rfc5429-2.2-reject-birdseed.sieve", msgA, envA, 0, nil,
			`reject "I am not taking mail from you, and I don't\r\nwant your birdseed, either!\r\n"`},
		{"reject birdseed, B", "rfc5429-2.2-reject-birdseed.sieve", msgB, envB, 0, nil, "keep (implicit)"},

		{"body :raw, in a part header", "rfc5173-5.1-raw.sieve", mimeMsg("text/plain", "Content-Description: MAKE MONEY FAST\n", "hi"), envA, 0, nil, "discard"},
		{"body :raw, base64 not decoded", "rfc5173-5.1-raw.sieve", mimeMsg("text/plain", "Content-Transfer-Encoding: base64\n", "TUFLRSBNT05FWSBGQVNU"), envA, 0, nil, "keep (implicit)"},
		{"body :content text, base64", "rfc5173-5.2-content.sieve", mimeMsg("text/plain", "Content-Transfer-Encoding: base64\n", "dGhlIG1pc3NpbGUgaXMgcmVhZHk="), envA, 0, nil, `fileinto "secrets"`},
		{"body :content audio/mp3", "rfc5173-5.2-content.sieve", mimeMsg("audio/mp3", "", "ID3..."), envA, 0, nil, `fileinto "jukebox"`},
		{"body :content, neither", "rfc5173-5.2-content.sieve", msgA, envA, 0, nil, "keep (implicit)"},
		{"body :content, plain message", "rfc5173-5.2-content.sieve", "Subject: x\n\nsend the coordinates\n", envA, 0, nil, `fileinto "secrets"`},
		{"body, empty", "rfc5173-5.2-content.sieve", "Subject: x\n", envA, 0, nil, "keep (implicit)"},
		{"body nested parts", "rfc5173-5.2-nested.sieve", "rfc5173-5.2-message.eml", envA, 0, nil,
			`fileinto "multipart-MIME"; fileinto "text/plain-Hello"; fileinto "text/html-Hello"; fileinto "text-Hello"; fileinto "message/rfc822-Hello"`},
		{"body :text, quoted-printable", "rfc5173-5.3-text.sieve", mimeMsg("text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: quoted-printable\n", "the caf=E9 project sch=\nedule"), envA, 0, nil, `fileinto "project/schedule"`},
		{"body :text, html too", "rfc5173-5.3-text.sieve", mimeMsg("text/html", "", "<p>project schedule</p>"), envA, 0, nil, `fileinto "project/schedule"`},
		{"body :text, not image", "rfc5173-5.3-text.sieve", mimeMsg("image/png", "", "project schedule"), envA, 0, nil, "keep (implicit)"},

		{"subaddress postmaster", "rfc5233-4-subaddress.sieve", msgA, Envelope{From: "a@b.example", To: "postmaster+foo@example.com"}, 0, nil, `fileinto "inbox.postmaster"`},
		{"subaddress list", "rfc5233-4-subaddress.sieve", msgA, Envelope{From: "a@b.example", To: "ken+mta-filters@example.com"}, 0, nil, `fileinto "inbox.ietf-mta-filters"`},
		{"subaddress foo", "rfc5233-4-subaddress.sieve", msgA, Envelope{From: "a@b.example", To: "ken+foo@example.com"}, 0, nil, "redirect ken@example.net"},
		{"subaddress none", "rfc5233-4-subaddress.sieve", msgA, Envelope{From: "a@b.example", To: "ken@example.com"}, 0, nil, "keep (implicit)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := readMessage(t, c.msg)
			if c.size != 0 {
				m.Bytes = c.size
			}
			in := Input{Envelope: c.env, Message: m}
			if c.mem != nil {
				in.Vacation = c.mem
			}
			acts, err := runFile(t, c.file, in)
			if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if got := render(acts); got != c.want {
				t.Errorf("%s:\n got  %s\n want %s", c.file, got, c.want)
			}
		})
	}
}

// TestVacationOncePerSender checks the key: the same sender and handle
// give the same key whatever branch ran (RFC 5230 §4.2 :handle example),
// another sender another key, and a remembered key means no reply.
func TestVacationOncePerSender(t *testing.T) {
	key := func(subject, from string) string {
		acts, err := runFile(t, "rfc5230-4.2-handle.sieve", Input{
			Envelope: Envelope{From: from, To: "me@example.com"},
			Message:  readMessage(t, "To: me@example.com\nSubject: "+subject+"\n\nx\n"),
			Vacation: memory{},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range acts {
			if v, ok := a.(Vacation); ok {
				return v.Key
			}
		}
		t.Fatalf("no vacation in %s", render(acts))
		return ""
	}
	lunch, other := key("lunch today?", "a@x.example"), key("hello", "A@X.example")
	if lunch != other {
		t.Errorf("same :handle and sender gave keys %s and %s", lunch, other)
	}
	if k := key("hello", "b@x.example"); k == lunch {
		t.Errorf("another sender got the same key %s", k)
	}
	acts, err := runFile(t, "rfc5230-4.2-handle.sieve", Input{
		Envelope: Envelope{From: "a@x.example", To: "me@example.com"},
		Message:  readMessage(t, "To: me@example.com\nSubject: hello\n\nx\n"),
		Vacation: memory{lunch: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := render(acts); got != "keep (implicit)" {
		t.Errorf("remembered sender answered again: %s", got)
	}
	// Without :handle, the reason is the handle: two reasons, two keys.
	k1 := vacationKey(t, "cyrus")
	k2 := vacationKey(t, "other")
	if k1 == "" || k1 == k2 {
		t.Errorf("different reasons without :handle gave keys %q and %q", k1, k2)
	}
}

func vacationKey(t *testing.T, subject string) string {
	acts, err := runFile(t, "rfc5230-4-vacation.sieve", Input{
		Envelope: Envelope{From: "a@x.example", To: "me@example.com"},
		Message:  readMessage(t, "To: me@example.com\nSubject: "+subject+"\n\nx\n"),
		Vacation: memory{},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if v, ok := a.(Vacation); ok {
			return v.Key
		}
	}
	return ""
}

func TestVacationReplyHeaders(t *testing.T) {
	s, err := Parse([]byte(`require ["vacation", "vacation-seconds"]; vacation :seconds 3600 :from "Me <me@example.com>" "away";`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	acts, err := s.Execute(context.Background(), Input{
		Envelope: Envelope{From: "a@x.example", To: "me@example.com"},
		Message:  readMessage(t, "To: me@example.com\nSubject: =?utf-8?q?caf=C3=A9?=\nMessage-ID: <2@x.example>\nReferences: <1@x.example>\n\nx\n"),
		Vacation: memory{},
	})
	if err != nil {
		t.Fatal(err)
	}
	v := acts[0].(Vacation)
	if v.Period != time.Hour || v.Subject != "Auto: café" || v.From != "Me <me@example.com>" ||
		v.InReplyTo != "<2@x.example>" || strings.Join(v.Refs, " ") != "<1@x.example> <2@x.example>" {
		t.Errorf("reply: %+v", v)
	}
}

// TestParseErrors checks that a broken script is refused with the place of
// the fault and words that name it.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		script string
		pos    string // "line:col"
		msg    string
	}{
		{"if true { keep;", "1:9", `block opened with "{" is never closed`},
		{"keep", "1:5", `command "keep" is not ended with ";"`},
		{"keep\ndiscard;", "2:1", `expected ";" or "{" before "discard"`},
		{"}", "1:1", `"}" without a matching "{"`},
		{`fileinto "x";`, "1:1", `needs ` + "`" + `require "fileinto";` + "`"},
		{`require "include";`, "1:9", `extension "include" is not supported`},
		{"keep;\nrequire \"fileinto\";", "2:1", `"require" must come before any other command`},
		{"if true { require \"fileinto\"; }", "1:11", "only at the top"},
		{"if size 100 { stop; }", "1:9", "one too many"},
		{"if size { stop; }", "1:4", "needs :over or :under"},
		{`if header :is :contains "a" "b" { stop; }`, "1:15", "tags :is and :contains cannot both be given"},
		{"elsif true { stop; }", "1:1", `"elsif" must follow an "if"`},
		{"if true {} else {} else {}", "1:20", `"else" must follow`},
		{`redirect "hello`, "1:10", "string is never closed"},
		{"/* no end", "1:1", `never closed with "*/"`},
		{`if header :comparator "i;unknown" "a" "b" {}`, "1:23", `comparator "i;unknown" is not supported`},
		{`redirect "not an address";`, "1:10", "not a valid email address"},
		{"if size :over 99999999999999999999 {}", "1:15", "too large"},
		{"if size :over 9000000000000G {}", "1:15", "too large"},
		{"if size :over 10X {}", "1:15", "only K, M or G"},
		{"frobnicate;", "1:1", `unknown command "frobnicate"`},
		{"if frob {}", "1:4", `unknown test "frob"`},
		{"header \"a\" \"b\";", "1:1", "is a test, not a command"},
		{`require "imap4flags"; setflag "var" "\\Seen";`, "1:37", "one too many"},
		{`require "vacation"; vacation :days "x" "r";`, "1:30", "tag :days must be followed by a number"},
		{`require "vacation"; vacation :bogus "r";`, "1:30", "has no tag :bogus"},
		{`keep :flags "x";`, "1:6", `needs ` + "`" + `require "imap4flags";`},
		{`require "fileinto"; fileinto ["a", "b"];`, "1:30", "single string, not a list"},
		{"if allof { }", "1:4", "needs a list of tests in parentheses"},
		{"if (true, false) {}", "1:1", "needs exactly one test"},
		{`if true keep;`, "1:9", `expected ";" or "{" before "keep"`},
		{`if true false {}`, "1:9", `test "true" takes no test`},
		{"stop { }", "1:1", "takes no block"},
		{"if true;", "1:1", "needs a block"},
		{`if ["a", ] {}`, "1:10", "expected a string in the list"},
		{`require "envelope"; if envelope "auth" "x" {}`, "1:33", `envelope part "auth" is not supported`},
		{"text:\nfoo\n", "1:1", `never ended by a line holding only "."`},
		{"redirect text: x\n.\n;", "1:16", `"text:" must be followed by the end of the line`},
		{"keep; @", "1:7", "unexpected character '@'"},
		{"keep;\n# caf\xe9\n", "2:6", "not valid UTF-8"},
		{`if header :is "bad name" "x" {}`, "1:15", "not a valid header field name"},
	}
	for _, c := range cases {
		t.Run(c.script, func(t *testing.T) {
			_, err := Parse([]byte(c.script), Limits{})
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *ParseError", err)
			}
			if got := fmt.Sprintf("%d:%d", pe.Pos.Line, pe.Pos.Col); got != c.pos || !strings.Contains(pe.Msg, c.msg) {
				t.Errorf("got %s %q, want %s containing %q", got, pe.Msg, c.pos, c.msg)
			}
		})
	}
}

// TestStrings checks the literal forms of RFC 5228 §2.4.2: escapes in
// quoted strings, dot-stuffing and comments in "text:", CRLF or LF line
// ends, and K/M/G numbers.
func TestStrings(t *testing.T) {
	cases := []struct{ script, want string }{
		{`reject "a\"b\\c\d";`, `a"b\cd`},
		{"reject text:\n..x\n.y\n..\n.\n;", ".x\r\n.y\r\n.\r\n"},
		{"reject text: # a comment\r\nline\r\n.\r\n;", "line\r\n"},
		{"reject text:\n.\n;", ""},
		{"reject \"two\nlines\";", "two\nlines"},
		{"reject \"#not a comment /* nor this */\";", "#not a comment /* nor this */"},
	}
	for _, c := range cases {
		s, err := Parse([]byte(`require "reject"; `+c.script), Limits{})
		if err != nil {
			t.Errorf("%q: %v", c.script, err)
			continue
		}
		acts, err := s.Execute(context.Background(), Input{Envelope: envA, Message: readMessage(t, msgA)})
		if rj, ok := acts[0].(Reject); err != nil || len(acts) != 1 || !ok || rj.Reason != c.want {
			t.Errorf("%q: got %s, %v; want reason %q", c.script, render(acts), err, c.want)
		}
	}
	s, err := Parse([]byte(`require ["vacation", "fileinto"]; require "envelope";`), Limits{})
	if err != nil || strings.Join(s.Requires(), " ") != "fileinto envelope vacation" {
		t.Errorf("Requires: %v, %v", s.Requires(), err)
	}
	sizes := []struct {
		n    string
		want int64
	}{{"0", 0}, {"100", 100}, {"1k", 1 << 10}, {"1K", 1 << 10}, {"3M", 3 << 20}, {"2G", 2 << 30}}
	for _, c := range sizes {
		s, err := Parse([]byte("if size :over "+c.n+" { discard; }"), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.cmds[0].tests[0].tags["over"].num; got != c.want {
			t.Errorf("%s = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestLimits(t *testing.T) {
	deep := strings.Repeat("if true {", 40) + strings.Repeat("}", 40)
	if _, err := Parse([]byte(deep), Limits{}); err == nil || !strings.Contains(err.Error(), "nested more than 32 deep") {
		t.Errorf("deep blocks: %v", err)
	}
	deepTests := "if " + strings.Repeat("not ", 100) + "true {}"
	if _, err := Parse([]byte(deepTests), Limits{}); err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Errorf("deep tests: %v", err)
	}
	if _, err := Parse([]byte(strings.Repeat("keep;", 100)), Limits{MaxScriptBytes: 100}); err == nil || !strings.Contains(err.Error(), "the limit is 100") {
		t.Errorf("big script: %v", err)
	}

	runtime := []struct{ name, script, msg string }{
		{"redirects", `redirect "a@x.example"; redirect "b@x.example"; redirect "c@x.example"; redirect "d@x.example"; redirect "e@x.example";`, "more than 4 redirects"},
		{"reject after fileinto", `require ["reject", "fileinto"]; fileinto "x"; reject "no";`, "reject cannot run after keep, fileinto or redirect"},
		{"keep after reject", `require "reject"; reject "no"; keep;`, "keep cannot run after reject"},
		{"two rejects", `require ["reject", "ereject"]; reject "no"; ereject "no";`, "only one reject"},
		{"vacation and reject", `require ["reject", "vacation"]; vacation "away"; reject "no";`, "reject cannot run with vacation"},
		{"two vacations", `require "vacation"; vacation "a"; vacation "b";`, "vacation may run only once"},
	}
	for _, c := range runtime {
		t.Run(c.name, func(t *testing.T) {
			s, err := Parse([]byte(c.script), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			acts, err := s.Execute(context.Background(), Input{Envelope: envA, Message: readMessage(t, msgA), Vacation: memory{}})
			var re *RuntimeError
			if !errors.As(err, &re) || !strings.Contains(re.Msg, c.msg) {
				t.Fatalf("got %v, want a *RuntimeError containing %q", err, c.msg)
			}
			if got := render(acts); got != "keep (implicit)" {
				t.Errorf("after a runtime error got %s, want the implicit keep alone", got)
			}
		})
	}
	// Comparison work is bounded per run: a long subject against a key with
	// many characters after a star (about len(value)*len(key) steps) spends
	// the budget, and the run ends in the implicit keep.
	s, err := Parse([]byte(`if header :matches "subject" "*`+strings.Repeat("a", 40)+`b" { discard; }`), Limits{MaxMatchSteps: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	long := readMessage(t, "Subject: "+strings.Repeat("a", 5000)+"\n\nx\n")
	acts, err := s.Execute(context.Background(), Input{Envelope: envA, Message: long})
	var re *RuntimeError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "compared more than 100000 characters") || render(acts) != "keep (implicit)" {
		t.Errorf("match budget: %s, %v", render(acts), err)
	}
	if acts, err = s.Execute(context.Background(), Input{Envelope: envA, Message: readMessage(t, msgA)}); err != nil || render(acts) != "keep (implicit)" {
		t.Errorf("short subject within the budget: %s, %v", render(acts), err)
	}

	// Flag sets are bounded, so flag work stays linear.
	s, err = Parse([]byte(`require "imap4flags"; setflag "a b c"; addflag "d e f";`), Limits{MaxFlags: 5})
	if err != nil {
		t.Fatal(err)
	}
	acts, err = s.Execute(context.Background(), Input{Envelope: envA, Message: readMessage(t, msgA)})
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "more than 5 IMAP flags") || render(acts) != "keep (implicit)" {
		t.Errorf("flag limit: %s, %v", render(acts), err)
	}

	// Duplicates merge (RFC 5228 §2.10.3) rather than counting twice.
	s, err = Parse([]byte(`require "fileinto"; redirect "a@x.example"; redirect "A@x.example"; fileinto "f"; fileinto "f"; discard; discard;`), Limits{MaxRedirects: 1})
	if err != nil {
		t.Fatal(err)
	}
	acts, err = s.Execute(context.Background(), Input{Envelope: envA, Message: readMessage(t, msgA)})
	if err != nil || render(acts) != `redirect a@x.example; fileinto "f"; discard` {
		t.Errorf("duplicates: %s, %v", render(acts), err)
	}
	// A cancelled context stops the run with the implicit keep.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	acts, err = s.Execute(ctx, Input{Envelope: envA, Message: readMessage(t, msgA)})
	if !errors.Is(err, context.Canceled) || render(acts) != "keep (implicit)" {
		t.Errorf("cancelled: %s, %v", render(acts), err)
	}
}

func TestCompare(t *testing.T) {
	cases := []struct {
		cmp, match, value, key string
		want                   bool
	}{
		{"i;ascii-casemap", "is", "Hello", "hELLO", true},
		{"i;octet", "is", "Hello", "hELLO", false},
		{"i;ascii-casemap", "is", "É", "é", false}, // ASCII only
		{"i;ascii-casemap", "contains", "Make Money Fast", "money", true},
		{"i;octet", "contains", "Make Money Fast", "money", false},
		{"i;ascii-casemap", "contains", "anything", "", true},
		{"i;ascii-casemap", "matches", "", "*", true},
		{"i;ascii-casemap", "matches", "", "?", false},
		{"i;ascii-casemap", "matches", "abc", "a?c", true},
		{"i;ascii-casemap", "matches", "aXc", "a?c", true},
		{"i;ascii-casemap", "matches", "ac", "a?c", false},
		{"i;ascii-casemap", "matches", "aéc", "a?c", true}, // one UTF-8 character
		{"i;octet", "matches", "aéc", "a?c", false},        // two octets
		{"i;octet", "matches", "aéc", "a??c", true},
		{"i;ascii-casemap", "matches", "a*c", `a\*c`, true},
		{"i;ascii-casemap", "matches", "abc", `a\*c`, false},
		{"i;ascii-casemap", "matches", "a?c", `a\?c`, true},
		{"i;ascii-casemap", "matches", "abc", `a\?c`, false},
		{"i;ascii-casemap", "matches", `a\c`, `a\\c`, true},
		{"i;ascii-casemap", "matches", "x make y money z fast", "*make*money*fast*", true},
		{"i;ascii-casemap", "matches", "x make y money z", "*make*money*fast*", false},
		{"i;ascii-casemap", "matches", "abcabd", "*ab?", true},
		{"i;ascii-casemap", "matches", "mississippi", "*iss*ppi", true},
		{"i;ascii-casemap", "matches", "mississippi", "m*s?s*i", true},
		{"i;ascii-casemap", "matches", "mississippi", "m*sss*", false},
		{"i;ascii-casemap", "matches", "user@ourdivision.example.com", "*@ourdivision.example.com", true},
	}
	for _, c := range cases {
		if got := compare(c.cmp, c.match, c.value, c.key); got != c.want {
			t.Errorf("compare(%s, :%s, %q, %q) = %v, want %v", c.cmp, c.match, c.value, c.key, got, c.want)
		}
	}
}

func TestDecodePart(t *testing.T) {
	cases := []struct{ cte, charset, body, want string }{
		{"quoted-printable", "iso-8859-1", "caf=E9 =\r\nok", "café ok"},
		{"Quoted-Printable", "utf-8", "caf=C3=A9", "café"},
		{"base64", "", "Y2Fmw6k=\r\n", "café"},
		{"base64", "", "not base64!", "not base64!"}, // undecodable: as it is
		{"7bit", "us-ascii", "plain", "plain"},
	}
	for _, c := range cases {
		if got := decodePart(c.cte, c.charset, []byte(c.body)); got != c.want {
			t.Errorf("decodePart(%s, %s, %q) = %q, want %q", c.cte, c.charset, c.body, got, c.want)
		}
	}
}

func TestSplitMultipart(t *testing.T) {
	cases := []struct {
		body, pro, epi string
		parts          []string
	}{
		{"pre\r\n--b\r\nA\r\n--b\r\nB\r\n\r\n--b--\r\nepi", "pre", "epi", []string{"A", "B\r\n"}},
		{"--b\nA\n--b-- \n", "", "", []string{"A"}},
		{"no boundary\n", "no boundary\n", "", nil},
		{"--b\nA", "", "", []string{"A"}}, // unterminated
		{"--bx\nA\n", "--bx\nA\n", "", nil},
	}
	for _, c := range cases {
		pro, parts, epi := splitMultipart([]byte(c.body), "b")
		var got []string
		for _, p := range parts {
			got = append(got, string(p))
		}
		if string(pro) != c.pro || string(epi) != c.epi || strings.Join(got, "|") != strings.Join(c.parts, "|") {
			t.Errorf("%q: got %q %q %q", c.body, pro, got, epi)
		}
	}
}

// TestMatchesManyStars: a key of many "*" against a long value that almost
// matches is where a backtracking matcher goes exponential. This one does
// len(value)*len(key) steps at most; the test would hang otherwise.
func TestMatchesManyStars(t *testing.T) {
	value := strings.Repeat("a", 20000)
	key := strings.Repeat("*a", 500) + "*b"
	if compare("i;octet", "matches", value, key) {
		t.Fatal("matched a key that needs a b")
	}
	if !compare("i;octet", "matches", value+"b", key) {
		t.Fatal("did not match")
	}
}

// FuzzParse: no script, however broken, panics the parser or the
// interpreter, and every refusal is a *ParseError with a position inside
// the script.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.sieve")
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{"", "text:", "text:\n", "\"\\", "/*", "[", "if", "if (", "if true {", ":", "1G", "require [\"a\",",
		`if header :matches "subject" "*?*\\*?" { keep; }`, "if not not not true { stop; }"} {
		f.Add([]byte(s))
	}
	msg := readMessage(f, "rfc5173-5.2-message.eml") // multipart, so body tests walk parts
	f.Fuzz(func(t *testing.T, src []byte) {
		s, err := Parse(src, Limits{MaxScriptBytes: 8 << 10})
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			lines := bytes.Count(src, []byte("\n")) + 1
			if pe.Pos.Line < 1 || pe.Pos.Line > lines || pe.Pos.Col < 1 {
				t.Fatalf("error position %v outside the script (%d lines)", pe.Pos, lines)
			}
			return
		}
		acts, _ := s.Execute(context.Background(), Input{Envelope: Envelope{From: "a@b.example", To: "me@example.com"}, Message: msg, Vacation: memory{}})
		if len(acts) == 0 {
			t.Fatal("no action at all: the implicit keep was lost")
		}
	})
}
