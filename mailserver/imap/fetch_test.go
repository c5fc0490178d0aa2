package imap

import (
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/mailbox"
)

const nested = "From: a@example.test\r\n" +
	"Subject: outer\r\n" +
	"Content-Type: multipart/mixed; boundary=\"outer\"\r\n" +
	"\r\n" +
	"preamble\r\n" +
	"--outer\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello\r\nWorld\r\n" +
	"--outer\r\n" +
	"Content-Type: message/rfc822\r\n" +
	"\r\n" +
	"Subject: inner\r\n" +
	"Content-Type: multipart/alternative; boundary=inner\r\n" +
	"\r\n" +
	"--inner\r\n" +
	"\r\n" +
	"plain default\r\n" +
	"--inner\r\n" +
	"Content-Type: text/html\r\n" +
	"\r\n" +
	"<b>x</b>\r\n" +
	"--inner--\r\n" +
	"--outer\r\n" +
	"Content-Type: application/pdf; name=a.pdf\r\n" +
	"\r\n" +
	"PDF\r\n" +
	"--outer--\r\n"

// TestSectionRanges checks the part numbering of RFC 3501 6.4.5 (nested
// message/rfc822 included) against the offsets stored at delivery.
func TestSectionRanges(t *testing.T) {
	msg := nested
	info := mailbox.ParseInfo([]byte(msg))
	for _, c := range []struct {
		part []int
		spec imap.PartSpecifier
		want string // "-" for no such section
	}{
		{nil, imap.PartSpecifierNone, msg},
		{nil, imap.PartSpecifierHeader, "From: a@example.test\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"},
		{nil, imap.PartSpecifierText, msg[strings.Index(msg, "preamble"):]},
		{[]int{1}, imap.PartSpecifierNone, "Hello\r\nWorld"},
		{[]int{1}, imap.PartSpecifierMIME, "Content-Type: text/plain; charset=utf-8\r\n\r\n"},
		{[]int{1}, imap.PartSpecifierHeader, "-"},
		{[]int{2}, imap.PartSpecifierHeader, "Subject: inner\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"},
		{[]int{2, 1}, imap.PartSpecifierNone, "plain default"},
		{[]int{2, 1}, imap.PartSpecifierMIME, "\r\n"},
		{[]int{2, 2}, imap.PartSpecifierNone, "<b>x</b>"},
		{[]int{2, 2}, imap.PartSpecifierMIME, "Content-Type: text/html\r\n\r\n"},
		{[]int{2, 3}, imap.PartSpecifierNone, "-"},
		{[]int{3}, imap.PartSpecifierNone, "PDF"},
		{[]int{4}, imap.PartSpecifierNone, "-"},
	} {
		bs := &imap.FetchItemBodySection{Part: c.part, Specifier: c.spec}
		start, end, ok := sectionRange(int64(len(msg)), info, bs)
		got := "-"
		if ok {
			got = msg[start:end]
		}
		if got != c.want {
			t.Errorf("BODY[%v.%s] = %q, want %q", c.part, c.spec, got, c.want)
		}
	}
	// BODY[2] is the whole embedded message.
	start, end, _ := sectionRange(int64(len(msg)), info, &imap.FetchItemBodySection{Part: []int{2}})
	if got := msg[start:end]; !strings.HasPrefix(got, "Subject: inner") || !strings.HasSuffix(got, "--inner--") {
		t.Errorf("BODY[2] = %q", got)
	}
	bs, ok := bodyStructure(&info.Body).(*imap.BodyStructureMultiPart)
	if !ok || len(bs.Children) != 3 || bs.Children[1].(*imap.BodyStructureSinglePart).MessageRFC822 == nil {
		t.Errorf("BODYSTRUCTURE = %#v", bodyStructure(&info.Body))
	}
}

func TestFilterHeader(t *testing.T) {
	hdr := []byte("Subject: a\r\nX-Long: 1\r\n 2\r\nFrom: b\r\n\r\n")
	if got := string(filterHeader(hdr, []string{"x-long", "FROM"}, nil)); got != "X-Long: 1\r\n 2\r\nFrom: b\r\n\r\n" {
		t.Errorf("HEADER.FIELDS = %q", got)
	}
	if got := string(filterHeader(hdr, nil, []string{"x-long"})); got != "Subject: a\r\nFrom: b\r\n\r\n" {
		t.Errorf("HEADER.FIELDS.NOT = %q", got)
	}
}
