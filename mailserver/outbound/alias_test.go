package outbound

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// TestAliasForward: an alias with local and remote targets, over the MX:
// one 250, the local target's copy in its INBOX, one queued message to the
// remote MTA for both remote targets with the original envelope sender
// and the body unchanged. An alias with remote targets only, over LMTP:
// 250 for it, forwarded too.
func TestAliasForward(t *testing.T) {
	e := startEnv(t, nil)
	e.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := e.stores[0]
	if err := st.AddAlias(ctx, "team@local.test", []string{"alice@local.test", "bob@remote.test", "Carol+x@Remote.test"}); err != nil {
		t.Fatalf("alias with remote targets: %v", err)
	}
	if err := st.AddAlias(ctx, "fwd@local.test", []string{"dave@remote.test"}); err != nil {
		t.Fatal(err)
	}
	addrs := e.mailListeners(t)
	body := "From: sender@elsewhere.test\r\nTo: team@local.test\r\nSubject: for the team\r\n\r\nhello team\r\n"
	if err := mxSend(t, addrs["smtp"].String(), "sender@elsewhere.test", []string{"team@local.test"}, strings.NewReader(body)); err != nil {
		t.Fatalf("MX to the alias: %v", err)
	}
	if n := len(e.inbox(t, 1, "alice@local.test")); n != 1 {
		t.Errorf("alice's INBOX holds %d messages, want 1", n)
	}
	waitFor(t, "the forward at the remote MTA", 30*time.Second, func() bool { return len(e.sink.Got()) >= 1 })
	got := e.sink.Got()[0]
	to := slices.Clone(got.To)
	slices.Sort(to)
	if got.From != "sender@elsewhere.test" || strings.Join(to, ",") != "bob@remote.test,carol+x@remote.test" {
		t.Errorf("forward envelope %q → %v, want sender@elsewhere.test → bob@remote.test, carol+x@remote.test", got.From, got.To)
	}
	if !strings.HasSuffix(string(got.Data), body) {
		t.Errorf("forwarded message changed:\n%s", got.Data)
	}

	conn, err := net.Dial("tcp", addrs["lmtp"].String())
	if err != nil {
		t.Fatal(err)
	}
	lc := gosmtp.NewClientLMTP(conn)
	defer lc.Close()
	if err := lc.Hello("mta.test"); err != nil {
		t.Fatal(err)
	}
	if err := lc.Mail("sender@elsewhere.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := lc.Rcpt("fwd@local.test", nil); err != nil {
		t.Fatalf("LMTP RCPT of a forward-only alias: %v", err)
	}
	w, err := lc.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("From: sender@elsewhere.test\r\nSubject: for dave\r\n\r\nhi\r\n")); err != nil {
		t.Fatal(err)
	}
	if resp, err := w.CloseWithLMTPResponse(); err != nil || resp["fwd@local.test"] == nil {
		t.Fatalf("LMTP DATA for a forward-only alias: %v %v, want 250", resp, err)
	}
	waitFor(t, "the LMTP forward at the remote MTA", 30*time.Second, func() bool { return len(e.sink.Got()) >= 2 })
	waitFor(t, "the queue to drain", 30*time.Second, func() bool { return e.queueLen(t) == 0 })
	time.Sleep(500 * time.Millisecond)
	all := e.sink.Got()
	if len(all) != 2 || strings.Join(all[1].To, ",") != "dave@remote.test" || all[1].From != "sender@elsewhere.test" {
		t.Errorf("remote MTA received %d messages (second %q → %v), want 2, the second sender@elsewhere.test → dave@remote.test", len(all), all[len(all)-1].From, all[len(all)-1].To)
	}
}
