package mailbox

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

// hashSlots bounds the password hash computations (argon2id or bcrypt,
// verifications and new hashes) running at once on a node. Each argon2id
// run holds Hash.Memory (19 MiB by default) for its tens of milliseconds,
// so without a bound a login storm (a dead node's clients all coming back
// here, or a guesser opening many connections) costs memory in proportion
// to the number of simultaneous logins: 100 of them took a node from 100
// MiB to 2 GiB. With the bound the memory is slots × Hash.Memory and the
// excess waits its turn, in arrival order as far as the Go runtime's
// channel queue goes; since the CPU is the real limit, more slots than
// cores would not finish the storm any sooner.
type hashSlots struct {
	ch   chan struct{}
	wait time.Duration

	inUse atomic.Int64
	peak  atomic.Int64 // most slots ever held at once
	runs  atomic.Int64 // computations done (fn said it hashed)

	timeouts atomic.Int64 // waits that ran out

}

// defaultHashSlots is the number of cores Go may use, at least 2.
func defaultHashSlots() int { return max(runtime.GOMAXPROCS(0), 2) }

func newHashSlots(n int, wait time.Duration) *hashSlots {
	if n <= 0 {
		n = defaultHashSlots()
	}
	if wait <= 0 {
		wait = 30 * time.Second
	}
	return &hashSlots{ch: make(chan struct{}, n), wait: wait}
}

// do runs fn in a slot (fn reports whether it did hash: the count of
// computations leaves out logins a slot answered from the cache), waiting for one at most the configured time (and
// while ctx lasts). A wait cut short is ErrUnavailable: the client should
// retry, as it is no judgement on its password.
func (h *hashSlots) do(ctx context.Context, fn func() (hashed bool)) error {
	return h.doUnless(ctx, nil, fn)
}

// errSlotNotNeeded is doUnless's answer when abort closed first.
var errSlotNotNeeded = errors.New("password check answered while waiting for a hash slot")

// doUnless is do, but gives up waiting with errSlotNotNeeded once abort
// is closed: in a storm a login may wait seconds for a slot while its
// answer arrives from a peer, and a slot it does not need is a hash
// another login waits for.
func (h *hashSlots) doUnless(ctx context.Context, abort <-chan struct{}, fn func() (hashed bool)) error {
	select {
	case h.ch <- struct{}{}:
	default:
		t := time.NewTimer(h.wait)
		select {
		case h.ch <- struct{}{}:
			t.Stop()
		case <-abort:
			t.Stop()
			return errSlotNotNeeded
		case <-t.C:
			h.timeouts.Add(1)
			return slotsBusyError{slots: cap(h.ch), wait: h.wait}
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: waiting for a password-hashing slot: %v", ErrUnavailable, ctx.Err())
		}
	}
	n := h.inUse.Add(1)
	for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
	}
	hashed := false
	defer func() {
		h.inUse.Add(-1)
		if hashed {
			h.runs.Add(1)
		}
		<-h.ch
	}()
	hashed = fn()
	return nil
}

// slotsBusyError is a wait for a slot that ran out (an ErrUnavailable).
type slotsBusyError struct {
	slots int
	wait  time.Duration
}

func (e slotsBusyError) Error() string {
	return fmt.Sprintf("%v: every password-hashing slot (%d) stayed busy for %v; try again", ErrUnavailable, e.slots, e.wait)
}

func (e slotsBusyError) Unwrap() error { return ErrUnavailable }
