package mailbox

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"sync"
	"sync/atomic"
	"time"

	"hastore/mailserver/mailstate"
	"hastore/replica/meta"
)

// The login cache remembers passwords verified lately, so that a mail
// client that logs in again — every few minutes, or all at once after a
// node died and its clients came over — costs a MAC instead of an argon2id
// run (tens of milliseconds and 19 MiB each).
//
// An entry is HMAC-SHA256(K, user ‖ 0 ‖ stored hash ‖ 0 ‖ password) with
// its expiry: no password and nothing that can be checked offline without
// K, which lives only in memory (derived from the cluster key by the
// caller, see Options.CredentialKey). A login hits only if the MAC of what
// it presents, against the hash stored now, equals an entry (compared in
// constant time): a changed password changes the stored hash, so entries
// of the old one cannot match even before they are dropped. They are
// dropped anyway on every node when the password change, disabling or
// deletion of the user is applied (the FSM apply stream, followCredentials).
//
// Entries verified here are offered to Options.ShareCredential, which
// hands them to the other nodes (mailserver does, over the authenticated
// cluster gRPC channel): since every node derives the same K, the node a
// client fails over to already knows its password.

// SharedCredential is one login cache entry as nodes exchange it, or
// (State) word that a node is hashing a credential right now, or gave up.
type SharedCredential struct {
	User    string // canonical address
	MAC     [32]byte
	Expires time.Time // CredHashing: how long peers should wait for it
	State   CredState
}

// CredState says what a SharedCredential is.
type CredState int

const (
	// CredVerified: the password was verified; the entry logs it in.
	CredVerified CredState = iota
	// CredHashing: the sender is hashing this credential now. Peers with
	// a login of the same MAC wait a moment (at most peerHashWait) for
	// the verified entry instead of hashing it too: each device of a
	// user lands on any node, so without this a storm costs every node
	// one argon2id run per user. It logs nothing in.
	CredHashing
	// CredReleased: the sender's hashing of this credential ended without
	// a verified entry (a wrong password, an error); peers waiting for it
	// hash it themselves at once.
	CredReleased
)

// peerHashWait bounds how long a login waits for a peer that said it was
// hashing the same credential, before hashing it here.
const peerHashWait = 2 * time.Second

// peerHashing is a peer's CredHashing word.
type peerHashing struct {
	user  string
	until time.Time
}

const credsPerUser = 4 // entries kept per user: a few devices, old and new passwords

type credEntry struct {
	mac     [32]byte
	expires time.Time
}

type credCache struct {
	key []byte
	ttl time.Duration
	max int

	mu      sync.Mutex
	m       map[string][]credEntry
	n       int                      // entries in m
	peer    map[[32]byte]peerHashing // credentials peers are hashing now
	watches map[[32]byte]*credWatch  // logins waiting for news of a credential

	hits, misses atomic.Int64
}

func newCredCache(key []byte, ttl time.Duration, max int) *credCache {
	if len(key) == 0 {
		// No shared key: a random one, good for this node only.
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	} else {
		key = append([]byte(nil), key...)
	}
	return &credCache{key: key, ttl: ttl, max: max, m: map[string][]credEntry{},
		peer: map[[32]byte]peerHashing{}, watches: map[[32]byte]*credWatch{}}
}

func (c *credCache) enabled() bool { return c.ttl > 0 }

// mac returns the entry a (user, stored hash, password) triple makes.
func (c *credCache) mac(user, hash, password string) [32]byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(hash))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// hit reports whether sum is a live entry of user. Every live entry is
// compared, in constant time, whatever matched.
func (c *credCache) hit(user string, sum [32]byte, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	found := 0
	for _, e := range c.m[user] {
		if now.Before(e.expires) {
			found |= subtle.ConstantTimeCompare(e.mac[:], sum[:])
		}
	}
	if found == 1 {
		c.hits.Add(1)
		return true
	}
	c.misses.Add(1)
	return false
}

// put adds an entry, expiring at the earlier of expires and now+ttl (a
// peer's clock or setting cannot make it live longer here).
func (c *credCache) put(user string, sum [32]byte, expires, now time.Time) {
	if !c.enabled() || user == "" {
		return
	}
	if lim := now.Add(c.ttl); expires.After(lim) {
		expires = lim
	}
	if !now.Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	es := c.m[user]
	live := es[:0]
	for _, e := range es {
		if now.Before(e.expires) && e.mac != sum {
			live = append(live, e)
		}
	}
	if len(live) >= credsPerUser {
		live = live[1:] // the oldest
	}
	if _, ok := c.m[user]; !ok && c.n >= c.max {
		c.makeRoomLocked(now)
	}
	c.n += len(live) + 1 - len(es)
	c.m[user] = append(live, credEntry{mac: sum, expires: expires})
	delete(c.peer, sum)
	c.signalLocked(sum, true)
}

// credWatch is what logins waiting for news of a credential wait on.
type credWatch struct {
	verified chan struct{} // closed when an entry is put
	news     chan struct{} // closed then, or when a peer releases it
	n        int           // watchers
}

// watch returns channels closed when an entry with sum is put (verified)
// or either that or a peer releasing it (news); call stop when done.
func (c *credCache) watch(sum [32]byte) (verified, news <-chan struct{}, stop func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.watches[sum]
	if w == nil {
		w = &credWatch{verified: make(chan struct{}), news: make(chan struct{})}
		c.watches[sum] = w
	}
	w.n++
	return w.verified, w.news, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if w.n--; w.n == 0 && c.watches[sum] == w {
			delete(c.watches, sum)
		}
	}
}

// signalLocked tells sum's watchers; verified: an entry was put.
func (c *credCache) signalLocked(sum [32]byte, verified bool) {
	w := c.watches[sum]
	if w == nil {
		return
	}
	close(w.news)
	if verified {
		close(w.verified)
		delete(c.watches, sum)
		return
	}
	w.news = make(chan struct{}) // later watchers wait for later news
}

// peerStart records that a peer is hashing sum of user, until the
// earlier of until and now+peerHashWait. The table is bounded like the
// cache: when full of live words, new ones are ignored (the login then
// hashes here, as it would without them).
func (c *credCache) peerStart(user string, sum [32]byte, until, now time.Time) {
	if lim := now.Add(peerHashWait); until.After(lim) {
		until = lim
	}
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.peer) >= c.max {
		for k, p := range c.peer {
			if !now.Before(p.until) {
				delete(c.peer, k)
			}
		}
		if len(c.peer) >= c.max {
			return
		}
	}
	c.peer[sum] = peerHashing{user: user, until: until}
}

func (c *credCache) peerLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.peer)
}

// peerEnd records that a peer stopped hashing sum without verifying it.
func (c *credCache) peerEnd(user string, sum [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.peer[sum]; ok && p.user == user {
		delete(c.peer, sum)
		c.signalLocked(sum, false)
	}
}

// peerHashingUntil reports whether a peer is hashing sum of user, and
// until when this node waits for it.
func (c *credCache) peerHashingUntil(user string, sum [32]byte, now time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.peer[sum]
	if !ok || p.user != user {
		return time.Time{}, false
	}
	if !now.Before(p.until) {
		delete(c.peer, sum)
		return time.Time{}, false
	}
	return p.until, true
}

// makeRoomLocked drops expired entries, then arbitrary users' entries,
// until the cache is below 90% of its bound.
func (c *credCache) makeRoomLocked(now time.Time) {
	for u, es := range c.m {
		live := es[:0]
		for _, e := range es {
			if now.Before(e.expires) {
				live = append(live, e)
			}
		}
		c.n -= len(es) - len(live)
		if len(live) == 0 {
			delete(c.m, u)
		} else {
			c.m[u] = live
		}
	}
	for u, es := range c.m {
		if c.n < c.max*9/10 {
			break
		}
		c.n -= len(es)
		delete(c.m, u)
	}
}

// forget drops a user's entries.
func (c *credCache) forget(user string) {
	c.mu.Lock()
	c.n -= len(c.m[user])
	delete(c.m, user)
	c.mu.Unlock()
}

func (c *credCache) clear() {
	c.mu.Lock()
	clear(c.m)
	c.n = 0
	clear(c.peer)
	c.mu.Unlock()
}

func (c *credCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// AcceptCredentials adds entries another node verified, and its words
// on credentials it is hashing (see SharedCredential). Entries of unknown
// shape are ignored.
func (s *Store) AcceptCredentials(creds []SharedCredential) {
	if !s.creds.enabled() {
		return
	}
	now := s.now()
	for _, c := range creds {
		a, err := NormalizeAddress(c.User)
		if err != nil || a != c.User {
			continue
		}
		switch c.State {
		case CredVerified:
			s.creds.put(c.User, c.MAC, c.Expires, now)
		case CredHashing:
			s.creds.peerStart(c.User, c.MAC, c.Expires, now)
		case CredReleased:
			s.creds.peerEnd(c.User, c.MAC)
		}
	}
}

// followCredentials drops login cache entries as the user changes are
// applied on this node, the same on every node: a new password, a
// disabled or a deleted user. A lost stretch of the stream (a lagging
// subscription, a snapshot restore) drops every entry.
func (s *Store) followCredentials(src eventSource, sub *meta.Subscription) {
	for {
		for ev := range sub.Events() {
			if ev.Restored {
				s.creds.clear()
				continue
			}
			if ev.Cmd != nil {
				s.dropCredentials(ev.Cmd)
				s.followAccounts(ev.Cmd) // users.go
			}
		}
		if sub.Err() != meta.ErrLagged {
			return // the metadata store closed
		}
		s.log.Warn("login cache lost the apply stream; dropping every entry")
		sub = src.Subscribe(1 << 10)
		s.creds.clear()
	}
}

func (s *Store) dropCredentials(cmd meta.Command) {
	switch c := cmd.(type) {
	case meta.Batch:
		for _, sub := range c.Cmds {
			s.dropCredentials(sub)
		}
	case mailstate.MailUserUpdate:
		if c.SetPassword || c.SetDisabled {
			s.creds.forget(c.Address)
		}
	case mailstate.MailUserDelete:
		s.creds.forget(c.Address)
	case mailstate.MailUserCreate:
		s.creds.forget(c.User.Address) // a re-created user starts afresh
	}
}
