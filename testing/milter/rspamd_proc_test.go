//go:build linux

// Package milter tests the milter hook against a real rspamd (Debian
// package rspamd; testing/deps.sh test installs it) in front of a cluster
// of real hastore processes.
package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"hastore/testing/cluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.RemoveHastoreBinary()
	os.Exit(code)
}

// GTUBE strings rspamd knows: the standard one is rejected; with
// enable_test_patterns the Y variant gets the "add header" action
// (X-Spam: Yes).
const (
	gtubeReject    = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	gtubeAddHeader = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
)

// startRspamd runs rspamd with a configuration of the test's own: only
// proxy workers in milter mode scanning by themselves (no normal worker,
// no Redis, no Lua rules, DNS pointed at nothing) on loopback ports, one
// as Debian configures it (reject means reject), one with
// quarantine_on_reject (what it would reject goes to Junk).
func startRspamd(t *testing.T) (reject, quarantine string) {
	t.Helper()
	bin, err := exec.LookPath("rspamd")
	if err != nil {
		t.Skip("Debian rspamd not installed (testing/deps.sh test installs it)")
	}
	dir := t.TempDir()
	ports := cluster.FreePorts(t, 2)
	addr, quarantine := ports[0], ports[1]
	// A TLD list of a few lines: the full one takes rspamd a minute to
	// compile at every start.
	if err := os.WriteFile(filepath.Join(dir, "tld.dat"), []byte("com\norg\nnet\ntest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`options {
  pidfile = "%[1]s/rspamd.pid";
  dbdir = "%[1]s/db";
  temp_dir = "%[1]s";
  url_tld = "%[1]s/tld.dat";
  enable_test_patterns = true;
  dns { nameserver = ["127.0.0.1:1"]; timeout = 1s; retransmits = 1; }
}
logging { type = "console"; level = "info"; }
actions { reject = 15; add_header = 6; greylist = 4; }
worker "rspamd_proxy" {
  bind_socket = "%[2]s";
  milter = yes;
  timeout = 30s;
  upstream "local" { default = yes; self_scan = yes; }
  count = 1;
  spam_header = "X-Spam";
}
worker "rspamd_proxy" {
  bind_socket = "%[3]s";
  milter = yes;
  timeout = 30s;
  upstream "local" { default = yes; self_scan = yes; }
  count = 1;
  spam_header = "X-Spam";
  quarantine_on_reject = true;
}
`, dir, addr, quarantine)
	cfg := filepath.Join(dir, "rspamd.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "rspamd.log"))
	if err != nil {
		t.Fatal(err)
	}
	// -f: foreground; -i: allowed to run as root (CI runs as root).
	cmd := exec.Command(bin, "-f", "-i", "-c", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // rspamd's own process group: master and workers
		_ = cmd.Wait()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("rspamd log:\n%s", tail(b, 4000))
		}
	})
	for _, a := range ports {
		cluster.Eventually(t, 2*time.Minute, "rspamd's milter port "+a, func() error {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				return err
			}
			return c.Close()
		})
	}
	return addr, quarantine
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// TestProcRspamd: rspamd in front of hastore through --milter, mail sent
// over real SMTP to a cluster of real processes and read back over IMAP:
// a GTUBE message is refused with rspamd's reply, or filed into Junk
// where rspamd quarantines instead (created with \Junk where the user had
// none); one rspamd marks with X-Spam: Yes lands in Junk, a clean one in
// INBOX.
func TestProcRspamd(t *testing.T) {
	reject, quarantine := startRspamd(t)
	free := cluster.FreePorts(t, 6)
	smtpAddr, imapAddr := free[:3], free[3:]
	c := cluster.StartProcesses(t, cluster.ProcOptions{Nodes: 3, NodeArgs: func(i int) []string {
		// Node 1 asks the quarantining rspamd (a configuration to show
		// both; an operator gives every node the same).
		milter := reject
		if i == 1 {
			milter = quarantine
		}
		return []string{"--smtp", smtpAddr[i], "--imap", imapAddr[i], "--hostname", fmt.Sprintf("mx%d.example.test", i+1),
			"--allow-insecure-auth", "--milter", "tcp:" + milter, "--milter-junk-header", "X-Spam"}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := func(stdin string, args ...string) {
		t.Helper()
		full := append([]string{"admin", "--addr", strings.Join(c.Addrs, ","), "--cluster-key-file", c.KeyFile}, args...)
		cluster.Eventually(t, time.Minute, "hastore admin "+strings.Join(args, " "), func() error {
			cmd := exec.CommandContext(ctx, c.Bin, full...)
			cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HASTORE_CRED=")
			cmd.Stdin = strings.NewReader(stdin)
			out, err := cmd.CombinedOutput()
			if err != nil && !bytes.Contains(out, []byte("exists")) {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	}
	admin("", "domain", "add", "example.test")
	admin("pw-bob-secret\n", "user", "add", "bob@example.test")

	im := dialIMAP(t, imapAddr[2])
	defer im.Close()
	// bob deletes his Junk: the first spam must create it again.
	if err := im.Delete("Junk").Wait(); err != nil {
		t.Fatalf("deleting Junk: %v", err)
	}

	send := func(i int, subject, body string) error {
		t.Helper()
		msg := "From: Sender <sender@remote.test>\r\nTo: bob@example.test\r\nSubject: " + subject +
			"\r\nDate: Wed, 02 Dec 2026 06:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@remote.test>\r\n\r\n" + body
		var err error
		cluster.Eventually(t, time.Minute, "SMTP on node "+smtpAddr[i], func() error {
			var cl *gosmtp.Client
			if cl, err = gosmtp.Dial(smtpAddr[i]); err != nil {
				return err
			}
			defer cl.Close()
			err = cl.SendMail("sender@remote.test", []string{"bob@example.test"}, strings.NewReader(msg))
			var se *gosmtp.SMTPError
			if errors.As(err, &se) && se.Code/100 == 4 {
				return err // cluster still settling: retried as a real MTA would
			}
			return nil
		})
		return err
	}

	t.Run("GTUBE rejected", func(t *testing.T) {
		err := send(0, "gtube reject", "This is spam.\r\n"+gtubeReject+"\r\n")
		var se *gosmtp.SMTPError
		// rspamd replies with the reason of its verdict (GTUBE's pre-result).
		if !errors.As(err, &se) || se.Code != 554 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 7, 1}) || !strings.Contains(se.Message, "Gtube pattern") {
			t.Fatalf("GTUBE message: %v (%+v), want rspamd's 554 5.7.1 Gtube pattern", err, se)
		}
	})
	t.Run("GTUBE quarantined into Junk", func(t *testing.T) {
		if err := send(1, "gtube quarantine", "This is spam.\r\n"+gtubeReject+"\r\n"); err != nil {
			t.Fatalf("GTUBE message through the quarantining rspamd: %v, want 250", err)
		}
	})
	t.Run("spam header files into Junk", func(t *testing.T) {
		if err := send(2, "gtube junk", "This is spam too.\r\n"+gtubeAddHeader+"\r\n"); err != nil {
			t.Fatalf("spam marked by rspamd: %v, want 250", err)
		}
	})
	t.Run("clean into INBOX", func(t *testing.T) {
		if err := send(2, "clean mail", "Hello Bob, lunch tomorrow?\r\n"); err != nil {
			t.Fatalf("clean message: %v", err)
		}
	})

	// What bob sees over IMAP (node 3).
	var junk, inbox [][]byte
	var use imap.MailboxAttr
	cluster.Eventually(t, 30*time.Second, "both deliveries visible on node 3", func() error {
		var err error
		if junk, use, err = mailboxOf(im, "Junk"); err != nil {
			return err
		}
		if inbox, _, err = mailboxOf(im, "INBOX"); err != nil {
			return err
		}
		if len(junk) < 2 || len(inbox) == 0 {
			return fmt.Errorf("%d in Junk, %d in INBOX", len(junk), len(inbox))
		}
		return nil
	})
	if use != imap.MailboxAttrJunk {
		t.Errorf("Junk has special use %q, want \\Junk", use)
	}
	if len(junk) != 2 || !bytes.Contains(junk[0], []byte("Subject: gtube quarantine")) ||
		!bytes.Contains(junk[1], []byte("Subject: gtube junk")) || !bytes.Contains(junk[1], []byte("X-Spam: Yes")) {
		t.Errorf("Junk holds %d messages, want the quarantined GTUBE one and the one marked X-Spam: Yes:\n%s", len(junk), bytes.Join(junk, []byte("\n----\n")))
	}
	if len(inbox) != 1 || !bytes.Contains(inbox[0], []byte("Subject: clean mail")) || bytes.Contains(inbox[0], []byte("X-Spam: Yes")) {
		t.Errorf("INBOX holds %d messages, want the clean one only:\n%s", len(inbox), bytes.Join(inbox, []byte("\n----\n")))
	}
	for _, m := range append(junk, inbox...) {
		if bytes.Contains(m, []byte("gtube reject")) {
			t.Errorf("the rejected GTUBE message was stored:\n%s", m)
		}
	}
}

func dialIMAP(t *testing.T, addr string) *imapclient.Client {
	t.Helper()
	var c *imapclient.Client
	cluster.Eventually(t, time.Minute, "IMAP login on "+addr, func() error {
		var err error
		if c, err = imapclient.DialInsecure(addr, nil); err != nil {
			return err
		}
		if err = c.Login("bob@example.test", "pw-bob-secret").Wait(); err != nil {
			c.Close()
		}
		return err
	})
	return c
}

// mailboxOf returns the messages of a mailbox and its special use.
func mailboxOf(c *imapclient.Client, name string) ([][]byte, imap.MailboxAttr, error) {
	var use imap.MailboxAttr
	list, err := c.List("", name, &imap.ListOptions{ReturnSpecialUse: true}).Collect()
	if err != nil {
		return nil, "", err
	}
	if len(list) != 1 {
		return nil, "", fmt.Errorf("LIST %s: %d mailboxes", name, len(list))
	}
	for _, a := range list[0].Attrs {
		if a == imap.MailboxAttrJunk {
			use = a
		}
	}
	sel, err := c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return nil, "", err
	}
	if sel.NumMessages == 0 {
		return nil, use, nil
	}
	var all imap.SeqSet
	all.AddRange(1, 0)
	msgs, err := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		return nil, "", err
	}
	var out [][]byte
	for _, m := range msgs {
		if len(m.BodySection) > 0 {
			out = append(out, m.BodySection[0].Bytes)
		}
	}
	return out, use, nil
}
