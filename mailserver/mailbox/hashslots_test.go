package mailbox

import (
	"context"
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
