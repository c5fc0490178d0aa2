package smtp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-msgauth/dmarc"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// Replies. Each names the enhanced status code (RFC 3463) the issue asks
// for; go-smtp prints them with ENHANCEDSTATUSCODES.
var (
	errAuthRequired = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errAuthInvalid  = &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errAuthThrottle = &gosmtp.SMTPError{Code: 454, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Too many failed logins, try again later"}
	errAuthTemp     = &gosmtp.SMTPError{Code: 454, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure, try again later"}
	errBadAddress   = &gosmtp.SMTPError{Code: 501, EnhancedCode: gosmtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
	errRelayDenied  = &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied"}
	errNoRemote     = &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Delivery to remote domains is not supported yet; only local recipients are accepted"}
	errNoForward    = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "This server cannot forward to this address's remote targets now, try another MX or later"}
	errNoUser       = &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	errDisabled     = &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 2, 1}, Message: "Mailbox disabled"}
	errQuotaTemp    = &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full, try again later"}
	errQuotaPerm    = &gosmtp.SMTPError{Code: 552, EnhancedCode: gosmtp.EnhancedCode{5, 2, 2}, Message: "Mailbox full: the message exceeds the recipient's quota"}
	errBusy         = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "Too busy, try again later"}
	errTempFail     = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Temporary storage failure, try again later"}
	errStorageFull  = &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage, try again later"}
	errBusyNet      = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Too many messages in progress from your network, try again later"}
	errFanOut       = &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 3, 5}, Message: "Alias expands to too many recipients; the postmaster must fix it"}
	errTooManyRcpt  = &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients; send the rest in another message"}
	// errClosed is returned after the session answered 421 and closed the
	// connection itself; go-smtp's attempt to write it fails.
	errClosed = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: "Closing connection"}
)

// smtpErr maps a mailbox error to its reply.
func smtpErr(err error) error {
	var qe *mailbox.QuotaError
	var re *mailbox.SieveRejectError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &re):
		return sieveReply(re)
	case errors.As(err, &qe):
		if qe.Permanent() {
			return errQuotaPerm
		}
		return errQuotaTemp
	case errors.Is(err, mailbox.ErrOverQuota):
		return errQuotaTemp
	case errors.Is(err, mailbox.ErrNotFound):
		return errNoUser
	case errors.Is(err, mailbox.ErrDisabled):
		return errDisabled
	case errors.Is(err, mailbox.ErrFanOut):
		return errFanOut
	}
	return errTempFail
}

func (s *Server) newSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	sess := &session{srv: s, conn: c}
	sess.cc, _ = c.Conn().(*countedConn) // before STARTTLS wraps it
	if t, ok := c.Conn().RemoteAddr().(*net.TCPAddr); ok {
		sess.remote = t.IP
	}
	if s.cfg.Mode == Submission {
		return &authSession{sess}, nil
	}
	return sess, nil
}

type rcpt struct {
	raw     string // as given to RCPT, for LMTP statuses
	addr    string // normalized
	targets []mailbox.Target
	remote  bool     // in no local domain: goes to Config.Outbound
	forward []string // its alias's targets in other domains: go to Config.Outbound
}

// Outbound queues submitted mail for remote recipients
// (mailserver/outbound): when Enqueue returns nil the message and its
// queue entry are durable like a delivery. With a window > 0, the same
// retryKey (what the client sent), sender and recipients enqueued again
// within it is the client retrying after a lost reply: Enqueue returns the
// first entry's ID and queues nothing.
type Outbound interface {
	Enqueue(ctx context.Context, from, user, msgID string, rcpts []string, msg []byte, retryKey [32]byte, window time.Duration) (id string, err error)
}

type session struct {
	srv    *Server
	conn   *gosmtp.Conn
	remote net.IP
	cc     *countedConn
	user   string // authenticated address (submission)

	unknown int // RCPTs naming no local user

	from  string
	size  int64 // declared with MAIL FROM SIZE=, 0 if not
	rcpts []rcpt
	// msgID names the message being received: in its Received: header,
	// the 250 reply ("stored as …") and every log line about it, so that
	// a message is traced from its headers or the sender's log to ours.
	msgID string
}

func (s *session) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.srv.cfg.CommitTimeout)
}

func (s *session) Reset() {
	s.from, s.size, s.rcpts = "", 0, nil
}

// closeWith answers 421 with text and closes the connection, for a client
// that must not go on (it may be in the middle of sending DATA, so a reply
// through go-smtp would be followed by more of its bytes read as commands).
func (s *session) closeWith(enhanced, text string) {
	c := s.conn.Conn()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = fmt.Fprintf(c, "421 %s %s %s\r\n", enhanced, s.srv.cfg.Hostname, text)
	_ = s.conn.Close()
}

func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	switch {
	case s.srv.cfg.Mode == Submission:
		if s.user == "" {
			return errAuthRequired
		}
		if from != "" && !owns(s.user, from) {
			s.srv.log.Info("sender not owned by the authenticated user", "user", s.user, "from", from, "remote", s.remote)
			return senderNotOwn(from)
		}
	case s.srv.cfg.Mode == MX && from != "" && s.user == "" && !s.srv.cfg.AllowLocalSenders:
		// Local users send through submission: a local envelope sender
		// on port 25 without AUTH is forged (or a forwarder keeping it:
		// Config.AllowLocalSenders). The null sender (bounces) passes.
		// Judged on the node's applied view, without a catch-up: most
		// senders here are remote, and a Raft round for each MAIL FROM
		// would cost every message (and fail it without a quorum); a
		// domain added a moment ago may pass once.
		if i := strings.LastIndexByte(from, '@'); i >= 0 {
			local := false
			if d, err := mailbox.NormalizeDomain(from[i+1:]); err == nil {
				_, ok, err := s.srv.store.View().Domain(d)
				if err != nil {
					s.srv.log.Warn("reading the mail domains failed", "err", err, "remote", s.remote)
					return errTempFail
				}
				local = ok
			}
			if local {
				s.srv.log.Info("local sender without authentication refused", "from", from, "remote", s.remote)
				return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1},
					Message: "<" + sanitize(from) + ">: sender address is local; send through submission (port 587) with authentication"}
			}
		}
	}
	s.Reset()
	if s.cc != nil {
		s.cc.startTxn()
	}
	s.from = from
	if opts != nil {
		s.size = opts.Size
	}
	return nil
}

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	if s.srv.cfg.Mode == Submission && s.user == "" {
		return errAuthRequired
	}
	addr := strings.ToLower(to)
	if mailstate.ValidMailAddress(addr) != nil {
		return errBadAddress
	}
	if s.srv.unknown.over(ipKey(s.remote.String()), time.Now()) {
		// Enumerating addresses from several connections: no more answers.
		s.srv.log.Warn("recipient enumeration: closing", "remote", s.remote, "unknown", s.unknown)
		s.closeWith("4.7.0", "Too many unknown recipients from your address, try again later")
		return errClosed
	}
	_, domain, _ := strings.Cut(addr, "@")
	ctx, cancel := s.ctx()
	defer cancel()
	local, err := s.srv.store.IsLocalDomain(ctx, domain)
	if err != nil {
		return errTempFail
	}
	if !local {
		if s.srv.cfg.Mode == Submission {
			if s.srv.cfg.Outbound == nil {
				return errNoRemote
			}
			// Queued for the remote domain's MX at DATA (Config.Outbound).
			s.rcpts = append(s.rcpts, rcpt{raw: to, addr: addr, remote: true})
			return nil
		}
		s.srv.log.Info("relay denied", "remote", s.remote, "from", s.from, "to", to)
		return errRelayDenied
	}
	rt, err := s.srv.store.Resolve(ctx, addr, s.size)
	if err != nil {
		if errors.Is(err, mailbox.ErrFanOut) {
			s.srv.log.Warn("alias expands too widely: recipient refused; fix the alias", "to", addr, "err", err, "remote", s.remote)
		}
		if errors.Is(err, mailbox.ErrNotFound) {
			s.unknown++
			overIP := s.srv.unknown.add(ipKey(s.remote.String()), time.Now())
			if max := s.srv.cfg.MaxUnknownRecipients; overIP || max > 0 && s.unknown >= max {
				s.srv.log.Warn("recipient enumeration: closing", "remote", s.remote, "unknown", s.unknown, "address_limit", overIP)
				s.closeWith("4.7.0", "Too many unknown recipients, closing connection")
				return errClosed
			}
		}
		return smtpErr(err)
	}
	for _, d := range rt.Dropped {
		s.srv.log.Info("alias target cannot take the message; delivering to the others", "to", addr, "target", d.User, "why", d.Err, "remote", s.remote)
	}
	if len(rt.Remote) > 0 && s.srv.cfg.Outbound == nil {
		s.srv.log.Warn("alias forwards to remote addresses but this node has no outbound queue: recipient deferred", "to", addr, "forwards", len(rt.Remote), "remote", s.remote)
		return errNoForward
	}
	if n := len(s.targets(append(s.rcpts, rcpt{targets: rt.Targets}))); n > mailstate.MaxMailEntries {
		return errTooManyRcpt
	}
	s.rcpts = append(s.rcpts, rcpt{raw: to, addr: addr, targets: rt.Targets, forward: rt.Remote})
	return nil
}

// targets returns the mailboxes of rcpts without duplicates, in order: a
// user reached by two recipients (or by an alias and directly) gets one
// copy per mailbox.
func (s *session) targets(rcpts []rcpt) []mailbox.Target {
	seen := map[mailbox.Target]bool{}
	var out []mailbox.Target
	for _, r := range rcpts {
		for _, t := range r.targets {
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	return out
}

// Data delivers to every recipient or to none: an SMTP client gets one
// reply for the whole message. A single recipient's rejection is answered
// as it is (452 4.2.2, 552 5.2.2, ...). With several recipients, one
// refused only now (quota used up since RCPT by another delivery) fails the
// message temporarily for all, so none is bounced or gets it twice; the
// client's retry is judged per recipient at RCPT again.
func (s *session) Data(r io.Reader) error {
	in := s.fastData(r)
	defer in.finish()
	outs, _, err := s.deliver(in, true)
	if err != nil {
		return err
	}
	var errs []error
	aborted := false
	for _, o := range outs {
		switch {
		case errors.Is(o.Err, mailbox.ErrAborted):
			aborted = true
		case errors.Is(o.Err, mailbox.ErrSieveReject) && anyStored(outs):
			// One reply for all: the others have it, so it is not refused.
			s.srv.log.Info("sieve reject not answered: other recipients took the message", "err", o.Err, "msgid", s.msgID)
		case o.Err != nil:
			errs = append(errs, outcomeReply(o))
		}
	}
	switch {
	case len(errs) == 0:
	case !aborted:
		return errs[0] // every recipient refused it: say why
	case errors.Is(errs[0], errQuotaTemp) || errors.Is(errs[0], errQuotaPerm):
		// Some recipients would have taken it: fail temporarily so they
		// are not bounced; the retry refuses the full mailbox at RCPT.
		return errQuotaTemp
	default:
		return errTempFail
	}
	return stored(s.msgID)
}

// stored is the reply for a message stored durably in the mailboxes; id
// is the one in its Received: header and in our log lines about it.
func stored(id string) error {
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: "OK: stored as " + id}
}

// outcomeReply is the reply for one target's failed outcome. A
// subaddress folder deleted since RCPT is a temporary failure: the retry
// resolves to INBOX.
func outcomeReply(o mailbox.Outcome) error {
	if o.Code == mailstate.MailNoMailbox {
		return errTempFail
	}
	return smtpErr(o.Err)
}

// LMTPData delivers to each recipient on its own and reports each status.
// A recipient standing for several mailboxes (an alias) is answered 250 if
// any took the message and none failed temporarily (those refusing it for
// good are dropped, as at RCPT); a temporary failure is answered as such,
// and the retry stores nothing twice where it landed already (the retry
// memory, when on).
func (s *session) LMTPData(r io.Reader, status gosmtp.StatusCollector) error {
	in := s.fastData(r)
	defer in.finish()
	outs, _, err := s.deliver(in, false)
	if err != nil {
		return err // the status of every recipient
	}
	byTarget := map[mailbox.Target]mailbox.Outcome{}
	for i, t := range s.targets(s.rcpts) {
		byTarget[t] = outs[i]
	}
	for _, rc := range s.rcpts {
		var first, temp error
		// Forwards were queued (deliver failed otherwise): they count as
		// taken, like a mailbox that took it.
		ok := len(rc.forward) > 0
		for _, t := range rc.targets {
			o := byTarget[t]
			if o.Err == nil {
				ok = true
				continue
			}
			e := outcomeReply(o)
			if first == nil {
				first = e
			}
			if se, isSMTP := e.(*gosmtp.SMTPError); isSMTP && se.Code/100 == 4 && temp == nil {
				temp = e
			}
		}
		switch {
		case temp != nil:
			status.SetStatus(rc.raw, temp)
		case ok:
			status.SetStatus(rc.raw, stored(s.msgID))
		default:
			status.SetStatus(rc.raw, first)
		}
	}
	return nil
}

// unique returns the recipients' addresses without duplicates, in order.
func (s *session) unique() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range s.rcpts {
		if !seen[r.addr] {
			seen[r.addr] = true
			out = append(out, r.addr)
		}
	}
	return out
}

// deliver reads the message, stores it and commits one entry per distinct
// recipient.
func (s *session) deliver(r io.Reader, allOrNothing bool) ([]mailbox.Outcome, *mailbox.Delivery, error) {
	start := time.Now()
	cfg := &s.srv.cfg
	if s.cc != nil {
		s.cc.inData(true)
		defer s.cc.inData(false)
	}
	netw := netKey(s.remote, 24, 64)
	if !s.srv.dataSlot(netw) {
		s.srv.log.Warn("too many messages in progress from one network", "network", netw, "remote", s.remote)
		return nil, nil, s.refuse(r, errBusyNet)
	}
	defer s.srv.releaseDataSlot(netw)
	wait := time.NewTimer(cfg.CommitTimeout)
	select {
	case s.srv.data <- struct{}{}:
		wait.Stop()
		defer func() { <-s.srv.data }()
	case <-wait.C:
		return nil, nil, s.refuse(r, errBusy)
	}
	if len(s.rcpts) == 0 {
		return nil, nil, s.refuse(r, errNoUser)
	}
	rcpts := s.unique()
	trace := s.traceHeaders(rcpts)
	sp := newSpool(cfg.Memory, cfg.Spool, cfg.SpoolDir, cfg.MessageInMemory, trace, s.from)
	defer sp.close()
	if err := s.receive(r, sp); err != nil {
		return nil, nil, err
	}
	if cfg.Mode == Submission {
		if err := s.checkHeaderFrom(sp); err != nil {
			return nil, nil, err
		}
	}
	ctx, cancel := s.ctx() // storing only: a slow sender does not eat into it
	defer func() { cancel() }()
	msg, err := sp.message(ctx)
	if err != nil {
		s.srv.log.Warn("no memory to store a message in time", "size", sp.size, "err", err, "remote", s.remote, "msgid", s.msgID)
		return nil, nil, errBusy
	}
	spooled := msg
	var auth string
	if cfg.Mode == MX && cfg.Checks != nil {
		ar := cfg.Checks.check(ctx, cfg.Hostname, s.remote, s.conn.Hostname(), s.from, msg[len(trace):])
		auth = string(ar.dmarc)
		if ar.dmarc == "fail" && ar.policy == dmarc.PolicyReject && cfg.Checks.DMARCReject != nil && s.allDomains(cfg.Checks.DMARCReject) {
			s.srv.log.Info("message refused: DMARC p=reject failed", "from", s.from, "header_from_domain", ar.fromDomain, "results", strings.TrimSpace(ar.header), "remote", s.remote)
			return nil, nil, dmarcRefusal(ar.fromDomain)
		}
		msg = withAuthResults(msg, len(trace), cfg.Hostname, ar.header)
	}
	junk := false
	if m := cfg.Milter; m != nil && (cfg.Mode != Submission || m.Submission) {
		v := s.milter(ctx, m, rcpts, msg)
		if v.reply != nil || v.discard {
			return nil, nil, v.reply
		}
		msg, junk = v.msg, v.junk
		cancel()
		ctx, cancel = s.ctx() // the milters' time is not the store's
	}
	// Remote recipients of submission and alias forwards: one queue
	// entry, with the original envelope sender.
	var remote []string
	inRemote := map[string]bool{}
	for _, r := range s.rcpts {
		add := r.forward
		if r.remote {
			add = []string{r.addr}
		}
		for _, a := range add {
			if !inRemote[a] {
				inRemote[a] = true
				remote = append(remote, a)
			}
		}
	}
	if len(remote) > 0 && len(s.targets(s.rcpts)) == 0 {
		return nil, nil, s.enqueue(ctx, remote, msg, sp.Digest(), start)
	}
	d := s.srv.store.NewDelivery()
	d.FilterWithSieve(s.sieveEnvelope())
	for _, t := range s.targets(s.rcpts) {
		if junk {
			if t.Mailbox, err = s.srv.store.JunkMailbox(ctx, t.User); err != nil {
				s.srv.log.Warn("finding or creating the Junk mailbox failed", "user", t.User, "err", err, "remote", s.remote, "msgid", s.msgID)
				return nil, nil, errTempFail
			}
		}
		if err := d.AddRecipient(mailbox.Recipient{Address: t.User, Mailbox: t.Mailbox}); err != nil {
			return nil, nil, errBadAddress
		}
	}
	if cfg.RetryWindow > 0 {
		d.SetRetryKey(sp.Digest(), cfg.RetryWindow)
	}
	if len(msg) > 0 && len(msg) == len(spooled) && &msg[0] == &spooled[0] {
		// The spool made every line end CRLF already: Body need not
		// scan the message again. (Milters and Authentication-Results
		// make new bytes, which Body normalizes.)
		d.StoreAsGiven()
	}
	if err := d.Body(ctx, msg, time.Time{}); err != nil {
		s.srv.log.Warn("storing a message failed", "err", err, "remote", s.remote, "msgid", s.msgID)
		return nil, nil, errTempFail
	}
	outs, err := d.Commit(ctx, allOrNothing)
	if err != nil {
		d.Abort(ctx)
		s.srv.log.Warn("committing a delivery failed", "err", err, "remote", s.remote, "msgid", s.msgID)
		return nil, nil, errTempFail
	}
	delivered, retries := 0, 0
	for _, o := range outs {
		if o.Err == nil {
			delivered++
		}
		if o.Retry {
			retries++
		}
	}
	s.srv.log.Info("delivered", "from", s.from, "recipients", len(rcpts), "mailboxes", len(outs), "delivered", delivered, "retries", retries, "size", d.Size(),
		"msgid", s.msgID, "object", d.Object().String(), "user", s.user, "dmarc", auth, "remote", s.remote, "took", time.Since(start).Round(time.Millisecond), "junk", junk)
	if len(remote) > 0 && (delivered > 0 || !allOrNothing) {
		// After the local copies: a failure here is answered 451, and
		// the client's retry stores nothing twice locally (RetryWindow).
		// Over SMTP only if some mailbox took it (one reply for all: a
		// message refused is not sent on either); over LMTP the
		// recipients with forwards are answered for them.
		if err := s.enqueue(ctx, remote, msg, sp.Digest(), start); err != nil {
			return nil, nil, err
		}
	}
	return outs, d, nil
}

// enqueue queues msg for the remote recipients.
func (s *session) enqueue(ctx context.Context, remote []string, msg []byte, digest [32]byte, start time.Time) error {
	id, err := s.srv.cfg.Outbound.Enqueue(ctx, s.from, s.user, s.msgID, remote, msg, digest, max(s.srv.cfg.RetryWindow, 0))
	if err != nil {
		s.srv.log.Warn("queueing a message for remote recipients failed", "err", err, "remote", s.remote, "msgid", s.msgID)
		return errTempFail
	}
	s.srv.log.Info("queued for remote delivery", "from", s.from, "recipients", len(remote), "queue_id", id, "size", len(msg),
		"msgid", s.msgID, "user", s.user, "remote", s.remote, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// allDomains reports whether fn holds for every recipient's domain.
func (s *session) allDomains(fn func(domain string) bool) bool {
	for _, r := range s.rcpts {
		if !fn(domainOf(r.addr)) {
			return false
		}
	}
	return len(s.rcpts) > 0
}

// maxHeaderCheck bounds how much of a submitted message is read to find
// its header From.
const maxHeaderCheck = 64 << 10

// checkHeaderFrom refuses a submitted message whose header From: names
// none of the authenticated user's addresses: what a reader sees as the
// sender must be the user too, not only the envelope.
func (s *session) checkHeaderFrom(sp *spool) error {
	head, err := sp.head(maxHeaderCheck)
	if err != nil {
		s.srv.log.Error("reading a spooled message's header failed", "err", err, "remote", s.remote)
		return errTempFail
	}
	refuse := func(why string) error {
		s.srv.log.Info("submitted message refused: "+why, "user", s.user, "remote", s.remote)
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1},
			Message: "<" + s.user + ">: " + why}
	}
	// A header cut at maxHeaderCheck still parses up to there (EOF ends
	// it); From: beyond it counts as missing.
	msg, err := mail.ReadMessage(bytes.NewReader(head))
	if err != nil {
		return refuse("message header unreadable; a From: header with your address is required")
	}
	from := msg.Header.Get("From")
	if from == "" {
		return refuse("message has no From: header; one with your address is required")
	}
	list, err := msg.Header.AddressList("From")
	if err != nil {
		return refuse("message From: header unparsable; one with your address is required")
	}
	for _, a := range list {
		if owns(s.user, a.Address) {
			return nil
		}
	}
	return refuse("header From: address not owned by the authenticated user")
}

// owns reports whether addr is user's address: the same, ignoring case, or
// user's local part with a "+tag" (user+tag@domain).
func owns(user, addr string) bool {
	user, addr = strings.ToLower(user), strings.ToLower(addr)
	if user == addr {
		return true
	}
	ul, ud, ok1 := strings.Cut(user, "@")
	i := strings.LastIndexByte(addr, '@')
	if !ok1 || i < 0 || addr[i+1:] != ud {
		return false
	}
	return strings.HasPrefix(addr[:i], ul+"+")
}

func senderNotOwn(from string) error {
	return &gosmtp.SMTPError{Code: 553, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1},
		Message: "<" + sanitize(from) + ">: sender address not owned by the authenticated user"}
}

// refuse reads the rest of a message it will not take (with the same
// pace rules), then returns reply.
func (s *session) refuse(r io.Reader, reply error) error {
	if err := s.receive(r, io.Discard); err != nil {
		return err
	}
	return reply
}

// receive copies DATA to w. The client must send at least MinDataBytes
// every DataStallTimeout and finish within MaxDataTime; a client that does
// not is answered 421 and disconnected, so that slow senders cannot hold
// the DATA slots.
func (s *session) receive(r io.Reader, w io.Writer) error {
	cfg := &s.srv.cfg
	conn := s.conn.Conn()
	start := time.Now()
	end := start.Add(cfg.MaxDataTime)
	mark, since := start, int64(0)
	var (
		cut    sync.Once
		cutted atomic.Bool
	)
	cutOff := func(why string, args ...any) {
		cut.Do(func() {
			cutted.Store(true)
			s.srv.log.Warn(why+": closing", append(args, "remote", s.remote)...)
			s.closeWith("4.4.2", why+", closing connection")
		})
	}
	// DATA is read under deadlines (below); BDAT chunks come through a
	// pipe that go-smtp fills, which no deadline of ours interrupts: the
	// watchdog closes a connection that stops making progress either way.
	watchdog := time.AfterFunc(cfg.DataStallTimeout+time.Second, func() { cutOff("DATA too slow") })
	defer watchdog.Stop()
	// A deadline would make go-smtp's own BDAT read fail with a 554 (a
	// bounce for a slow link): there, only the watchdog acts.
	src := r
	if in, ok := r.(*dataIn); ok {
		src = in.Reader
	}
	_, bdat := src.(*io.PipeReader)
	if !bdat {
		// After an error go-smtp reads the rest of the message itself:
		// bound it.
		defer func() { _ = conn.SetReadDeadline(time.Now().Add(cfg.DataStallTimeout)) }()
	}
	buf := make([]byte, 16<<10)
	for {
		dl := mark.Add(cfg.DataStallTimeout)
		if dl.After(end) {
			dl = end
		}
		if !bdat {
			_ = conn.SetReadDeadline(dl)
		}
		n, err := r.Read(buf)
		now := time.Now()
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				if errors.Is(werr, errSpoolFull) {
					s.srv.log.Warn("spool full: refusing a message", "remote", s.remote, "max_spool", cfg.Spool.max)
					watchdog.Stop() // refuse has its own
					return s.refuse(r, errStorageFull)
				}
				s.srv.log.Error("receiving a message failed", "err", werr, "remote", s.remote)
				return errTempFail
			}
			if since += int64(n); since >= cfg.MinDataBytes {
				mark, since = now, 0
				wait := min(cfg.DataStallTimeout, end.Sub(now))
				watchdog.Reset(wait + time.Second)
			}
		}
		if err == io.EOF {
			return nil
		}
		var ne net.Error
		timeout := err != nil && errors.As(err, &ne) && ne.Timeout()
		if err != nil && !timeout {
			if cutted.Load() {
				return errClosed
			}
			return err // ErrDataTooLarge (552 5.3.4), or the connection failed
		}
		switch {
		case !now.Before(end):
			cutOff("DATA took too long", "after", now.Sub(start).Round(time.Second))
			return errClosed
		case !now.Before(mark.Add(cfg.DataStallTimeout)):
			cutOff("DATA too slow", "bytes_in_window", since, "window", cfg.DataStallTimeout)
			return errClosed
		}
	}
}

// traceHeaders returns the Return-Path: and Received: lines prepended to
// every delivered message (RFC 5321 4.4). They are the same for every
// recipient, so one stored body serves all; "for <addr>" only appears
// with a single recipient.
func (s *session) traceHeaders(rcpts []string) string {
	proto := "ESMTP"
	if s.srv.cfg.Mode == LMTP {
		proto = "LMTP"
	}
	if _, ok := s.conn.TLSConnectionState(); ok {
		proto += "S"
	}
	if s.user != "" {
		proto += "A"
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	s.msgID = hex.EncodeToString(id[:])
	var b strings.Builder
	fmt.Fprintf(&b, "Return-Path: <%s>\r\n", sanitize(s.from))
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (hastore) with %s id %s", sanitize(s.conn.Hostname()), s.remote, s.srv.cfg.Hostname, proto, s.msgID)
	if len(rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", sanitize(rcpts[0]))
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", time.Now().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	return b.String()
}

// sanitize keeps a client-supplied string from breaking the header.
func sanitize(s string) string {
	if len(s) > 256 {
		s = s[:256]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '(' || r == ')' || r == '<' || r == '>' {
			return '?'
		}
		return r
	}, s)
}

// authSession is the submission session: it offers AUTH.
type authSession struct{ *session }

var _ gosmtp.AuthSession = (*authSession)(nil)

func (s *authSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (s *authSession) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && !strings.EqualFold(identity, username) {
				return errAuthInvalid // no acting as someone else
			}
			return s.login(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{login: s.login}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

func (s *authSession) login(username, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr, err := s.srv.store.Authenticate(ctx, s.srv.cfg.Mode.String(), username, password, s.remote) // logs the attempt
	switch {
	case err == nil:
		s.user = addr
		return nil
	case errors.Is(err, mailbox.ErrThrottled):
		return errAuthThrottle
	case errors.Is(err, mailbox.ErrAuthFailed), errors.Is(err, mailbox.ErrDisabled):
		return errAuthInvalid
	}
	return errAuthTemp
}

// loginServer is the server side of the obsolete but common LOGIN
// mechanism: "Username:", then "Password:".
type loginServer struct {
	login func(user, pass string) error
	user  string
	step  int
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step++
		if len(response) > 0 { // initial response carries the user name
			l.user = string(response)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(response)
		l.step++
		return []byte("Password:"), false, nil
	case 2:
		l.step++
		return nil, true, l.login(l.user, string(response))
	}
	return nil, false, errors.New("unexpected response")
}
