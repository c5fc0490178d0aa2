package mailbox

import (
	"context"
	"fmt"
	"time"

	"hastore/mailserver/mailstate"
	"hastore/replica/meta"
)

// Appends puts several messages into one mailbox of one user, all or none
// (IMAP MULTIAPPEND, RFC 3502). Add stores each body durably as it arrives
// (Cluster.Put: the write quorum has it fsynced) and holds a reference to
// it, so the caller keeps one message in memory at a time; Commit appends
// them all in one MailDeliver with AllOrNothing (one Raft entry: the
// messages become visible together, or none does, whichever node fails
// when); Abort releases the references of a command that will not
// commit. Bodies are stored as given (bare LFs kept), as Delivery does
// after StoreAsGiven. An Appends is used by one goroutine.
type Appends struct {
	s        *Store
	user     string
	mailbox  string
	msgs     []mailstate.MailMessageSpec // distinct bodies, one reference held each
	entries  []mailstate.MailEntry       // one per message added, in order
	encSize  int                         // a bound on the MailDeliver's encoding so far
	consumed bool
}

// maxAppendsEncoding keeps one Appends' MailDeliver under the Raft entry
// limit, with room for the envelope around it.
const maxAppendsEncoding = meta.MaxCommandSize * 3 / 4

// NewAppends starts an all-or-nothing append of messages to a user's
// mailbox.
func (s *Store) NewAppends(user, mailbox string) (*Appends, error) {
	a, err := NormalizeAddress(user)
	if err != nil {
		return nil, err
	}
	mailbox = mailstate.CanonicalMailboxName(mailbox)
	if err := mailstate.ValidMailboxName(mailbox); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &Appends{s: s, user: a, mailbox: mailbox}, nil
}

// Len returns the number of messages added.
func (a *Appends) Len() int { return len(a.entries) }

// Add stores one message; internalDate zero means now. ErrInvalid when
// one command cannot take another message (mailstate.MaxMailMessages, or
// the size of their records), ErrUnavailable when the body could not be
// stored.
func (a *Appends) Add(ctx context.Context, msg []byte, flags []string, internalDate time.Time) error {
	if a.consumed {
		return fmt.Errorf("%w: Add after Commit", ErrInvalid)
	}
	if len(a.entries) >= mailstate.MaxMailMessages {
		return fmt.Errorf("%w: at most %d messages in one append", ErrInvalid, mailstate.MaxMailMessages)
	}
	flags, err := mailstate.CanonicalFlags(flags)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	info, err := EncodeInfo(ParseInfo(msg))
	if err != nil {
		return err
	}
	// Each message adds its info, its flags and its entry (user, mailbox
	// and numbers: 200 bytes is generous).
	size := len(info) + 200 + len(a.user) + len(a.mailbox)
	for _, f := range flags {
		size += len(f) + 2
	}
	if a.encSize+size > maxAppendsEncoding {
		return fmt.Errorf("%w: the messages of one append would not fit one metadata entry; send fewer at once", ErrInvalid)
	}
	if internalDate.IsZero() {
		internalDate = a.s.now()
	}
	id, err := a.s.c.Put(ctx, msg)
	if err != nil {
		return fmt.Errorf("%w: storing the message: %v", ErrUnavailable, err)
	}
	for i, m := range a.msgs {
		if m.Object == id {
			// The same bytes again: a MailDeliver lists an object once,
			// holding one reference, so this Put's is given back and
			// the entry shares the message (and its INTERNALDATE).
			if err := a.s.c.Delete(ctx, id); err != nil {
				a.s.log.Warn("could not release a duplicate message body reference; it stays until reconciled", "object", id, "err", err)
			}
			a.entries = append(a.entries, mailstate.MailEntry{User: a.user, Mailbox: a.mailbox, Message: i, Flags: flags})
			a.encSize += size - len(info)
			return nil
		}
	}
	_, off := internalDate.Zone()
	a.msgs = append(a.msgs, mailstate.MailMessageSpec{Object: id, Size: int64(len(msg)), InternalDate: internalDate.UnixNano(), Zone: int32(off), Info: info})
	a.entries = append(a.entries, mailstate.MailEntry{User: a.user, Mailbox: a.mailbox, Message: len(a.msgs) - 1, Flags: flags})
	a.encSize += size
	return nil
}

// Commit appends every message added, in order, in one command, and
// returns an outcome per message. If any is refused none is appended (the
// others say ErrAborted). An error means nothing was appended:
// ErrUnavailable when the cluster could not decide. After Commit the
// references are the command's (or, when its outcome is unknown, kept: a
// leak until reconciled is safe, a doubled release is not).
func (a *Appends) Commit(ctx context.Context) ([]Outcome, error) {
	if a.consumed {
		return nil, fmt.Errorf("%w: Commit called twice", ErrInvalid)
	}
	if len(a.msgs) == 0 {
		return nil, nil
	}
	dc := mailstate.MailDeliver{Messages: a.msgs, Entries: a.entries, AllOrNothing: true, Now: a.s.now().UnixNano()}
	res, err := a.s.c.Propose(ctx, dc)
	if err != nil {
		if judged(err) {
			a.Abort(ctx) // the command changed nothing: the references are still ours
		} else {
			a.consumed = true
			a.s.log.Warn("append outcome unknown; its body references are kept", "bodies", len(a.msgs), "err", err)
		}
		return nil, proposeErr("append", err, ErrUnavailable)
	}
	a.consumed = true
	outs := mailstate.Outcomes(res)
	if len(outs) != len(a.entries) {
		return nil, fmt.Errorf("append: %d outcomes for %d messages", len(outs), len(a.entries))
	}
	// outcomeErr wants a delivery's view of the recipients.
	d := &Delivery{s: a.s}
	out := make([]Outcome, len(outs))
	for i, o := range outs {
		d.size = a.msgs[a.entries[i].Message].Size
		out[i] = Outcome{MailOutcome: o, Err: d.outcomeErr(Recipient{Address: a.user, Mailbox: a.mailbox}, o.Code)}
	}
	return out, nil
}

// Abort releases the references of the messages added (nothing once
// Commit has handed them over; safe to call more than once).
func (a *Appends) Abort(ctx context.Context) {
	if a.consumed {
		return
	}
	a.consumed = true
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, m := range a.msgs {
		if err := a.s.c.Delete(ctx, m.Object); err != nil {
			a.s.log.Warn("could not release an appended message body; it stays until reconciled", "object", m.Object, "err", err)
		}
	}
}
