package outbound

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/smtp"
	"hastore/replica"
	"hastore/testing/cluster"
	remote "hastore/testing/outbound"
)

// env is a 3-node in-process cluster with mail stores, a queue on every
// node, a DNS server and a remote MTA.
type env struct {
	c      *cluster.InProcess
	stores []*mailbox.Store
	queues []*Queue
	dns    *remote.DNS
	sink   *remote.Sink
	admin  *Admin
}

func startEnv(t *testing.T, tune func(*Config)) *env {
	t.Helper()
	e := &env{dns: remote.StartDNS(t), sink: remote.StartSink(t, "127.0.0.1:0")}
	e.c = cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	opt := mailbox.Options{Hash: mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1}}
	for _, n := range e.c.Nodes {
		e.stores = append(e.stores, mailserver.NewStore(n, opt))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.stores[0].AddDomain(ctx, "local.test"); err != nil {
		t.Fatal(err)
	}
	if err := e.stores[0].AddUser(ctx, "alice@local.test", "pw", 0); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(e.sink.Addr)
	p, _ := strconv.Atoi(port)
	e.dns.Add(t, "remote.test. 60 IN MX 10 mx.remote.test.")
	e.dns.Add(t, "mx.remote.test. 60 IN A 127.0.0.1")
	e.admin = &Admin{C: e.c.Nodes[0].Cluster, KV: e.c.Nodes[0].Meta, CatchUp: e.c.Nodes[0].Cluster.CatchUp, IsLocalDomain: e.stores[0].IsLocalDomain}
	for i, n := range e.c.Nodes {
		cfg := Config{Node: n.ID(), Hostname: fmt.Sprintf("mx%d.test", i+1), DNS: e.dns.Addr, Port: p,
			Poll: 100 * time.Millisecond, RetryMin: 200 * time.Millisecond, RetryMax: 400 * time.Millisecond, Lease: 3 * time.Second,
			Lifetime: time.Minute, Logger: testLog(t, n)}
		if tune != nil {
			tune(&cfg)
		}
		q := New(n.Cluster, n.Meta, MailboxLocal{Store: e.stores[i]}, cfg)
		e.queues = append(e.queues, q)
	}
	return e
}

func (e *env) start(t *testing.T) {
	for _, q := range e.queues {
		if err := q.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
	}
}

func testLog(t *testing.T, n *replica.Node) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil)).With("node", n.ID())
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// publish creates domain's DKIM key through the admin operation and
// publishes its record in the test's DNS.
func (e *env) publish(t *testing.T, domain, algo string) *DKIMPublic {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := e.admin.Do(ctx, &AdminRequest{Op: "dkim create", Domain: domain, Algorithm: algo})
	if err != nil {
		t.Fatal(err)
	}
	k := rep.Key
	e.dns.AddTXT(k.Name, k.Record)
	return k
}

// verifyDKIM checks msg's signatures against the keys in the test's DNS,
// looked up like a receiver would.
func (e *env) verifyDKIM(t *testing.T, msg []byte) string {
	t.Helper()
	res := smtp.NewResolver(e.dns.Addr)
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		return res.LookupTXT(context.Background(), name)
	}})
	if err != nil {
		t.Fatalf("DKIM verification: %v", err)
	}
	if len(vs) != 1 {
		t.Fatalf("%d DKIM signatures, want 1:\n%s", len(vs), msg)
	}
	if vs[0].Err != nil {
		t.Fatalf("DKIM signature of %s does not verify: %v\n%s", vs[0].Domain, vs[0].Err, msg)
	}
	return vs[0].Domain
}

// inbox returns the bodies in user's INBOX, read on node i.
func (e *env) inbox(t *testing.T, i int, user string) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := e.stores[i]
	if err := st.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	mb, ok, err := st.Mailbox(user, "INBOX")
	if err != nil || !ok {
		t.Fatalf("INBOX of %s: %v %v", user, ok, err)
	}
	ms, err := st.Messages(user, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range ms {
		b, err := st.Body(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func (e *env) queueLen(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := e.admin.Do(ctx, &AdminRequest{Op: "queue list"})
	if err != nil {
		t.Fatal(err)
	}
	return len(rep.Entries)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSubmissionToRemote sends through a real submission listener to a
// local user and three remote recipients: one the remote MTA takes, one it
// refuses for good, one it defers until the queue lifetime ends. The
// accepted copy arrives once with a DKIM signature that verifies against
// the record in DNS; each failure comes back to the sender's INBOX as an
// RFC 3464 report; the queue ends empty.
func TestSubmissionToRemote(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Lifetime = 4 * time.Second })
	e.publish(t, "local.test", "rsa")
	e.start(t)
	srv, err := mailserver.Start(e.c.Nodes[0], mailserver.Config{Hostname: "mx1.test", Submission: "127.0.0.1:0", AllowInsecureAuth: true,
		Store: e.stores[0], SMTPTuning: smtp.Config{Outbound: e.queues[0]}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	msg := "From: Alice <alice@local.test>\r\nTo: bob@remote.test\r\nSubject: hello remote\r\nDate: Wed, 02 Dec 2026 06:00:00 +0000\r\nMessage-ID: <m1@local.test>\r\n\r\nHello Bob,\r\n.dot line\r\nbye\r\n"
	c, err := gosmtp.Dial(srv.Addrs()["submission"].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice@local.test", "pw")); err != nil {
		t.Fatal(err)
	}
	rcpts := []string{"bob@remote.test", "nobody@remote.test", "later@remote.test", "alice@local.test"}
	if err := c.SendMail("alice@local.test", rcpts, strings.NewReader(msg)); err != nil {
		t.Fatalf("submission: %v", err)
	}

	waitFor(t, "the remote MTA to receive the message", 30*time.Second, func() bool { return len(e.sink.Got()) > 0 })
	waitFor(t, "the queue to drain (the deferred recipient expiring)", 60*time.Second, func() bool { return e.queueLen(t) == 0 })
	got := e.sink.Got()
	if len(got) != 1 {
		t.Fatalf("remote MTA received %d messages, want exactly 1", len(got))
	}
	if got[0].From != "alice@local.test" || len(got[0].To) != 1 || got[0].To[0] != "bob@remote.test" {
		t.Errorf("envelope from %q to %q, want alice@local.test to [bob@remote.test]", got[0].From, got[0].To)
	}
	if d := e.verifyDKIM(t, got[0].Data); d != "local.test" {
		t.Errorf("signed by %q, want local.test", d)
	}
	if bytes.HasPrefix(got[0].Data, []byte("Return-Path:")) || bytes.Contains(got[0].Data, []byte("\r\nReturn-Path:")) {
		t.Errorf("Return-Path: sent on to the remote:\n%s", got[0].Data)
	}
	if !bytes.HasSuffix(got[0].Data, []byte("\r\n\r\nHello Bob,\r\n.dot line\r\nbye\r\n")) {
		t.Errorf("body not received byte for byte:\n%q", got[0].Data)
	}

	var dsns []string
	local := 0
	for _, b := range e.inbox(t, 1, "alice@local.test") {
		s := string(b)
		switch {
		case strings.Contains(s, "Content-Type: multipart/report; report-type=delivery-status"):
			dsns = append(dsns, s)
		case strings.Contains(s, "Subject: hello remote"):
			local++
		}
	}
	if local != 1 {
		t.Errorf("local recipient got %d copies, want 1", local)
	}
	if len(dsns) != 2 {
		t.Fatalf("sender got %d DSNs, want 2 (refused, expired)", len(dsns))
	}
	all := strings.Join(dsns, "\n")
	for _, want := range []string{"Final-Recipient: rfc822; nobody@remote.test", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1",
		"Final-Recipient: rfc822; later@remote.test", "Status: 4.4.7", "Diagnostic-Code: x-hastore; 4.4.7 delivery time expired", "Action: failed", "Subject: hello remote", "Return-Path: <>"} {
		if !strings.Contains(all, want) {
			t.Errorf("DSNs lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "bob@remote.test\r\nAction") {
		t.Errorf("DSN reports the delivered recipient")
	}
	// Nothing more arrives later.
	time.Sleep(time.Second)
	if n := len(e.sink.Got()); n != 1 {
		t.Errorf("remote MTA received %d messages after the queue drained, want 1", n)
	}
}

// TestLeaseTakeover: an entry leased by a node that died is left alone
// until the lease expires, then delivered exactly once by a live node.
func TestLeaseTakeover(t *testing.T) {
	e := startEnv(t, nil)
	e.publish(t, "local.test", "ed25519")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Enqueued on node 0 before any worker runs, then leased to a node
	// that will never come back.
	id, err := e.queues[0].Enqueue(ctx, "alice@local.test", "alice@local.test", "t1", []string{"bob@remote.test"},
		[]byte("From: alice@local.test\r\nTo: bob@remote.test\r\nSubject: takeover\r\n\r\nbody\r\n"), [32]byte{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := records{c: e.c.Nodes[0].Cluster, kv: e.c.Nodes[0].Meta}
	en, old, err := rec.get(id)
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(3 * time.Second)
	en.Lease = Lease{Node: "dead-node", Until: until.UnixNano()}
	if _, err := rec.swap(ctx, id, old, en); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	time.Sleep(time.Until(until.Add(-time.Second)))
	if n := len(e.sink.Got()); n != 0 {
		t.Fatalf("delivered %d times while another node's lease held", n)
	}
	waitFor(t, "a live node to take the entry over", 30*time.Second, func() bool { return len(e.sink.Got()) > 0 })
	waitFor(t, "the entry to be removed", 30*time.Second, func() bool { return e.queueLen(t) == 0 })
	got := e.sink.Got()
	if len(got) != 1 {
		t.Fatalf("delivered %d times, want exactly once", len(got))
	}
	e.verifyDKIM(t, got[0].Data)
}

// TestEnqueueRetry: the same message (digest, sender, recipients) queued
// again within the window is one entry; another recipient set is another;
// the retry record goes once its window is over.
func TestEnqueueRetry(t *testing.T) {
	e := startEnv(t, nil) // no workers: entries stay
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg := []byte("From: alice@local.test\r\nSubject: r\r\n\r\nx\r\n")
	key := [32]byte{1, 2, 3}
	enq := func(i int, rcpts []string, window time.Duration) string {
		t.Helper()
		id, err := e.queues[i].Enqueue(ctx, "alice@local.test", "alice@local.test", "m", rcpts, msg, key, window)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	a := enq(0, []string{"bob@remote.test"}, time.Hour)
	if b := enq(1, []string{"bob@remote.test"}, time.Hour); b != a {
		t.Errorf("retry on another node queued %s, want the first entry %s", b, a)
	}
	if c := enq(0, []string{"carol@remote.test"}, time.Hour); c == a {
		t.Errorf("other recipients were taken for a retry")
	}
	if d := enq(0, []string{"dave@remote.test"}, time.Millisecond); d == a {
		t.Errorf("other recipients were taken for a retry")
	}
	if n := e.queueLen(t); n != 3 {
		t.Errorf("%d entries, want 3", n)
	}
	time.Sleep(10 * time.Millisecond)
	e.queues[0].collectRetryRecords(ctx)
	left := 0
	_ = e.c.Nodes[0].Meta.TenantScan(QueueTenant, retryPrefix, func(string, []byte) error { left++; return nil })
	if left != 2 {
		t.Errorf("%d retry records after collection, want 2 (the expired one gone)", left)
	}
}

// TestAdminWaitsOutLease: `queue delete` of an entry a worker holds (as a
// deferred entry is every few seconds) waits for the lease to go and
// then deletes, instead of telling the operator "changed concurrently".
// A writer racing the admin between its read and its write is retried.
func TestAdminWaitsOutLease(t *testing.T) {
	e := startEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	enqueue := func(tag string) string {
		id, err := e.queues[0].Enqueue(ctx, "alice@local.test", "alice@local.test", tag, []string{"bob@remote.test"},
			[]byte("Subject: "+tag+"\r\n\r\nbody\r\n"), [32]byte{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	rec := records{c: e.c.Nodes[0].Cluster, kv: e.c.Nodes[0].Meta}
	lease := func(id string, d time.Duration) {
		en, old, err := rec.get(id)
		if err != nil {
			t.Fatal(err)
		}
		en.Lease = Lease{Node: "n-other", Until: time.Now().Add(d).UnixNano()}
		if _, err := rec.swap(ctx, id, old, en); err != nil {
			t.Fatal(err)
		}
	}

	leased := enqueue("leased")
	lease(leased, 700*time.Millisecond)
	start := time.Now()
	if _, err := e.admin.Do(ctx, &AdminRequest{Op: "queue delete", ID: leased}); err != nil {
		t.Fatalf("delete of a leased entry: %v", err)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Fatalf("delete returned after %s, while the lease still held", took)
	}
	if _, _, err := rec.get(leased); err == nil {
		t.Fatal("the entry is still queued after delete said it was gone")
	}

	// A writer that keeps changing the entry (a short lease taken and
	// released over and over) must not make retry fail.
	busy := enqueue("busy")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			en, old, err := rec.get(busy)
			if err != nil {
				return
			}
			en.Attempts++
			rec.swap(ctx, busy, old, en)
		}
	}()
	for i := 0; i < 5; i++ {
		if _, err := e.admin.Do(ctx, &AdminRequest{Op: "queue retry", ID: busy}); err != nil {
			t.Fatalf("retry %d beside a busy writer: %v", i, err)
		}
	}
	close(stop)
	<-done
	if _, err := e.admin.Do(ctx, &AdminRequest{Op: "queue delete", ID: busy}); err != nil {
		t.Fatalf("delete: %v", err)
	}
}
