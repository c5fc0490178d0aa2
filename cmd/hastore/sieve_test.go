//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"hastore/testing/cluster"
)

// TestSieveCLI: `hastore admin user sieve` against a 3-process cluster: a
// script that does not parse is refused with its line:column and not
// stored; a good one (from standard input) is stored, printed back, and
// filters mail sent with Python's smtplib (a reject answers DATA 550
// 5.7.1 with the script's reason); once deleted, it filters nothing.
func TestSieveCLI(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	ports := cluster.FreePorts(t, 3)
	c := cluster.StartProcesses(t, cluster.ProcOptions{NodeArgs: func(i int) []string {
		return []string{"--smtp", ports[i], "--hostname", fmt.Sprintf("mx%d.test", i+1)}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := func(stdin string, args ...string) (string, error) {
		full := append([]string{"admin", "--addr", strings.Join(c.Addrs, ","), "--cluster-key-file", c.KeyFile}, args...)
		cmd := exec.CommandContext(ctx, c.Bin, full...)
		cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=")
		cmd.Stdin = strings.NewReader(stdin)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, e.String())
		}
		return o.String(), err
	}
	must := func(stdin string, args ...string) string {
		t.Helper()
		out, err := admin(stdin, args...)
		if err != nil {
			t.Fatalf("admin %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	must("", "domain", "add", "example.test")
	must("pw-alice\n", "user", "add", "alice@example.test")

	bad := "require \"reject\";\nif header :contains \"subject\" \"spam\" {\n  reject \"no spam\"\n}\n"
	file := t.TempDir() + "/bad.sieve"
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := admin("", "user", "sieve", "set", "alice@example.test", file); err == nil || !strings.Contains(err.Error(), "sieve: 4:1:") {
		t.Fatalf("set of a bad script: %v, want it refused at 4:1", err)
	}
	if _, err := admin("", "user", "sieve", "get", "alice@example.test"); err == nil || !strings.Contains(err.Error(), "no sieve script") {
		t.Fatalf("get after a refused set: %v, want none stored", err)
	}
	good := "require \"reject\";\nif header :contains \"subject\" \"spam\" {\n  reject \"No spam here, thanks\";\n}\n"
	must(good, "user", "sieve", "set", "alice@example.test", "-")
	if got := must("", "user", "sieve", "get", "alice@example.test"); got != good {
		t.Fatalf("get: %q, want %q", got, good)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", ports[1], time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	send := func(subject string) string {
		t.Helper()
		script := `
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
s = smtplib.SMTP(host, int(port), timeout=60)
s.ehlo("client.test")
s.mail("sender@remote.test")
s.rcpt("alice@example.test")
code, msg = s.docmd("DATA")
s.send(("From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\nhello\r\n.\r\n" % sys.argv[2]).encode())
code, msg = s.getreply()
print(code, msg.decode())
s.quit()
`
		out, err := exec.CommandContext(ctx, "python3", "-c", script, ports[1], subject).CombinedOutput()
		if err != nil {
			t.Fatalf("smtplib: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := send("buy spam now"); !strings.HasPrefix(got, "550 5.7.1 No spam here, thanks") {
		t.Errorf("rejected message answered %q, want 550 5.7.1 with the script's reason", got)
	}
	if got := send("hello"); !strings.HasPrefix(got, "250") {
		t.Errorf("other message answered %q, want 250", got)
	}
	must("", "user", "sieve", "del", "alice@example.test")
	if got := send("more spam"); !strings.HasPrefix(got, "250") {
		t.Errorf("after del, message answered %q, want 250", got)
	}
}
