package smtp

import (
	"testing"

	"github.com/emersion/go-milter"
	gosmtp "github.com/emersion/go-smtp"
)

// TestMilterHeaderEdits: a milter's header changes land where the
// protocol says, folded fields stay whole, the body is untouched.
func TestMilterHeaderEdits(t *testing.T) {
	msg := "Received: from a\r\n\tby b; now\r\nSubject: hi\r\nX-Spam: No\r\nSubject: second\r\n\r\nbody\r\nX-Not: a header\r\n"
	for _, tc := range []struct {
		name string
		mod  milter.ModifyAction
		want string
	}{
		{"add at the end", milter.ModifyAction{Code: milter.ActAddHeader, HeaderName: "X-Spam-Score", HeaderValue: "3.1"},
			"Received: from a\r\n\tby b; now\r\nSubject: hi\r\nX-Spam: No\r\nSubject: second\r\nX-Spam-Score: 3.1\r\n\r\nbody\r\nX-Not: a header\r\n"},
		{"add folded", milter.ModifyAction{Code: milter.ActAddHeader, HeaderName: "Authentication-Results", HeaderValue: "mx;\n\tspf=pass\nx"},
			"Received: from a\r\n\tby b; now\r\nSubject: hi\r\nX-Spam: No\r\nSubject: second\r\nAuthentication-Results: mx;\r\n\tspf=pass\r\n\tx\r\n\r\nbody\r\nX-Not: a header\r\n"},
		{"insert first", milter.ModifyAction{Code: milter.ActInsertHeader, HeaderIndex: 0, HeaderName: "X-First", HeaderValue: "1"},
			"X-First: 1\r\nReceived: from a\r\n\tby b; now\r\nSubject: hi\r\nX-Spam: No\r\nSubject: second\r\n\r\nbody\r\nX-Not: a header\r\n"},
		{"change the second of a name", milter.ModifyAction{Code: milter.ActChangeHeader, HeaderIndex: 2, HeaderName: "subject", HeaderValue: "[SPAM] second"},
			"Received: from a\r\n\tby b; now\r\nSubject: hi\r\nX-Spam: No\r\nsubject: [SPAM] second\r\n\r\nbody\r\nX-Not: a header\r\n"},
		{"delete", milter.ModifyAction{Code: milter.ActChangeHeader, HeaderIndex: 1, HeaderName: "Received", HeaderValue: ""},
			"Subject: hi\r\nX-Spam: No\r\nSubject: second\r\n\r\nbody\r\nX-Not: a header\r\n"},
		{"change a missing one adds it", milter.ModifyAction{Code: milter.ActChangeHeader, HeaderIndex: 1, HeaderName: "X-New", HeaderValue: "v"},
			"Received: from a\r\n\tby b; now\r\nSubject: hi\r\nX-Spam: No\r\nSubject: second\r\nX-New: v\r\n\r\nbody\r\nX-Not: a header\r\n"},
	} {
		fields, body := splitHeader([]byte(msg))
		if len(fields) != 4 || fields[0].value() != "from a\n\tby b; now" {
			t.Fatalf("split: %d fields, first value %q", len(fields), fields[0].value())
		}
		if got := string(joinHeader(editHeader(fields, tc.mod), body)); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestMilterReplyAndJunkValue(t *testing.T) {
	for _, tc := range []struct {
		code int
		text string
		want gosmtp.SMTPError
	}{
		{554, "5.7.1 Spam message rejected", gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Spam message rejected"}},
		{451, "4.7.1 Try again later", gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Try again later"}},
		{550, "Virus found", gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Virus found"}},
		{250, "4.2.0 odd\r\nline", gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "4.2.0 odd  line"}},
		{554, "", gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Message refused by the content filter"}},
	} {
		if got := milterReply(tc.code, tc.text); *got != tc.want {
			t.Errorf("milterReply(%d, %q) = %+v, want %+v", tc.code, tc.text, *got, tc.want)
		}
	}
	m := &MilterConfig{}
	for v, want := range map[string]bool{"Yes": true, "yes": true, " YES, score=12.5": true, "No": false, "Yesterday": false, "": false} {
		if got := m.junkValue(v); got != want {
			t.Errorf("junkValue(%q) = %v, want %v", v, got, want)
		}
	}
	for addr, ok := range map[string]bool{"tcp:127.0.0.1:11332": true, "inet:localhost:11332": true, "unix:/run/rspamd/milter.sock": true, "127.0.0.1:11332": true, "unix:": false, "tcp:nohost": false, "": false} {
		if _, _, err := ParseMilterAddr(addr); (err == nil) != ok {
			t.Errorf("ParseMilterAddr(%q): %v", addr, err)
		}
	}
}
