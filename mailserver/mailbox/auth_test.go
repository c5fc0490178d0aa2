package mailbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hastore/testing/cluster"
)

// Cheap enough for tests, dear enough (a few ms) that parallel logins
// overlap in the hash.
var testHash = HashParams{Memory: 4 << 10, Time: 1, Threads: 1}

// authEnv is a real 3-node cluster with a mail domain and one user.
type authEnv struct {
	c   *cluster.InProcess
	ctx context.Context
}

const (
	testUser = "alice@example.test"
	testPass = "alice-secret"
)

func startAuthEnv(t testing.TB) *authEnv {
	t.Helper()
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s := New(c.Nodes[0].Cluster, c.Nodes[0].Meta, Options{Hash: testHash})
	if err := s.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser(ctx, testUser, testPass, 0); err != nil {
		t.Fatal(err)
	}
	return &authEnv{c: c, ctx: ctx}
}

// store returns a fresh Store on node i.
func (e *authEnv) store(i int, opt Options) *Store {
	if opt.Hash == (HashParams{}) {
		opt.Hash = testHash
	}
	return New(e.c.Nodes[i].Cluster, e.c.Nodes[i].Meta, opt)
}

// watchHashing wraps verifyPassword for the test: it counts the password
// verifications and the most that ran at once, independently of the
// Store's own counters.
func watchHashing(t *testing.T) (runs, peak *atomic.Int64) {
	runs, peak = new(atomic.Int64), new(atomic.Int64)
	var cur atomic.Int64
	orig := verifyPassword
	verifyPassword = func(hash, password string) (bool, error) {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		defer cur.Add(-1)
		runs.Add(1)
		return orig(hash, password)
	}
	t.Cleanup(func() { verifyPassword = orig })
	return runs, peak
}

var noThrottle = ThrottleOptions{PerAddress: 1 << 20, PerAccount: 1 << 20, AccountGuard: 1 << 20, FailDelay: -1}

func ip(s string) net.IP { return net.ParseIP(s) }

// Tests in this file are not parallel: they swap verifyPassword.

func TestAuthHashingBounded(t *testing.T) {
	e := startAuthEnv(t)
	runs, peak := watchHashing(t)
	s := e.store(1, Options{HashSlots: 2, AuthCache: -1, Throttle: noThrottle})
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user, pass := testUser, testPass
			switch i % 3 {
			case 1:
				pass = "wrong"
			case 2:
				user = fmt.Sprintf("nobody%d@example.test", i)
			}
			_, errs[i] = s.Authenticate(e.ctx, "imap", user, pass, ip(fmt.Sprintf("192.0.2.%d", i)))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want := i%3 == 0; (err == nil) != want || err != nil && !errors.Is(err, ErrAuthFailed) {
			t.Errorf("login %d: %v", i, err)
		}
	}
	if runs.Load() != n {
		t.Errorf("%d verifications for %d logins", runs.Load(), n)
	}
	if p := peak.Load(); p > 2 || p < 1 {
		t.Errorf("%d verifications ran at once with 2 slots", p)
	}
	st := s.AuthStats()
	if st.HashPeak > 2 || st.HashSlots != 2 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%d logins, at most %d hashing at once, stats %+v", n, peak.Load(), st)
}

func TestAuthSlotWaitIsTemporary(t *testing.T) {
	e := startAuthEnv(t)
	// One slot, dear hashes, and no patience: most of a burst must be told
	// to come back, never that the password is wrong.
	s := e.store(1, Options{Hash: DefaultHashParams, HashSlots: 1, HashWait: time.Millisecond, AuthCache: -1, Throttle: noThrottle})
	if err := s.SetPassword(e.ctx, testUser, testPass); err != nil { // a full-cost hash
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	var ok, unavailable, other atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip(fmt.Sprintf("192.0.2.%d", i)))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrUnavailable):
				unavailable.Add(1)
			default:
				other.Add(1)
				t.Errorf("login %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() < 1 || unavailable.Load() < 1 || other.Load() != 0 {
		t.Errorf("ok %d, unavailable %d, other %d", ok.Load(), unavailable.Load(), other.Load())
	}
}

func TestAuthThrottleAdmitsBeforeHashing(t *testing.T) {
	e := startAuthEnv(t)
	runs, _ := watchHashing(t)
	s := e.store(1, Options{HashSlots: 2, AuthCache: -1,
		Throttle: ThrottleOptions{PerAddress: 10, PerAccount: 1 << 20, AccountGuard: 1 << 20, FailDelay: -1}})
	const n = 20
	var wg sync.WaitGroup
	var throttled, failed atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Authenticate(e.ctx, "imap", testUser, "guess", ip("198.51.100.7"))
			switch {
			case errors.Is(err, ErrThrottled):
				throttled.Add(1)
			case errors.Is(err, ErrAuthFailed):
				failed.Add(1)
			default:
				t.Errorf("guess: %v", err)
			}
		}()
	}
	wg.Wait()
	if runs.Load() > 10 || failed.Load() > 10 || throttled.Load() < 10 {
		t.Errorf("20 parallel guesses with a limit of 10: %d hashed, %d failed, %d throttled", runs.Load(), failed.Load(), throttled.Load())
	}
	// The guessing address is refused even with the right password.
	if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("198.51.100.7")); !errors.Is(err, ErrThrottled) {
		t.Errorf("right password from the guessing address: %v", err)
	}
}

func TestAuthIPv6ByPrefix(t *testing.T) {
	e := startAuthEnv(t)
	s := e.store(1, Options{AuthCache: -1, Throttle: ThrottleOptions{PerAddress: 3, PerAccount: 1 << 20, AccountGuard: 1 << 20, FailDelay: -1}})
	for i := range 3 {
		if _, err := s.Authenticate(e.ctx, "imap", testUser, "guess", ip(fmt.Sprintf("2001:db8:1:2::%x", i+1))); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if _, err := s.Authenticate(e.ctx, "imap", testUser, "guess", ip("2001:db8:1:2:ffff::9")); !errors.Is(err, ErrThrottled) {
		t.Errorf("another address of the same /64: %v", err)
	}
	if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("2001:db8:1:3::1")); err != nil {
		t.Errorf("the next /64: %v", err)
	}
}

// L1: an attacker's failures must not lock the owner out.
func TestAuthNoLockoutByStrangers(t *testing.T) {
	e := startAuthEnv(t)
	s := e.store(1, Options{AuthCache: -1, Throttle: ThrottleOptions{FailDelay: -1, AccountGuard: 30}}) // default per-address budgets
	home := ip("203.0.113.5")
	if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, home); err != nil {
		t.Fatal(err)
	}
	// One attacker address, many guesses: it is stopped, the account is not.
	for range 40 {
		s.Authenticate(e.ctx, "imap", testUser, "guess", ip("198.51.100.1"))
	}
	if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("198.51.100.1")); !errors.Is(err, ErrThrottled) {
		t.Errorf("the attacker's address: %v", err)
	}
	if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("203.0.113.77")); err != nil {
		t.Errorf("right password from a new address after one address's attack: %v", err)
	}
	// Many attacker addresses (a botnet): past AccountGuard failures only
	// the addresses the owner used get in.
	for i := range 40 {
		s.Authenticate(e.ctx, "imap", testUser, "guess", ip(fmt.Sprintf("10.0.%d.1", i)))
	}
	if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("10.99.0.1")); !errors.Is(err, ErrThrottled) {
		t.Errorf("an unknown address during a spread attack: %v", err)
	}
	if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, home); err != nil {
		t.Errorf("the owner's usual address during a spread attack: %v", err)
	}
}

func TestAuthCacheSkipsHashing(t *testing.T) {
	e := startAuthEnv(t)
	runs, _ := watchHashing(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	s := e.store(1, Options{Throttle: noThrottle, Logger: slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, nil))})
	if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if runs.Load() != 1 {
		t.Fatalf("%d verifications for the first login", runs.Load())
	}
	for i := range 100 {
		if _, err := s.Authenticate(e.ctx, "submission", strings.ToUpper(testUser), testPass, ip("192.0.2.2")); err != nil {
			t.Fatalf("re-login %d: %v", i, err)
		}
	}
	if runs.Load() != 1 {
		t.Errorf("%d verifications for 1 login and 100 re-logins", runs.Load())
	}
	if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass+"x", ip("192.0.2.3")); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("wrong password after a cached login: %v", err)
	}
	if runs.Load() != 2 {
		t.Errorf("a wrong password did not cost a verification: %d", runs.Load())
	}
	if st := s.AuthStats(); st.CacheHits != 100 || st.CacheEntries != 1 {
		t.Errorf("stats %+v", st)
	}
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	for _, want := range []string{
		`proto=imap user=alice@example.test remote=192.0.2.1 result=ok method=hash`,
		`proto=submission user=ALICE@EXAMPLE.TEST remote=192.0.2.2 result=ok method=cache`,
		`proto=imap user=alice@example.test remote=192.0.2.3 result="bad password" method=hash`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no log line with %q in:\n%s", want, out)
		}
	}
	if _, err := s.Authenticate(e.ctx, "imap", "nobody@example.test", "x", ip("192.0.2.4")); !errors.Is(err, ErrAuthFailed) {
		t.Error(err)
	}
	logMu.Lock()
	out = logs.String()
	logMu.Unlock()
	if !strings.Contains(out, `user=nobody@example.test remote=192.0.2.4 result="unknown user" method=hash`) {
		t.Errorf("unknown user not logged:\n%s", out)
	}
}

// The devices of one user logging in at once (a login storm after a node
// died) share one password check: the storm costs a hash per user, not
// per device. A wrong password among them is still checked on its own.
func TestAuthConcurrentLoginsShareOneHash(t *testing.T) {
	e := startAuthEnv(t)
	runs, _ := watchHashing(t)
	s := e.store(1, Options{Throttle: noThrottle, HashSlots: 1})
	var wg sync.WaitGroup
	errs := make(chan error, 21)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip(fmt.Sprintf("192.0.2.%d", i+1)))
			errs <- err
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := s.Authenticate(e.ctx, "imap", testUser, "wrong", ip("198.51.100.1")); !errors.Is(err, ErrAuthFailed) {
			errs <- fmt.Errorf("wrong password among the storm: %v", err)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// One hash for the 20 devices, one for the wrong password.
	if n := runs.Load(); n != 2 {
		t.Errorf("%d password hashes for 20 concurrent logins of one user and one wrong password, want 2", n)
	}
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// A password change drops the cached login on every node, through the
// apply stream, and the old password stops working at once.
func TestAuthCacheDroppedOnPasswordChange(t *testing.T) {
	e := startAuthEnv(t)
	key := []byte("a key the nodes share")
	var stores []*Store
	for i := range 3 {
		stores = append(stores, e.store(i, Options{Throttle: noThrottle, CredentialKey: key}))
	}
	for i, s := range stores {
		if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("192.0.2.1")); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if n := s.AuthStats().CacheEntries; n != 1 {
			t.Fatalf("node %d caches %d entries", i, n)
		}
	}
	if err := stores[0].SetPassword(e.ctx, testUser, "new-secret"); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		if err := s.CatchUp(e.ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for s.AuthStats().CacheEntries != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := s.AuthStats().CacheEntries; n != 0 {
			t.Errorf("node %d still caches %d entries after the password change", i, n)
		}
		if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("192.0.2.1")); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("node %d: old password: %v", i, err)
		}
		if _, err := s.Authenticate(e.ctx, "imap", testUser, "new-secret", ip("192.0.2.1")); err != nil {
			t.Errorf("node %d: new password: %v", i, err)
		}
	}
}

// Nothing of the login cache reaches the disk: after logins, no file of
// the cluster holds an entry's MAC (or the password).
func TestAuthCacheNotOnDisk(t *testing.T) {
	e := startAuthEnv(t)
	key := []byte("a key the nodes share")
	s := e.store(1, Options{Throttle: noThrottle, CredentialKey: key})
	for range 3 {
		if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("192.0.2.1")); err != nil {
			t.Fatal(err)
		}
	}
	u, _, err := s.view.User(testUser)
	if err != nil {
		t.Fatal(err)
	}
	mac := s.creds.mac(testUser, u.PasswordHash, testPass)
	if !s.creds.hit(testUser, mac, time.Now()) {
		t.Fatal("the login is not cached: the test would prove nothing")
	}
	// Let the metadata stores write what they would.
	for _, n := range e.c.Nodes {
		if err := n.Meta.Raft().Snapshot().Error(); err != nil && !strings.Contains(err.Error(), "nothing new") {
			t.Logf("snapshot: %v", err)
		}
	}
	scanned := 0
	err = filepath.WalkDir(e.c.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // files come and go while the nodes run
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		scanned++
		for what, needle := range map[string][]byte{"cache MAC": mac[:], "password": []byte(testPass), "cache key": key} {
			if bytes.Contains(b, needle) {
				t.Errorf("%s found in %s", what, path)
			}
		}
		return nil
	})
	if err != nil || scanned == 0 {
		t.Fatalf("scanned %d files: %v", scanned, err)
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	e := startAuthEnv(b)
	for _, bc := range []struct {
		name  string
		cache time.Duration
	}{{"hit", time.Hour}, {"miss", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			s := e.store(1, Options{Hash: DefaultHashParams, AuthCache: bc.cache, Throttle: noThrottle})
			if err := s.SetPassword(e.ctx, testUser, testPass); err != nil {
				b.Fatal(err)
			}
			if err := s.CatchUp(e.ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("192.0.2.1")); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("192.0.2.1")); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}

func TestThrottleBudgets(t *testing.T) {
	now := time.Unix(1000, 0)
	th := newThrottle(ThrottleOptions{PerAddress: 3, PerAccount: 2, AccountGuard: 4, Window: 30 * time.Second}, func() time.Time { return now })
	a1, a2, a3 := addressKey(ip("192.0.2.1")), addressKey(ip("192.0.2.2")), addressKey(ip("192.0.2.3"))
	try := func(addr, acct string, o outcome) bool {
		tk, ok := th.admit(addr, acct)
		if ok {
			tk.done(o)
		}
		return ok
	}
	// Reservations count before the outcome is known.
	var held []*ticket
	for i := range 3 {
		tk, ok := th.admit(a1, fmt.Sprintf("u%d", i))
		if !ok {
			t.Fatalf("attempt %d refused", i)
		}
		held = append(held, tk)
	}
	if _, ok := th.admit(a1, "u9"); ok {
		t.Fatal("a fourth attempt in flight admitted with PerAddress 3")
	}
	for _, tk := range held {
		tk.done(outcomeNone) // not judged: no failure
	}
	if !try(a1, "u9", outcomeSuccess) {
		t.Fatal("refused after the reservations were given back")
	}
	// Per address and account: 2 failures.
	try(a2, "x", outcomeFailed)
	try(a2, "x", outcomeFailed)
	if try(a2, "x", outcomeSuccess) {
		t.Fatal("third try of one account from one address admitted")
	}
	if !try(a2, "y", outcomeSuccess) {
		t.Fatal("another account from that address refused")
	}
	// The guard: x has 2 failures; 2 more from elsewhere reach 4.
	if !try(a3, "x", outcomeSuccess) { // a3 becomes familiar to x
		t.Fatal("x from a3 refused")
	}
	try(addressKey(ip("198.51.100.1")), "x", outcomeFailed)
	try(addressKey(ip("198.51.100.2")), "x", outcomeFailed)
	if try(addressKey(ip("198.51.100.3")), "x", outcomeSuccess) {
		t.Error("a stranger admitted to a guarded account")
	}
	if !try(a3, "x", outcomeSuccess) {
		t.Error("a familiar address refused by the guard")
	}
	// One failure is forgiven every Window/limit: 7.5 s for the guard.
	now = now.Add(8 * time.Second)
	if !try(addressKey(ip("198.51.100.3")), "x", outcomeSuccess) {
		t.Error("still guarded after one failure decayed")
	}
	now = now.Add(time.Minute)
	for k := range th.m {
		th.levelLocked(k, now) // what makeRoomLocked does under pressure
	}
	if len(th.m) != 0 {
		t.Errorf("not forgotten after a window: %d keys", len(th.m))
	}
	// IPv6 by /64.
	if addressKey(ip("2001:db8::1")) != addressKey(ip("2001:db8::ffff:1")) || addressKey(ip("2001:db8::1")) == addressKey(ip("2001:db8:0:1::1")) {
		t.Error("IPv6 addresses not grouped by /64")
	}
	if addressKey(ip("::ffff:192.0.2.1")) != a1 {
		t.Error("IPv4-mapped address not treated as IPv4")
	}
}

// credOf returns the login cache MAC of user's password as s computes it.
func credOf(t *testing.T, s *Store, user, password string) [32]byte {
	t.Helper()
	u, ok, err := s.view.User(user)
	if err != nil || !ok {
		t.Fatalf("user %s: %v %v", user, ok, err)
	}
	return s.creds.mac(user, u.PasswordHash, password)
}

// A login queued for a hash slot in a storm is answered as soon as the
// verified entry comes from a peer, without waiting for a slot.
func TestAuthQueuedLoginAnsweredByPeerEntry(t *testing.T) {
	e := startAuthEnv(t)
	runs, _ := watchHashing(t)
	s := e.store(1, Options{Throttle: noThrottle, HashSlots: 1, HashWait: time.Minute})
	if err := s.CatchUp(e.ctx); err != nil {
		t.Fatal(err)
	}
	// Another login holds the only slot until the end of the test.
	held, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	go func() {
		_ = s.slots.do(e.ctx, func() bool { close(held); <-release; return false })
	}()
	<-held
	done := make(chan error, 1)
	go func() {
		_, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("192.0.2.1"))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // queued by now
	s.AcceptCredentials([]SharedCredential{{User: testUser, MAC: credOf(t, s, testUser, testPass), Expires: time.Now().Add(time.Hour)}})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the queued login still waits for a slot after a peer verified its password")
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("%d hashes, want 0", n)
	}
}

// A peer's word that it is hashing a credential makes a login of the same
// credential wait for its entry instead of hashing (one hash in the
// cluster), a release ends the wait at once, and the word alone logs
// nothing in: a wrong password is hashed and refused.
func TestAuthWaitsForPeerHashing(t *testing.T) {
	e := startAuthEnv(t)
	runs, _ := watchHashing(t)
	s := e.store(1, Options{Throttle: noThrottle})
	if err := s.CatchUp(e.ctx); err != nil {
		t.Fatal(err)
	}
	const wrong = "not-" + testPass
	macs := map[string][32]byte{testPass: credOf(t, s, testUser, testPass), wrong: credOf(t, s, testUser, wrong)}
	hashing := func(pass string) SharedCredential {
		return SharedCredential{User: testUser, MAC: macs[pass], Expires: time.Now().Add(time.Hour), State: CredHashing}
	}
	login := func(pass string) (time.Duration, error) {
		start := time.Now()
		_, err := s.Authenticate(e.ctx, "imap", testUser, pass, ip("192.0.2.1"))
		return time.Since(start), err
	}

	// Verified by the peer while this login waits: no hash here.
	s.AcceptCredentials([]SharedCredential{hashing(testPass)})
	go func() {
		time.Sleep(200 * time.Millisecond)
		v := hashing(testPass)
		v.State = CredVerified
		s.AcceptCredentials([]SharedCredential{v})
	}()
	if d, err := login(testPass); err != nil || d < 150*time.Millisecond || d > peerHashWait {
		t.Errorf("login while a peer hashes it: %v after %v", err, d)
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("%d hashes for a login a peer verified, want 0", n)
	}

	// Released by the peer: hashed here at once, and refused.
	s.AcceptCredentials([]SharedCredential{hashing(wrong)})
	go func() {
		time.Sleep(200 * time.Millisecond)
		r := hashing(wrong)
		r.State = CredReleased
		s.AcceptCredentials([]SharedCredential{r})
	}()
	if d, err := login(wrong); !errors.Is(err, ErrAuthFailed) || d > peerHashWait {
		t.Errorf("wrong password a peer released: %v after %v", err, d)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("%d hashes after a released wrong password, want 1", n)
	}

	// A word never followed up: the wait is bounded, then hashed.
	s.AcceptCredentials([]SharedCredential{hashing(wrong)})
	if d, err := login(wrong); !errors.Is(err, ErrAuthFailed) || d < peerHashWait/2 || d > 2*peerHashWait {
		t.Errorf("wrong password with a stale peer word: %v after %v", err, d)
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("%d hashes, want 2", n)
	}
}

// Logins sharing a password check whose slot wait ran out try once more
// together, then fail: the storm's slot queue holds one entry per
// credential, and none queues (or hashes the password again) on its own.
func TestAuthSharedCheckRetriesTogether(t *testing.T) {
	e := startAuthEnv(t)
	runs, _ := watchHashing(t)
	s := e.store(1, Options{Throttle: noThrottle, HashSlots: 1, HashWait: 300 * time.Millisecond})
	if err := s.CatchUp(e.ctx); err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	go func() {
		_ = s.slots.do(e.ctx, func() bool { close(held); <-release; return false })
	}()
	<-held
	const n = 5
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip(fmt.Sprintf("192.0.2.%d", i+1))); !errors.Is(err, ErrUnavailable) {
				t.Errorf("login %d with every slot busy: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if st := s.AuthStats(); st.SlotTimeouts != 2 {
		t.Errorf("%d slot waits ran out for %d logins of one credential, want 2 (the first and one retry)", st.SlotTimeouts, n)
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("%d hashes with every slot busy", n)
	}
}
