package mailbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"hastore/mailserver/mailstate"
	"hastore/replica/meta"
)

// Accounts: disabling, imported password hashes and their replacement.

// SetDisabled disables (or enables again) a user. A disabled user cannot
// log in (IMAP NO [AUTHORIZATIONFAILED], SMTP AUTH 535) and mail to it is
// refused (550 5.2.1, "mailbox disabled": the sender learns at once
// instead of the mail piling up where nobody reads it — what Postfix in
// front of a Dovecot with the user removed from its maps does too). Its
// mail stays. Every node drops the user's verified passwords from its
// login cache as the change applies (credcache.go), and AccountChanged
// signals the sessions the user has open so they end.
func (s *Store) SetDisabled(ctx context.Context, addr string, disabled bool) error {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	_, err = s.c.Propose(ctx, mailstate.MailUserUpdate{Address: a, SetDisabled: true, Disabled: disabled})
	s.creds.forget(a) // the apply stream does it too, on every node
	return proposeErr("disable "+a, err, ErrExists)
}

// AddUserHash creates a user like AddUser, with a password hash imported
// from another server (see ImportPasswordHash) instead of a password.
// The first good login replaces the hash with an argon2id one.
func (s *Store) AddUserHash(ctx context.Context, addr, hash string, quota int64) error {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	if quota < 0 {
		return fmt.Errorf("%w: negative quota", ErrInvalid)
	}
	h, err := ImportPasswordHash(hash)
	if err != nil {
		return err
	}
	_, err = s.c.Propose(ctx, mailstate.MailUserCreate{
		User:      mailstate.MailUser{Address: a, PasswordHash: h, Quota: quota},
		Mailboxes: DefaultMailboxes, UIDValidity: s.uidValidity(), Now: s.now().UnixNano(),
	})
	return proposeErr("add user "+a, err, ErrExists)
}

// SetPasswordHash replaces a user's password by an imported hash.
func (s *Store) SetPasswordHash(ctx context.Context, addr, hash string) error {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	h, err := ImportPasswordHash(hash)
	if err != nil {
		return err
	}
	_, err = s.c.Propose(ctx, mailstate.MailUserUpdate{Address: a, SetPassword: true, PasswordHash: h})
	s.creds.forget(a)
	return proposeErr("set password of "+a, err, ErrExists)
}

// rehashTimeout bounds a rehash after a login; it runs beside the session.
const rehashTimeout = time.Minute

// maybeRehash replaces hash, which password was just verified against,
// by an argon2id hash with this Store's parameters if it is of another
// scheme or weaker. It runs in the background: the login does not wait.
// The replacement applies only if the hash is still the one verified
// (MailUserRehash), so a password changed meanwhile stays changed.
func (s *Store) maybeRehash(addr, hash, password string) {
	if !NeedsRehash(hash, s.opt.Hash) {
		return
	}
	// One at a time per user: a login storm of one user replaces it once.
	if _, busy := s.rehashing.LoadOrStore(addr, struct{}{}); busy {
		return
	}
	go func() {
		defer s.rehashing.Delete(addr)
		ctx, cancel := context.WithTimeout(context.Background(), rehashTimeout)
		defer cancel()
		nh, err := s.hashPassword(ctx, password)
		if err == nil {
			_, err = s.c.Propose(ctx, mailstate.MailUserRehash{Address: addr, OldHash: hash, NewHash: nh})
		}
		switch {
		case err == nil:
			s.log.Info("password hash replaced by argon2id after a good login", "user", addr, "was", hashScheme(hash))
		case errors.Is(err, meta.ErrConflict):
			// Changed meanwhile (or another node did it): nothing to do.
		default:
			s.log.Warn("could not replace an imported password hash; the next login tries again", "user", addr, "err", err)
		}
	}()
}

// hashScheme names a stored hash's scheme for logs, never the hash.
func hashScheme(h string) string {
	for _, p := range []struct{ prefix, name string }{
		{"$argon2id$", "argon2id"}, {"$2", "bcrypt"}, {"$6$", "sha512-crypt"}, {"$5$", "sha256-crypt"},
	} {
		if len(h) >= len(p.prefix) && h[:len(p.prefix)] == p.prefix {
			return p.name
		}
	}
	return "unknown"
}

// accountWatchers are the channels AccountChanged handed out, by user.
type accountWatchers struct {
	mu sync.Mutex
	m  map[string]map[chan struct{}]struct{}
}

// AccountChanged returns a channel closed when user's account is
// disabled, deleted or gets a new password on this node's applied state
// (with stop, to call when the session ends). A session of the user
// selects on it and ends (IMAP: BYE) when it closes; it then logs in
// afresh, or cannot.
func (s *Store) AccountChanged(user string) (changed <-chan struct{}, stop func()) {
	w := &s.acct
	c := make(chan struct{})
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string]map[chan struct{}]struct{}{}
	}
	if w.m[user] == nil {
		w.m[user] = map[chan struct{}]struct{}{}
	}
	w.m[user][c] = struct{}{}
	w.mu.Unlock()
	return c, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.m[user][c]; ok {
			delete(w.m[user], c)
			if len(w.m[user]) == 0 {
				delete(w.m, user)
			}
		}
	}
}

// accountChanged closes the channels of user's watchers.
func (s *Store) accountChanged(user string) {
	w := &s.acct
	w.mu.Lock()
	defer w.mu.Unlock()
	for c := range w.m[user] {
		close(c)
	}
	delete(w.m, user)
}

// followAccounts signals AccountChanged watchers for a change that ends
// the sessions of its user: disabled (not enabled), deleted, new password.
func (s *Store) followAccounts(cmd meta.Command) {
	switch c := cmd.(type) {
	case meta.Batch:
		for _, sub := range c.Cmds {
			s.followAccounts(sub)
		}
	case mailstate.MailUserUpdate:
		if c.SetPassword || (c.SetDisabled && c.Disabled) {
			s.accountChanged(c.Address)
		}
	case mailstate.MailUserDelete:
		s.accountChanged(c.Address)
	}
}
