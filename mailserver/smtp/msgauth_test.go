package smtp_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"hastore/mailserver/smtp"
)

// testDNS serves TXT records from a map, over UDP on loopback: the
// checks' whole view of the internet.
type testDNS struct {
	addr    string
	mu      sync.Mutex
	txt     map[string][]string // lowercase FQDN without the final dot
	queries int
}

func startDNS(t *testing.T, txt map[string][]string) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &testDNS{addr: pc.LocalAddr().String(), txt: txt}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 {
			q := r.Question[0]
			name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
			z.mu.Lock()
			z.queries++
			recs, ok := z.txt[name]
			z.mu.Unlock()
			if q.Qtype == dns.TypeTXT {
				for _, s := range recs {
					var parts []string // one TXT string holds at most 255 bytes
					for len(s) > 255 {
						parts, s = append(parts, s[:255]), s[255:]
					}
					m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: append(parts, s)})
				}
			}
			if !ok {
				m.Rcode = dns.RcodeNameError
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return z
}

func signed(t *testing.T, key ed25519.PrivateKey, domain, msg string) string {
	t.Helper()
	var b bytes.Buffer
	if err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: "sel", Signer: key}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestSenderChecks: SPF, DKIM and DMARC on the MX port against a DNS
// server of the test's own; the Authentication-Results: header as stored,
// a forged one removed, and DMARC p=reject honoured where the recipient's
// domain asks for it.
func TestSenderChecks(t *testing.T) {
	e := startDelivery(t)
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	z := startDNS(t, map[string][]string{
		"remote.test":                 {"v=spf1 ip4:127.0.0.0/8 -all"},
		"sel._domainkey.remote.test":  {"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)},
		"_dmarc.remote.test":          {"v=DMARC1; p=reject"},
		"bank.test":                   {"v=spf1 ip4:192.0.2.1 -all"},
		"_dmarc.bank.test":            {"v=DMARC1; p=reject"},
		"lists.test":                  {"v=spf1 ip4:127.0.0.0/8 -all"},
		"sel._domainkey.lists.test":   {"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)},
		"_dmarc.news.lists.test":      {"v=DMARC1; p=none"},
		"soft.test":                   {"v=spf1 ~all"},
		"sel._domainkey.nokey.test":   {"v=DKIM1; k=ed25519; p="},
		"_dmarc.quarantine.test":      {"v=DMARC1; p=quarantine"},
		"sel._domainkey.unused.test.": {"v=DKIM1"},
	})
	honour := true
	var mu sync.Mutex
	srv := e.listen(t, smtp.Config{Hostname: "mx.test", Checks: &smtp.SenderChecks{
		Resolver:    smtp.NewResolver(z.addr),
		DMARCReject: func(d string) bool { mu.Lock(); defer mu.Unlock(); return honour && d == "example.test" },
	}})
	addr := srv.Addr().String()
	msg := func(from, subject, extra string) string {
		return extra + "From: " + from + "\r\nTo: bob@example.test\r\nSubject: " + subject + "\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@x>\r\n\r\nHello.\r\n"
	}
	cases := []struct {
		name, mailFrom, body string
		want                 []string // in the stored Authentication-Results field
		refused              string   // the reply's text, if refused
	}{
		{"aligned SPF and DKIM", "a@remote.test", signed(t, key, "remote.test", msg("a@remote.test", "good", "")),
			[]string{"mx.test;", "spf=pass", "smtp.mailfrom=a@remote.test", "dkim=pass", "header.d=remote.test", "dmarc=pass", "header.from=remote.test"}, ""},
		{"body changed after signing", "a@remote.test", strings.Replace(signed(t, key, "remote.test", msg("a@remote.test", "tampered", "")), "Hello.", "Hullo.", 1),
			[]string{"spf=pass", "dkim=fail", "dmarc=pass"}, ""}, // SPF aligns: DMARC still passes
		{"forged bank mail", "ceo@bank.test", msg("ceo@bank.test", "forged", ""),
			nil, "550 5.7.1 Message rejected by the DMARC policy (p=reject) of bank.test"},
		{"forged sender in the header only", "a@remote.test", msg("ceo@bank.test", "header forged", ""),
			nil, "DMARC policy (p=reject) of bank.test"},
		{"subdomain with its own policy, DKIM of the parent", "x@soft.test", signed(t, key, "lists.test", msg("n@news.lists.test", "news", "")),
			[]string{"spf=softfail", "dkim=pass", "header.d=lists.test", "dmarc=pass", "header.from=news.lists.test"}, ""},
		{"no records at all", "x@none.test", msg("x@none.test", "nothing", ""),
			[]string{"spf=none", "dkim=none", "dmarc=none"}, ""},
		{"quarantine is not refused", "x@quarantine.test", msg("x@quarantine.test", "quarantine", ""),
			[]string{"dmarc=fail"}, ""},
		{"a forged result of ours is removed", "a@remote.test", signed(t, key, "remote.test", msg("a@remote.test", "forged results", "Authentication-Results: mx.test;\r\n dmarc=pass header.from=bank.test\r\nAuthentication-Results: other.test; spf=pass\r\n")),
			[]string{"spf=pass", "dkim=pass", "dmarc=pass header.from=remote.test"}, ""},
	}
	for _, c := range cases {
		text, err := send(t, addr, c.mailFrom, []string{"bob@example.test"}, c.body)
		if c.refused != "" {
			var se *gosmtp.SMTPError
			if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(strings.TrimPrefix(c.refused, "550 "), "5.7.1 ")) {
				t.Errorf("%s: %v (%s), want refused %q", c.name, err, text, c.refused)
			} else if asSMTP(err, &se) && (se.Code != 550 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 7, 1})) {
				t.Errorf("%s: %d %v, want 550 5.7.1", c.name, se.Code, se.EnhancedCode)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		stored := e.lastBody(t, "bob@example.test")
		fields := authResults(stored)
		if len(fields) != 1 && !strings.Contains(c.name, "forged result") {
			t.Errorf("%s: %d Authentication-Results fields: %q", c.name, len(fields), fields)
			continue
		}
		got := fields[0]
		t.Logf("%s: %s", c.name, got)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: Authentication-Results %q lacks %q", c.name, got, w)
			}
		}
		if strings.Contains(c.name, "forged result") {
			if len(fields) != 2 || !strings.HasPrefix(fields[1], "Authentication-Results: other.test;") || strings.Contains(stored, "header.from=bank.test") {
				t.Errorf("%s: fields %q: ours must be first and the forged one gone, the other host's kept", c.name, fields)
			}
		}
		if !strings.HasPrefix(stored, "Return-Path: ") {
			t.Errorf("%s: stored message starts %q", c.name, stored[:min(len(stored), 40)])
		}
	}

	// A recipient domain that does not honour p=reject gets the message,
	// marked.
	mu.Lock()
	honour = false
	mu.Unlock()
	if _, err := send(t, addr, "ceo@bank.test", []string{"bob@example.test"}, msg("ceo@bank.test", "forged but kept", "")); err != nil {
		t.Fatalf("p=reject not honoured: %v", err)
	}
	if f := authResults(e.lastBody(t, "bob@example.test")); len(f) != 1 || !strings.Contains(f[0], "spf=fail") || !strings.Contains(f[0], "dmarc=fail") {
		t.Fatalf("forged but kept: %q", f)
	}

	// Unanswered DNS is a temperror, never a refusal.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0") // answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	slow := e.listen(t, smtp.Config{Hostname: "mx.test", Checks: &smtp.SenderChecks{
		Resolver: smtp.NewResolver(dead.LocalAddr().String()), Timeout: 2 * time.Second, DMARCReject: func(string) bool { return true },
	}})
	if _, err := send(t, slow.Addr().String(), "ceo@bank.test", []string{"bob@example.test"}, msg("ceo@bank.test", "no dns", "")); err != nil {
		t.Fatalf("without DNS: %v", err)
	}
	if f := authResults(e.lastBody(t, "bob@example.test")); len(f) != 1 || !strings.Contains(f[0], "spf=temperror") || !strings.Contains(f[0], "dmarc=temperror") {
		t.Fatalf("without DNS: %q", f)
	}
}

func asSMTP(err error, se **gosmtp.SMTPError) bool {
	e, ok := err.(*gosmtp.SMTPError)
	*se = e
	return ok
}

// lastBody returns the newest message of user's INBOX as stored.
func (e *deliveryEnv) lastBody(t *testing.T, user string) string {
	t.Helper()
	ms := e.inbox(t, user)
	if len(ms) == 0 {
		t.Fatalf("%s: empty INBOX", user)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := e.store.Body(ctx, ms[len(ms)-1])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// authResults returns the message's Authentication-Results fields,
// unfolded, in order.
func authResults(msg string) []string {
	hdr, _, _ := strings.Cut(msg, "\r\n\r\n")
	var out []string
	// Unfold: a field's continuation lines follow it.
	var cur *string
	for _, line := range strings.Split(hdr, "\r\n") {
		if line != "" && (line[0] == ' ' || line[0] == '\t') {
			if cur != nil {
				*cur += " " + strings.TrimSpace(line)
			}
			continue
		}
		cur = nil
		if strings.HasPrefix(strings.ToLower(line), "authentication-results:") {
			out = append(out, line)
			cur = &out[len(out)-1]
		}
	}
	return out
}
