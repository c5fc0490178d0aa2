// Package outbound holds the outside world of hastore's outbound mail
// tests: a DNS server and a "remote" MTA of the test's own on loopback,
// and the multi-process test of the queue (outbound_proc_test.go).
package outbound

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/miekg/dns"
)

// DNS is a DNS server on a loopback UDP port answering from the records
// added to it (names it has none for: NXDOMAIN).
type DNS struct {
	Addr string
	mu   sync.Mutex
	rrs  []dns.RR
}

// StartDNS starts a DNS server stopped when the test ends.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{Addr: pc.LocalAddr().String()}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve)}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return d
}

// Add adds a record in zone-file syntax ("remote.test. 60 IN MX 10 mx.remote.test.").
func (d *DNS) Add(t testing.TB, rr string) {
	t.Helper()
	r, err := dns.NewRR(rr)
	if err != nil {
		t.Fatalf("record %q: %v", rr, err)
	}
	d.AddRR(r)
}

// AddRR adds a record.
func (d *DNS) AddRR(rr dns.RR) {
	d.mu.Lock()
	d.rrs = append(d.rrs, rr)
	d.mu.Unlock()
}

// AddTXT adds a TXT record of value, split in strings of 255 bytes as a
// DKIM key needs.
func (d *DNS) AddTXT(name, value string) {
	var chunks []string
	for len(value) > 0 {
		n := min(len(value), 255)
		chunks = append(chunks, value[:n])
		value = value[n:]
	}
	d.AddRR(&dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: chunks})
}

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	d.mu.Lock()
	known := false
	for _, rr := range d.rrs {
		h := rr.Header()
		if strings.EqualFold(h.Name, q.Name) {
			known = true
			if h.Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	d.mu.Unlock()
	if !known {
		m.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(m)
}

// Sink is the "remote" MTA: a go-smtp server keeping every message it
// answered 250 to. RCPT TO nobody@… is refused for good (550 5.1.1),
// later@… for now (451 4.2.0). While held (Hold), MAIL FROM waits.
type Sink struct {
	Addr string
	// user and pass, if set, are required with AUTH PLAIN before MAIL.
	user, pass string
	mu         sync.Mutex
	msgs       []Message
	held       chan struct{} // closed: not held
	wait       int           // sessions waiting in MAIL FROM
}

// Message is one message received.
type Message struct {
	From string
	To   []string
	Data []byte
}

// StartSink starts a sink listening on addr ("127.0.0.1:0": any port),
// stopped when the test ends.
func StartSink(t testing.TB, addr string) *Sink { return StartSinkAuth(t, addr, "", "") }

// StartSinkAuth is StartSink for a relay: clients must AUTH PLAIN as user
// with pass (offered without TLS: tests only).
func StartSinkAuth(t testing.TB, addr, user, pass string) *Sink {
	t.Helper()
	s := &Sink{held: make(chan struct{}), user: user, pass: pass}
	close(s.held)
	srv := gosmtp.NewServer(s)
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		s.Release()
		srv.Close()
	})
	return s
}

// Got returns the messages received so far.
func (s *Sink) Got() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Hold makes MAIL FROM wait until Release.
func (s *Sink) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.held:
		s.held = make(chan struct{})
	default:
	}
}

// Release lets held sessions go on.
func (s *Sink) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.held:
	default:
		close(s.held)
	}
}

// Waiting returns how many sessions wait in MAIL FROM.
func (s *Sink) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wait
}

// NewSession implements gosmtp.Backend.
func (s *Sink) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	if s.user != "" {
		return &authSinkSession{sinkSession{s: s}}, nil
	}
	return &sinkSession{s: s}, nil
}

type sinkSession struct {
	s      *Sink
	from   string
	to     []string
	authed bool
}

type authSinkSession struct{ sinkSession }

func (ss *authSinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *authSinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != ss.s.user || pass != ss.s.pass {
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *sinkSession) Mail(from string, _ *gosmtp.MailOptions) error {
	if ss.s.user != "" && !ss.authed {
		return &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	ss.s.mu.Lock()
	held := ss.s.held
	ss.s.wait++
	ss.s.mu.Unlock()
	<-held
	ss.s.mu.Lock()
	ss.s.wait--
	ss.s.mu.Unlock()
	ss.from = from
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	switch {
	case strings.HasPrefix(to, "nobody@"):
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
	case strings.HasPrefix(to, "later@"):
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 2, 0}, Message: "try later"}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, Message{ss.from, ss.to, b})
	ss.s.mu.Unlock()
	return nil
}

func (ss *sinkSession) Reset()        { ss.to = nil }
func (ss *sinkSession) Logout() error { return nil }
