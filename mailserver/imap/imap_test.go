package imap_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/smtp"
	"hastore/testing/cluster"
)

func selfSigned(t *testing.T) (*tls.Config, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

type nodePorts struct {
	IMAP  int `json:"imap"`
	IMAPS int `json:"imaps"`
}

type config struct {
	Nodes []nodePorts       `json:"nodes"`
	SMTP  int               `json:"smtp"`
	PW    map[string]string `json:"pw"`
}

func port(a net.Addr) int { return a.(*net.TCPAddr).Port }

// TestIMAP runs imaplib scenarios against a 3-node in-process cluster:
// mail delivered through one node (SMTP or APPEND) is read through
// another, and changes made on one node reach sessions on the others.
func TestIMAP(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	start := time.Now()
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	tlsCfg, certPEM := selfSigned(t)
	cfg := config{PW: map[string]string{"alice": "alice-pw", "bob": "bob-pw", "small": "small-pw", "carol": "carol-pw"}}
	var stores []*mailbox.Store
	for i, n := range c.Nodes {
		st := mailbox.New(n.Cluster, n.Meta, mailbox.Options{
			Hash:     mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1},
			Throttle: mailbox.ThrottleOptions{PerAddress: 1000, PerAccount: 1000, FailDelay: -1},
		})
		stores = append(stores, st)
		srv, err := imap.Listen(st, imap.Config{IMAP: "127.0.0.1:0", IMAPS: "127.0.0.1:0", TLS: tlsCfg, MaxMessageBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() }) // before the cluster stops
		a := srv.Addrs()
		cfg.Nodes = append(cfg.Nodes, nodePorts{IMAP: port(a["imap"]), IMAPS: port(a["imaps"])})
		if i == 1 {
			mx, err := smtp.Listen("127.0.0.1:0", st, smtp.Config{Mode: smtp.MX, Hostname: "mx2.test", MaxConnectionsPerIP: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { mx.Close() })
			cfg.SMTP = port(mx.Addr())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stores[0].AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct {
		name  string
		quota int64
	}{{"alice", 0}, {"bob", 0}, {"small", 3000}, {"carol", 0}} {
		if err := stores[0].AddUser(ctx, u.name+"@example.test", cfg.PW[u.name], u.quota); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("cluster, users and listeners up in %v", time.Since(start).Round(time.Millisecond))
	in, _ := json.Marshal(cfg)
	for _, sc := range []string{"auth", "read", "cross", "stress", "users", "examine", "mailboxes", "quota"} {
		t.Run(sc, func(t *testing.T) {
			t0 := time.Now()
			cmd := exec.Command("python3", "testdata/imapc.py", sc, string(in))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("imapc.py %s: %v\n%s", sc, err, stderr.String())
			}
			t.Logf("%s in %v: %s", sc, time.Since(t0).Round(time.Millisecond), out)
		})
	}
	t.Run("mbsync", func(t *testing.T) { testMbsync(t, stores, cfg, certPEM) })
	if n, _ := strconv.Atoi(os.Getenv("HASTORE_IMAP_IDLE_CONNS")); n > 0 {
		t.Run("idle-memory", func(t *testing.T) { testIdleMemory(t, cfg, n) })
	}
}

// testIdleMemory (only with HASTORE_IMAP_IDLE_CONNS=N) holds N logged-in
// TLS connections in IDLE on a selected INBOX, from a Python process, and
// reports this process's heap and stack growth per connection.
func testIdleMemory(t *testing.T, cfg config, n int) {
	measure := func() (heap, stack uint64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse, ms.StackInuse
	}
	heap0, stack0 := measure()
	in, _ := json.Marshal(cfg)
	cmd := exec.Command("python3", "testdata/imapc.py", "idlehold", string(in), strconv.Itoa(n), os.Getenv("HASTORE_IMAP_IDLE_MODE"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("idlehold: %v\n%s", err, stderr.String())
	}
	heap1, stack1 := measure()
	if f := os.Getenv("HASTORE_IMAP_HEAPPROFILE"); f != "" {
		if w, err := os.Create(f); err == nil {
			pprof.WriteHeapProfile(w)
			w.Close()
		}
	}
	stdin.Close()
	cmd.Wait()
	t.Logf("%d IMAP connections (TLS, logged in, INBOX selected, mode %q): %s; per connection: heap %+.1f KiB, stacks %+.1f KiB (heap includes any badger memtable allocated meanwhile; see HASTORE_IMAP_HEAPPROFILE)",
		n, os.Getenv("HASTORE_IMAP_IDLE_MODE"), strings.TrimSpace(line),
		float64(int64(heap1)-int64(heap0))/1024/float64(n), float64(int64(stack1)-int64(stack0))/1024/float64(n))
}

// testMbsync syncs a mailbox down to a maildir with mbsync (Debian isync)
// through node 3, flags a message locally, and syncs the change back up.
func testMbsync(t *testing.T, stores []*mailbox.Store, cfg config, certPEM []byte) {
	if _, err := exec.LookPath("mbsync"); err != nil {
		t.Skip("mbsync not installed (testing/deps.sh test installs isync)")
	}
	const user, n = "carol@example.test", 100
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	for i := range n {
		d := stores[i%3].NewDelivery()
		if err := d.AddRecipient(mailbox.Recipient{Address: user}); err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("From: a@remote.test\r\nSubject: sync %d\r\nMessage-ID: <sync%d@remote.test>\r\n\r\nbody %d\r\n", i, i, i)
		if err := d.Body(ctx, []byte(msg), time.Time{}); err != nil {
			t.Fatal(err)
		}
		if out, err := d.Commit(ctx, true); err != nil || out[0].Err != nil {
			t.Fatal(err, out)
		}
	}
	t.Logf("%d messages delivered in %v", n, time.Since(t0).Round(time.Millisecond))
	dir := t.TempDir()
	cert := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	maildir := filepath.Join(dir, "mail")
	if err := os.MkdirAll(maildir, 0o700); err != nil {
		t.Fatal(err)
	}
	rc := filepath.Join(dir, "mbsyncrc")
	conf := fmt.Sprintf(`IMAPAccount hs
Host 127.0.0.1
Port %d
User %s
Pass %s
SSLType IMAPS
CertificateFile %s

IMAPStore hs-remote
Account hs

MaildirStore local
Path %s/
Inbox %s/INBOX

Channel hs
Far :hs-remote:
Near :local:
Patterns INBOX
Create Near
Sync All
Expunge None
SyncState *
`, cfg.Nodes[2].IMAPS, user, cfg.PW["carol"], cert, maildir, maildir)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	mbsync := func() {
		t.Helper()
		t0 := time.Now()
		args := []string{"-c", rc, "-a"}
		if os.Getenv("MBSYNC_DEBUG") != "" {
			args = append(args, "-D")
		}
		// (mbsync sleeps ~1 s itself when the maildir changed recently.)
		out, err := exec.Command("mbsync", args...).CombinedOutput()
		if os.Getenv("MBSYNC_DEBUG") != "" {
			t.Logf("%s", out)
		}
		if err != nil {
			t.Fatalf("mbsync: %v\n%s", err, out)
		}
		t.Logf("mbsync in %v", time.Since(t0).Round(time.Millisecond))
	}
	mbsync()
	var files []string
	for _, sub := range []string{"cur", "new"} {
		es, err := os.ReadDir(filepath.Join(maildir, "INBOX", sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			files = append(files, filepath.Join(maildir, "INBOX", sub, e.Name()))
		}
	}
	if len(files) != n {
		t.Fatalf("maildir has %d messages, want %d", len(files), n)
	}
	// Flag one message locally: Maildir info ":2,F".
	old := files[0]
	base := filepath.Base(old)
	if i := strings.Index(base, ":2,"); i >= 0 {
		base = base[:i]
	}
	flagged := filepath.Join(maildir, "INBOX", "cur", base+":2,F")
	if err := os.Rename(old, flagged); err != nil {
		t.Fatal(err)
	}
	mbsync()
	if err := stores[0].CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	mb, _, err := stores[0].Mailbox(user, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := stores[0].Messages(user, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	nf := 0
	for _, m := range msgs {
		for _, f := range m.Flags {
			if f == `\Flagged` {
				nf++
			}
		}
	}
	if len(msgs) != n || nf != 1 {
		t.Fatalf("after syncing up: %d messages, %d flagged; want %d and 1", len(msgs), nf, n)
	}
}
