package smtp

import (
	"errors"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver/mailbox"
)

func TestLoginMechanism(t *testing.T) {
	var got [2]string
	login := func(u, p string) error { got = [2]string{u, p}; return nil }
	// Without an initial response: Username:, Password:, done.
	l := &loginServer{login: login}
	for i, step := range []struct{ in, challenge string }{{"", "Username:"}, {"alice", "Password:"}} {
		c, done, err := l.Next([]byte(step.in))
		if err != nil || done || string(c) != step.challenge {
			t.Fatalf("step %d: %q %v %v", i, c, done, err)
		}
	}
	if _, done, err := l.Next([]byte("pw")); !done || err != nil || got != [2]string{"alice", "pw"} {
		t.Fatalf("last step: %v %v %v", done, err, got)
	}
	// With the user name as the initial response.
	l = &loginServer{login: login}
	if c, _, _ := l.Next([]byte("bob")); string(c) != "Password:" {
		t.Fatalf("initial response: %q", c)
	}
	if _, done, _ := l.Next([]byte("x")); !done || got[0] != "bob" {
		t.Fatal("initial response not used as the user name")
	}
	if _, _, err := l.Next(nil); err == nil {
		t.Fatal("a step after the end succeeded")
	}
}

func TestReplies(t *testing.T) {
	code := func(err error) int { return err.(*gosmtp.SMTPError).Code }
	for _, c := range []struct {
		err  error
		want int
	}{
		{&mailbox.QuotaError{Size: 10, Limit: 5}, 552},
		{&mailbox.QuotaError{Size: 1, Limit: 5, Used: 5}, 452},
		{mailbox.ErrNotFound, 550},
		{mailbox.ErrDisabled, 550},
		{mailbox.ErrUnavailable, 451},
		{errors.New("anything else"), 451},
	} {
		if got := code(smtpErr(c.err)); got != c.want {
			t.Errorf("smtpErr(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	if s := sanitize("evil\r\nX-Injected: 1 (x) <y>"); s != "evil??X-Injected: 1 ?x? ?y?" {
		t.Errorf("sanitize = %q", s)
	}
}
