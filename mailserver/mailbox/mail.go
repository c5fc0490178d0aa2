package mailbox

import (
	"context"
	"fmt"

	"hastore/mailserver/mailstate"
)

// Mailboxes lists a user's mailboxes by name.
func (s *Store) Mailboxes(user string) ([]mailstate.Mailbox, error) {
	return s.view.Mailboxes(user)
}

// Mailbox finds a user's mailbox by name (INBOX case-insensitively).
func (s *Store) Mailbox(user, name string) (mailstate.Mailbox, bool, error) {
	return s.view.Mailbox(user, name)
}

// CreateMailbox creates a mailbox (and missing parents) for user.
func (s *Store) CreateMailbox(ctx context.Context, user, name, specialUse string) (mailstate.Mailbox, error) {
	name = mailstate.CanonicalMailboxName(name)
	res, err := s.c.Propose(ctx, mailstate.MailboxCreate{User: user, Name: name, SpecialUse: specialUse, UIDValidity: s.uidValidity(), Now: s.now().UnixNano()})
	if err != nil {
		return mailstate.Mailbox{}, proposeErr("create mailbox "+name, err, ErrExists)
	}
	mb, ok, err := s.view.MailboxByID(user, mailstate.Outcomes(res)[0].Mailbox)
	if err == nil && !ok {
		err = fmt.Errorf("%w: mailbox %q gone right after its creation", ErrNotFound, name)
	}
	return mb, err
}

// Messages returns the messages of a mailbox in UID order.
func (s *Store) Messages(user string, mailbox uint64) ([]mailstate.MailMessage, error) {
	var out []mailstate.MailMessage
	err := s.view.Messages(user, mailbox, func(m mailstate.MailMessage) error {
		out = append(out, m)
		return nil
	})
	return out, err
}

// Info returns a message's ENVELOPE and structure.
func (s *Store) Info(user string, mailbox uint64, uid uint32) (*Info, error) {
	b, ok, err := s.view.Info(user, mailbox, uid)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: message %d of mailbox %d of %s", ErrNotFound, uid, mailbox, user)
	}
	return DecodeInfo(b)
}

// Body returns a message's bytes.
func (s *Store) Body(ctx context.Context, m mailstate.MailMessage) ([]byte, error) {
	b, err := s.c.Get(ctx, m.Object)
	if err != nil {
		return nil, fmt.Errorf("%w: reading message %d: %v", ErrUnavailable, m.UID, err)
	}
	return b, nil
}

// ReadBody returns bytes [off, off+n) of a message, reading only the
// shards that hold them.
func (s *Store) ReadBody(ctx context.Context, m mailstate.MailMessage, off, n int64) ([]byte, error) {
	b, err := s.c.ReadAt(ctx, m.Object, off, n)
	if err != nil {
		return nil, fmt.Errorf("%w: reading message %d: %v", ErrUnavailable, m.UID, err)
	}
	return b, nil
}

// Expunge removes messages (releasing their bodies once unreferenced) and
// returns an outcome per UID. Large sets are split into several commands.
func (s *Store) Expunge(ctx context.Context, user string, mailbox uint64, uids []uint32) ([]mailstate.MailOutcome, error) {
	var out []mailstate.MailOutcome
	for len(uids) > 0 {
		n := min(len(uids), mailstate.MaxMailUIDs)
		res, err := s.c.Propose(ctx, mailstate.MailExpunge{User: user, Mailbox: mailbox, UIDs: uids[:n], Now: s.now().UnixNano()})
		if err != nil {
			return out, proposeErr("expunge", err, ErrExists)
		}
		out = append(out, mailstate.Outcomes(res)...)
		uids = uids[n:]
	}
	return out, nil
}

// StoreFlags changes flags of messages and returns an outcome per UID
// (the resulting flags and modseq).
func (s *Store) StoreFlags(ctx context.Context, user string, mailbox uint64, uids []uint32, op mailstate.MailStoreOp, flags []string) ([]mailstate.MailOutcome, error) {
	var out []mailstate.MailOutcome
	for len(uids) > 0 {
		n := min(len(uids), mailstate.MaxMailUIDs)
		res, err := s.c.Propose(ctx, mailstate.MailStore{User: user, Mailbox: mailbox, UIDs: uids[:n], Op: op, Flags: flags})
		if err != nil {
			return out, proposeErr("store flags", err, ErrExists)
		}
		out = append(out, mailstate.Outcomes(res)...)
		uids = uids[n:]
	}
	return out, nil
}
