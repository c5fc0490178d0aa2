package main

import (
	"bytes"
	"os"
	"testing"

	"hastore/replica/transport"
)

// TestDevClusterCert: made once, private key 0600, reused on the next
// start, and usable as the cluster port's certificate and CA.
func TestDevClusterCert(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := devClusterCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("private key %s has mode %#o, want 0600", key, perm)
	}
	first, _ := os.ReadFile(cert)
	cert2, _, err := devClusterCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(cert2); !bytes.Equal(first, again) {
		t.Error("a second start made a new certificate: clients given the first would fail")
	}
	srv, cli, err := transport.LoadTLS(cert, key, "", "")
	if err != nil || srv == nil || cli == nil {
		t.Fatalf("LoadTLS: %v", err)
	}
}
