package mailbox

import (
	"net"
	"sync"
	"time"
)

// ThrottleOptions bound failed logins. Each counter is a leaky bucket: a
// key may fail its limit times in a row, after that one more failure is
// allowed per Window/limit, so a sustained guesser gets limit tries per
// Window. Counters are per node: a client spreading over n nodes gets n
// times the budget, which still stops brute force.
//
// The design, and why (compare Dovecot's auth_penalty, which is per
// client address, and fail2ban, which bans addresses):
//
//   - PerAddress counts every failure from one client address (an IPv4
//     address, or an IPv6 /64: one customer line hands out a whole /64, so
//     counting single IPv6 addresses would give a guesser 2^64 budgets).
//     This is what stops a guesser; it costs a legitimate user nothing
//     unless they share the address with the guesser.
//   - PerAccount counts failures of one account from one client address.
//     A device with a stale password is stopped early without blocking its
//     neighbours behind the same NAT from their own accounts.
//   - AccountGuard counts one account's failures from every address. A
//     per-account lockout would let anyone lock any user out (L1), so going
//     over it does not lock the account: it admits only addresses the
//     account logged in from successfully in the last FamiliarFor (its
//     owner's devices) and refuses the others before their password is
//     looked at. A botnet spreading guesses over many addresses thus gets
//     AccountGuard guesses per Window per account, while the owner keeps
//     working from the usual places; only a new place of the owner has to
//     wait for the attack to decay (at most Window).
//
// Every attempt reserves its place in all three budgets before the
// password is checked and gives it back (or turns it into a failure) after,
// so N parallel guesses cannot overshoot a limit while the first ones are
// still being hashed.
type ThrottleOptions struct {
	PerAddress int // failures per Window from one client address (default 10)
	PerAccount int // failures per Window of one account from one address (default 5)
	// AccountGuard is the failures per Window of one account from all
	// addresses after which only its familiar addresses may try (default 100).
	AccountGuard int
	Window       time.Duration // default 15 minutes
	// FamiliarFor is how long an address that logged in successfully stays
	// familiar to the account (default 7 days); up to 8 per account.
	FamiliarFor time.Duration
	// FailDelay is how long a failed attempt waits before it is answered
	// (default 1 s; negative: none), which slows a client that opens many
	// connections to try passwords in parallel.
	FailDelay time.Duration
	// MaxKeys bounds the memory of the counters and of the familiar
	// addresses (default 100,000 each).
	MaxKeys int
}

func (o *ThrottleOptions) setDefaults() {
	if o.PerAddress == 0 {
		o.PerAddress = 10
	}
	if o.PerAccount == 0 {
		o.PerAccount = 5
	}
	if o.AccountGuard == 0 {
		o.AccountGuard = 100
	}
	if o.Window == 0 {
		o.Window = 15 * time.Minute
	}
	if o.FamiliarFor == 0 {
		o.FamiliarFor = 7 * 24 * time.Hour
	}
	if o.FailDelay == 0 {
		o.FailDelay = time.Second
	}
	if o.MaxKeys == 0 {
		o.MaxKeys = 100000
	}
}

const maxFamiliar = 8 // familiar addresses kept per account

// throttle counts failures per key with linear decay (a leaky bucket),
// plus the attempts in flight.
type throttle struct {
	opt ThrottleOptions
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*bucket
	fam map[string]map[string]time.Time // account → address → last success
}

type bucket struct {
	level   float64 // failures not yet forgiven
	at      time.Time
	pending int // attempts admitted and not yet judged
}

func newThrottle(opt ThrottleOptions, now func() time.Time) *throttle {
	opt.setDefaults()
	return &throttle{opt: opt, now: now, m: map[string]*bucket{}, fam: map[string]map[string]time.Time{}}
}

func (t *throttle) limit(key string) float64 {
	switch key[0] {
	case 'a':
		return float64(t.opt.PerAddress)
	case 'p':
		return float64(t.opt.PerAccount)
	}
	return float64(t.opt.AccountGuard)
}

// levelLocked returns the key's current failure level, decayed to now.
func (t *throttle) levelLocked(key string, now time.Time) float64 {
	b := t.m[key]
	if b == nil {
		return 0
	}
	rate := t.limit(key) / t.opt.Window.Seconds() // forgiven per second
	l := b.level - now.Sub(b.at).Seconds()*rate
	if l <= 0 {
		l = 0
		if b.pending <= 0 {
			delete(t.m, key)
			return 0
		}
	}
	b.level, b.at = l, now
	return l
}

// full reports whether key has no budget left for one more attempt: one
// more must fit whole (a level just below the limit, decayed by a few
// milliseconds, is not room for another failure).
func (t *throttle) fullLocked(key string, now time.Time) bool {
	l := t.levelLocked(key, now)
	if b := t.m[key]; b != nil {
		l += float64(b.pending)
	}
	return l+1 > t.limit(key)
}

func (t *throttle) familiarLocked(acct, addr string, now time.Time) bool {
	at, ok := t.fam[acct][addr]
	return ok && addr != "" && now.Sub(at) < t.opt.FamiliarFor
}

// ticket is one admitted attempt's reservation.
type ticket struct {
	t          *throttle
	keys       []string
	addr, acct string
}

// admit reserves one attempt of account acct from client address addr
// (either may be ""), or reports that a budget is used up.
func (t *throttle) admit(addr, acct string) (*ticket, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	tk := &ticket{t: t, addr: addr, acct: acct}
	if addr != "" {
		tk.keys = append(tk.keys, "a"+addr)
		if acct != "" {
			tk.keys = append(tk.keys, "p"+addr+"\x00"+acct)
		}
	}
	if acct != "" {
		if t.fullLocked("u"+acct, now) && !t.familiarLocked(acct, addr, now) {
			return nil, false
		}
	}
	for _, k := range tk.keys {
		if t.fullLocked(k, now) {
			return nil, false
		}
	}
	if acct != "" {
		tk.keys = append(tk.keys, "u"+acct)
	}
	t.makeRoomLocked(now)
	for _, k := range tk.keys {
		b := t.m[k]
		if b == nil {
			b = &bucket{at: now}
			t.m[k] = b
		}
		b.pending++
	}
	return tk, true
}

// outcome of an admitted attempt, for the throttle.
type outcome int

const (
	outcomeNone    outcome = iota // not judged (storage unavailable, cancelled)
	outcomeFailed                 // wrong password or unknown user
	outcomeSuccess                // right password
)

// done gives the reservation back, recording a failure or a success.
func (tk *ticket) done(o outcome) {
	t := tk.t
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for _, k := range tk.keys {
		l := t.levelLocked(k, now)
		b := t.m[k]
		if b == nil { // forgotten under memory pressure
			b = &bucket{at: now}
			t.m[k] = b
		}
		if b.pending > 0 {
			b.pending--
		}
		if o == outcomeFailed {
			b.level = l + 1
		}
		if b.level <= 0 && b.pending == 0 {
			delete(t.m, k)
		}
	}
	if o == outcomeSuccess && tk.acct != "" && tk.addr != "" {
		f := t.fam[tk.acct]
		if f == nil {
			if len(t.fam) >= t.opt.MaxKeys {
				for k := range t.fam { // arbitrary: memory must stay bounded
					delete(t.fam, k)
					if len(t.fam) < t.opt.MaxKeys*9/10 {
						break
					}
				}
			}
			f = map[string]time.Time{}
			t.fam[tk.acct] = f
		}
		if _, ok := f[tk.addr]; !ok && len(f) >= maxFamiliar {
			oldest, at := "", now
			for a, s := range f {
				if s.Before(at) {
					oldest, at = a, s
				}
			}
			delete(f, oldest)
		}
		f[tk.addr] = now
	}
}

// makeRoomLocked bounds the counters: forget decayed entries, and if that
// is not enough, arbitrary idle ones (a flood of distinct keys must not
// exhaust memory).
func (t *throttle) makeRoomLocked(now time.Time) {
	if len(t.m) < t.opt.MaxKeys {
		return
	}
	for k := range t.m {
		t.levelLocked(k, now)
	}
	for k, b := range t.m {
		if len(t.m) < t.opt.MaxKeys*9/10 {
			break
		}
		if b.pending == 0 {
			delete(t.m, k)
		}
	}
}

// addressKey is the throttle's name for a client address: the IPv4
// address, or the /64 an IPv6 address is in.
func addressKey(ip net.IP) string {
	if ip == nil {
		return ""
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
