//go:build linux

package outbound

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver/outbound"
	"hastore/mailserver/smtp"
	"hastore/testing/cluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.RemoveHastoreBinary()
	os.Exit(code)
}

// procEnv is a 3-node cluster of the real binary with submission and IMAP
// on every node, queue workers on every node, DNS of the test's own.
type procEnv struct {
	c      *cluster.Processes
	dns    *DNS
	submit []string // submission address per node
	imap   []string
	lease  time.Duration
}

func startProcEnv(t *testing.T, port string) *procEnv {
	t.Helper()
	e := &procEnv{dns: StartDNS(t), lease: 20 * time.Second}
	free := cluster.FreePorts(t, 6)
	for i := 0; i < 3; i++ {
		e.submit = append(e.submit, free[2*i])
		e.imap = append(e.imap, free[2*i+1])
	}
	e.c = cluster.StartProcesses(t, cluster.ProcOptions{Nodes: 3, NodeArgs: func(i int) []string {
		return []string{"--submission", e.submit[i], "--imap", e.imap[i], "--hostname", fmt.Sprintf("mx%d.local.test", i+1),
			"--allow-insecure-auth", "--mail-dns-server", e.dns.Addr, "--queue-smtp-port", port,
			"--queue-poll", "200ms", "--queue-lease", e.lease.String(), "--queue-retry-min", "1s", "--queue-retry-max", "2s",
			"--queue-per-domain", "20"}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.admin(t, ctx, "", "domain", "add", "local.test")
	e.admin(t, ctx, "pw-alice\n", "user", "add", "alice@local.test")
	var key outbound.DKIMPublic
	if err := json.Unmarshal([]byte(e.admin(t, ctx, "", "domain", "dkim", "create", "local.test", "--json")), &key); err != nil {
		t.Fatal(err)
	}
	e.dns.AddTXT(key.Name, key.Record)
	return e
}

// admin runs `hastore admin` with stdin, retrying while the cluster
// settles, and returns its output.
func (e *procEnv) admin(t *testing.T, ctx context.Context, stdin string, args ...string) string {
	t.Helper()
	for {
		full := append([]string{"admin", "--addr", strings.Join(e.c.Addrs, ","), "--cluster-key-file", e.c.KeyFile}, args...)
		cmd := exec.CommandContext(ctx, e.c.Bin, full...)
		cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HASTORE_CRED=")
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if err == nil {
			return out.String()
		}
		if ctx.Err() != nil || !strings.Contains(errb.String(), "navailable") {
			t.Fatalf("hastore admin %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (e *procEnv) queue(t *testing.T) []outbound.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var es []outbound.Entry
	if err := json.Unmarshal([]byte(e.admin(t, ctx, "", "queue", "list", "--json")), &es); err != nil {
		t.Fatal(err)
	}
	return es
}

// send submits msg as alice through node i.
func (e *procEnv) send(t *testing.T, i int, to []string, msg string) {
	t.Helper()
	c, err := gosmtp.Dial(e.submit[i])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice@local.test", "pw-alice")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@local.test", to, strings.NewReader(msg)); err != nil {
		t.Fatalf("submission through node %d: %v", i, err)
	}
}

// inbox returns alice's INBOX messages, read over IMAP from node i.
func (e *procEnv) inbox(t *testing.T, i int) [][]byte {
	t.Helper()
	c, err := imapclient.DialInsecure(e.imap[i], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@local.test", "pw-alice").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	var all imap.SeqSet
	all.AddRange(1, 0)
	msgs, err := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range msgs {
		if len(m.BodySection) > 0 {
			out = append(out, m.BodySection[0].Bytes)
		}
	}
	return out
}

func (e *procEnv) verifyDKIM(t *testing.T, msg []byte) {
	t.Helper()
	res := smtp.NewResolver(e.dns.Addr)
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		return res.LookupTXT(context.Background(), name)
	}})
	if err != nil {
		t.Fatalf("DKIM verification: %v", err)
	}
	if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "local.test" {
		for _, v := range vs {
			t.Logf("signature of %s: %v", v.Domain, v.Err)
		}
		t.Fatalf("want one valid DKIM signature of local.test, got %d:\n%s", len(vs), msg)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestProcOutbound runs the queue in a cluster of real processes against
// real outside parts: a DNS server serving MX records, Debian Postfix on
// 127.0.0.2 as the remote MTA for remote.test, and a sink that can hold
// transactions on 127.0.0.1 for held.test.
//
//   - A message to a Postfix user arrives once, over STARTTLS, its body
//     byte for byte, with a DKIM signature that verifies against the
//     record published in DNS; Postfix's 550 for another recipient comes
//     back as an RFC 3464 DSN in the sender's INBOX.
//   - Messages whose SMTP transactions a node holds when it is SIGKILLed
//     are delivered by the surviving nodes once its leases expire, each
//     exactly once.
func TestProcOutbound(t *testing.T) {
	pf := StartPostfix(t, "127.0.0.2", "remote.test", "bob")
	_, port, _ := net.SplitHostPort(pf.Addr)
	sink := StartSink(t, net.JoinHostPort("127.0.0.1", port))
	e := startProcEnv(t, port)
	e.dns.Add(t, "remote.test. 60 IN MX 10 mx.remote.test.")
	e.dns.Add(t, "mx.remote.test. 60 IN A 127.0.0.2")
	e.dns.Add(t, "held.test. 60 IN MX 10 mx.held.test.")
	e.dns.Add(t, "mx.held.test. 60 IN A 127.0.0.1")

	t.Run("postfix", func(t *testing.T) {
		body := "Hello Bob,\r\n.a line starting with a dot\r\n\r\n-- \r\nAlice\r\n"
		msg := "From: Alice <alice@local.test>\r\nTo: bob@remote.test\r\nSubject: to postfix\r\nDate: Wed, 02 Dec 2026 06:00:00 +0000\r\n" +
			"Message-ID: <pf1@local.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
		e.send(t, 1, []string{"bob@remote.test", "nobody@remote.test"}, msg)
		waitFor(t, "Postfix to receive the message", time.Minute, func() bool { return len(pf.Messages(t, "bob")) > 0 })
		got := pf.Messages(t, "bob")[0]
		e.verifyDKIM(t, got)
		if !bytes.HasSuffix(got, []byte("\r\n\r\n"+body)) {
			t.Errorf("body not received byte for byte:\n%q", got)
		}
		if !bytes.Contains(got, []byte("using TLS")) {
			t.Errorf("not received over STARTTLS (Postfix's Received: says no TLS):\n%s", got)
		}
		var dsn string
		waitFor(t, "the DSN in alice's INBOX", time.Minute, func() bool {
			for _, m := range e.inbox(t, 2) {
				if bytes.Contains(m, []byte("report-type=delivery-status")) {
					dsn = string(m)
					return true
				}
			}
			return false
		})
		for _, want := range []string{"Final-Recipient: rfc822; nobody@remote.test", "Status: 5.1.1", "Remote-MTA: dns; mx.remote.test",
			"Diagnostic-Code: smtp; 550 5.1.1", "Subject: to postfix"} {
			if !strings.Contains(dsn, want) {
				t.Errorf("DSN lacks %q:\n%s", want, dsn)
			}
		}
		if strings.Contains(dsn, "rfc822; bob@remote.test") {
			t.Errorf("DSN names the delivered recipient:\n%s", dsn)
		}
		waitFor(t, "the queue to drain", time.Minute, func() bool { return len(e.queue(t)) == 0 })
		if n := len(pf.Messages(t, "bob")); n != 1 {
			t.Errorf("Postfix received %d copies, want 1", n)
		}
	})

	t.Run("admin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out := e.admin(t, ctx, "", "domain", "dkim", "show", "local.test")
		if !strings.Contains(out, "hastore._domainkey.local.test. IN TXT") || !strings.Contains(out, "v=DKIM1; k=rsa; p=") {
			t.Errorf("dkim show does not print the record:\n%s", out)
		}
		if strings.Contains(out, "PRIVATE") {
			t.Errorf("dkim show prints the private key:\n%s", out)
		}
		// later@ is deferred (451) by the remote: the entry stays.
		e.send(t, 2, []string{"later@held.test"}, "From: alice@local.test\r\nTo: later@held.test\r\nSubject: deferred\r\n\r\nx\r\n")
		var id string
		waitFor(t, "the entry to be tried and deferred", time.Minute, func() bool {
			for _, en := range e.queue(t) {
				if en.Attempts > 0 {
					id = en.ID
					return true
				}
			}
			return false
		})
		show := e.admin(t, ctx, "", "queue", "show", id)
		if !strings.Contains(show, "later@held.test") || !strings.Contains(show, "451 4.2.0") {
			t.Errorf("queue show lacks the recipient or the remote's answer:\n%s", show)
		}
		list := e.admin(t, ctx, "", "queue", "list")
		if !strings.Contains(list, id) || !strings.Contains(list, "0/1") && !strings.Contains(list, "1/1") {
			t.Errorf("queue list lacks the entry:\n%s", list)
		}
		// A node may hold its lease at the moment: retry until it is free.
		deadline := time.Now().Add(30 * time.Second)
		for _, verb := range []string{"retry", "delete"} {
			for {
				full := append([]string{"admin", "--addr", strings.Join(e.c.Addrs, ","), "--cluster-key-file", e.c.KeyFile}, "queue", verb, id)
				b, err := exec.CommandContext(ctx, e.c.Bin, full...).CombinedOutput()
				if err == nil {
					break
				}
				if !strings.Contains(string(b), "being worked") || time.Now().After(deadline) {
					t.Fatalf("queue %s %s: %v\n%s", verb, id, err, b)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if es := e.queue(t); len(es) != 0 {
			t.Errorf("queue after delete: %+v", es)
		}
		if _, _, err := e.c.Admin(ctx, "queue", "show", id); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("queue show of a deleted entry: %v, want not found", err)
		}
	})

	t.Run("kill lease holder", func(t *testing.T) {
		const k = 4
		sink.Hold()
		for i := 0; i < k; i++ {
			e.send(t, 0, []string{fmt.Sprintf("u%d@held.test", i)}, fmt.Sprintf("From: alice@local.test\r\nTo: u%d@held.test\r\nSubject: held %d\r\n\r\nbody %d\r\n", i, i, i))
		}
		waitFor(t, "every message's transaction to be held at the remote", time.Minute, func() bool { return sink.Waiting() >= k })
		holders := map[string]int{}
		for _, en := range e.queue(t) {
			holders[en.Lease.Node]++
		}
		victim, most := "", 0
		for n, c := range holders {
			if n != "" && c > most {
				victim, most = n, c
			}
		}
		if victim == "" {
			t.Fatalf("no entry leased while its transaction is held: %v", holders)
		}
		t.Logf("leases: %v; SIGKILL %s holding %d", holders, victim, most)
		killed := time.Now()
		e.c.Kill(e.c.Index(victim))
		sink.Release()
		waitFor(t, "every held message to be delivered", 2*time.Minute, func() bool { return len(sink.Got()) >= k })
		t.Logf("all delivered %s after the kill (lease %s)", time.Since(killed).Round(100*time.Millisecond), e.lease)
		waitFor(t, "the queue to drain", time.Minute, func() bool { return len(e.queue(t)) == 0 })
		time.Sleep(time.Second) // anything sent twice would have arrived by now
		count := map[string]int{}
		for _, m := range sink.Got() {
			count[strings.Join(m.To, ",")]++
			e.verifyDKIM(t, m.Data)
		}
		for i := 0; i < k; i++ {
			if to := fmt.Sprintf("u%d@held.test", i); count[to] != 1 {
				t.Errorf("%s received %d times, want exactly once (all: %v)", to, count[to], count)
			}
		}
	})
}
