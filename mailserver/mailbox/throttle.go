package mailbox

import (
	"sync"
	"time"
)

// ThrottleOptions bound failed logins. A key (client address or account)
// may fail Burst times in a row; after that one more failure is allowed
// per Window/Burst, so a sustained guesser gets Burst tries per Window.
// Counters are per node: a client spreading over n nodes gets n times the
// budget, which still stops brute force.
type ThrottleOptions struct {
	PerAddress int           // failures per Window from one client address (default 10)
	PerAccount int           // failures per Window for one account (default 20)
	Window     time.Duration // default 15 minutes
	// FailDelay is how long a failed attempt waits before it is answered
	// (default 1 s; negative: none), which slows a client that opens many
	// connections to try passwords in parallel.
	FailDelay time.Duration
	// MaxKeys bounds the memory of the counters (default 100,000).
	MaxKeys int
}

func (o *ThrottleOptions) setDefaults() {
	if o.PerAddress == 0 {
		o.PerAddress = 10
	}
	if o.PerAccount == 0 {
		o.PerAccount = 20
	}
	if o.Window == 0 {
		o.Window = 15 * time.Minute
	}
	if o.FailDelay == 0 {
		o.FailDelay = time.Second
	}
	if o.MaxKeys == 0 {
		o.MaxKeys = 100000
	}
}

// throttle counts failures per key with linear decay (a leaky bucket).
type throttle struct {
	opt ThrottleOptions
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*bucket
}

type bucket struct {
	level float64 // failures not yet forgiven
	at    time.Time
}

func newThrottle(opt ThrottleOptions, now func() time.Time) *throttle {
	opt.setDefaults()
	return &throttle{opt: opt, now: now, m: map[string]*bucket{}}
}

func (t *throttle) limit(key string) float64 {
	if key[0] == 'a' {
		return float64(t.opt.PerAddress)
	}
	return float64(t.opt.PerAccount)
}

// level returns the key's current failure level, decayed to now.
func (t *throttle) levelLocked(key string, now time.Time) float64 {
	b := t.m[key]
	if b == nil {
		return 0
	}
	rate := t.limit(key) / t.opt.Window.Seconds() // forgiven per second
	l := b.level - now.Sub(b.at).Seconds()*rate
	if l <= 0 {
		delete(t.m, key)
		return 0
	}
	b.level, b.at = l, now
	return l
}

// blocked reports whether any key is at its limit.
func (t *throttle) blocked(keys ...string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for _, k := range keys {
		if k != "" && t.levelLocked(k, now) >= t.limit(k) {
			return true
		}
	}
	return false
}

// fail records a failure for each key.
func (t *throttle) fail(keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.m) >= t.opt.MaxKeys {
		// Forget decayed entries; if that is not enough, forget arbitrary
		// ones (a flood of distinct keys must not exhaust memory).
		for k := range t.m {
			t.levelLocked(k, now)
		}
		for k := range t.m {
			if len(t.m) < t.opt.MaxKeys*9/10 {
				break
			}
			delete(t.m, k)
		}
	}
	for _, k := range keys {
		if k == "" {
			continue
		}
		l := t.levelLocked(k, now)
		t.m[k] = &bucket{level: l + 1, at: now}
	}
}

func addressKey(ip string) string {
	if ip == "" {
		return ""
	}
	return "a" + ip
}
func accountKey(user string) string { return "u" + user }
