//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hastore/replica/transport"
	"hastore/testing/cluster"
)

// TestAdminMessages: the admin commands that used to answer with an
// internal error ("replica: object not found: no member", "file exists",
// "error reading server preface: EOF") say, against a real TLS cluster of
// three processes, what is wrong and what to do.
func TestAdminMessages(t *testing.T) {
	c := cluster.StartProcesses(t, cluster.ProcOptions{TLS: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := func(auth []string, args ...string) (string, error) {
		full := append(append([]string{"admin", "--addr", strings.Join(c.Addrs, ",")}, auth...), args...)
		cmd := exec.CommandContext(ctx, c.Bin, full...)
		cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CRED=", "HASTORE_CLUSTER_KEY_FILE=")
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() != 1 {
			t.Errorf("admin %s exited %d; want 1", strings.Join(args, " "), ee.ExitCode())
		}
		return o.String() + e.String(), err
	}
	cred := []string{"--cred", c.CredDir}
	must := func(args ...string) {
		t.Helper()
		if out, err := run(cred, args...); err != nil {
			t.Fatalf("admin %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	must("site", "add", "www.example.test")
	must("domain", "add", "example.test")

	tests := []struct {
		name string
		auth []string
		args []string
		want []string // every one in the output
		not  []string // none of these
	}{
		{"unknown node", cred, []string{"node", "remove", "n99"},
			[]string{`the cluster has no node "n99"`, "nothing was changed", "n1, n2, n3"}, []string{"object not found", "no member"}},
		{"existing site", cred, []string{"site", "add", "www.example.test"},
			[]string{`site "www.example.test" already exists`, "site list"}, []string{"addsite"}},
		{"host name of another site", cred, []string{"site", "add", "other.example.test", "--alias", "www.example.test"},
			[]string{"www.example.test belongs to site www.example.test", "one site only"}, nil},
		{"missing site", cred, []string{"site", "del", "nosuch.example.test"},
			[]string{`there is no site "nosuch.example.test"`, "nothing was deleted", "site list"}, []string{"no such file or directory"}},
		{"missing user", cred, []string{"user", "del", "nobody@example.test"},
			[]string{`there is no user "nobody@example.test"`, "user list example.test"}, []string{"disable "}},
		{"single-label domain", cred, []string{"domain", "add", "example"},
			[]string{`domain "example" has a single label`, "example.com"}, nil},
		{"existing domain", cred, []string{"domain", "add", "example.test"},
			[]string{`domain "example.test" already exists`}, nil},
		// A TLS cluster reached with the cluster key instead of an admin
		// credential, through each kind of client: status, sites, mail.
		{"TLS cluster, no credential: status", []string{"--cluster-key-file", c.KeyFile}, []string{"status"},
			[]string{"the cluster runs TLS", "--cred DIR", "HASTORE_CRED"}, nil},
		{"TLS cluster, no credential: site", []string{"--cluster-key-file", c.KeyFile}, []string{"site", "list"},
			[]string{"the cluster runs TLS", "--cred DIR", "HASTORE_CRED"}, nil},
		{"TLS cluster, no credential: mail", []string{"--cluster-key-file", c.KeyFile}, []string{"domain", "list"},
			[]string{"the cluster runs TLS", "--cred DIR", "HASTORE_CRED"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(tc.auth, tc.args...)
			if err == nil {
				t.Fatalf("admin %s succeeded:\n%s", strings.Join(tc.args, " "), out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("admin %s does not say %q:\n%s", strings.Join(tc.args, " "), w, out)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(out, w) {
					t.Errorf("admin %s still says %q:\n%s", strings.Join(tc.args, " "), w, out)
				}
			}
		})
	}
	// Nothing of the refused commands happened.
	out, err := run(cred, "site", "list")
	if err != nil || strings.Contains(out, "other.example.test") {
		t.Fatalf("site list after the refusals: %v\n%s", err, out)
	}
}

// TestAdminCredAgainstInsecureCluster: an admin credential used on a
// cluster run with --insecure is told to use the cluster key instead.
func TestAdminCredAgainstInsecureCluster(t *testing.T) {
	c := cluster.StartProcesses(t, cluster.ProcOptions{Nodes: 1, Scheme: "1+0"})
	ca, err := transport.NewCA(filepath.Join(c.Dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	issued, err := ca.Issue(transport.CredRequest{Role: transport.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	credDir := filepath.Join(c.Dir, "admin")
	if err := ca.WriteCredential(credDir, issued); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(c.Bin, "admin", "--addr", c.Addrs[0], "--cred", credDir, "status")
	cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CRED=", "HASTORE_CLUSTER_KEY_FILE=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "if the cluster runs without TLS (serve --insecure), use --cluster-key-file") || !strings.Contains(string(out), "--cluster-key-file") {
		t.Fatalf("admin --cred against an --insecure cluster: %v\n%s", err, out)
	}
}
