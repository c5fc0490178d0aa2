package mailbox

// Sieve filtering at delivery (mailserver/sieve runs the scripts; this
// file stores them and carries out what they ask).
//
// A user's script is a record of tenant SieveTenant of the replicated
// key-value space, key "s/<address>", holding the source; it is parsed
// when stored (SetSieve refuses a script that does not parse) and again,
// from a small cache keyed by its digest, at delivery. The vacation
// memory (RFC 5230 §4.2) is records "v/<address>/<sha256 of the
// interpreter's key>" holding until when a reply under that key counts as
// sent; an expired record is ignored and dropped by the next reply the
// same user sends, and DeleteSieve drops them all.
//
// A delivery opts in with Delivery.FilterWithSieve. Commit then runs the
// script of each recipient that has one (bounded by SieveLimits and
// SieveTimeout) and turns its actions into entries:
//
//   - Keep and FileInto: the message goes to INBOX (or the route's own
//     mailbox, a subaddress folder) or the named mailbox with the flags
//     given; a mailbox that does not exist means INBOX, as Dovecot does
//     without :create. One copy per mailbox.
//   - Discard: no entry; the recipient's outcome is a success (logged).
//   - Reject: no entry; the outcome's Err is a *SieveRejectError (LMTP
//     and SMTP answer it 550 5.7.1 with the reason).
//   - Redirect: queued unchanged with the original envelope sender and a
//     loop-guard header (SieveLoopHeader) through SieveEnvelope.Outbound
//     before the commit; if it cannot be queued (no queue configured, or
//     it failed), the message is kept in INBOX instead, so it is never lost.
//   - Vacation: after a successful commit, a reply from <> is queued and
//     remembered for its period; without a queue it is logged and skipped.
//
// A script that fails at run time (a limit, a timeout) delivers to INBOX
// with a log line, as RFC 5228 §2.10.6 requires.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"hastore/mailserver/mailstate"
	"hastore/mailserver/sieve"
	"hastore/replica/meta"
)

// SieveTenant is the tenant of the key-value space holding scripts and
// the vacation memory.
const SieveTenant = "hastore:sieve"

// SieveLoopHeader marks a message redirected by a script; its value is
// the script owner. A message carrying its recipient's own mark is not
// filtered again (it is kept in INBOX), which ends a redirect loop.
const SieveLoopHeader = "X-Hastore-Sieve-Redirected-By"

// SieveLimits bound every script (parse and run); SieveTimeout bounds
// one run.
var (
	SieveLimits  = sieve.Limits{}
	SieveTimeout = 5 * time.Second
)

// maxVacationCleanup bounds the expired memory records one reply drops.
const maxVacationCleanup = 64

func sieveKey(addr string) string { return "s/" + addr }

func vacationPrefix(addr string) string { return "v/" + addr + "/" }

// SetSieve stores addr's script after checking that it parses: a script
// that does not is refused with ErrInvalid and the *sieve.ParseError
// (line:column) in the chain. An empty src is refused (use DeleteSieve).
func (s *Store) SetSieve(ctx context.Context, addr string, src []byte) error {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(src)) == 0 {
		return fmt.Errorf("%w: empty script for %s (to remove the script: hastore admin user sieve del %s)", ErrInvalid, a, a)
	}
	if _, err := sieve.Parse(src, SieveLimits); err != nil {
		return fmt.Errorf("%w: script for %s refused: %w", ErrInvalid, a, err)
	}
	if _, ok, err := s.LookupUser(ctx, a); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%w: no user %s", ErrNotFound, a)
	}
	_, err = s.c.Propose(ctx, meta.TenantPut{Tenant: SieveTenant, Key: sieveKey(a), Value: src})
	return proposeErr("store the sieve script of "+a, err, ErrExists)
}

// GetSieve returns addr's script (ErrNotFound if it has none).
func (s *Store) GetSieve(ctx context.Context, addr string) ([]byte, error) {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return nil, err
	}
	if err := s.catchUp(ctx); err != nil {
		return nil, err
	}
	b, ok, err := s.view.R.TenantGet(SieveTenant, sieveKey(a))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the sieve script of %s: %v", ErrUnavailable, a, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s has no sieve script", ErrNotFound, a)
	}
	return b, nil
}

// DeleteSieve removes addr's script and its vacation memory (ErrNotFound
// if it had no script).
func (s *Store) DeleteSieve(ctx context.Context, addr string) error {
	if _, err := s.GetSieve(ctx, addr); err != nil {
		return err
	}
	a, _ := NormalizeAddress(addr)
	return s.dropSieve(ctx, a)
}

// dropSieve removes the script and vacation memory of the normalized
// address a, whichever exist (none is not an error). DeleteUser calls it,
// so that a user created again under the address starts without them.
func (s *Store) dropSieve(ctx context.Context, a string) error {
	var cmds []meta.Command
	if _, ok, err := s.view.R.TenantGet(SieveTenant, sieveKey(a)); err != nil {
		return fmt.Errorf("%w: reading the sieve script of %s: %v", ErrUnavailable, a, err)
	} else if ok {
		cmds = append(cmds, meta.TenantDelete{Tenant: SieveTenant, Key: sieveKey(a)})
	}
	if err := s.view.R.TenantScan(SieveTenant, vacationPrefix(a), func(k string, _ []byte) error {
		cmds = append(cmds, meta.TenantDelete{Tenant: SieveTenant, Key: k})
		return nil
	}); err != nil {
		return fmt.Errorf("%w: reading the vacation memory of %s: %v", ErrUnavailable, a, err)
	}
	for len(cmds) > 0 {
		n := min(len(cmds), 256)
		if _, err := s.c.Propose(ctx, meta.Batch{Cmds: cmds[:n]}); err != nil {
			return proposeErr("delete the sieve script of "+a, err, ErrNotFound)
		}
		cmds = cmds[n:]
	}
	return nil
}

// SieveOutbound queues mail for remote delivery; smtp.Outbound (the
// outbound queue) is one.
type SieveOutbound interface {
	Enqueue(ctx context.Context, from, user, msgID string, rcpts []string, msg []byte, retryKey [32]byte, window time.Duration) (id string, err error)
}

// SieveEnvelope is what a filtered delivery knows of its message.
type SieveEnvelope struct {
	From  string            // MAIL FROM without brackets; "" for <>
	To    map[string]string // user address → the RCPT TO that reached it (missing: the user's own)
	MsgID string            // for log lines and queued replies
	// Outbound queues redirects and vacation replies; nil: they are
	// logged and skipped.
	Outbound SieveOutbound
}

// SieveRejectError is the outcome of a recipient whose script rejected
// the message; errors.Is matches ErrSieveReject.
type SieveRejectError struct {
	User   string
	Reason string
}

// ErrSieveReject matches every *SieveRejectError.
var ErrSieveReject = errors.New("mailbox: rejected by the recipient's sieve script")

func (e *SieveRejectError) Error() string {
	return fmt.Sprintf("mailbox: %s's sieve script rejected the message: %s", e.User, e.Reason)
}

// Is makes errors.Is(err, ErrSieveReject) true.
func (e *SieveRejectError) Is(target error) bool { return target == ErrSieveReject }

type sieveRun struct {
	env SieveEnvelope
	msg []byte
}

// keep remembers the stored message (nil receiver: not filtered).
func (r *sieveRun) keep(msg []byte) {
	if r != nil {
		r.msg = msg
	}
}

// FilterWithSieve makes Commit run each recipient's script (see the top
// of sieve.go). Call it before Body.
func (d *Delivery) FilterWithSieve(env SieveEnvelope) { d.sv = &sieveRun{env: env} }

// sievePlan is what one recipient's script made of its entry.
type sievePlan struct {
	first, n  int      // its entries in the expanded list
	fixed     *Outcome // discard or reject: no entry
	vacations []sieve.Vacation
}

// commitSieve runs the scripts, commits the entries they ask for and folds
// the outcomes back to one per recipient, in order.
func (d *Delivery) commitSieve(ctx context.Context, allOrNothing bool) ([]Outcome, error) {
	sv := d.sv
	d.sv = nil
	orig := d.rcpts
	plans := make([]sievePlan, len(orig))
	var expanded []Recipient
	for i, r := range orig {
		rcpts, p := d.s.runSieve(ctx, sv, r, d.digest, d.window)
		p.first, p.n = len(expanded), len(rcpts)
		plans[i] = p
		expanded = append(expanded, rcpts...)
	}
	if len(expanded) > mailstate.MaxMailEntries {
		// Scripts filing into many folders: fall back to one copy each.
		d.s.log.Warn("sieve: too many mailboxes for one delivery; delivering without filters", "msgid", sv.env.MsgID)
		expanded, plans = orig, make([]sievePlan, len(orig))
		for i := range plans {
			plans[i].first, plans[i].n = i, 1
		}
	}
	d.rcpts = expanded
	var outs []Outcome
	if len(expanded) > 0 {
		var err error
		if outs, err = d.Commit(ctx, allOrNothing); err != nil {
			d.rcpts = orig
			return nil, err
		}
	} else {
		d.Abort(ctx) // every recipient discarded or rejected it
	}
	d.rcpts = orig
	out := make([]Outcome, len(orig))
	for i, p := range plans {
		if p.fixed != nil {
			out[i] = *p.fixed
			continue
		}
		o := outs[p.first]
		for _, e := range outs[p.first : p.first+p.n] {
			if e.Err != nil {
				o = e
				break
			}
		}
		out[i] = o
		if o.Err == nil {
			for _, v := range p.vacations {
				d.s.sendVacation(ctx, sv, orig[i].Address, v, d.digest, d.window)
			}
		}
	}
	return out, nil
}

// runSieve runs r's script, if any, and returns the entries for r and
// the plan.
func (s *Store) runSieve(ctx context.Context, sv *sieveRun, r Recipient, digest [32]byte, window time.Duration) ([]Recipient, sievePlan) {
	keep := []Recipient{r}
	src, ok, err := s.view.R.TenantGet(SieveTenant, sieveKey(r.Address))
	if err != nil {
		s.log.Warn("sieve: reading the script failed; delivering to INBOX", "user", r.Address, "err", err, "msgid", sv.env.MsgID)
		return keep, sievePlan{}
	}
	if !ok {
		return keep, sievePlan{}
	}
	log := s.log.With("user", r.Address, "msgid", sv.env.MsgID)
	script, err := parseCached(src)
	if err != nil {
		log.Warn("sieve: stored script does not parse; delivering to INBOX (store it again: hastore admin user sieve set)", "err", err)
		return keep, sievePlan{}
	}
	hdr, body := splitMessage(sv.msg)
	if looped(hdr, r.Address) {
		log.Info("sieve: message redirected by this user's script came back; kept in INBOX without filtering", "header", SieveLoopHeader)
		return keep, sievePlan{}
	}
	to := sv.env.To[r.Address]
	if to == "" {
		to = r.Address
	}
	in := sieve.Input{
		Envelope: sieve.Envelope{From: sv.env.From, To: to},
		Message:  sieve.HeaderMessage{Fields: hdr, Bytes: int64(len(sv.msg)), RawBody: body},
		Vacation: vacationMemory{s: s, user: r.Address},
	}
	if to != r.Address {
		in.Addresses = []string{r.Address}
	}
	rctx, cancel := context.WithTimeout(ctx, SieveTimeout)
	acts, err := script.Execute(rctx, in)
	cancel()
	if err != nil {
		log.Warn("sieve: script failed; delivering to INBOX", "err", err)
	}
	var out []Recipient
	var p sievePlan
	have := map[string]bool{}
	add := func(box string, flags []string) {
		box = mailstate.CanonicalMailboxName(box)
		if box == mailstate.InboxName {
			box = ""
		}
		if box != "" {
			if _, ok, err := s.view.Mailbox(r.Address, box); err != nil || !ok {
				log.Info("sieve: fileinto a mailbox that does not exist; delivering to INBOX", "mailbox", box, "err", err)
				box = r.Mailbox
			}
		}
		if have[box] {
			return
		}
		have[box] = true
		if _, err := mailstate.CanonicalFlags(flags); err != nil {
			log.Info("sieve: flags refused; stored without them", "flags", flags, "err", err)
			flags = nil
		}
		out = append(out, Recipient{Address: r.Address, Mailbox: box, Flags: flags})
	}
	var reject *sieve.Reject
	discarded, lost := false, false
	for _, a := range acts {
		switch a := a.(type) {
		case sieve.Keep:
			add(r.Mailbox, a.Flags) // the route's default: INBOX or a subaddress folder
		case sieve.FileInto:
			add(a.Mailbox, a.Flags)
		case sieve.Discard:
			discarded = true
		case sieve.Reject:
			reject = &a
		case sieve.Redirect:
			if !s.redirect(ctx, sv, r.Address, a.Address, digest, window) {
				lost = true
			}
		case sieve.Vacation:
			p.vacations = append(p.vacations, a)
		}
	}
	if lost && len(out) == 0 {
		add(r.Mailbox, nil) // never lose a message a redirect could not take
	}
	if len(out) == 0 {
		switch {
		case reject != nil:
			log.Info("sieve: message rejected by the user's script", "from", sv.env.From, "reason", reject.Reason)
			p.fixed = &Outcome{Err: &SieveRejectError{User: r.Address, Reason: reject.Reason}}
		default:
			log.Info("sieve: message discarded by the user's script", "from", sv.env.From, "discard", discarded)
			p.fixed = &Outcome{MailOutcome: mailstate.MailOutcome{Code: mailstate.MailOK}}
		}
		for _, v := range p.vacations {
			// A vacation reply for a discarded message still goes out
			// (RFC 5230 does not tie it to keeping the message).
			s.sendVacation(ctx, sv, r.Address, v, digest, window)
		}
		p.vacations = nil
	}
	return out, p
}

// redirect queues sv's message to addr; false if it could not.
func (s *Store) redirect(ctx context.Context, sv *sieveRun, owner, addr string, digest [32]byte, window time.Duration) bool {
	log := s.log.With("user", owner, "to", addr, "msgid", sv.env.MsgID)
	if sv.env.Outbound == nil {
		log.Warn("sieve: redirect skipped: no outbound queue on this node (start it with the outbound flags); kept in INBOX if nothing else took it")
		return false
	}
	msg := append([]byte(SieveLoopHeader+": "+owner+"\r\n"), sv.msg...)
	id, err := sv.env.Outbound.Enqueue(ctx, sv.env.From, owner, sv.env.MsgID, []string{addr}, msg, subKey(digest, owner, "redirect", addr), window)
	if err != nil {
		log.Warn("sieve: queueing a redirect failed; kept in INBOX if nothing else took it", "err", err)
		return false
	}
	log.Info("sieve: redirected", "queue_id", id)
	return true
}

// sendVacation queues a reply and remembers it for its period.
func (s *Store) sendVacation(ctx context.Context, sv *sieveRun, owner string, v sieve.Vacation, digest [32]byte, window time.Duration) {
	log := s.log.With("user", owner, "to", v.To, "msgid", sv.env.MsgID)
	if sv.env.Outbound == nil {
		log.Warn("sieve: vacation reply skipped: no outbound queue on this node")
		return
	}
	reply := vacationReply(owner, v, s.now())
	id, err := sv.env.Outbound.Enqueue(ctx, "", owner, sv.env.MsgID, []string{v.To}, reply, subKey(digest, owner, "vacation", v.Key), window)
	if err != nil {
		log.Warn("sieve: queueing a vacation reply failed; it is not remembered, the next message may get one", "err", err)
		return
	}
	log.Info("sieve: vacation reply queued", "queue_id", id, "period", v.Period)
	mem := vacationMemory{s: s, user: owner}
	if err := mem.record(ctx, v.Key, v.Period); err != nil {
		log.Warn("sieve: remembering a vacation reply failed; the sender may get another", "err", err)
	}
}

// subKey derives a retry key per owner and action from the delivery's
// (zero stays zero: no retry memory).
func subKey(digest [32]byte, parts ...string) [32]byte {
	if digest == ([32]byte{}) {
		return digest
	}
	h := sha256.New()
	h.Write(digest[:])
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// vacationReply builds an RFC 3834 auto-reply.
func vacationReply(owner string, v sieve.Vacation, now time.Time) []byte {
	clean := func(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }
	from := clean(v.From)
	if from == "" {
		from = owner
	}
	_, domain, _ := strings.Cut(owner, "@")
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\n",
		from, clean(v.To), mime.QEncoding.Encode("utf-8", clean(v.Subject)), now.Format(time.RFC1123Z), hex.EncodeToString(rnd[:]), domain)
	b.WriteString("Auto-Submitted: auto-replied (vacation)\r\n")
	if v.InReplyTo != "" {
		fmt.Fprintf(&b, "In-Reply-To: %s\r\n", clean(v.InReplyTo))
	}
	if len(v.Refs) > 0 {
		fmt.Fprintf(&b, "References: %s\r\n", clean(strings.Join(v.Refs, " ")))
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	if v.MIME {
		b.WriteString(v.Reason) // a MIME entity with its own header
	} else {
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + v.Reason)
	}
	return NormalizeCRLF([]byte(b.String()))
}

// vacationMemory is sieve.VacationMemory over SieveTenant records.
type vacationMemory struct {
	s    *Store
	user string
}

type vacationRecord struct {
	Until int64 `json:"until"` // unix ns
}

func (m vacationMemory) key(k string) string {
	sum := sha256.Sum256([]byte(k))
	return vacationPrefix(m.user) + hex.EncodeToString(sum[:])
}

func (m vacationMemory) Replied(_ context.Context, key string) (bool, error) {
	b, ok, err := m.s.view.R.TenantGet(SieveTenant, m.key(key))
	if err != nil || !ok {
		return false, err
	}
	var r vacationRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return false, nil // unreadable: as if absent; the next reply rewrites it
	}
	return r.Until > m.s.now().UnixNano(), nil
}

// record remembers key for period and drops some expired records.
func (m vacationMemory) record(ctx context.Context, key string, period time.Duration) error {
	now := m.s.now().UnixNano()
	v, _ := json.Marshal(vacationRecord{Until: now + int64(period)})
	cmds := []meta.Command{meta.TenantPut{Tenant: SieveTenant, Key: m.key(key), Value: v}}
	_ = m.s.view.R.TenantScan(SieveTenant, vacationPrefix(m.user), func(k string, b []byte) error {
		var r vacationRecord
		if json.Unmarshal(b, &r) == nil && r.Until <= now && k != m.key(key) {
			cmds = append(cmds, meta.TenantDelete{Tenant: SieveTenant, Key: k})
		}
		if len(cmds) > maxVacationCleanup {
			return errStopScan
		}
		return nil
	})
	_, err := m.s.c.Propose(ctx, meta.Batch{Cmds: cmds})
	return err
}

var errStopScan = errors.New("stop")

// splitMessage parses msg's header (nil fields if it has none readable)
// and returns it with the body.
func splitMessage(msg []byte) (map[string][]string, []byte) {
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return map[string][]string{}, nil
	}
	var body []byte
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		body = msg[i+4:]
	}
	return m.Header, body
}

// looped reports whether hdr carries owner's redirect mark.
func looped(hdr map[string][]string, owner string) bool {
	for _, v := range hdr[textproto.CanonicalMIMEHeaderKey(SieveLoopHeader)] {
		if strings.EqualFold(strings.TrimSpace(v), owner) {
			return true
		}
	}
	return false
}

// Scripts parsed, by digest of their source: a script is parsed once per
// version, not once per message.
var (
	parsedMu sync.Mutex
	parsed   = map[[32]byte]*sieve.Script{}
)

const maxParsed = 1024

func parseCached(src []byte) (*sieve.Script, error) {
	k := sha256.Sum256(src)
	parsedMu.Lock()
	sc := parsed[k]
	parsedMu.Unlock()
	if sc != nil {
		return sc, nil
	}
	sc, err := sieve.Parse(src, SieveLimits)
	if err != nil {
		return nil, err
	}
	parsedMu.Lock()
	if len(parsed) >= maxParsed {
		clear(parsed)
	}
	parsed[k] = sc
	parsedMu.Unlock()
	return sc, nil
}
