//go:build linux

package cluster

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
)

// TestProcServeNeedsTLS: a node given neither TLS material nor --insecure
// refuses to start and says what to do.
func TestProcServeNeedsTLS(t *testing.T) {
	bin := HastoreBinary(t)
	dir := t.TempDir()
	key, err := transport.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := FreePorts(t, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--node", "n1", "--data", filepath.Join(dir, "n1"), "--listen", addr, "--cluster-key-file", keyFile)
	cmd.Env = append(os.Environ(), "HASTORE_CRED=")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("serve without TLS: %v, want a non-zero exit\n%s", err, out)
	}
	for _, want := range []string{"needs TLS", "--cred", "cred issue node", "--insecure"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("serve without TLS says %q; want it to mention %q", out, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "n1", "meta")); err == nil {
		t.Error("serve without TLS created its metadata before refusing")
	}
}

// TestProcCredentials: on a cluster run with mutual TLS, a mount
// credential reaches its own site and nothing else, a revoked credential
// is refused by every node, and neither the cluster token (what a sniffer
// of a plaintext cluster holds) nor a client without a certificate signed
// by the cluster CA gets anything.
func TestProcCredentials(t *testing.T) {
	c := StartProcesses(t, ProcOptions{Nodes: 3, TLS: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, site := range []string{"a.example", "b.example"} {
		if out, errOut, err := c.Admin(ctx, "site", "add", site); err != nil {
			t.Fatalf("site add %s: %v\n%s%s", site, err, out, errOut)
		}
	}
	// Something in site b that the mount credential must not see.
	admin := c.ClientConfig()
	bWrite := writeFile(ctx, t, dial(t, admin, c.Addrs[0]), "b.example", "secret.txt", []byte("b's data"))
	if bWrite != nil {
		t.Fatalf("admin writing to site b: %v", bWrite)
	}

	credDir := filepath.Join(t.TempDir(), "mount-a")
	out, errOut, err := c.Admin(ctx, "cred", "issue", "mount", "--site", "a.example", "--ca", c.CADir, "--out", credDir, "--name", "web1")
	if err != nil {
		t.Fatalf("cred issue: %v\n%s%s", err, out, errOut)
	}
	mountTLS, id, err := transport.LoadCredential(credDir)
	if err != nil {
		t.Fatal(err)
	}
	if id.Role != transport.RoleMount || !strings.Contains(string(out), id.ID) {
		t.Fatalf("issued %+v, admin said %q", id, out)
	}
	mount := transport.Config{ClientTLS: mountTLS}

	cc := dial(t, mount, c.Addrs[1])
	sites := pb.NewSitesClient(cc)
	// Its own site: write and read back.
	if err := writeFile(ctx, t, cc, "a.example", "index.html", []byte("hello a")); err != nil {
		t.Fatalf("mount credential writing its own site: %v", err)
	}
	if got, err := readFile(ctx, cc, "a.example", "index.html"); err != nil || got != "hello a" {
		t.Fatalf("mount credential reading its own site: %q, %v", got, err)
	}
	// Anything else: PERMISSION_DENIED, before a byte of the other site moves.
	denied := []struct {
		what string
		err  error
	}{
		{"read site b", func() error { _, err := readFile(ctx, cc, "b.example", "secret.txt"); return err }()},
		{"write site b", writeFile(ctx, t, cc, "b.example", "planted.txt", []byte("x"))},
		{"walk site b", func() error {
			_, err := sites.Walk(ctx, &pb.WalkRequest{Site: "b.example", Path: "secret.txt"})
			return err
		}()},
		{"list sites", func() error { _, err := sites.ListSites(ctx, &pb.ListSitesRequest{}); return err }()},
		{"delete site a", func() error { _, err := sites.DelSite(ctx, &pb.SiteRequest{Site: "a.example"}); return err }()},
		{"cluster status", func() error { _, err := pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{}); return err }()},
		{"object put", func() error {
			s, err := pb.NewClusterClient(cc).PutObject(ctx)
			if err == nil {
				s.Send(&pb.DataChunk{Data: []byte("x")})
				_, err = s.CloseAndRecv()
			}
			return err
		}()},
		{"mail set password", func() error {
			_, err := pb.NewMailClient(cc).SetPassword(ctx, &pb.MailUserRequest{Address: "x@a.example", Password: "p"})
			return err
		}()},
		{"mail list users", func() error { _, err := pb.NewMailClient(cc).ListUsers(ctx, &pb.ListMailUsersRequest{}); return err }()},
		{"node info", func() error { _, err := pb.NewNodeClient(cc).Info(ctx, &pb.InfoRequest{}); return err }()},
		{"revoke a credential", func() error {
			_, err := pb.NewCredsClient(cc).RevokeCred(ctx, &pb.RevokeCredRequest{Id: id.ID})
			return err
		}()},
	}
	for _, d := range denied {
		if status.Code(d.err) != codes.PermissionDenied {
			t.Errorf("mount credential for a.example: %s: %v, want PermissionDenied", d.what, d.err)
		}
	}
	if got, err := readFile(ctx, dial(t, admin, c.Addrs[0]), "b.example", "planted.txt"); err == nil {
		t.Errorf("site b has planted.txt (%q) after the mount credential of a was refused", got)
	}

	// The record, then the revocation, refused by every node.
	var list []struct {
		ID, Role, Name, Revoked string
		Sites                   []string
	}
	if out, _, err := c.Admin(ctx, "cred", "list", "--json"); err != nil || json.Unmarshal(out, &list) != nil {
		t.Fatalf("cred list: %v\n%s", err, out)
	}
	found := false
	for _, r := range list {
		found = found || (r.ID == id.ID && r.Role == "mount" && r.Name == "web1" && len(r.Sites) == 1 && r.Sites[0] == "a.example" && r.Revoked == "")
	}
	if !found {
		t.Fatalf("cred list does not show %s as an unrevoked mount credential for a.example: %+v", id.ID, list)
	}
	if _, errOut, err := c.Admin(ctx, "cred", "revoke", "no-such-cred"); err == nil {
		t.Errorf("revoking an unknown ID succeeded; want a refusal naming --force (%s)", errOut)
	}
	conns := make([]*grpc.ClientConn, len(c.Addrs))
	for i, a := range c.Addrs {
		conns[i] = dial(t, mount, a) // open before the revocation
		if _, err := readFile(ctx, conns[i], "a.example", "index.html"); err != nil {
			t.Fatalf("node %d before revocation: %v", i, err)
		}
	}
	if out, errOut, err := c.Admin(ctx, "cred", "revoke", id.ID); err != nil {
		t.Fatalf("cred revoke: %v\n%s%s", err, out, errOut)
	}
	for i, a := range c.Addrs {
		for _, cc := range []*grpc.ClientConn{conns[i], dial(t, mount, a)} {
			deadline := time.Now().Add(10 * time.Second)
			var err error
			for {
				_, err = readFile(ctx, cc, "a.example", "index.html")
				if status.Code(err) == codes.Unauthenticated || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
				t.Errorf("node %s after revocation: %v, want Unauthenticated saying revoked", c.IDs[i], err)
			}
		}
	}
	if out, _, err := c.Admin(ctx, "cred", "list", "--json"); err != nil || !bytes.Contains(out, []byte(`"revoked": "`)) {
		t.Errorf("cred list after revocation shows no revocation date: %v\n%s", err, out)
	}
	// The admin credential still works.
	if _, err := c.Status(ctx, 2); err != nil {
		t.Errorf("admin status after revoking a mount credential: %v", err)
	}

	// Replay: the token a sniffer of a plaintext cluster would have seen,
	// sent in clear and inside TLS without a client certificate.
	token := hex.EncodeToString(hmacSHA256(c.Key, "hastore grpc v1"))
	roots := admin.ClientTLS.RootCAs
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"plaintext with the token", insecure.NewCredentials()},
		{"TLS without a client certificate, with the token", credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13})},
		{"a certificate of another CA", credentials.NewTLS(otherCA(t))},
	} {
		cc, err := grpc.NewClient("passthrough:///"+c.Addrs[0], grpc.WithTransportCredentials(tc.creds), grpc.WithPerRPCCredentials(tokenCreds(token)))
		if err != nil {
			t.Fatal(err)
		}
		tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = pb.NewClusterClient(cc).Status(tctx, &pb.StatusRequest{})
		tcancel()
		cc.Close()
		if err == nil {
			t.Errorf("%s: Status succeeded", tc.name)
		}
	}
}

// hmacSHA256 is how transport derives the token of a cluster without TLS.
func hmacSHA256(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"hastore-auth": string(t)}, nil
}
func (tokenCreds) RequireTransportSecurity() bool { return false }

// otherCA returns a client TLS configuration holding an admin credential
// of a CA the cluster does not know (and trusting the cluster's).
func otherCA(t *testing.T) *tls.Config {
	t.Helper()
	ca, err := transport.NewCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	issued, err := ca.Issue(transport.CredRequest{Role: transport.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cred")
	if err := ca.WriteCredential(dir, issued); err != nil {
		t.Fatal(err)
	}
	tc, _, err := transport.LoadCredential(dir)
	if err != nil {
		t.Fatal(err)
	}
	tc.InsecureSkipVerify = true // only the server's refusal is tested
	return tc
}

func dial(t *testing.T, cfg transport.Config, addr string) *grpc.ClientConn {
	t.Helper()
	opts, err := transport.DialOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// writeFile creates (or replaces) name in site's root with data.
func writeFile(ctx context.Context, t *testing.T, cc *grpc.ClientConn, site, name string, data []byte) error {
	s, err := pb.NewSitesClient(cc).Write(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&pb.WriteChunk{Header: &pb.WriteHeader{Site: site, Kind: pb.WriteHeader_PUT, Parent: 1, Name: name, Mode: 0o644}, Data: data}); err != nil {
		_, err = s.CloseAndRecv()
		return err
	}
	_, err = s.CloseAndRecv()
	return err
}

// readFile reads name in site's root, after a read barrier (what any node
// acknowledged is seen).
func readFile(ctx context.Context, cc *grpc.ClientConn, site, name string) (string, error) {
	sc := pb.NewSitesClient(cc)
	if _, err := sc.Sync(ctx, &pb.SiteRequest{Site: site}); err != nil {
		return "", err
	}
	ino, err := sc.Walk(ctx, &pb.WalkRequest{Site: site, Path: name})
	if err != nil {
		return "", err
	}
	r, err := sc.Read(ctx, &pb.ReadRequest{Site: site, Ino: ino.GetIno(), Length: -1})
	if err != nil {
		return "", err
	}
	var b []byte
	for {
		chunk, err := r.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
		b = append(b, chunk.GetData()...)
	}
	return string(b), nil
}

// TestProcMountCredential: `hastore mount` with a mount credential mounts
// its site through FUSE and writes to it; the same credential cannot
// mount another site.
func TestProcMountCredential(t *testing.T) {
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		t.Skipf("no FUSE here: %v", err)
	} else {
		f.Close()
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root here")
	}
	c := StartProcesses(t, ProcOptions{Nodes: 3, TLS: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, site := range []string{"a.example", "b.example"} {
		if out, errOut, err := c.Admin(ctx, "site", "add", site); err != nil {
			t.Fatalf("site add %s: %v\n%s%s", site, err, out, errOut)
		}
	}
	credDir := filepath.Join(t.TempDir(), "mount-a")
	if out, errOut, err := c.Admin(ctx, "cred", "issue", "mount", "--site", "a.example", "--ca", c.CADir, "--out", credDir); err != nil {
		t.Fatalf("cred issue: %v\n%s%s", err, out, errOut)
	}
	mount := func(site, mnt string) *exec.Cmd {
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(c.Bin, "mount", "--addr", strings.Join(c.Addrs, ","), "--cred", credDir, "--site", site, mnt)
		cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HASTORE_CRED=")
		return cmd
	}
	// Another site: refused before anything is mounted.
	if out, err := mount("b.example", filepath.Join(t.TempDir(), "b")).CombinedOutput(); err == nil || !bytes.Contains(out, []byte("reaches sites a.example, not b.example")) {
		t.Errorf("mounting b.example with a's credential: %v\n%s", err, out)
	}
	mnt := filepath.Join(t.TempDir(), "a")
	cmd := mount("a.example", mnt)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("fusermount3", "-u", mnt).Run()
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for !bytes.Contains(log.Bytes(), []byte("mounted on")) {
		if time.Now().After(deadline) {
			t.Fatalf("hastore mount did not come up:\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(mnt, "hello.txt"), []byte("through FUSE"), 0o644); err != nil {
		t.Fatalf("writing through the mount: %v\n%s", err, log.String())
	}
	got, err := readFile(ctx, dial(t, c.ClientConfig(), c.Addrs[2]), "a.example", "hello.txt")
	if err != nil || got != "through FUSE" {
		t.Errorf("the admin reads %q, %v from a.example, want what the mount wrote", got, err)
	}
}

// lockedBuffer is a bytes.Buffer that a child process's output can be
// written into while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func (b *lockedBuffer) String() string { return string(b.Bytes()) }
