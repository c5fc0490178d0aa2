//go:build linux

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProcMailImportMbox: an mbox file written by Dovecot 2.3 (its state
// headers: X-IMAPbase, X-UID, Status, X-Status, X-Keywords) and a
// hand-written mboxrd file (quoted ">From " lines, no trailing newline)
// are imported into a running 3-node cluster with `hastore admin import
// --mbox`; every message is read back over IMAP from every node with the
// bytes, flags and INTERNALDATE Dovecot reports (the hand-written one: as
// written, unquoted, state headers gone), and importing again adds nothing.
func TestProcMailImportMbox(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	d := newDovecot(t, root)
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 65534, 65534
	}
	// Flags written to the file at once, not when Dovecot next rewrites it.
	conf := fmt.Sprintf("mail_location = mbox:%s:INBOX=%s/inbox\nmail_uid = %d\nmail_gid = %d\nfirst_valid_uid = 1\nmbox_lazy_writes = no\n", root, root, uid, gid)
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		d.run(fmt.Sprintf("From: s%d@example.org\nTo: dave@example.test\nSubject: mbox %d\nDate: Tue, 14 Nov 2023 22:13:%02d +0100\n\nbody %d\n", i, i, i, i), "save")
	}
	d.run("", "flags", "add", `\Seen`, "mailbox", "INBOX", "uid", "1")
	d.run("", "flags", "add", `\Flagged \Answered $Label1 Work`, "mailbox", "INBOX", "uid", "2")
	d.run("", "flags", "add", `\Draft \Deleted \Seen`, "mailbox", "INBOX", "uid", "4")
	expected := d.contents()
	inbox := expected["INBOX"]
	if inbox == nil || len(inbox.Messages) != 4 {
		t.Fatalf("doveadm built %+v, want 4 messages in INBOX", expected)
	}
	raw, err := os.ReadFile(filepath.Join(root, "inbox"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "X-Keywords:") || !strings.Contains(string(raw), "X-Status:") {
		t.Fatalf("Dovecot's mbox holds no flag headers; the test would not test them:\n%s", raw)
	}
	inbox.UIDValidity = 0 // an mbox import takes a new one

	// Hand-written mboxrd: quoting, X-Status, a date, no final newline.
	archive := filepath.Join(t.TempDir(), "Archive.mbox")
	if err := os.WriteFile(archive, []byte("From a@b Tue Nov 14 21:13:05 2023\nSubject: q\nX-Status: F\nStatus: RO\n\n>From the start\n>>From deeper\n\n"+
		"From c@d Wed Nov 15 08:00:00 2023\nSubject: last\n\nno newline"), 0o644); err != nil {
		t.Fatal(err)
	}
	expected = map[string]*dovecotBox{"INBOX": inbox, "Archive": {Messages: []dovecotMessage{
		{UID: 1, Flags: `\Flagged \Seen`, Date: time.Date(2023, 11, 14, 21, 13, 5, 0, time.UTC).Unix(), Text: "Subject: q\n\nFrom the start\n>From deeper\n"},
		{UID: 2, Date: time.Date(2023, 11, 15, 8, 0, 0, 0, time.UTC).Unix(), Text: "Subject: last\n\nno newline"},
	}}}

	mc := startMailProcesses(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const user = "dave@example.test"
	compare := func(user, password string, expected map[string]*dovecotBox) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"nodes": mc.ports, "user": user, "password": password, "expected": expected})
		cfgFile := filepath.Join(t.TempDir(), "mbox.json")
		if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, "python3", "testdata/migrateproc.py", "compare", cfgFile)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("migrateproc.py compare: %v\n%s", err, out)
		}
		t.Logf("%s: %s", user, strings.TrimSpace(string(out)))
	}
	for run, want := range []string{"4 imported, 0 already there, 0 failed of 4", "0 imported, 4 already there, 0 failed of 4"} {
		out, err := mc.adminStdin(ctx, "", "import", "--user", user, "--mbox", filepath.Join(root, "inbox"))
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("import %d of inbox: %q, %v; want %q", run+1, out, err, want)
		}
	}
	for run, want := range []string{"2 imported, 0 already there, 0 failed of 2", "0 imported, 2 already there, 0 failed of 2"} {
		out, err := mc.adminStdin(ctx, "", "import", "--user", user, "--mbox", archive)
		if err != nil || !strings.Contains(out, want) || !strings.Contains(out, "into Archive") {
			t.Fatalf("import %d of Archive.mbox: %q, %v; want %q", run+1, out, err, want)
		}
	}
	compare(user, mc.pw["dave"], expected)

	// Export as mbox files and import those into another user: the same
	// messages and flags again (a message without a final line end gets one).
	dir := filepath.Join(t.TempDir(), "mbox")
	if out, err := mc.adminStdin(ctx, "", "export", "--user", user, "--mbox", dir); err != nil || !strings.Contains(out, "6 messages written") {
		t.Fatalf("export --mbox: %q, %v", out, err)
	}
	if _, err := mc.adminStdin(ctx, "erin-Secret-1\n", "user", "add", "erin@example.test"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"INBOX.mbox", "Archive.mbox"} {
		if out, err := mc.adminStdin(ctx, "", "import", "--user", "erin@example.test", "--mbox", filepath.Join(dir, f)); err != nil {
			t.Fatalf("import of exported %s: %q, %v", f, out, err)
		}
	}
	expected["Archive"].Messages[1].Text += "\n"
	compare("erin@example.test", "erin-Secret-1", expected)
}
