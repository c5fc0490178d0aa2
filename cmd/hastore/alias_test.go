//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"hastore/testing/cluster"
)

// TestAliasCLI: `hastore admin alias` against a 3-process cluster, and
// mail sent with Python's smtplib to the aliases, postmaster@ and a
// subaddress of one node, read over IMAP from another.
func TestAliasCLI(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	ports := cluster.FreePorts(t, 6)
	c := cluster.StartProcesses(t, cluster.ProcOptions{NodeArgs: func(i int) []string {
		return []string{"--smtp", ports[2*i], "--imap", ports[2*i+1], "--allow-insecure-auth", "--hostname", fmt.Sprintf("mx%d.test", i+1),
			"--mail-subaddress-folder"}
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
	for _, u := range []string{"alice", "bob"} {
		must("pw-"+u+"-secret\n", "user", "add", u+"@example.test") // 8 characters at least (--password-min-length)
	}
	must("", "alias", "add", "postmaster@*", "alice@example.test")
	if out := must("", "alias", "add", "team@example.test", "alice@example.test", "bob@example.test"); !strings.Contains(out, "team@example.test") {
		t.Fatalf("alias add: %q", out)
	}
	// A remote target is a forward through the outbound queue (tested in
	// mailserver/outbound); taken and removed again here.
	must("", "alias", "add", "fwd@example.test", "someone@remote.test")
	must("", "alias", "del", "fwd@example.test")
	var list []struct {
		Address string   `json:"address"`
		Targets []string `json:"targets"`
	}
	if err := json.Unmarshal([]byte(must("", "alias", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Address != "postmaster@*" || list[1].Address != "team@example.test" || len(list[1].Targets) != 2 {
		t.Fatalf("alias list: %+v", list)
	}

	waitPort := func(p string) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			conn, err := net.DialTimeout("tcp", p, time.Second)
			if err == nil {
				conn.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", p, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitPort(ports[0])
	waitPort(ports[3])
	send := func(subject string, rcpts ...string) string {
		t.Helper()
		script := `
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
s = smtplib.SMTP(host, int(port), timeout=60)
s.ehlo("client.test")
s.mail("sender@remote.test")
out = []
for r in sys.argv[3:]:
    out.append(str(s.rcpt(r)[0]))
if "250" in out:
    code, _ = s.data(("From: sender@remote.test\r\nSubject: %s\r\n\r\nhello\r\n" % sys.argv[2]).encode())
    out.append(str(code))
s.quit()
print(" ".join(out))
`
		out, err := exec.CommandContext(ctx, "python3", append([]string{"-c", script, ports[0], subject}, rcpts...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("smtplib: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := send("team", "team@example.test"); got != "250 250" {
		t.Errorf("team: %s", got)
	}
	if got := send("postmaster", "PostMaster@example.test", "abuse@example.test"); got != "250 250 250" {
		t.Errorf("postmaster and abuse: %s", got)
	}
	if got := send("tagged", "bob+whatever@example.test"); got != "250 250" {
		t.Errorf("subaddress: %s", got)
	}
	must("", "alias", "del", "team@example.test")
	if got := send("gone", "team@example.test"); got != "550" {
		t.Errorf("deleted alias: %s", got)
	}

	// Read over IMAP from node 2.
	_, p, _ := strings.Cut(ports[3], ":")
	imapPort, _ := strconv.Atoi(p)
	landed := func(user, want string) string {
		t.Helper()
		var got map[string][]struct {
			Subject string `json:"subject"`
		}
		for try := 0; ; try++ {
			in, _ := json.Marshal(map[string]any{"host": "127.0.0.1", "port": imapPort, "user": user, "password": "pw-" + strings.Split(user, "@")[0] + "-secret", "mailboxes": []string{"INBOX"}})
			cmd := exec.CommandContext(ctx, "python3", "../../mailserver/testdata/imapc.py")
			cmd.Stdin = bytes.NewReader(in)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("imapc.py: %v", err)
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			var subjects []string
			for _, m := range got["INBOX"] {
				subjects = append(subjects, m.Subject)
			}
			// Node 2 may apply the last delivery a moment after node 0
			// answered 250: read again briefly.
			if s := strings.Join(subjects, ","); s == want || try == 20 {
				return s
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	if got := landed("alice@example.test", "team,postmaster"); got != "team,postmaster" {
		t.Errorf("alice's INBOX: %s", got)
	}
	if got := landed("bob@example.test", "team,tagged"); got != "team,tagged" {
		t.Errorf("bob's INBOX: %s", got)
	}
}
