package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"hastore/replica/transport"
)

// TestDevCreds: made once, private keys 0600, reused on the next start,
// and loadable as a node's TLS and an admin's credential.
func TestDevCreds(t *testing.T) {
	dir := t.TempDir()
	caDir, nodeDir, adminDir, err := devCreds(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{filepath.Join(caDir, transport.CAKeyFile), filepath.Join(nodeDir, transport.KeyFile), filepath.Join(adminDir, transport.KeyFile)} {
		fi, err := os.Stat(key)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("private key %s has mode %#o, want 0600", key, perm)
		}
	}
	first, _ := os.ReadFile(filepath.Join(adminDir, transport.CertFile))
	if _, _, _, err := devCreds(dir); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(adminDir, transport.CertFile)); !bytes.Equal(first, again) {
		t.Error("a second start made a new admin credential: the exported HASTORE_CRED would change")
	}
	if _, _, err := transport.LoadNodeTLS(filepath.Join(nodeDir, transport.CertFile), filepath.Join(nodeDir, transport.KeyFile), filepath.Join(nodeDir, transport.CAFile)); err != nil {
		t.Errorf("node credential: %v", err)
	}
	if _, id, err := transport.LoadCredential(adminDir); err != nil || id.Role != transport.RoleAdmin {
		t.Errorf("admin credential: %v, %v", id, err)
	}
}
