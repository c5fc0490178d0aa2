package mailbox

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// After a burst of hashes the freed argon2id memory is handed back once
// the slots fall idle, and not while hashing goes on or after a few
// logins that do not amount to a burst.
func TestHashSlotsReleaseMemoryAfterBurst(t *testing.T) {
	cases := []struct {
		name   string
		hashes int
		want   int64
	}{
		{"burst", 2 * releaseMinRuns, 1},
		{"few logins", releaseMinRuns - 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHashSlots(2, time.Second)
			h.releaseWait = 50 * time.Millisecond
			var released atomic.Int64
			h.release = func() { released.Add(1) }
			var wg sync.WaitGroup
			for range tc.hashes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := h.do(context.Background(), func() bool { time.Sleep(5 * time.Millisecond); return true }); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if got := released.Load(); got != 0 && tc.want == 0 {
				t.Fatalf("released %d times after %d hashes, want none", got, tc.hashes)
			}
			time.Sleep(300 * time.Millisecond)
			if got := released.Load(); got != tc.want {
				t.Fatalf("released %d times after %d hashes and an idle pause, want %d", got, tc.hashes, tc.want)
			}
		})
	}
}

// holdSlots takes every slot of h until the returned func is called.
func holdSlots(t *testing.T, h *hashSlots) (release func()) {
	t.Helper()
	var held sync.WaitGroup
	gate := make(chan struct{})
	for range h.n {
		held.Add(1)
		go func() {
			_ = h.do(context.Background(), func() bool { held.Done(); <-gate; return false })
		}()
	}
	held.Wait()
	return func() { close(gate) }
}

// queue starts n logins waiting on h (in order, each queued before the
// next starts) whose fn records its index in order; later(i) is each one's
// later func (nil: none).
func queue(t *testing.T, h *hashSlots, n int, later func(i int) func() bool, order *[]int, mu *sync.Mutex, wg *sync.WaitGroup) {
	t.Helper()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var l func() bool
			if later != nil {
				l = later(i)
			}
			if err := h.doUnless(context.Background(), nil, l, func() bool {
				mu.Lock()
				*order = append(*order, i)
				mu.Unlock()
				return false
			}); err != nil {
				t.Error(err)
			}
		}()
		for deadline := time.Now().Add(10 * time.Second); ; {
			h.mu.Lock()
			k := len(h.waiters)
			h.mu.Unlock()
			if k == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("login %d never queued", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A free slot goes to a waiting login at random, not in arrival order:
// the nodes of a cluster hold logins of the same users in about the same
// order, and served in that order they would all hash the same user at
// the same moment. Logins whose credential a peer is hashing go last, and
// logins that waited half the bound go first, oldest first.
func TestHashSlotsPick(t *testing.T) {
	const n = 24
	cases := []struct {
		name  string
		wait  time.Duration
		hold  time.Duration // before the slot is freed
		later func(i int) func() bool
		check func(order []int) error
	}{
		{"random, not arrival order", 30 * time.Second, 0, nil, func(order []int) error {
			if slices.IsSorted(order) {
				return fmt.Errorf("served in arrival order %v", order)
			}
			return nil
		}},
		{"peer hashing goes last", 30 * time.Second, 0,
			func(i int) func() bool {
				if i%2 == 0 {
					return func() bool { return true }
				}
				return func() bool { return false }
			},
			func(order []int) error {
				for k, i := range order {
					if (k < n/2) != (i%2 == 1) {
						return fmt.Errorf("a login a peer is hashing was served before one nobody is: %v", order)
					}
				}
				return nil
			}},
		{"long waits first, in order", 6 * time.Second, 3500 * time.Millisecond, nil, func(order []int) error {
			if !slices.IsSorted(order) {
				return fmt.Errorf("logins that waited past half the bound served out of order: %v", order)
			}
			return nil
		}},
		{"long waits first, peer hashing still last", 6 * time.Second, 3500 * time.Millisecond,
			func(i int) func() bool { return func() bool { return i%2 == 0 } },
			func(order []int) error {
				odd, even := order[:n/2], order[n/2:]
				if !slices.IsSorted(odd) || !slices.IsSorted(even) || slices.ContainsFunc(odd, func(i int) bool { return i%2 == 0 }) {
					return fmt.Errorf("logins that waited past half the bound: want those nobody hashes in order, then the others in order: %v", order)
				}
				return nil
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHashSlots(1, tc.wait)
			release := holdSlots(t, h)
			var (
				mu    sync.Mutex
				order []int
				wg    sync.WaitGroup
			)
			queue(t, h, n, tc.later, &order, &mu, &wg)
			time.Sleep(tc.hold)
			release()
			wg.Wait()
			if len(order) != n {
				t.Fatalf("%d of %d logins served", len(order), n)
			}
			if err := tc.check(order); err != nil {
				t.Error(err)
			}
			if h.busy != 0 || len(h.waiters) != 0 {
				t.Errorf("after the logins: %d slots held, %d waiting", h.busy, len(h.waiters))
			}
		})
	}
}

// A login that gives up waiting (its answer came from a peer, its
// context ended, the bound ran out) leaves the queue, and a slot handed
// to it at that moment goes on to the next login instead of being lost.
func TestHashSlotsGiveUp(t *testing.T) {
	h := newHashSlots(1, 30*time.Second)
	release := holdSlots(t, h)
	abort := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- h.doUnless(context.Background(), abort, nil, func() bool { return false }) }()
	go func() { errs <- h.doUnless(ctx, nil, nil, func() bool { return false }) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		h.mu.Lock()
		k := len(h.waiters)
		h.mu.Unlock()
		if k == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("logins never queued")
		}
	}
	close(abort)
	cancel()
	for range 2 {
		if err := <-errs; err == nil {
			t.Error("a login that gave up waiting got a slot")
		}
	}
	// A slot handed to a login as it gives up is passed on.
	w := &slotWaiter{ready: make(chan struct{}), since: time.Now()}
	h.mu.Lock()
	h.waiters = append(h.waiters, w)
	h.mu.Unlock()
	release()
	<-w.ready
	done := make(chan error, 1)
	go func() { done <- h.do(context.Background(), func() bool { return false }) }()
	h.put() // what acquire does when it finds it was granted after giving up
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the slot of a login that gave up was lost")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.busy != 0 || len(h.waiters) != 0 {
		t.Errorf("%d slots held, %d waiting, want none", h.busy, len(h.waiters))
	}
}
