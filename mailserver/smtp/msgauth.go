package smtp

// Sender authentication on the MX port: SPF (RFC 7208) of the envelope
// sender, DKIM (RFC 6376) signatures, and DMARC (RFC 7489) of the header
// From:, recorded in an Authentication-Results: header (RFC 8601) and, for
// recipient domains that ask for it, a DMARC p=reject failure refused.

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/mail"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	gosmtp "github.com/emersion/go-smtp"
	"golang.org/x/net/publicsuffix"
)

// Resolver is the DNS the checks use; *net.Resolver is one (see
// NewResolver).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// NewResolver returns a resolver that asks the DNS server at addr
// (host:port) only, over UDP (TCP for truncated answers); "" returns the
// system's.
func NewResolver(addr string) *net.Resolver {
	if addr == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

// SenderChecks configures the checks of an MX listener.
type SenderChecks struct {
	Resolver Resolver // nil: the system's
	// DMARCReject reports whether mail to a local domain honours a
	// sender's DMARC p=reject: a message failing DMARC under such a
	// policy is refused (550 5.7.1) when every recipient's domain says
	// so. nil: never refused, only recorded.
	DMARCReject func(domain string) bool
	// Timeout bounds all the DNS work for one message (default 20 s);
	// what is not answered by then is a temperror, which never refuses.
	Timeout time.Duration
}

// authResult is what the checks found for one message.
type authResult struct {
	header     string // the Authentication-Results: field, CRLF-terminated
	dmarc      authres.ResultValue
	policy     dmarc.Policy
	fromDomain string
}

// check runs SPF, DKIM and DMARC for a message (header and body as
// received) from ip, which said helo and MAIL FROM:<from>.
func (c *SenderChecks) check(ctx context.Context, host string, ip net.IP, helo, from string, msg []byte) authResult {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var r Resolver = net.DefaultResolver
	if c.Resolver != nil {
		r = c.Resolver
	}
	var results []authres.Result

	// SPF: of MAIL FROM's domain, or of HELO's for the null sender.
	sender := from
	if sender == "" {
		sender = "postmaster@" + helo
	}
	spfDomain := domainOf(sender)
	spfRes, _ := spf.CheckHostWithSender(ip, helo, sender, spf.WithResolver(r), spf.WithContext(ctx))
	results = append(results, &authres.SPFResult{Value: authres.ResultValue(spfRes), From: sender})

	// DKIM: every signature, at most five.
	lookup := func(name string) ([]string, error) { return r.LookupTXT(ctx, name) }
	var dkimPass []string
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookup, MaxVerifications: 5})
	switch {
	case err != nil && !errors.Is(err, dkim.ErrTooManySignatures):
		results = append(results, &authres.DKIMResult{Value: authres.ResultPermError, Reason: "unparsable message"})
	case len(vs) == 0:
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, v := range vs {
		val := authres.ResultValue(authres.ResultPass)
		switch {
		case v.Err == nil:
			dkimPass = append(dkimPass, strings.ToLower(v.Domain))
		case dkim.IsTempFail(v.Err):
			val = authres.ResultTempError
		case dkim.IsPermFail(v.Err):
			val = authres.ResultPermError
		default:
			val = authres.ResultFail
		}
		results = append(results, &authres.DKIMResult{Value: val, Domain: v.Domain, Identifier: v.Identifier})
	}

	// DMARC: of the header From:'s domain.
	out := authResult{dmarc: authres.ResultNone}
	fromDomain, ok := headerFromDomain(msg)
	if !ok {
		results = append(results, &authres.DMARCResult{Value: authres.ResultPermError, Reason: "no single From: address"})
		out.dmarc = authres.ResultPermError
	} else {
		out.fromDomain = fromDomain
		out.dmarc, out.policy = evalDMARC(fromDomain, spfRes == spf.Pass, spfDomain, dkimPass, lookup)
		results = append(results, &authres.DMARCResult{Value: out.dmarc, From: fromDomain})
	}
	out.header = "Authentication-Results: " + authres.Format(host, results) + "\r\n"
	return out
}

// evalDMARC looks up fromDomain's policy (or its organizational domain's)
// and says whether an aligned SPF or DKIM pass satisfies it.
func evalDMARC(fromDomain string, spfPass bool, spfDomain string, dkimPass []string, lookup func(string) ([]string, error)) (authres.ResultValue, dmarc.Policy) {
	org := orgDomain(fromDomain)
	opts := &dmarc.LookupOptions{LookupTXT: lookup}
	rec, err := dmarc.LookupWithOptions(fromDomain, opts)
	sub := false
	if errors.Is(err, dmarc.ErrNoPolicy) && org != fromDomain {
		rec, err = dmarc.LookupWithOptions(org, opts)
		sub = true
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		return authres.ResultNone, ""
	case dmarc.IsTempFail(err):
		return authres.ResultTempError, ""
	case err != nil:
		return authres.ResultPermError, ""
	}
	policy := rec.Policy
	if sub && rec.SubdomainPolicy != "" {
		policy = rec.SubdomainPolicy
	}
	aligned := func(d string, mode dmarc.AlignmentMode) bool {
		if mode == dmarc.AlignmentStrict {
			return d == fromDomain
		}
		return orgDomain(d) == org
	}
	if spfPass && aligned(spfDomain, rec.SPFAlignment) {
		return authres.ResultPass, policy
	}
	for _, d := range dkimPass {
		if aligned(d, rec.DKIMAlignment) {
			return authres.ResultPass, policy
		}
	}
	return authres.ResultFail, policy
}

// orgDomain is a domain's organizational domain (public suffix + 1).
func orgDomain(d string) string {
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return strings.ToLower(addr)
}

// headerFromDomain returns the domain of the message's only From:
// address.
func headerFromDomain(msg []byte) (string, bool) {
	m, err := mail.ReadMessage(bytes.NewReader(headerOf(msg)))
	if err != nil {
		return "", false
	}
	if len(m.Header["From"]) != 1 {
		return "", false
	}
	list, err := m.Header.AddressList("From")
	if err != nil || len(list) != 1 {
		return "", false
	}
	d := domainOf(list[0].Address)
	return d, d != ""
}

// headerOf returns msg's header section with its blank line.
func headerOf(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+4]
	}
	if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		return msg[:i+2]
	}
	return msg
}

// withAuthResults returns msg (trace fields first, traceLen bytes) with
// field inserted after the trace fields, and without any
// Authentication-Results: field the sender put there in host's name (RFC
// 8601 5: a receiver removes those; they would be forged).
func withAuthResults(msg []byte, traceLen int, host, field string) []byte {
	rest := msg[traceLen:]
	hdr := headerOf(rest)
	out := make([]byte, 0, len(msg)+len(field))
	out = append(out, msg[:traceLen]...)
	out = append(out, field...)
	// Walk the header fields, each with its continuation lines.
	for len(hdr) > 0 {
		end := 0
		for {
			i := bytes.IndexByte(hdr[end:], '\n')
			if i < 0 {
				end = len(hdr)
				break
			}
			end += i + 1
			if end >= len(hdr) || (hdr[end] != ' ' && hdr[end] != '\t') {
				break
			}
		}
		f := hdr[:end]
		hdr = hdr[end:]
		if forgedAuthResults(f, host) {
			continue
		}
		out = append(out, f...)
	}
	return append(out, rest[len(headerOf(rest)):]...)
}

func forgedAuthResults(f []byte, host string) bool {
	name, val, ok := bytes.Cut(f, []byte(":"))
	if !ok || !strings.EqualFold(string(bytes.TrimSpace(name)), "Authentication-Results") {
		return false
	}
	v := strings.TrimSpace(string(val))
	id, _, _ := strings.Cut(v, ";")
	id = strings.TrimSpace(id)
	if i := strings.IndexAny(id, " \t\r\n("); i >= 0 {
		id = id[:i] // authserv-id, then an optional version
	}
	return strings.EqualFold(id, host)
}

var errDMARCReject = &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}}

// dmarcRefusal is the reply for a message refused by its sender's DMARC
// policy.
func dmarcRefusal(domain string) error {
	e := *errDMARCReject
	e.Message = "Message rejected by the DMARC policy (p=reject) of " + domain
	return &e
}
