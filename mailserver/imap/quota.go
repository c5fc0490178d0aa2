package imap

import (
	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/imap/wire"
)

// QUOTA (RFC 9208): a user with a storage limit has one quota root, "",
// over all their mailboxes; STORAGE is in KiB, usage rounded up. A user
// without a limit has no root.

var _ wire.SessionQuota = (*session)(nil)

// userQuota returns the user's limit and usage in bytes (limit 0: none).
func (s *session) userQuota() (limit, used int64, err error) {
	c, cancel := ctx()
	defer cancel()
	u, ok, err := s.store().LookupUser(c, s.user)
	if err != nil {
		return 0, 0, imapErr(err)
	}
	if !ok {
		return 0, 0, no(imap.ResponseCodeNonExistent, "No such user")
	}
	return u.Quota, u.Usage.Bytes, nil
}

func (s *session) QuotaRoots(mailbox string) ([]string, error) {
	s.touch()
	if _, err := s.mailbox(mailbox); err != nil {
		return nil, err
	}
	limit, _, err := s.userQuota()
	if err != nil || limit <= 0 {
		return nil, err
	}
	return []string{""}, nil
}

func (s *session) Quota(root string) ([]wire.QuotaResource, error) {
	s.touch()
	limit, used, err := s.userQuota()
	if err != nil {
		return nil, err
	}
	if root != "" || limit <= 0 {
		return nil, no(imap.ResponseCodeNonExistent, "No such quota root")
	}
	return []wire.QuotaResource{{Name: "STORAGE", Usage: (used + 1023) / 1024, Limit: limit / 1024}}, nil
}
