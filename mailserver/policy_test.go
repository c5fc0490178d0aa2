package mailserver_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/smtp"
)

// serveTXT answers TXT queries from txt (lowercase names without the final
// dot) on a loopback UDP port, NXDOMAIN for other names.
func serveTXT(t *testing.T, txt map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 {
			q := r.Question[0]
			v, ok := txt[strings.TrimSuffix(strings.ToLower(q.Name), ".")]
			if ok && q.Qtype == dns.TypeTXT {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{v}})
			}
			if !ok {
				m.Rcode = dns.RcodeNameError
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestDomainDMARCPolicy: a domain's DMARC policy, set through the admin
// service, holds on every node's MX and beats the node's default; it goes
// with its domain.
func TestDomainDMARCPolicy(t *testing.T) {
	dnsAddr := serveTXT(t, map[string]string{
		"bank.test":        "v=spf1 ip4:192.0.2.1 -all",
		"_dmarc.bank.test": "v=DMARC1; p=reject",
	})
	// The nodes' default: honour p=reject for other.test only.
	e := startRouteEnvWith(t, mailbox.Options{}, smtp.Config{Checks: &smtp.SenderChecks{
		Resolver: smtp.NewResolver(dnsAddr), DMARCReject: func(d string) bool { return d == "other.test" }}})
	e.setup(t)
	forged := func(i int, to, subject string) string {
		t.Helper()
		r := e.run(t, session{Port: e.mx(i), Messages: []message{{From: "ceo@bank.test", To: []string{to},
			Data: "From: ceo@bank.test\r\nSubject: " + subject + "\r\n\r\nPay now.\r\n"}}})
		m := r.Messages[0]
		if len(m.Data) != 1 {
			t.Fatalf("%s: rcpt %v, data %v", subject, m.Rcpt, m.Data)
		}
		return strings.Join(strings.Fields(m.Data[0].Text)[:1], "") + " " + string(rune('0'+m.Data[0].Code/100))
	}
	policy := func(domain, set, want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		got, err := e.env.admin.DomainPolicy(ctx, domain, set)
		if err != nil || got != want {
			t.Fatalf("policy %s %q = %q, %v; want %q", domain, set, got, err, want)
		}
	}
	policy("example.test", "", "default")
	if got := forged(0, alice, "default example"); got != "2.0.0 2" {
		t.Errorf("example.test by default: %s", got)
	}
	if got := forged(1, carol, "default other"); got != "5.7.1 5" {
		t.Errorf("other.test by default: %s", got)
	}
	policy("example.test", "reject", "reject")
	policy("other.test", "none", "none")
	for i := range 3 {
		if got := forged(i, alice, "reject example"); got != "5.7.1 5" {
			t.Errorf("node %d, example.test with reject: %s", i, got)
		}
		if got := forged(i, carol, "none other"); got != "2.0.0 2" {
			t.Errorf("node %d, other.test with none: %s", i, got)
		}
	}
	policy("example.test", "default", "default")
	if got := forged(2, alice, "default again"); got != "2.0.0 2" {
		t.Errorf("example.test back to default: %s", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.env.admin.DomainPolicy(ctx, "example.test", "sometimes"); err == nil {
		t.Error("policy sometimes accepted")
	}
	if _, err := e.env.admin.DomainPolicy(ctx, "nowhere.test", "reject"); err == nil || !strings.Contains(err.Error(), "not local") {
		t.Errorf("policy of a non-local domain: %v", err)
	}
	// A deleted domain's policy goes with it.
	e.admin(t, "third.test", func(ctx context.Context) error { return e.env.admin.AddDomain(ctx, "third.test") })
	policy("third.test", "reject", "reject")
	e.admin(t, "del third.test", func(ctx context.Context) error { return e.env.admin.DelDomain(ctx, "third.test") })
	e.admin(t, "third.test again", func(ctx context.Context) error { return e.env.admin.AddDomain(ctx, "third.test") })
	policy("third.test", "", "default")
}
