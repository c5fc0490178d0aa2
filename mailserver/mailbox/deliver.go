package mailbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"hastore/mailserver/mailstate"
	"hastore/replica"
	"hastore/replica/meta"
)

// Recipient is one entry of a delivery: a user's mailbox.
type Recipient struct {
	Address string   // a user's address (normalized by AddRecipient)
	Mailbox string   // "" means INBOX
	Flags   []string // initial flags (APPEND); none for incoming mail
}

// Outcome is what a delivery did for one recipient: Err is nil if the
// message was appended (UID in Mailbox, whose UIDValidity is given).
type Outcome struct {
	mailstate.MailOutcome
	Err error
	// Retry: the message had already been delivered to this mailbox (see
	// Delivery.SetRetryKey); UID is the earlier delivery's.
	Retry bool
}

// QuotaError is the error for a recipient over quota; errors.Is matches
// ErrOverQuota.
type QuotaError struct {
	User        string
	Used, Limit int64
	Size        int64 // of the message, 0 if not known
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("mailbox: %s is over quota (%d of %d bytes used, message of %d)", e.User, e.Used, e.Limit, e.Size)
}

// Is makes errors.Is(err, ErrOverQuota) true.
func (e *QuotaError) Is(target error) bool { return target == ErrOverQuota }

// Permanent reports whether the message can never fit (it is bigger than
// the whole quota), as opposed to the mailbox being full for now.
func (e *QuotaError) Permanent() bool { return e.Size > e.Limit }

// CheckRecipient says whether addr can take a message of size bytes (0:
// not known yet) now: nil, or an error matching ErrNotFound (no such user),
// ErrDisabled, ErrOverQuota (a *QuotaError) or ErrUnavailable. The final
// decision is made again, atomically, when the delivery commits.
func (s *Store) CheckRecipient(ctx context.Context, addr string, size int64) error {
	u, ok, err := s.LookupUser(ctx, addr)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: no user %s", ErrNotFound, addr)
	}
	if u.Disabled {
		return fmt.Errorf("%w: %s", ErrDisabled, u.Address)
	}
	if u.Quota > 0 && (u.Usage.Bytes >= u.Quota || u.Usage.Bytes+size > u.Quota) {
		return &QuotaError{User: u.Address, Used: u.Usage.Bytes, Limit: u.Quota, Size: size}
	}
	return nil
}

// Delivery puts one message into the mailboxes of its recipients, in two
// phases: Body stores the message durably, Commit appends the entries.
// On a cluster that can stage a body (replica.Cluster.StagePut), Body
// writes only the shards and Commit commits the body's object record and
// the mailbox entries in one atomic Raft entry; otherwise Body commits the
// record (a reference the delivery holds) and Commit appends the entries
// in a second one. Abort (safe to call after Commit, and more than once)
// releases what an unfinished delivery holds. A Delivery is used by one
// goroutine.
type Delivery struct {
	s      *Store
	rcpts  []Recipient
	obj    meta.BlobID
	size   int64
	info   []byte
	date   time.Time
	held   bool               // this delivery holds a reference to obj
	staged *replica.StagedPut // obj's shards are written, its record not committed

	digest [32]byte      // what the client sent (SetRetryKey); zero: none
	window time.Duration // how long a retry of it is recognized

	sv *sieveRun // FilterWithSieve (sieve.go); nil: no filtering

	asGiven bool // StoreAsGiven: Body keeps bare LFs
}

// SetRetryKey makes Commit recognize a retry: if the same digest of what
// the client sent (not the stored bytes, which carry a fresh Received:
// header each time) reached a recipient's mailbox less than window ago,
// that recipient's outcome is the earlier delivery (Outcome.Retry) and
// nothing is appended. Call it before Commit; a zero window turns it off.
// Every node must run a release that knows mailstate.MailDeliverOnce.
func (d *Delivery) SetRetryKey(digest [32]byte, window time.Duration) {
	d.digest, d.window = digest, window
}

// NewDelivery starts a delivery.
func (s *Store) NewDelivery() *Delivery { return &Delivery{s: s} }

// AddRecipient adds a recipient. Duplicates get one entry each: callers
// that want one copy per user deduplicate first.
func (d *Delivery) AddRecipient(r Recipient) error {
	a, err := NormalizeAddress(r.Address)
	if err != nil {
		return err
	}
	r.Address = a
	if r.Mailbox != "" {
		r.Mailbox = mailstate.CanonicalMailboxName(r.Mailbox)
		if err := mailstate.ValidMailboxName(r.Mailbox); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if _, err := mailstate.CanonicalFlags(r.Flags); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(d.rcpts) >= mailstate.MaxMailEntries {
		return fmt.Errorf("%w: more than %d recipients", ErrInvalid, mailstate.MaxMailEntries)
	}
	d.rcpts = append(d.rcpts, r)
	return nil
}

// Recipients returns the recipients added so far.
func (d *Delivery) Recipients() []Recipient { return d.rcpts }

// StoreAsGiven makes Body store the bytes exactly as given, bare LFs
// included (IMAP APPEND: the client's cache must match what it sent).
func (d *Delivery) StoreAsGiven() { d.asGiven = true }

// Body stores the message (bare LFs become CRLF, unless StoreAsGiven) and
// computes its info.
// When it returns nil the bytes are durable cluster-wide; internalDate is
// the message's INTERNALDATE (zero: now).
func (d *Delivery) Body(ctx context.Context, msg []byte, internalDate time.Time) error {
	if d.held || d.staged != nil {
		return fmt.Errorf("%w: Body called twice", ErrInvalid)
	}
	if !d.asGiven {
		msg = NormalizeCRLF(msg)
	}
	d.sv.keep(msg)
	info, err := parseEncoded(msg)
	if err != nil {
		return err
	}
	if internalDate.IsZero() {
		internalDate = d.s.now()
	}
	d.size, d.info, d.date = int64(len(msg)), info, internalDate
	if st, ok := d.s.c.(bodyStager); ok {
		sp, err := st.StagePut(ctx, msg)
		if err != nil {
			return fmt.Errorf("%w: storing the message: %v", ErrUnavailable, err)
		}
		d.obj, d.staged = sp.ID(), sp
		return nil
	}
	id, err := d.s.c.Put(ctx, msg)
	if err != nil {
		return fmt.Errorf("%w: storing the message: %v", ErrUnavailable, err)
	}
	d.obj, d.held = id, true
	return nil
}

// bodyStager is a Cluster that can write a body's shards now and commit
// its record later together with the entries that reference it
// (*replica.Cluster).
type bodyStager interface {
	StagePut(ctx context.Context, data []byte) (*replica.StagedPut, error)
}

// Size returns the stored message's size (after Body).
func (d *Delivery) Size() int64 { return d.size }

// Object returns the stored message's object ID (after Body).
func (d *Delivery) Object() meta.BlobID { return d.obj }

// Commit appends the message to every recipient's mailbox in one Raft
// command and returns an outcome per recipient, in order. With
// allOrNothing any rejected recipient rejects all (each then says why, or
// ErrAborted-like MailAborted). An error means nothing was delivered:
// ErrUnavailable when the cluster could not decide (the message may be
// retried), other kinds when it refused.
func (d *Delivery) Commit(ctx context.Context, allOrNothing bool) ([]Outcome, error) {
	if !d.held && d.staged == nil {
		return nil, fmt.Errorf("%w: Commit without a stored body", ErrInvalid)
	}
	if d.sv != nil {
		return d.commitSieve(ctx, allOrNothing)
	}
	if len(d.rcpts) == 0 {
		d.Abort(ctx)
		return nil, nil
	}
	_, off := d.date.Zone()
	dc := mailstate.MailDeliver{
		Messages:     []mailstate.MailMessageSpec{{Object: d.obj, Size: d.size, InternalDate: d.date.UnixNano(), Zone: int32(off), Info: d.info}},
		AllOrNothing: allOrNothing,
		Now:          d.s.now().UnixNano(),
	}
	for _, r := range d.rcpts {
		dc.Entries = append(dc.Entries, mailstate.MailEntry{User: r.Address, Mailbox: r.Mailbox, Flags: r.Flags})
	}
	var cmd meta.Command = dc
	if d.window > 0 && d.digest != ([32]byte{}) {
		// A retry's entries append nothing and take no reference: the
		// command releases this delivery's reference for them like for a
		// rejected entry, so the retry's body is not leaked.
		cmd = mailstate.MailDeliverOnce{MailDeliver: dc, Digests: [][32]byte{d.digest}, Window: int64(min(d.window, time.Duration(mailstate.MaxMailDedupWindow)))}
	}
	if d.staged != nil {
		return d.commitStaged(ctx, cmd)
	}
	res, err := d.s.c.Propose(ctx, cmd)
	if err != nil {
		if judged(err) {
			d.Abort(ctx) // the command changed nothing: our reference is still ours
		} else {
			// Unknown outcome: the command may yet consume the reference.
			// Keeping it (a leak until reconciled) is safe; dropping it
			// could free a body that mailboxes reference.
			d.held = false
			d.s.log.Warn("delivery outcome unknown; its body reference is kept", "object", d.obj, "err", err)
		}
		return nil, proposeErr("deliver", err, ErrUnavailable)
	}
	d.held = false
	return d.outcomes(res)
}

// commitStaged commits the staged body's record and cmd in one atomic
// batch (replica.StagedPut.Commit). The batch takes the body's reference
// and hands it to cmd, which consumes it exactly as it consumes the
// reference of a separately committed body (mailstate's "References"); if
// cmd is refused the batch applies nothing, so there is no reference to
// drop, and if the outcome is unknown the batch applies whole or not at
// all, so none can leak.
func (d *Delivery) commitStaged(ctx context.Context, cmd meta.Command) ([]Outcome, error) {
	sp := d.staged
	d.staged = nil
	res, err := sp.Commit(ctx, cmd)
	if err != nil {
		if len(res.Batch) == 2 && res.Batch[1].Status == meta.StatusOK {
			// Committed, but the body could not be made whole after it:
			// the entries are there. Answer a temporary failure all the
			// same (the acknowledgement promises a readable body); a
			// retry with a retry key finds the entries.
			d.s.log.Error("delivery committed but its body is not whole yet; repair will retry", "object", d.obj, "err", err)
		}
		for _, r := range res.Batch {
			// A refused batch says StatusAborted; the command that
			// refused it says why, as it would have alone.
			if r.Status != meta.StatusOK && r.Status != meta.StatusAborted {
				err = r.Err()
				break
			}
		}
		return nil, proposeErr("deliver", err, ErrUnavailable)
	}
	return d.outcomes(res.Batch[1])
}

// outcomes turns the deliver command's result into one Outcome per
// recipient.
func (d *Delivery) outcomes(res meta.Result) ([]Outcome, error) {
	outs := mailstate.Outcomes(res)
	if len(outs) != len(d.rcpts) {
		return nil, fmt.Errorf("deliver: %d outcomes for %d recipients", len(outs), len(d.rcpts))
	}
	out := make([]Outcome, len(d.rcpts))
	for i, o := range outs {
		out[i] = Outcome{MailOutcome: o, Err: d.outcomeErr(d.rcpts[i], o.Code), Retry: o.Code == mailstate.MailOK && o.SrcUID != 0}
	}
	return out, nil
}

func (d *Delivery) outcomeErr(r Recipient, c mailstate.MailCode) error {
	switch c {
	case mailstate.MailOK:
		return nil
	case mailstate.MailNoUser:
		return fmt.Errorf("%w: no user %s", ErrNotFound, r.Address)
	case mailstate.MailNoMailbox:
		return fmt.Errorf("%w: no mailbox %q for %s", ErrNotFound, r.Mailbox, r.Address)
	case mailstate.MailDisabled:
		return fmt.Errorf("%w: %s", ErrDisabled, r.Address)
	case mailstate.MailOverQuota:
		qe := &QuotaError{User: r.Address, Size: d.size}
		if u, ok, err := d.s.view.User(r.Address); err == nil && ok {
			qe.Limit = u.Quota
		}
		if u, err := d.s.view.Usage(r.Address); err == nil {
			qe.Used = u.Bytes
		}
		return qe
	case mailstate.MailAborted:
		return ErrAborted
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalid, r.Address, c)
}

// ErrAborted is the outcome of a recipient that was acceptable in an
// all-or-nothing delivery that another recipient made fail.
var ErrAborted = errors.New("mailbox: delivery aborted by another recipient")

// Abort drops the stored body's reference unless Commit handed it over.
// A staged body holds none: its shards are collected as orphans.
func (d *Delivery) Abort(ctx context.Context) {
	d.staged = nil
	if !d.held {
		return
	}
	d.held = false
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := d.s.c.Delete(ctx, d.obj); err != nil {
		d.s.log.Warn("could not release an undelivered message body; it stays until reconciled", "object", d.obj, "err", err)
	}
}

// NormalizeCRLF turns bare LFs into CRLF (IMAP sizes and literals count
// CRLF); it returns msg itself when nothing changes.
func NormalizeCRLF(msg []byte) []byte {
	bare := 0
	for i := 0; ; i++ {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || msg[i-1] != '\r' {
			bare++
		}
	}
	if bare == 0 {
		return msg
	}
	out := make([]byte, 0, len(msg)+bare)
	for {
		i := bytes.IndexByte(msg, '\n')
		if i < 0 {
			return append(out, msg...)
		}
		if i == 0 || msg[i-1] != '\r' {
			out = append(out, msg[:i]...)
			out = append(out, '\r', '\n')
		} else {
			out = append(out, msg[:i+1]...)
		}
		msg = msg[i+1:]
	}
}
