package smtp_test

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/smtp"
)

// TestBareLFStoredAsCRLF: a message sent with bare LF line ends (over a
// raw socket: go-smtp's client would fix them itself) is stored with
// CRLF, its size counted so, over LMTP and MX, also when a dot-stuffed
// line and the end of a spool buffer fall on the way. The store trusts
// the spool's normalizing (Delivery.StoreAsGiven) when nothing changed
// the bytes after it.
func TestBareLFStoredAsCRLF(t *testing.T) {
	e := startDelivery(t)
	body := "Subject: lf\nX-Test: y\n\nbody\n..dot\n" + strings.Repeat(strings.Repeat("z", 999)+"\n", 25) + "last\r\n"
	// After a bare LF no line starts: "..dot" is not dot-stuffing.
	want := "Subject: lf\r\nX-Test: y\r\n\r\nbody\r\n..dot\r\n" + strings.Repeat(strings.Repeat("z", 999)+"\r\n", 25) + "last\r\n"
	for _, mode := range []smtp.Mode{smtp.LMTP, smtp.MX} {
		t.Run(mode.String(), func(t *testing.T) {
			srv := e.listen(t, smtp.Config{Mode: mode})
			before := len(e.inbox(t, "bob@example.test"))
			c := dialFrom(t, "", srv.Addr().String())
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			r := bufio.NewReader(c)
			reply := func() string {
				t.Helper()
				var last string
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						t.Fatalf("reading a reply: %v", err)
					}
					if len(l) < 4 || l[3] != '-' {
						last = l
						break
					}
				}
				return strings.TrimSpace(last)
			}
			say := func(cmd, code string) {
				t.Helper()
				if cmd != "" {
					if _, err := io.WriteString(c, cmd); err != nil {
						t.Fatal(err)
					}
				}
				if l := reply(); !strings.HasPrefix(l, code) {
					t.Fatalf("%.60q: reply %q, want %s", cmd, l, code)
				}
			}
			say("", "220")
			say(map[smtp.Mode]string{smtp.LMTP: "LHLO c.test\r\n", smtp.MX: "EHLO c.test\r\n"}[mode], "250")
			// A sender per mode: the same sender and bytes again would
			// be taken for a retry and stored once.
			say("MAIL FROM:<"+mode.String()+"@remote.test>\r\n", "250")
			say("RCPT TO:<bob@example.test>\r\n", "250")
			say("DATA\r\n", "354")
			say(body+".\r\n", "250")
			msgs := e.inbox(t, "bob@example.test")
			if len(msgs) != before+1 {
				t.Fatalf("%d messages in INBOX, want %d", len(msgs), before+1)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m := msgs[len(msgs)-1]
			stored, err := e.c.Nodes[0].Cluster.Get(ctx, m.Object)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(string(stored), want) || strings.Count(string(stored), "\n") != strings.Count(string(stored), "\r\n") {
				t.Fatalf("stored %.300q..., want it to end %.100q... with CRLF only", stored, want)
			}
			if m.Size != int64(len(stored)) {
				t.Fatalf("size %d, stored %d bytes", m.Size, len(stored))
			}
		})
	}
}
