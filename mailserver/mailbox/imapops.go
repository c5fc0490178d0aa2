package mailbox

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"hastore/mailserver/mailstate"
	"hastore/replica/meta"
)

// Operations the IMAP layer needs beyond delivery.

// MailboxByID finds a user's mailbox by ID.
func (s *Store) MailboxByID(user string, id uint64) (mailstate.Mailbox, bool, error) {
	return s.view.MailboxByID(user, id)
}

// Message returns one message record.
func (s *Store) Message(user string, mailbox uint64, uid uint32) (mailstate.MailMessage, bool, error) {
	return s.view.Message(user, mailbox, uid)
}

// EachMessage calls fn for each message of a mailbox in UID order; an
// error from fn stops the scan and is returned.
func (s *Store) EachMessage(user string, mailbox uint64, fn func(mailstate.MailMessage) error) error {
	return s.view.Messages(user, mailbox, fn)
}

// DeleteMailbox deletes a mailbox and its messages (expunged in chunks
// first when there are many).
func (s *Store) DeleteMailbox(ctx context.Context, user string, id uint64) error {
	for {
		mb, ok, err := s.view.MailboxByID(user, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: mailbox %d", ErrNotFound, id)
		}
		if mb.Messages <= mailstate.MaxMailDrop {
			break
		}
		var uids []uint32
		errStop := errors.New("stop")
		err = s.view.Messages(user, id, func(m mailstate.MailMessage) error {
			uids = append(uids, m.UID)
			if len(uids) == mailstate.MaxMailUIDs {
				return errStop
			}
			return nil
		})
		if err != nil && err != errStop {
			return err
		}
		if _, err := s.Expunge(ctx, user, id, uids); err != nil {
			return err
		}
	}
	_, err := s.c.Propose(ctx, mailstate.MailboxDelete{User: user, Mailbox: id, Now: s.now().UnixNano()})
	return proposeErr("delete mailbox", err, ErrNotEmpty)
}

// RenameMailbox renames a mailbox and its children.
func (s *Store) RenameMailbox(ctx context.Context, user string, id uint64, newName string) error {
	newName = mailstate.CanonicalMailboxName(newName)
	_, err := s.c.Propose(ctx, mailstate.MailboxRename{User: user, Mailbox: id, NewName: newName, UIDValidity: s.uidValidity(), Now: s.now().UnixNano()})
	return proposeErr("rename mailbox", err, ErrExists)
}

// Copy copies (or moves) messages to another mailbox of the same user,
// without touching bodies, and returns an outcome per UID (UID: the new
// UID, SrcUID: the old) and the Raft index of the last command. Over quota
// is a *QuotaError.
func (s *Store) Copy(ctx context.Context, user string, src uint64, uids []uint32, dst uint64, move bool) ([]mailstate.MailOutcome, uint64, error) {
	var out []mailstate.MailOutcome
	var index uint64
	for len(uids) > 0 {
		n := min(len(uids), mailstate.MaxMailUIDs)
		res, err := s.c.Propose(ctx, mailstate.MailCopy{User: user, Mailbox: src, UIDs: uids[:n], Dest: dst, Move: move, Now: s.now().UnixNano()})
		if err != nil {
			for _, o := range mailstate.Outcomes(res) {
				if o.Code == mailstate.MailOverQuota {
					qe := &QuotaError{User: user}
					if u, ok, err := s.view.User(user); err == nil && ok {
						qe.Limit = u.Quota
					}
					if u, err := s.view.Usage(user); err == nil {
						qe.Used = u.Bytes
					}
					return out, index, qe
				}
			}
			return out, index, proposeErr("copy", err, ErrExists)
		}
		out = append(out, mailstate.Outcomes(res)...)
		index = res.Index
		uids = uids[n:]
	}
	return out, index, nil
}

// ExpungeIndex is Expunge that also returns the Raft index of the last
// command (for WaitEvents).
func (s *Store) ExpungeIndex(ctx context.Context, user string, mailbox uint64, uids []uint32) ([]mailstate.MailOutcome, uint64, error) {
	var out []mailstate.MailOutcome
	var index uint64
	for len(uids) > 0 {
		n := min(len(uids), mailstate.MaxMailUIDs)
		res, err := s.c.Propose(ctx, mailstate.MailExpunge{User: user, Mailbox: mailbox, UIDs: uids[:n], Now: s.now().UnixNano()})
		if err != nil {
			return out, index, proposeErr("expunge", err, ErrExists)
		}
		out = append(out, mailstate.Outcomes(res)...)
		index = res.Index
		uids = uids[n:]
	}
	return out, index, nil
}

// StoreFlagsIndex is StoreFlags that also returns the Raft index of the
// last command.
func (s *Store) StoreFlagsIndex(ctx context.Context, user string, mailbox uint64, uids []uint32, op mailstate.MailStoreOp, flags []string) ([]mailstate.MailOutcome, uint64, error) {
	return s.StoreFlagsUnchangedSince(ctx, user, mailbox, uids, op, flags, 0)
}

// StoreFlagsUnchangedSince is StoreFlagsIndex that leaves a message whose
// modseq is above unchangedSince (when not 0) alone: its outcome is
// mailstate.MailModified (IMAP CONDSTORE's UNCHANGEDSINCE, RFC 7162).
func (s *Store) StoreFlagsUnchangedSince(ctx context.Context, user string, mailbox uint64, uids []uint32, op mailstate.MailStoreOp, flags []string, unchangedSince uint64) ([]mailstate.MailOutcome, uint64, error) {
	var out []mailstate.MailOutcome
	var index uint64
	for len(uids) > 0 {
		n := min(len(uids), mailstate.MaxMailUIDs)
		res, err := s.c.Propose(ctx, mailstate.MailStore{User: user, Mailbox: mailbox, UIDs: uids[:n], Op: op, Flags: flags, UnchangedSince: unchangedSince})
		if err != nil {
			return out, index, proposeErr("store flags", err, ErrExists)
		}
		out = append(out, mailstate.Outcomes(res)...)
		index = res.Index
		uids = uids[n:]
	}
	return out, index, nil
}

// Subscriptions live in the user's tenant under "sub/<name>" (written with
// TenantPut; MailUserDelete removes the whole tenant, these included).
const subPrefix = "sub/"

// Subscribe adds name to the user's subscriptions (RFC 3501 6.3.6: the
// mailbox need not exist).
func (s *Store) Subscribe(ctx context.Context, user, name string) error {
	name = mailstate.CanonicalMailboxName(name)
	if err := mailstate.ValidMailboxName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	_, err := s.c.Propose(ctx, meta.TenantPut{Tenant: mailstate.MailUserTenant(user), Key: subPrefix + name, Value: []byte{1}})
	return proposeErr("subscribe", err, ErrExists)
}

// Unsubscribe removes name from the user's subscriptions.
func (s *Store) Unsubscribe(ctx context.Context, user, name string) error {
	name = mailstate.CanonicalMailboxName(name)
	res, err := s.c.Propose(ctx, meta.TenantDelete{Tenant: mailstate.MailUserTenant(user), Key: subPrefix + name})
	if err == nil && !res.Found {
		return fmt.Errorf("%w: not subscribed to %q", ErrNotFound, name)
	}
	return proposeErr("unsubscribe", err, ErrExists)
}

// Subscriptions returns the names the user subscribed to.
func (s *Store) Subscriptions(user string) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.view.R.TenantScan(mailstate.MailUserTenant(user), subPrefix, func(k string, _ []byte) error {
		out[strings.TrimPrefix(k, subPrefix)] = true
		return nil
	})
	return out, err
}
