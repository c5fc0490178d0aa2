package mailbox

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond for up to 10 s: changes reach the other nodes' apply
// streams a moment after the proposal returns.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDisableUser(t *testing.T) {
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
	}
	// A session open on node 2, and one of another user that must stay.
	changed, stop := stores[2].AccountChanged(testUser)
	defer stop()
	other, stopOther := stores[2].AccountChanged("bob@example.test")
	defer stopOther()
	// A node with the login cache off tells its sessions too.
	noCache, stopNoCache := e.store(1, Options{Throttle: noThrottle, AuthCache: -1}).AccountChanged(testUser)
	defer stopNoCache()

	if err := stores[0].SetDisabled(e.ctx, testUser, true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the open session of the disabled user was not told to end")
	}
	select {
	case <-noCache:
	case <-time.After(10 * time.Second):
		t.Fatal("a node without login cache did not tell the session to end")
	}
	select {
	case <-other:
		t.Fatal("another user's session was told to end")
	default:
	}
	for i, s := range stores {
		if err := s.CatchUp(e.ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the login cache to drop the user", func() bool { return s.AuthStats().CacheEntries == 0 })
		// The right password, cached a moment ago, no longer logs in.
		if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("192.0.2.1")); !errors.Is(err, ErrDisabled) {
			t.Errorf("node %d: login of a disabled user: %v, want ErrDisabled", i, err)
		}
		if err := s.CheckRecipient(e.ctx, testUser, 100); !errors.Is(err, ErrDisabled) {
			t.Errorf("node %d: mail to a disabled user: %v, want ErrDisabled", i, err)
		}
	}
	if err := stores[1].SetDisabled(e.ctx, testUser, false); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		if err := s.CatchUp(e.ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(e.ctx, "imap", testUser, testPass, ip("192.0.2.1")); err != nil {
			t.Errorf("node %d: login after enable: %v", i, err)
		}
		if err := s.CheckRecipient(e.ctx, testUser, 100); err != nil {
			t.Errorf("node %d: mail after enable: %v", i, err)
		}
	}
	if err := stores[0].SetDisabled(e.ctx, "nobody@example.test", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("disable of an unknown user: %v, want ErrNotFound", err)
	}
}

// A user imported with a Dovecot hash logs in with its password, and the
// first good login replaces the hash with argon2id, keeping the password.
func TestImportedHashRehashedOnLogin(t *testing.T) {
	e := startAuthEnv(t)
	s := e.store(0, Options{Throttle: noThrottle})
	for _, v := range importVectors {
		if !strings.HasPrefix(v.hash, "{") {
			continue
		}
		addr := strings.ToLower(strings.NewReplacer("{", "", "}", "", " ", "").Replace(v.name)) + "@example.test"
		addr = strings.ReplaceAll(addr, "dovecot", "u")
		if err := s.AddUserHash(e.ctx, addr, v.hash, 0); err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		if _, err := s.Authenticate(e.ctx, "imap", addr, v.password+"!", ip("192.0.2.1")); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("%s: wrong password: %v", v.name, err)
		}
		u, _, _ := s.view.User(addr)
		if strings.HasPrefix(u.PasswordHash, "$argon2id$v=19$m=4096") {
			t.Fatalf("%s: rehashed after a failed login", v.name)
		}
		if _, err := s.Authenticate(e.ctx, "imap", addr, v.password, ip("192.0.2.1")); err != nil {
			t.Fatalf("%s: login: %v", v.name, err)
		}
		waitFor(t, v.name+" rehashed", func() bool {
			u, _, _ := s.view.User(addr)
			return strings.HasPrefix(u.PasswordHash, "$argon2id$") && !NeedsRehash(u.PasswordHash, testHash)
		})
		s2 := e.store(1, Options{Throttle: noThrottle}) // no cache entry of the old hash
		if err := s2.CatchUp(e.ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s2.Authenticate(e.ctx, "imap", addr, v.password, ip("192.0.2.1")); err != nil {
			t.Fatalf("%s: login after the rehash: %v", v.name, err)
		}
		if _, err := s2.Authenticate(e.ctx, "imap", addr, v.password+"!", ip("192.0.2.1")); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("%s: wrong password after the rehash: %v", v.name, err)
		}
	}
	if err := s.AddUserHash(e.ctx, "plain@example.test", "{PLAIN}secret", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("{PLAIN} import: %v, want ErrInvalid", err)
	}
}
