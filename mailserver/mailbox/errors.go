package mailbox

import (
	"context"
	"errors"
	"fmt"

	"hastore/replica/meta"
)

// Error kinds, to be tested with errors.Is. Endpoints map them to protocol
// codes (SMTP, IMAP, gRPC); the wrapping message says what failed.
var (
	// ErrNotFound: no such domain, user, mailbox or message.
	ErrNotFound = errors.New("mailbox: not found")
	// ErrExists: the domain, user or mailbox exists already.
	ErrExists = errors.New("mailbox: already exists")
	// ErrNotEmpty: a domain still has users.
	ErrNotEmpty = errors.New("mailbox: not empty")
	// ErrInvalid: a malformed name, address, flag or argument.
	ErrInvalid = errors.New("mailbox: invalid")
	// ErrOverQuota: the user's quota does not allow it.
	ErrOverQuota = errors.New("mailbox: over quota")
	// ErrAuthFailed: wrong user name or password (never says which).
	ErrAuthFailed = errors.New("mailbox: authentication failed")
	// ErrThrottled: too many failed logins from this client or for this
	// account lately; try again later.
	ErrThrottled = errors.New("mailbox: too many failed logins")
	// ErrDisabled: the account is disabled.
	ErrDisabled = errors.New("mailbox: account disabled")
	// ErrUnavailable: the cluster cannot store or decide now (degraded, full,
	// no leader); nothing was acknowledged, retrying later may succeed.
	ErrUnavailable = errors.New("mailbox: storage temporarily unavailable")
)

// proposeErr turns a failed proposal into an error of this package:
// judged outcomes become their kind, everything else ErrUnavailable.
func proposeErr(op string, err error, conflict error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, meta.ErrNotFound):
		return fmt.Errorf("%w: %s: %v", ErrNotFound, op, err)
	case errors.Is(err, meta.ErrConflict):
		return fmt.Errorf("%w: %s: %v", conflict, op, err)
	case errors.Is(err, meta.ErrInvalid):
		return fmt.Errorf("%w: %s: %v", ErrInvalid, op, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, op, err)
}

// judged reports whether a proposal's error means the cluster decided
// (and so changed nothing), as opposed to an unknown outcome.
func judged(err error) bool {
	for _, k := range []error{meta.ErrNotFound, meta.ErrConflict, meta.ErrInvalid, meta.ErrAborted} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}
