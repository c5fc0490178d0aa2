package imap_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	hsimap "hastore/mailserver/imap"
	"hastore/mailserver/mailbox"
	"hastore/testing/cluster"
)

// BenchmarkIMAP measures the protocol layer with the backend behind it,
// one persistent session on a 3-node in-process cluster, 500 messages in
// INBOX; compare runs (before and after a change) side by side:
//
//	go test -run '^$' -bench BenchmarkIMAP -benchtime 200x ./mailserver/imap/
func BenchmarkIMAP(b *testing.B) {
	c := cluster.StartInProcess(b, cluster.Options{Nodes: 3})
	st := mailbox.New(c.Nodes[0].Cluster, c.Nodes[0].Meta, mailbox.Options{
		Hash:     mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1},
		Throttle: mailbox.ThrottleOptions{PerAddress: 1 << 20, PerAccount: 1 << 20, FailDelay: -1},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := st.AddDomain(ctx, "bench.test"); err != nil {
		b.Fatal(err)
	}
	if err := st.AddUser(ctx, "b@bench.test", "pw", 0); err != nil {
		b.Fatal(err)
	}
	const msgs = 500
	for i := range msgs {
		d := st.NewDelivery()
		if err := d.AddRecipient(mailbox.Recipient{Address: "b@bench.test"}); err != nil {
			b.Fatal(err)
		}
		m := fmt.Sprintf("From: Sender %d <s%d@x.test>\r\nTo: b@bench.test\r\nSubject: message %d\r\nDate: Mon, 05 Jan 2026 09:30:00 +0100\r\n\r\n%s\r\n", i, i, i, strings.Repeat("body line\r\n", 20))
		if err := d.Body(ctx, []byte(m), time.Time{}); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Commit(ctx, true); err != nil {
			b.Fatal(err)
		}
	}
	srv, err := hsimap.Listen(st, hsimap.Config{IMAP: "127.0.0.1:0", AllowInsecureAuth: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	conn, err := net.Dial("tcp", srv.Addrs()["imap"].String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 64<<10)
	do := func(cmd string) {
		if _, err := conn.Write([]byte("t " + cmd + "\r\n")); err != nil {
			b.Fatal(err)
		}
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if strings.HasPrefix(l, "t ") {
				if !strings.HasPrefix(l, "t OK") {
					b.Fatalf("%s: %q", cmd, l)
				}
				return
			}
		}
	}
	r.ReadString('\n')
	do("LOGIN b@bench.test pw")
	do("SELECT INBOX")
	for _, bc := range []struct{ name, cmd string }{
		{"noop", "NOOP"},
		{"fetch-flags-500", "FETCH 1:* (UID FLAGS)"},
		{"fetch-headers-500", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"},
		{"fetch-envelope-500", "FETCH 1:* (ENVELOPE BODYSTRUCTURE)"},
		{"fetch-body-1", "UID FETCH 250 (BODY.PEEK[])"},
		{"search-500", "SEARCH UNSEEN FROM sender"},
		{"store-1", "STORE 7 FLAGS (\\Flagged)"},
		{"list-status", `LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				do(bc.cmd)
			}
		})
	}
}
