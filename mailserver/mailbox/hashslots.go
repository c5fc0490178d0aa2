package mailbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
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
// excess waits its turn; since the CPU is the real limit, more slots than
// cores would not finish the storm any sooner.
//
// Which waiting login gets a free slot is chosen (pick), not first come
// first served: in a cluster-wide storm every node holds logins of the
// same users, arrived in about the same order, and in arrival order the
// nodes would reach each user at about the same moment and hash it
// each, before their words on it (CredHashing) could reach the others —
// a storm cost up to one hash per user per node. Picked at random, the
// nodes mostly work on different users and answer the rest from each
// other's entries; a login whose credential a peer said it is hashing is
// picked last. Once a login has waited half the wait bound it is served
// first, oldest first, so sustained overload does not starve anyone (a
// peer's word still puts it after the others: at that age the nodes'
// oldest logins are again the same users, and the words spread them).
type hashSlots struct {
	n    int // slots
	wait time.Duration

	mu      sync.Mutex
	busy    int           // slots held
	waiters []*slotWaiter // in arrival order
	rnd     *rand.Rand    // under mu

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

// slotWaiter is a login waiting for a slot.
type slotWaiter struct {
	ready   chan struct{} // closed when the slot is handed to it
	granted bool          // under hashSlots.mu
	since   time.Time
	// later, if set, says the login had better wait: a peer is hashing
	// the same credential. It must not call back into hashSlots.
	later func() bool
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
	return &hashSlots{n: n, wait: wait, releaseWait: releaseAfter, release: debug.FreeOSMemory,
		rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// do runs fn in a slot (fn reports whether it did hash: the count of
// computations leaves out logins a slot answered from the cache), waiting
// for one at most the configured time (and while ctx lasts). A wait cut
// short is ErrUnavailable: the client should retry, as it is no judgement
// on its password.
func (h *hashSlots) do(ctx context.Context, fn func() (hashed bool)) error {
	return h.doUnless(ctx, nil, nil, fn)
}

// errSlotNotNeeded is doUnless's answer when abort closed first.
var errSlotNotNeeded = errors.New("password check answered while waiting for a hash slot")

// doUnless is do, but gives up waiting with errSlotNotNeeded once abort
// is closed: in a storm a login may wait seconds for a slot while its
// answer arrives from a peer, and a slot it does not need is a hash
// another login waits for. later (may be nil) tells pick that the login
// would rather let others go first for now (see hashSlots).
func (h *hashSlots) doUnless(ctx context.Context, abort <-chan struct{}, later func() bool, fn func() (hashed bool)) error {
	if err := h.acquire(ctx, abort, later); err != nil {
		return err
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
		h.put()
		h.burstDone(hashed)
	}()
	hashed = fn()
	return nil
}

// acquire waits for a slot (see doUnless).
func (h *hashSlots) acquire(ctx context.Context, abort <-chan struct{}, later func() bool) error {
	h.mu.Lock()
	if h.busy < h.n && len(h.waiters) == 0 {
		h.busy++
		h.mu.Unlock()
		return nil
	}
	w := &slotWaiter{ready: make(chan struct{}), since: time.Now(), later: later}
	h.waiters = append(h.waiters, w)
	h.mu.Unlock()
	t := time.NewTimer(h.wait)
	defer t.Stop()
	var err error
	select {
	case <-w.ready:
		return nil
	case <-abort:
		err = errSlotNotNeeded
	case <-t.C:
		err = slotsBusyError{slots: h.n, wait: h.wait}
	case <-ctx.Done():
		err = fmt.Errorf("%w: waiting for a password-hashing slot: %v", ErrUnavailable, ctx.Err())
	}
	h.mu.Lock()
	if w.granted {
		// Handed the slot as the wait ended: pass it on.
		h.mu.Unlock()
		h.put()
	} else {
		h.waiters = slices.DeleteFunc(h.waiters, func(x *slotWaiter) bool { return x == w })
		h.mu.Unlock()
	}
	if _, busy := err.(slotsBusyError); busy {
		h.timeouts.Add(1)
	}
	return err
}

// put gives a slot back: to a waiting login if there is one (pick).
func (h *hashSlots) put() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.waiters) == 0 {
		h.busy--
		return
	}
	i := h.pickLocked(time.Now())
	w := h.waiters[i]
	h.waiters = slices.Delete(h.waiters, i, i+1)
	w.granted = true
	close(w.ready)
}

// pickLocked chooses the waiter to get a free slot (see hashSlots): of
// those whose credential no peer is hashing, the oldest if it waited half
// the bound, else one at random; if a peer is hashing every one's, the
// oldest.
func (h *hashSlots) pickLocked(now time.Time) int {
	pick, seen := -1, 0
	for i, w := range h.waiters {
		if w.later != nil && w.later() {
			continue
		}
		if now.Sub(w.since) >= h.wait/2 {
			return i // the oldest such: waiters are in arrival order
		}
		seen++
		if h.rnd.IntN(seen) == 0 { // reservoir sampling: each equally likely
			pick = i
		}
	}
	if pick < 0 {
		return 0
	}
	return pick
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
