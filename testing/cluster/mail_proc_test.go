//go:build linux

package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The mail tests run the real binary as a 3-node cluster, each node with
// its own SMTP, submission, LMTP and IMAP ports, and drive it with real
// clients: Python's smtplib and imaplib (testdata/mailproc.py) and mbsync.

// mailPorts are one node's mail listeners.
type mailPorts struct {
	SMTP       int `json:"smtp"`
	Submission int `json:"submission"`
	LMTP       int `json:"lmtp"`
	IMAP       int `json:"imap"`
}

type mailCluster struct {
	*Processes
	ports []mailPorts
	pw    map[string]string
}

var mailUsers = []string{"alice", "bob", "carol", "dave"}

// startMailProcesses is StartProcesses with per-node mail listeners (the
// harness's ExtraArgs are the same for every node), plaintext LOGIN/AUTH
// allowed (loopback only), then domain example.test and mailUsers created
// through `hastore admin`.
func startMailProcesses(t *testing.T) *mailCluster {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	mc := startFreshMailProcesses(t)
	c := mc.Processes

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, _, err := c.Admin(ctx, "domain", "add", "example.test"); err != nil {
		t.Fatal(err)
	}
	for _, u := range mailUsers {
		mc.pw[u] = u + "-Secret-" + strconv.FormatInt(time.Now().UnixNano()%100000, 10)
		if out, err := mc.adminStdin(ctx, mc.pw[u]+"\n", "user", "add", u+"@example.test"); err != nil {
			t.Fatal(err)
		} else if !strings.Contains(out, "added") {
			t.Fatalf("user add %s: %q", u, out)
		}
	}
	var users []struct {
		Address string `json:"address"`
	}
	if err := c.AdminJSON(ctx, &users, "user", "list", "--json"); err != nil {
		t.Fatal(err)
	}
	if len(users) != len(mailUsers) {
		t.Fatalf("user list: %+v, want %d users", users, len(mailUsers))
	}
	return mc
}

// waitPort waits (bounded) until node i accepts connections on port.
func (mc *mailCluster) waitPort(i, port int) {
	mc.t.Helper()
	Eventually(mc.t, 30*time.Second, fmt.Sprintf("%s listening on %d", mc.IDs[i], port), func() error {
		mc.checkAlive()
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 3*time.Second)
		if err != nil {
			return err
		}
		conn.Close()
		return nil
	})
}

// adminStdin runs `hastore admin` with stdin (for passwords).
func (mc *mailCluster) adminStdin(ctx context.Context, stdin string, args ...string) (string, error) {
	full := append([]string{"admin", "--addr", strings.Join(mc.Addrs, ","), "--cluster-key-file", mc.KeyFile}, args...)
	cmd := exec.CommandContext(ctx, mc.Bin, full...)
	cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HASTORE_CRED=")
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return o.String(), fmt.Errorf("hastore admin %s: %w\nstderr: %s", strings.Join(args, " "), err, e.Bytes())
	}
	return o.String(), nil
}

func (mc *mailCluster) config(extra map[string]any) string {
	cfg := map[string]any{"nodes": mc.ports, "pw": mc.pw, "domain": "example.test"}
	for k, v := range extra {
		cfg[k] = v
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		mc.t.Fatal(err)
	}
	return string(b)
}

// script runs a mailproc.py scenario. Each "STEP name" line it prints
// calls steps[name] and then lets the script go on.
func (mc *mailCluster) script(t *testing.T, timeout time.Duration, scenario string, extra map[string]any, steps map[string]func()) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "testdata/mailproc.py", scenario, mc.config(extra))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last string
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		name, isStep := strings.CutPrefix(line, "STEP ")
		if !isStep {
			last = line
			continue
		}
		fn := steps[name]
		if fn == nil {
			stdin.Close()
			cmd.Wait()
			t.Fatalf("mailproc.py %s asked for unknown step %q", scenario, name)
		}
		t.Logf("%s: step %s after %v", scenario, name, time.Since(t0).Round(time.Millisecond))
		fn()
		if _, err := io.WriteString(stdin, "go\n"); err != nil {
			t.Fatalf("step %s: %v", name, err)
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("mailproc.py %s: %v (after %v)\n%s", scenario, err, time.Since(t0).Round(time.Millisecond), stderr.String())
	}
	t.Logf("mailproc.py %s in %v: %s", scenario, time.Since(t0).Round(time.Millisecond), last)
	return last
}

// TestProcMailDeliverAndRead: messages delivered over SMTP and LMTP
// through one node (one to two recipients, one of ~200 KB) are read back
// over IMAP through another node byte for byte, after the trace headers
// the server adds; an APPENDed one exactly.
func TestProcMailDeliverAndRead(t *testing.T) {
	mc := startMailProcesses(t)
	mc.script(t, 90*time.Second, "deliver", nil, nil)
}

// TestProcMailNodeKilled: the node an IMAP client is connected to is
// SIGKILLed; the client reconnects to another node and finds every
// acknowledged message with the flags it set; SMTP and LMTP deliveries go
// on through the survivors; the restarted node serves all of it.
func TestProcMailNodeKilled(t *testing.T) {
	mc := startMailProcesses(t)
	// The Raft leader: its death costs an election on top of the lost
	// connections, the harder case.
	victim := mc.Leader()
	if victim < 0 {
		t.Fatal("no leader")
	}
	t.Logf("victim: %s, the leader", mc.IDs[victim])
	mc.script(t, 150*time.Second, "killed", map[string]any{"victim": victim}, map[string]func(){
		"kill": func() { mc.Kill(victim) },
		"restart": func() {
			mc.Start(victim)
			mc.WaitHealthy(60 * time.Second)
			mc.waitPort(victim, mc.ports[victim].IMAP)
		},
	})
}

// TestProcMailConcurrentUIDs: 12 clients (180 messages) deliver to one mailbox at once
// through all three nodes over SMTP and LMTP; every node then shows the
// same UIDVALIDITY and unique, strictly ascending UIDs, each acknowledged
// message exactly once and nothing else.
func TestProcMailConcurrentUIDs(t *testing.T) {
	mc := startMailProcesses(t)
	mc.script(t, 120*time.Second, "uids", map[string]any{"workers": 12, "per": 15}, nil)
}

// TestProcMailRefusals: open relay (554 5.7.1), unknown local user (550
// 5.1.1), wrong passwords (submission 535, IMAP NO) and one user reaching
// for another's mailbox are refused.
func TestProcMailRefusals(t *testing.T) {
	mc := startMailProcesses(t)
	mc.script(t, 90*time.Second, "refusals", nil, nil)
}

// mbsyncCount is the size of the mailbox TestProcMbsync syncs.
const mbsyncCount = 1000

// TestProcMbsync: mbsync (isync) syncs a mailbox of mbsyncCount messages
// down to a Maildir; a flag set and a message deleted locally go back up
// with a second run, as IMAP then shows on another node.
func TestProcMbsync(t *testing.T) {
	if _, err := exec.LookPath("mbsync"); err != nil {
		t.Skip("mbsync (isync) not installed")
	}
	mc := startMailProcesses(t)
	t0 := time.Now()
	mc.script(t, 120*time.Second, "bulk", map[string]any{"count": mbsyncCount, "conns": 6}, nil)
	t.Logf("delivered %d messages over LMTP in %v", mbsyncCount, time.Since(t0).Round(time.Millisecond))

	dir := t.TempDir()
	maildir := filepath.Join(dir, "mail")
	rc := filepath.Join(dir, "mbsyncrc")
	if err := os.MkdirAll(maildir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`IMAPAccount hastore
Host 127.0.0.1
Port %d
User dave@example.test
Pass %s
SSLType None
AuthMechs LOGIN
Timeout 60

IMAPStore remote
Account hastore

MaildirStore local
Path %s/
Inbox %s/INBOX

Channel sync
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync All
Expunge Both
SyncState *
`, mc.ports[0].IMAP, mc.pw["dave"], maildir, maildir)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	mbsync := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		t1 := time.Now()
		cmd := exec.CommandContext(ctx, "mbsync", "-c", rc, "-a")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mbsync: %v\n%s", err, out)
		}
		t.Logf("mbsync in %v: %s", time.Since(t1).Round(time.Millisecond), bytes.TrimSpace(out))
	}
	mbsync()

	// Every message arrived locally, once, with its own content.
	files := mbsyncFiles(t, filepath.Join(maildir, "INBOX"))
	if len(files) != mbsyncCount {
		t.Fatalf("maildir has %d messages after mbsync, want %d", len(files), mbsyncCount)
	}
	byToken := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tok := mailHeader(b, "Subject")
		if !strings.HasPrefix(tok, "bulk-") || !bytes.Contains(b, []byte("Hello, token "+tok+".\r\n")) && !bytes.Contains(b, []byte("Hello, token "+tok+".\n")) {
			t.Fatalf("%s: unexpected content:\n%.300s", f, b)
		}
		if byToken[tok] != "" {
			t.Fatalf("%s twice in the maildir: %s and %s", tok, byToken[tok], f)
		}
		byToken[tok] = f
	}

	// Locally: flag two messages, delete one (a Maildir client deletes the
	// file; mbsync propagates that as \Deleted plus EXPUNGE).
	flagged := []string{"bulk-00007", fmt.Sprintf("bulk-%05d", mbsyncCount-1)}
	deleted := []string{"bulk-00003"}
	for _, tok := range flagged {
		f := byToken[tok]
		// Into cur/ with F added to the info (new/ files may have none).
		base, info, _ := strings.Cut(filepath.Base(f), ":2,")
		to := filepath.Join(maildir, "INBOX", "cur", base+":2,F"+strings.ReplaceAll(info, "F", ""))
		if err := os.Rename(f, to); err != nil {
			t.Fatal(err)
		}
	}
	for _, tok := range deleted {
		if err := os.Remove(byToken[tok]); err != nil {
			t.Fatal(err)
		}
	}
	// Untouched messages, compared with the server's copy after the sync.
	local := map[string]string{}
	for _, tok := range []string{"bulk-00000", "bulk-00500", fmt.Sprintf("bulk-%05d", mbsyncCount-2)} {
		local[tok] = byToken[tok]
	}
	mbsync()
	if files := mbsyncFiles(t, filepath.Join(maildir, "INBOX")); len(files) != mbsyncCount-len(deleted) {
		t.Errorf("maildir has %d messages after the second run, want %d", len(files), mbsyncCount-len(deleted))
	}
	// The server's view, through another node than mbsync used.
	mc.script(t, 60*time.Second, "checkdave", map[string]any{"node": 2, "count": mbsyncCount, "flagged": flagged, "deleted": deleted, "local": local}, nil)
	t.Logf("TestProcMbsync with %d messages: %v after the cluster was up", mbsyncCount, time.Since(t0).Round(time.Millisecond))
}

// mbsyncFiles lists the messages of a Maildir folder.
func mbsyncFiles(t *testing.T, folder string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"cur", "new"} {
		es, err := os.ReadDir(filepath.Join(folder, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			out = append(out, filepath.Join(folder, sub, e.Name()))
		}
	}
	return out
}

// mailHeader returns the value of the first header field name in msg.
func mailHeader(msg []byte, name string) string {
	for _, line := range strings.Split(string(msg), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
