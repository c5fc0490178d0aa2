package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/acme/autocert"
)

// TestACMEFlags: serve takes the ACME flags (Let's Encrypt production by
// default), and what cannot work is refused at start with a message that
// says what to give instead — before the node is touched.
func TestACMEFlags(t *testing.T) {
	o, err := parseServe([]string{"--acme", "--acme-email", "ops@example.net"})
	if err != nil {
		t.Fatal(err)
	}
	if a := o.hf.acme; !a.on || a.email != "ops@example.net" || a.directory != autocert.DefaultACMEDirectory || a.caRoot != "" {
		t.Fatalf("parsed %+v", a)
	}

	dir := t.TempDir()
	notPEM := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    httpFlags
		want string
	}{
		{"acme without https", httpFlags{acme: acmeFlags{on: true, directory: autocert.DefaultACMEDirectory}}, "--acme without --https"},
		{"https without certificates", httpFlags{https: "127.0.0.1:0"}, "or --acme"},
		{"plain http directory", httpFlags{https: "127.0.0.1:0", acme: acmeFlags{on: true, directory: "http://ca.example/dir"}}, "want an https:// URL"},
		{"missing root file", httpFlags{https: "127.0.0.1:0", acme: acmeFlags{on: true, directory: "https://ca.example/dir", caRoot: filepath.Join(dir, "none.pem")}}, "--acme-ca-root"},
		{"root file without PEM", httpFlags{https: "127.0.0.1:0", acme: acmeFlags{on: true, directory: "https://ca.example/dir", caRoot: notPEM}}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f.deny = "default"
			_, err := startHTTP("", nil, slog.New(slog.NewTextHandler(io.Discard, nil)), &tc.f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
