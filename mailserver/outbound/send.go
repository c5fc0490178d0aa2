package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// result is what an attempt did for one recipient.
type result struct {
	state  string // StateSent, StateFailed, or StateQueued (try again)
	reply  string
	remote string
}

// permError / tempError are failures for a whole domain.
type deliveryError struct {
	perm   bool
	reply  string
	remote string
}

func (e *deliveryError) Error() string { return e.reply }

func permErr(remote, format string, a ...any) error {
	return &deliveryError{perm: true, reply: fmt.Sprintf(format, a...), remote: remote}
}
func tempErr(remote, format string, a ...any) error {
	return &deliveryError{reply: fmt.Sprintf(format, a...), remote: remote}
}

// resolver looks up MX and address records with github.com/miekg/dns.
type resolver struct {
	server string // host:port
	client *dns.Client
}

func newResolver(server string) (*resolver, error) {
	if server == "" {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(cc.Servers) == 0 {
			return nil, fmt.Errorf("outbound: no DNS server given and none in /etc/resolv.conf (%v): give --mail-dns-server", err)
		}
		server = net.JoinHostPort(cc.Servers[0], cc.Port)
	}
	return &resolver{server: server, client: &dns.Client{Timeout: 10 * time.Second}}, nil
}

var errNXDomain = errors.New("domain does not exist")

// query asks one question; a truncated UDP answer is asked again over TCP.
func (r *resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(4096, false)
	in, _, err := r.client.ExchangeContext(ctx, m, r.server)
	if err == nil && in.Truncated {
		tc := *r.client
		tc.Net = "tcp"
		in, _, err = tc.ExchangeContext(ctx, m, r.server)
	}
	if err != nil {
		return nil, fmt.Errorf("DNS %s %s at %s: %w", dns.TypeToString[qtype], name, r.server, err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
		return in.Answer, nil
	case dns.RcodeNameError:
		return nil, errNXDomain
	}
	return nil, fmt.Errorf("DNS %s %s at %s: %s", dns.TypeToString[qtype], name, r.server, dns.RcodeToString[in.Rcode])
}

// mxHosts returns the hosts to try for domain, best first (RFC 5321 5.1:
// MX by preference, equal ones shuffled; no MX: the domain itself).
func (r *resolver) mxHosts(ctx context.Context, domain string) ([]string, error) {
	rrs, err := r.query(ctx, domain, dns.TypeMX)
	if errors.Is(err, errNXDomain) {
		return nil, permErr("", "5.1.2 domain %s does not exist (DNS NXDOMAIN)", domain)
	}
	if err != nil {
		return nil, tempErr("", "4.4.3 %v", err)
	}
	var mxs []*dns.MX
	for _, rr := range rrs {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, mx)
		}
	}
	if len(mxs) == 0 {
		return []string{domain}, nil
	}
	if len(mxs) == 1 && mxs[0].Mx == "." {
		return nil, permErr("", "5.1.10 domain %s accepts no mail (null MX, RFC 7505)", domain)
	}
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Preference < mxs[j].Preference })
	var out []string
	for _, mx := range mxs {
		if mx.Mx != "." {
			out = append(out, strings.TrimSuffix(mx.Mx, "."))
		}
	}
	return out, nil
}

// addrs returns host's IPv4 then IPv6 addresses.
func (r *resolver) addrs(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	var ips []net.IP
	var errs []error
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, host, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range rrs {
			switch a := rr.(type) {
			case *dns.A:
				ips = append(ips, a.A)
			case *dns.AAAA:
				ips = append(ips, a.AAAA)
			}
		}
	}
	if len(ips) == 0 {
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return nil, fmt.Errorf("%s has no A or AAAA record", host)
	}
	return ips, nil
}

// sender delivers one message to the recipients of one domain.
type sender struct {
	cfg *Config
	res *resolver
}

// send delivers msg from from to rcpts (all of one domain) before ctx
// ends. It returns each recipient's result, or an error for them all.
func (s *sender) send(ctx context.Context, domain, from string, rcpts []string, msg []byte) ([]result, error) {
	type target struct{ host, addr string }
	var targets []target
	relay := s.cfg.Relay != ""
	if relay {
		host, _, err := net.SplitHostPort(s.cfg.Relay)
		if err != nil {
			return nil, tempErr("", "4.3.5 relay %q is not host:port", s.cfg.Relay)
		}
		targets = append(targets, target{host, s.cfg.Relay})
	} else {
		hosts, err := s.res.mxHosts(ctx, domain)
		if err != nil {
			return nil, err
		}
		var lastErr error
		for _, h := range hosts {
			ips, err := s.res.addrs(ctx, h)
			if err != nil {
				lastErr = err
				continue
			}
			for _, ip := range ips {
				targets = append(targets, target{h, net.JoinHostPort(ip.String(), strconv.Itoa(s.cfg.Port))})
			}
		}
		if len(targets) == 0 {
			return nil, tempErr("", "4.4.4 no address for any mail host of %s: %v", domain, lastErr)
		}
	}
	var lastErr error
	for _, t := range targets {
		res, err := s.sendTo(ctx, t.host, t.addr, from, rcpts, msg, relay)
		if err == nil {
			return res, nil
		}
		var de *deliveryError
		if errors.As(err, &de) && de.perm {
			return nil, err
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	var de *deliveryError
	if errors.As(lastErr, &de) {
		return nil, lastErr
	}
	return nil, tempErr("", "4.4.1 no mail host of %s reachable: %v", domain, lastErr)
}

// sendTo runs one SMTP transaction with the server at addr (named host).
// A connection-level failure is returned as a plain error (the next host
// is tried); a refusal as a *deliveryError.
func (s *sender) sendTo(ctx context.Context, host, addr, from string, rcpts []string, msg []byte, relay bool) ([]result, error) {
	useTLS := true
	for try := 0; try < 2; try++ {
		res, err := s.transaction(ctx, host, addr, from, rcpts, msg, relay, useTLS)
		var tlsFail *tlsError
		if errors.As(err, &tlsFail) && !relay {
			// Opportunistic: a server whose STARTTLS fails gets the
			// message in the clear, as other MTAs do (RFC 7435).
			useTLS = false
			continue
		}
		return res, err
	}
	return nil, fmt.Errorf("unreachable")
}

type tlsError struct{ err error }

func (e *tlsError) Error() string { return "STARTTLS: " + e.err.Error() }

func (s *sender) transaction(ctx context.Context, host, addr, from string, rcpts []string, msg []byte, relay, useTLS bool) ([]result, error) {
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	remote := host + " [" + addr + "]"
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: greeting: %w", remote, err)
	}
	defer c.Close()
	smtpFail := func(stage string, err error) error {
		var te *textproto.Error
		if errors.As(err, &te) {
			reply := fmt.Sprintf("after %s: %d %s", stage, te.Code, oneLine(te.Msg))
			return &deliveryError{perm: te.Code >= 500, reply: reply, remote: remote}
		}
		return fmt.Errorf("%s: %s: %w", remote, stage, err)
	}
	if err := c.Hello(s.cfg.Hostname); err != nil {
		// A refused EHLO refuses this host, not the message: the next
		// host is tried.
		return nil, fmt.Errorf("%s: EHLO: %w", remote, err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok && useTLS {
		tc := s.cfg.TLS
		switch {
		case tc != nil:
			tc = tc.Clone()
		case relay && !isLoopback(host):
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		default:
			tc = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opportunistic TLS (RFC 7435)
		}
		if tc.ServerName == "" {
			tc.ServerName = host
		}
		if err := c.StartTLS(tc); err != nil {
			return nil, &tlsError{err}
		}
	}
	if relay && s.cfg.RelayUser != "" {
		if _, tlsOn := c.TLSConnectionState(); !tlsOn && !isLoopback(host) {
			return nil, tempErr(remote, "4.7.10 relay %s offers no STARTTLS: the relay password is not sent in the clear", host)
		}
		if err := c.Auth(relayAuth{user: s.cfg.RelayUser, pass: s.cfg.RelayPassword}); err != nil {
			// Temporary whatever the relay says: a wrong password is the
			// operator's to fix, not a reason to bounce every message.
			return nil, tempErr(remote, "4.7.8 relay %s refused our AUTH (check --smtp-relay-user and its password): %v", host, err)
		}
	}
	if err := c.Mail(from); err != nil {
		return nil, smtpFail("MAIL FROM", err)
	}
	out := make([]result, len(rcpts))
	accepted := 0
	for i, r := range rcpts {
		err := c.Rcpt(r)
		if err == nil {
			out[i] = result{state: StateSent, remote: remote}
			accepted++
			continue
		}
		var de *deliveryError
		if !errors.As(smtpFail("RCPT TO", err), &de) {
			return nil, fmt.Errorf("%s: RCPT TO: %w", remote, err)
		}
		out[i] = result{state: StateQueued, reply: de.reply, remote: remote}
		if de.perm {
			out[i].state = StateFailed
		}
	}
	if accepted == 0 {
		_ = c.Quit()
		return out, nil
	}
	w, err := c.Data()
	if err != nil {
		return nil, smtpFail("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return nil, fmt.Errorf("%s: sending the message: %w", remote, err)
	}
	if err := w.Close(); err != nil {
		return nil, smtpFail("end of DATA", err)
	}
	for i := range out {
		if out[i].state == StateSent {
			out[i].reply = "250 accepted"
		}
	}
	_ = c.Quit()
	return out, nil
}

// relayAuth is AUTH PLAIN for the relay; transaction decides whether the
// connection is safe for it (net/smtp's PlainAuth would refuse a loopback
// relay addressed by IP).
type relayAuth struct{ user, pass string }

func (a relayAuth) Start(*smtp.ServerInfo) (string, []byte, error) {
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass), nil
}

func (a relayAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("unexpected server challenge")
	}
	return nil, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// withoutReturnPath drops the Return-Path: field a stored message starts
// with: it is added by the final delivery, never sent on (RFC 5321 4.4).
func withoutReturnPath(msg []byte) []byte {
	if len(msg) >= 12 && strings.EqualFold(string(msg[:12]), "Return-Path:") {
		for i := 0; i+1 < len(msg); i++ {
			if msg[i] == '\n' && msg[i+1] != ' ' && msg[i+1] != '\t' {
				return msg[i+1:]
			}
		}
	}
	return msg
}
