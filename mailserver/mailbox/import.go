package mailbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"hastore/mailserver/mailstate"
	"hastore/replica/meta"
)

// Migration of mail from another server: the proposer's half of
// mailstate.MailImport. The reader of the source (a Dovecot maildir,
// cmd/hastore/import.go) stores each body (one reference held), then
// hands them here in batches.

// ImportMessage is one message to import. The caller holds one reference
// to Object (from Cluster.Put), which ImportMessages consumes.
type ImportMessage struct {
	Key          string // stable name at the source (maildir: base file name)
	UID          uint32 // UID at the source, 0 if it has none
	Object       meta.BlobID
	Size         int64
	InternalDate time.Time
	Info         []byte // EncodeInfo(ParseInfo(body))
	Flags        []string
}

// ImportResult says what became of one message.
type ImportResult struct {
	UID         uint32
	UIDValidity uint32
	Existed     bool // imported by an earlier run; nothing appended
	Err         error
}

// EnsureMailbox returns user's mailbox name, creating it if it is missing.
func (s *Store) EnsureMailbox(ctx context.Context, user, name string) (mailstate.Mailbox, error) {
	a, err := NormalizeAddress(user)
	if err != nil {
		return mailstate.Mailbox{}, err
	}
	name = mailstate.CanonicalMailboxName(name)
	if err := s.catchUp(ctx); err != nil {
		return mailstate.Mailbox{}, err
	}
	if mb, ok, err := s.view.Mailbox(a, name); err != nil || ok {
		return mb, err
	}
	mb, err := s.CreateMailbox(ctx, a, name, "")
	if errors.Is(err, ErrExists) { // created meanwhile
		var ok bool
		if mb, ok, err = s.view.Mailbox(a, name); err == nil && !ok {
			err = fmt.Errorf("%w: mailbox %q of %s", ErrNotFound, name, a)
		}
	}
	return mb, err
}

// ImportedUIDs returns, for each key, the UID its message got if an
// earlier import brought it into user's mailbox (0 if not).
func (s *Store) ImportedUIDs(ctx context.Context, user string, mailbox uint64, keys []string) ([]uint32, error) {
	a, err := NormalizeAddress(user)
	if err != nil {
		return nil, err
	}
	if err := s.catchUp(ctx); err != nil {
		return nil, err
	}
	out := make([]uint32, len(keys))
	for i, k := range keys {
		uid, ok, err := s.view.Imported(a, mailbox, k)
		if err != nil {
			return nil, err
		}
		if ok {
			out[i] = uid
		}
	}
	return out, nil
}

// ImportMessages appends msgs (at most mailstate.MaxMailMessages, UIDs
// ascending) to user's mailbox name, keeping their UIDs when the mailbox
// takes uidValidity (see mailstate.MailImport). On an error nothing was
// appended and the caller still holds its references, unless the error is
// ErrUnavailable (the outcome is unknown: import again, which appends
// nothing twice).
func (s *Store) ImportMessages(ctx context.Context, user, name string, uidValidity uint32, msgs []ImportMessage) ([]ImportResult, error) {
	a, err := NormalizeAddress(user)
	if err != nil {
		return nil, err
	}
	cmd := mailstate.MailImport{User: a, Mailbox: mailstate.CanonicalMailboxName(name), UIDValidity: uidValidity, Now: s.now().UnixNano()}
	for i, m := range msgs {
		if _, err := DecodeInfo(m.Info); err != nil {
			return nil, fmt.Errorf("%w: message %d (%s): its info is unreadable: %v", ErrInvalid, i, m.Key, err)
		}
		date := m.InternalDate
		if date.IsZero() {
			date = s.now()
		}
		_, off := date.Zone()
		cmd.Messages = append(cmd.Messages, mailstate.MailImportMessage{Key: m.Key, UID: m.UID, Object: m.Object, Size: m.Size,
			InternalDate: date.UnixNano(), Zone: int32(off), Info: m.Info, Flags: m.Flags})
	}
	res, err := s.c.Propose(ctx, cmd)
	if err != nil {
		return nil, proposeErr("import into "+name+" of "+a, err, ErrInvalid)
	}
	outs := mailstate.Outcomes(res)
	if len(outs) != len(msgs) {
		return nil, fmt.Errorf("%w: import: %d outcomes for %d messages", ErrUnavailable, len(outs), len(msgs))
	}
	out := make([]ImportResult, len(msgs))
	for i, o := range outs {
		out[i] = ImportResult{UID: o.UID, UIDValidity: o.UIDValidity, Existed: o.Code == mailstate.MailOK && o.SrcUID != 0}
		if o.Code != mailstate.MailOK {
			out[i].Err = fmt.Errorf("%w: %s", ErrInvalid, o.Code)
		}
	}
	return out, nil
}
