package meta

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// Errors returned by this package, to be tested with errors.Is. Returned
// errors wrap them with what failed.
var (
	// ErrNotLeader means this node cannot propose or answer a read index.
	// The error is a *NotLeaderError naming the leader, if one is known:
	// forward the request there, or retry after the election.
	ErrNotLeader = errors.New("meta: not the raft leader")
	// ErrUnknownOutcome means the command was handed to raft but this node
	// cannot tell whether it committed (deadline passed, leadership lost).
	// Propose the same Request (same ID) again: it applies at most once.
	// A bare command is not protected: PutObject, for one, is not
	// idempotent.
	ErrUnknownOutcome = errors.New("meta: outcome of the proposal unknown")
	// ErrNotFound means the object, node or key does not exist.
	ErrNotFound = errors.New("meta: not found")
	// ErrConflict means a condition of the command did not hold (a
	// compare-and-set saw another value, a put named a known ID with another
	// size, a DecRef found no reference left). Nothing changed; the result
	// carries the current record.
	ErrConflict = errors.New("meta: conflict")
	// ErrInvalid means the command can never apply: malformed, over a limit,
	// or of a type or format version this node does not know (upgrade it).
	ErrInvalid = errors.New("meta: invalid command")
	// ErrAborted means an atomic Batch was rolled back because one of its
	// commands did not succeed; its sub-results say which.
	ErrAborted = errors.New("meta: atomic batch aborted")
	// ErrClosed means the store or FSM was closed.
	ErrClosed = errors.New("meta: closed")
	// ErrLagged means a subscription's buffer overflowed and it was
	// cancelled. Reload state from reads and subscribe again.
	ErrLagged = errors.New("meta: subscriber fell behind")
)

// NotLeaderError is the error for ErrNotLeader. It names the leader this
// node knows of, so the caller can forward the request.
type NotLeaderError struct {
	LeaderID   string // empty if no leader is known
	LeaderAddr string // the leader's raft transport address
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" && e.LeaderAddr == "" {
		return "meta: not the raft leader and no leader known; retry after the election"
	}
	return fmt.Sprintf("meta: not the raft leader; forward to leader %q at %s", e.LeaderID, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Unwrap makes errors.Is(err, raft.ErrNotLeader) true as well, for code that
// already handles raft's own sentinel.
func (e *NotLeaderError) Unwrap() error { return raft.ErrNotLeader }
