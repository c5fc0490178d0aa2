package smtp_test

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver/smtp"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestMessageTraceID: the ID in the 250 reply is the one in the stored
// message's Received: header and in the delivery's log line, which also
// names the stored object, so a message is traced from the sender's log
// or its headers to ours.
func TestMessageTraceID(t *testing.T) {
	e := startDelivery(t)
	for _, mode := range []smtp.Mode{smtp.MX, smtp.LMTP} {
		t.Run(mode.String(), func(t *testing.T) {
			var logs lockedBuffer
			srv := e.listen(t, smtp.Config{Mode: mode, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			before := len(e.inbox(t, "bob@example.test"))
			var reply string
			var err error
			if mode == smtp.LMTP {
				c := dialLMTP(t, srv.Addr().String())
				defer c.Close()
				if err = c.Mail("someone@remote.test", nil); err == nil {
					if err = c.Rcpt("bob@example.test", nil); err == nil {
						w, derr := c.Data()
						if err = derr; err == nil {
							if _, err = w.Write([]byte(testMessage("trace-" + mode.String()))); err == nil {
								var rs map[string]*gosmtp.DataResponse
								if rs, err = w.CloseWithLMTPResponse(); err == nil {
									reply = rs["bob@example.test"].StatusText
								}
							}
						}
					}
				}
			} else {
				reply, err = send(t, srv.Addr().String(), "someone@remote.test", []string{"bob@example.test"}, testMessage("trace-"+mode.String()))
			}
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile(`stored as ([0-9a-f]{16})$`).FindStringSubmatch(reply)
			if m == nil {
				t.Fatalf("250 reply %q names no message ID", reply)
			}
			id := m[1]

			msgs := e.inbox(t, "bob@example.test")
			if len(msgs) != before+1 {
				t.Fatalf("%d messages in INBOX, want %d", len(msgs), before+1)
			}
			obj := msgs[len(msgs)-1].Object
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			body, err := e.c.Nodes[0].Cluster.Get(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			hdr, _, _ := strings.Cut(string(body), "\r\n\r\n")
			if !regexp.MustCompile(`(?s)Received: .* id ` + id + `\b`).MatchString(hdr) {
				t.Errorf("Received: header does not carry the reply's ID %s:\n%s", id, hdr)
			}
			var line string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, `msg=delivered`) {
					line = l
				}
			}
			if !strings.Contains(line, "msgid="+id) || !strings.Contains(line, "object="+obj.String()) {
				t.Errorf("delivery log line %q: want msgid=%s and object=%s", line, id, obj)
			}
		})
	}
}
