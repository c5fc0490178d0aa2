package mailbox

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
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

	// After a burst of hashing the heap holds tens of MiB of freed
	// argon2id blocks that the Go runtime returns to the OS only over
	// minutes; a node that just took a login storm would sit at its peak
	// RSS. Once no slot has been busy for releaseAfter and enough hashes
	// ran since the last time, the free memory is handed back at once.
	releaseMu    sync.Mutex
	releaseTimer *time.Timer
	sinceRelease int
	releaseWait  time.Duration
	release      func() // debug.FreeOSMemory; a test counts calls
}

const (
	releaseAfter   = 3 * time.Second
	releaseMinRuns = 16 // ≈ 300 MiB of argon2id blocks allocated and freed
)

// burstDone notes a finished hash and, when the slots fall idle after a
// burst, schedules returning the freed memory to the OS.
func (h *hashSlots) burstDone(hashed bool) {
	h.releaseMu.Lock()
	defer h.releaseMu.Unlock()
	if hashed {
		h.sinceRelease++
	}
	if h.sinceRelease < releaseMinRuns || h.inUse.Load() > 0 {
		return
	}
	if h.releaseTimer != nil {
		h.releaseTimer.Reset(h.releaseWait)
		return
	}
	h.releaseTimer = time.AfterFunc(h.releaseWait, func() {
		h.releaseMu.Lock()
		busy := h.inUse.Load() > 0
		if !busy {
			h.sinceRelease = 0
		}
		h.releaseTimer = nil
		h.releaseMu.Unlock()
		if !busy {
			h.release()
		}
	})
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
	return &hashSlots{ch: make(chan struct{}, n), wait: wait, releaseWait: releaseAfter, release: debug.FreeOSMemory}
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
		h.burstDone(hashed)
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
