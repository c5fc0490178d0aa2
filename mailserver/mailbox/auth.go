package mailbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Login results, as logged.
const (
	loginOK          = "ok"
	loginBadPassword = "bad password"
	loginUnknownUser = "unknown user"
	loginDisabled    = "disabled"
	loginThrottled   = "throttled"
	loginTempFailure = "temporary failure"
)

// Authenticate checks a user's password for a login over protocol
// ("imap", "submission", ... as logged); remote is the client's address
// (nil if unknown), for the throttle. It returns the canonical address, or
// ErrAuthFailed, ErrThrottled, ErrDisabled or ErrUnavailable (including a
// login that waited too long for a hash slot: the client should retry).
//
// Every attempt is logged: user, client, protocol, result and whether the
// password was checked against the login cache or hashed.
func (s *Store) Authenticate(ctx context.Context, protocol, username, password string, remote net.IP) (addr string, err error) {
	start := time.Now()
	result, method := loginTempFailure, "-"
	defer func() {
		lvl := s.log.Info
		if result == loginThrottled || result == loginTempFailure {
			lvl = s.log.Warn
		}
		logUser := username
		if len(logUser) > 320 { // a client chooses it; keep log lines bounded
			logUser = logUser[:320] + "…"
		}
		args := []any{"proto", protocol, "user", logUser, "remote", remoteString(remote), "result", result, "method", method,
			"ms", time.Since(start).Milliseconds()}
		if err != nil && result == loginTempFailure {
			args = append(args, "err", err)
		}
		lvl("login", args...)
	}()

	a, nerr := NormalizeAddress(username)
	acct := a
	if nerr != nil {
		// Still counted per account name, so that malformed names cannot
		// be used to dodge the account budgets.
		acct = strings.ToLower(username)
		if len(acct) > 320 {
			acct = acct[:320]
		}
	}
	tk, ok := s.thr.admit(addressKey(remote), acct)
	if !ok {
		result = loginThrottled
		return "", ErrThrottled
	}
	res, method, disabled, err := s.verify(ctx, a, nerr == nil, password)
	switch {
	case err != nil:
		tk.done(outcomeNone)
		return "", err
	case res != loginOK:
		tk.done(outcomeFailed)
		result = res
		if d := s.thr.opt.FailDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		return "", ErrAuthFailed
	}
	tk.done(outcomeSuccess)
	if disabled {
		result = loginDisabled
		return "", ErrDisabled
	}
	result = loginOK
	return a, nil
}

// verifyPassword is VerifyPassword; tests wrap it to watch the hashing.
var verifyPassword = VerifyPassword

func remoteString(ip net.IP) string {
	if ip == nil {
		return "-"
	}
	return ip.String()
}

// verify checks password against the user's stored hash: against the
// login cache first, then (in a hash slot) with the hash itself. Unknown
// users cost a hash too. method is "cache" or "hash".
func (s *Store) verify(ctx context.Context, addr string, valid bool, password string) (result, method string, disabled bool, err error) {
	var hash string
	found := false
	if valid {
		u, ok, err := s.view.User(addr)
		if err == nil && !ok {
			// A user created on another node a moment ago.
			if err := s.catchUp(ctx); err != nil {
				return "", "", false, err
			}
			u, ok, err = s.view.User(addr)
		}
		if err != nil {
			return "", "", false, err
		}
		found, hash, disabled = ok, u.PasswordHash, u.Disabled
	}
	if !found || hash == "" {
		err := s.slots.do(ctx, func() bool { _, _ = verifyPassword(s.dummyHash, password); return true })
		return loginUnknownUser, "hash", false, err
	}
	var sum [32]byte
	if s.creds.enabled() && len(password) <= MaxPassword {
		sum = s.creds.mac(addr, hash, password)
		if s.creds.hit(addr, sum, s.now()) {
			return loginOK, "cache", disabled, nil
		}
	}
	good, verr, cached, err := s.verifyOnce(ctx, addr, hash, password, sum)
	if err != nil {
		return "", "", false, err
	}
	if cached {
		return loginOK, "cache", disabled, nil
	}
	if verr != nil {
		s.log.Warn("password hash unusable; the user cannot log in until the password is set again", "user", addr, "err", verr)
		return loginBadPassword, "hash", false, nil
	}
	if !good {
		return loginBadPassword, "hash", false, nil
	}
	if s.creds.enabled() {
		exp := s.now().Add(s.creds.ttl)
		s.creds.put(addr, sum, exp, s.now())
		s.share(SharedCredential{User: addr, MAC: sum, Expires: exp})
	}
	if !disabled {
		// An imported (or weaker) hash stays only until its first use.
		s.maybeRehash(addr, hash, password)
	}
	return loginOK, "hash", disabled, nil
}

// verifyOnce hashes password against hash in a slot, sharing the one
// computation among concurrent logins of the same credential (same user,
// stored hash and password: the same sum). A login storm is mostly such
// logins — every device of a user comes back at once after a node dies —
// and without this each device would queue for its own 19 MiB, tens of
// milliseconds hash, so the storm's length would grow with devices, not
// users. cached reports that the login was answered from the cache
// instead (see checkShared).
//
// With the cache off, or a password too long to be one (sum is zero),
// every login hashes on its own: a zero sum names no credential, so
// logins must not share its check.
func (s *Store) verifyOnce(ctx context.Context, addr, hash, password string, sum [32]byte) (good bool, verr error, cached bool, err error) {
	return s.verifyShared(ctx, addr, hash, password, sum, true)
}

// verifyShared is verifyOnce; again says whether a login that shared a
// check cut short may share the next one instead of failing with it.
func (s *Store) verifyShared(ctx context.Context, addr, hash, password string, sum [32]byte, again bool) (good bool, verr error, cached bool, err error) {
	if !s.creds.enabled() || sum == ([32]byte{}) {
		err := s.slots.do(ctx, func() bool {
			good, verr = verifyPassword(hash, password)
			return true
		})
		return good, verr, false, err
	}
	run := func() (bool, error, bool, error) { return s.checkShared(ctx, addr, hash, password, sum) }
	s.verifyMu.Lock()
	if c, ok := s.verifying[sum]; ok {
		s.verifyMu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return false, nil, false, fmt.Errorf("%w: waiting for this login's password check: %v", ErrUnavailable, ctx.Err())
		}
		if c.err != nil {
			// The first login's wait was cut short: by its context,
			// which says nothing of this one's, or because the slots
			// stayed busy, when this login joined it later and the
			// client would rather wait (a mail client waits about a
			// minute) than reconnect and start over. Try once more,
			// together with the other logins of the credential: each
			// queueing on its own would, once it got a slot, hash the
			// same password again.
			if !again {
				return false, nil, false, c.err
			}
			return s.verifyShared(ctx, addr, hash, password, sum, false)
		}
		// The first login cached a good password; this one is answered
		// from that, as a cache hit.
		return c.good, c.verr, c.cached || c.good, nil
	}
	c := &verifyCall{done: make(chan struct{})}
	if s.verifying == nil {
		s.verifying = make(map[[32]byte]*verifyCall)
	}
	s.verifying[sum] = c
	s.verifyMu.Unlock()
	c.good, c.verr, c.cached, c.err = run()
	s.verifyMu.Lock()
	delete(s.verifying, sum)
	s.verifyMu.Unlock()
	close(c.done)
	return c.good, c.verr, c.cached, c.err
}

// checkShared is the one check of a credential on this node, in a slot,
// with the cluster in mind: a user's devices land on every node at once,
// and without care each node would hash the same password.
//   - While it waits for a slot, the entry may arrive from a peer (or be
//     put here): the login leaves the queue answered, as a cache hit.
//   - Once a slot is ours the cache is asked again.
//   - A peer that said it is hashing the same credential (CredHashing) is
//     waited for, at most until its word runs out (peerHashWait), before
//     the slot is taken or instead of using it; then the cache is asked,
//     and only if it still has no answer is the password hashed here.
//   - Before hashing, this node says so to its peers, and if the password
//     proves wrong it says that too, so their waits end at once.
//
// A password no node verified is always hashed: words of peers only
// delay a login, the cache alone answers one.
func (s *Store) checkShared(ctx context.Context, addr, hash, password string, sum [32]byte) (good bool, verr error, cached bool, err error) {
	waited := false
	for {
		if !waited {
			if until, ok := s.creds.peerHashingUntil(addr, sum, s.now()); ok {
				waited = true
				if hit, err := s.waitPeer(ctx, addr, sum, until); err != nil || hit {
					return false, nil, hit, err
				}
			}
		}
		verified, _, stop := s.creds.watch(sum)
		if s.creds.hit(addr, sum, s.now()) { // came in before the watch
			stop()
			return false, nil, true, nil
		}
		yield := false
		var yieldUntil time.Time
		err := s.slots.doUnless(ctx, verified, func() bool {
			if s.creds.hit(addr, sum, s.now()) {
				cached = true
				return false
			}
			if !waited {
				if until, ok := s.creds.peerHashingUntil(addr, sum, s.now()); ok {
					yield, yieldUntil = true, until
					return false
				}
			}
			s.share(SharedCredential{User: addr, MAC: sum, Expires: s.now().Add(peerHashWait), State: CredHashing})
			good, verr = verifyPassword(hash, password)
			if !good || verr != nil {
				s.share(SharedCredential{User: addr, MAC: sum, State: CredReleased})
			}
			return true
		})
		stop()
		switch {
		case errors.Is(err, errSlotNotNeeded):
			if s.creds.hit(addr, sum, s.now()) {
				return false, nil, true, nil
			}
			// Put and dropped again (a password change at that moment):
			// queue again.
			continue
		case err != nil:
			return false, nil, false, err
		case yield:
			// A peer started on it while this login queued: wait for
			// it, once, outside the slot.
			waited = true
			if hit, err := s.waitPeer(ctx, addr, sum, yieldUntil); err != nil || hit {
				return false, nil, hit, err
			}
			continue
		}
		return good, verr, cached, nil
	}
}

// waitPeer waits until a peer's word on sum runs out (until), news of it
// comes or ctx ends, and reports whether the cache now answers the login.
func (s *Store) waitPeer(ctx context.Context, addr string, sum [32]byte, until time.Time) (hit bool, err error) {
	_, news, stop := s.creds.watch(sum)
	defer stop()
	if s.creds.hit(addr, sum, s.now()) { // came in before the watch
		return true, nil
	}
	t := time.NewTimer(until.Sub(s.now()))
	defer t.Stop()
	select {
	case <-news:
	case <-t.C:
	case <-ctx.Done():
		return false, fmt.Errorf("%w: waiting for another node's check of this password: %v", ErrUnavailable, ctx.Err())
	}
	return s.creds.hit(addr, sum, s.now()), nil
}

// share hands c to the other nodes, if there are any.
func (s *Store) share(c SharedCredential) {
	if s.opt.ShareCredential != nil {
		s.opt.ShareCredential(c)
	}
}

// verifyCall is one password check that concurrent logins share.
type verifyCall struct {
	done   chan struct{}
	good   bool
	verr   error
	cached bool
	err    error
}

// hashPassword hashes a new password in a hash slot.
func (s *Store) hashPassword(ctx context.Context, password string) (string, error) {
	var h string
	var herr error
	if err := s.slots.do(ctx, func() bool { h, herr = HashPassword(password, s.opt.Hash); return true }); err != nil {
		return "", err
	}
	return h, herr
}

// AuthStats are counters of the password checks of one Store.
type AuthStats struct {
	Hashes       int64 // password hash computations run (verifications and new hashes)
	HashPeak     int64 // most of them ever running at once
	HashSlots    int   // the bound on that
	HashInUse    int64 // of the slots, how many are computing now
	CacheHits    int64 // logins answered by the login cache
	CacheMisses  int64 // known users' logins the cache could not answer
	CacheEntries int
	SlotTimeouts int64 // logins refused because every hash slot stayed busy too long
	PeerHashing  int   // credentials peers said they are hashing now (logins here wait for them)
}

// AuthStats returns the counters so far.
func (s *Store) AuthStats() AuthStats {
	return AuthStats{
		Hashes: s.slots.runs.Load(), HashPeak: s.slots.peak.Load(), HashSlots: cap(s.slots.ch), HashInUse: s.slots.inUse.Load(),
		CacheHits: s.creds.hits.Load(), CacheMisses: s.creds.misses.Load(), CacheEntries: s.creds.len(),
		SlotTimeouts: s.slots.timeouts.Load(), PeerHashing: s.creds.peerLen(),
	}
}
