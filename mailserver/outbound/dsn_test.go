package outbound

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSignedHeaders(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want []string
	}{
		{"From: a@b\r\nSubject: x\r\n\r\nDate: not a header\r\n", []string{"From", "Subject"}},
		{"subject: x\r\nTO: c@d,\r\n e@f\r\nmessage-id: <1@b>\r\n\r\n", []string{"From", "Subject", "To", "Message-ID"}},
		{"X-Other: 1\r\n\r\n", []string{"From"}},
	} {
		if got := signedHeaders([]byte(tc.msg)); !slices.Equal(got, tc.want) {
			t.Errorf("signedHeaders(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}

func TestDSNStatusAndBackoff(t *testing.T) {
	for reply, want := range map[string]string{
		"after RCPT TO: 550 5.1.1 no such user": "5.1.1",
		"4.4.7 delivery time expired":           "4.4.7",
		"after DATA: 554 transaction failed":    "5.0.0",
		"5.1.10 domain accepts no mail":         "5.1.10",
	} {
		if got := dsnStatus(reply); got != want {
			t.Errorf("dsnStatus(%q) = %q, want %q", reply, got, want)
		}
	}
	c := Config{RetryMin: time.Minute, RetryMax: 10 * time.Minute}
	var got []time.Duration
	for i := 1; i <= 6; i++ {
		got = append(got, c.backoff(i))
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	if !slices.Equal(got, want) {
		t.Errorf("backoff = %v, want %v", got, want)
	}
}

func TestWithoutReturnPath(t *testing.T) {
	for in, want := range map[string]string{
		"Return-Path: <a@b>\r\nReceived: x\r\n\r\nbody": "Received: x\r\n\r\nbody",
		"Return-Path: <a@b>\r\n folded\r\nFrom: a\r\n":  "From: a\r\n",
		"From: a\r\nReturn-Path: <a@b>\r\n\r\n":         "From: a\r\nReturn-Path: <a@b>\r\n\r\n",
	} {
		if got := string(withoutReturnPath([]byte(in))); got != want {
			t.Errorf("withoutReturnPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBuildDSN(t *testing.T) {
	e := &Entry{ID: "q1", From: "alice@local.test", Created: time.Now().UnixNano()}
	msg := string(buildDSN("mx1.test", time.Now(), e, []Rcpt{{Addr: "x@remote.test", State: StateFailed,
		Reply: "after RCPT TO: 550 5.1.1 no\r\nsuch", Remote: "mx.remote.test [127.0.0.1:25]"}}, []byte("Subject: hi\r\n")))
	for _, want := range []string{"\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=",
		"\r\nFinal-Recipient: rfc822; x@remote.test\r\n", "\r\nStatus: 5.1.1\r\n", "\r\nRemote-MTA: dns; mx.remote.test\r\n",
		"\r\nDiagnostic-Code: smtp; 550 5.1.1 no  such\r\n", "\r\nContent-Type: text/rfc822-headers\r\n", "Undelivered message headers\r\n\r\nSubject: hi\r\n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("DSN lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(strings.ReplaceAll(msg, "\r\n", ""), "\n") {
		t.Errorf("DSN has a bare LF")
	}
}
