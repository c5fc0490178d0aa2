//go:build linux

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dovecot runs doveadm on one maildir (no daemon: doveadm works on the
// files itself).
type dovecot struct {
	t          *testing.T
	conf, home string
}

// newDovecot prepares doveadm for the maildir md (made if missing).
func newDovecot(t *testing.T, md string) *dovecot {
	t.Helper()
	if _, err := exec.LookPath("doveadm"); err != nil {
		t.Skip("doveadm (Debian dovecot-core) not installed")
	}
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 { // Dovecot refuses to access mail as root
		uid, gid = 65534, 65534
		os.Chmod(dir, 0o755)
		os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir's parent is 0700
		os.Chmod(filepath.Dir(md), 0o755)
		os.Chmod(filepath.Dir(filepath.Dir(md)), 0o755)
	}
	for _, d := range []string{md, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	filepath.Walk(md, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, gid) })
	os.Chown(home, uid, gid)
	conf := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "mail_location = maildir:%s\nmail_uid = %d\nmail_gid = %d\nfirst_valid_uid = 1\n", md, uid, gid), 0o644); err != nil {
		t.Fatal(err)
	}
	return &dovecot{t: t, conf: conf, home: home}
}

func (d *dovecot) run(stdin string, args ...string) string {
	d.t.Helper()
	cmd := exec.Command("doveadm", append([]string{"-c", d.conf}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+d.home, "USER=migrate")
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		out = append(out, ee.Stderr...)
	}
	if err != nil {
		d.t.Fatalf("doveadm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type dovecotMessage struct {
	UID   int    `json:"uid"`
	Flags string `json:"flags"`
	Date  int64  `json:"date"`
	Text  string `json:"text"`
}

type dovecotBox struct {
	UIDValidity int64            `json:"uidvalidity"`
	Messages    []dovecotMessage `json:"messages"`
}

// contents is what Dovecot says is in the maildir: per mailbox,
// UIDVALIDITY and each message's UID, flags, received date and text.
func (d *dovecot) contents() map[string]*dovecotBox {
	d.t.Helper()
	var msgs []struct {
		Mailbox string `json:"mailbox"`
		UID     string `json:"uid"`
		Flags   string `json:"flags"`
		Date    string `json:"date.received.unixtime"`
		Text    string `json:"text"`
	}
	if err := json.Unmarshal([]byte(d.run("", "-f", "json", "fetch", "mailbox uid flags date.received.unixtime text", "all")), &msgs); err != nil {
		d.t.Fatal(err)
	}
	var status []struct {
		Mailbox     string `json:"mailbox"`
		UIDValidity string `json:"uidvalidity"`
	}
	if err := json.Unmarshal([]byte(d.run("", "-f", "json", "mailbox", "status", "uidvalidity", "*")), &status); err != nil {
		d.t.Fatal(err)
	}
	boxes := map[string]*dovecotBox{}
	for _, s := range status {
		uv, _ := strconv.ParseInt(s.UIDValidity, 10, 64)
		boxes[s.Mailbox] = &dovecotBox{UIDValidity: uv, Messages: []dovecotMessage{}}
	}
	for _, m := range msgs {
		uid, _ := strconv.Atoi(m.UID)
		date, _ := strconv.ParseInt(m.Date, 10, 64)
		b := boxes[m.Mailbox]
		if b == nil {
			d.t.Fatalf("doveadm fetch names mailbox %q that status does not", m.Mailbox)
		}
		b.Messages = append(b.Messages, dovecotMessage{UID: uid, Flags: m.Flags, Date: date, Text: m.Text})
	}
	return boxes
}

// dovecotMaildir builds a real maildir with Dovecot 2.3's doveadm and
// returns its path and its contents as Dovecot reports them.
func dovecotMaildir(t *testing.T) (string, map[string]*dovecotBox) {
	t.Helper()
	md := filepath.Join(t.TempDir(), "Maildir")
	d := newDovecot(t, md)
	doveadm := d.run
	msg := func(i int, extra string) string {
		return fmt.Sprintf("From: sender%d@example.org\nTo: dave@example.test\nSubject: message %d\nDate: Tue, 14 Nov 2023 22:13:%02d +0100\nMessage-ID: <m%d@example.org>\n%s\nbody of message %d\nsecond line\n", i, i, i%60, i, extra, i)
	}
	multipart := "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=utf-8\n\nGrüße aus Köln\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAECAwQFBgcICQ==\n--b--\n"
	doveadm("", "mailbox", "create", "Sub", "Sub.Folder", "Entwürfe", "Sent", "Archive.2023")
	for i := range 12 {
		doveadm(msg(i, ""), "save")
	}
	doveadm(msg(20, "")+multipart, "save")
	doveadm(msg(21, ""), "save", "-m", "Sub.Folder")
	doveadm(msg(22, ""), "save", "-m", "Sub.Folder")
	doveadm(msg(23, ""), "save", "-m", "Entwürfe")
	doveadm(msg(24, ""), "save", "-m", "Sent")
	doveadm(msg(25, ""), "save", "-m", "Archive.2023")
	doveadm("", "flags", "add", `\Seen $Label1`, "mailbox", "INBOX", "uid", "2:4")
	doveadm("", "flags", "add", `\Flagged \Answered Work`, "mailbox", "INBOX", "uid", "5")
	doveadm("", "flags", "add", `\Draft \Seen`, "mailbox", "Entwürfe", "uid", "1")
	doveadm("", "flags", "add", `\Deleted`, "mailbox", "Sub.Folder", "uid", "2")
	// Gaps in the UIDs, as a mailbox in use has.
	doveadm("", "expunge", "mailbox", "INBOX", "uid", "1,7:8")
	boxes := d.contents()
	n := 0
	for _, b := range boxes {
		n += len(b.Messages)
	}
	if n != 15 || len(boxes) != 6 {
		t.Fatalf("doveadm built %d messages in %d mailboxes, want 15 in 6", n, len(boxes))
	}
	return md, boxes
}

// sameAsDovecot compares what Dovecot reads in an exported maildir with
// the source: every source mailbox with the same UIDVALIDITY and
// messages (text up to line ends, flags but \Recent), any other mailbox
// empty.
func sameAsDovecot(t *testing.T, got, want map[string]*dovecotBox) {
	t.Helper()
	norm := func(b *dovecotBox) dovecotBox {
		out := dovecotBox{UIDValidity: b.UIDValidity}
		for _, m := range b.Messages {
			var fl []string
			for _, f := range strings.Fields(m.Flags) {
				if f != `\Recent` {
					fl = append(fl, f)
				}
			}
			sort.Strings(fl)
			m.Flags = strings.Join(fl, " ")
			m.Text = strings.ReplaceAll(m.Text, "\r\n", "\n")
			out.Messages = append(out.Messages, m)
		}
		sort.Slice(out.Messages, func(i, j int) bool { return out.Messages[i].UID < out.Messages[j].UID })
		return out
	}
	for name, g := range got {
		w, ok := want[name]
		if !ok {
			if len(g.Messages) != 0 {
				t.Errorf("exported mailbox %q has %d messages; the source has no such mailbox", name, len(g.Messages))
			}
			continue
		}
		if gn, wn := norm(g), norm(w); !reflect.DeepEqual(gn, wn) {
			t.Errorf("mailbox %q as Dovecot reads the export:\n%+v\nwant\n%+v", name, gn, wn)
		}
	}
	for name := range want {
		if got[name] == nil {
			t.Errorf("mailbox %q missing from the export", name)
		}
	}
}

// TestProcMailMigrateDovecot: a maildir written by Dovecot 2.3 is imported
// into a running 3-node cluster with `hastore admin import`, and every
// message is read back over IMAP from every node with the same bytes,
// flags, INTERNALDATE, UID and UIDVALIDITY Dovecot reports; importing
// again adds nothing. Then the accounts side: a user created with a
// Dovecot {SHA512-CRYPT} hash logs in (and again after the rehash), a bulk
// user import reports its counts and is idempotent, and a disabled user
// cannot log in or receive mail until enabled.
func TestProcMailMigrateDovecot(t *testing.T) {
	md, expected := dovecotMaildir(t)
	mc := startMailProcesses(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const user = "dave@example.test"
	cfgFile := filepath.Join(t.TempDir(), "migrate.json")
	check := func(scenario string, extra map[string]any) string {
		t.Helper()
		cfg := map[string]any{"nodes": mc.ports}
		for k, v := range extra {
			cfg[k] = v
		}
		b, _ := json.Marshal(cfg)
		if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, "python3", "testdata/migrateproc.py", scenario, cfgFile)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("migrateproc.py %s: %v\n%s", scenario, err, out)
		}
		t.Logf("migrateproc.py %s: %s", scenario, strings.TrimSpace(string(out)))
		return string(out)
	}

	out, err := mc.adminStdin(ctx, "", "import", "--user", user, md)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("import: %s", out)
	if !strings.Contains(out, "15 imported, 0 already there, 0 failed of 15; UIDs kept for 15, renumbered for 0, new for 0") {
		t.Fatalf("first import: %q", out)
	}
	check("compare", map[string]any{"user": user, "password": mc.pw["dave"], "expected": expected})

	out, err = mc.adminStdin(ctx, "", "import", "--user", user, md)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "0 imported, 15 already there, 0 failed of 15") {
		t.Fatalf("second import: %q", out)
	}
	check("compare", map[string]any{"user": user, "password": mc.pw["dave"], "expected": expected})

	// Export as a maildir and import that into another user: the same
	// messages, flags, dates, UIDs and UIDVALIDITYs again.
	exported := filepath.Join(t.TempDir(), "export")
	for range 2 { // the second run finds everything written
		if out, err = mc.adminStdin(ctx, "", "export", "--user", user, exported); err != nil {
			t.Fatal(err)
		}
		t.Logf("export: %s", out)
	}
	if !strings.Contains(out, "0 messages written, 15 already there") {
		t.Fatalf("second export: %q", out)
	}
	// Dovecot reads the export as the maildir it came from.
	sameAsDovecot(t, newDovecot(t, exported).contents(), expected)
	if _, err := mc.adminStdin(ctx, "erin-Secret-1\n", "user", "add", "erin@example.test"); err != nil {
		t.Fatal(err)
	}
	if out, err = mc.adminStdin(ctx, "", "import", "--user", "erin@example.test", exported); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "15 imported, 0 already there, 0 failed of 15; UIDs kept for 15") {
		t.Fatalf("import of the export: %q", out)
	}
	check("compare", map[string]any{"user": "erin@example.test", "password": "erin-Secret-1", "expected": expected})

	// Password hashes as Dovecot writes them (doveadm pw -s SHA512-CRYPT -p 'secret pw').
	const sha512 = "{SHA512-CRYPT}$6$sU/TnJGNrlsmiKUc$ML.J6/ynzpmjORlSw8KQCCq7bAPp67.DHPE8R1FmkoatXQDBWKk6xkHGuD5I879SfCPXqNu8TF8Ge.W8FoWVz/"
	if _, err := mc.adminStdin(ctx, "", "user", "add", "eve@example.test", "--password-hash", sha512); err != nil {
		t.Fatal(err)
	}
	check("login", map[string]any{"user": "eve@example.test", "password": "secret pw"})
	check("login", map[string]any{"user": "eve@example.test", "password": "secret pw"}) // after the rehash
	users := "# users of the old server\n" +
		"frank@example.test:{BLF-CRYPT}$2y$05$DKXXoRDJ0q7oQSXqDDbLf.6.6LdpyoIooFmuSjwcsTRcgkkdZX6Zu:1000:1000::/home/frank::\n" +
		"grace@example.test long-enough-password\n" +
		"eve@example.test:" + sha512 + "\n" +
		"heidi@example.test:{PLAIN}secret pw\n" +
		"ivan@example.test short\n"
	out, err = mc.adminStdin(ctx, users, "user", "import", "-")
	if err == nil || !strings.Contains(out, "users: 2 added, 1 already existed (left alone), 2 failed") {
		t.Fatalf("user import: %q, %v", out, err)
	}
	out, err = mc.adminStdin(ctx, users, "user", "import", "-")
	if err == nil || !strings.Contains(out, "users: 0 added, 3 already existed (left alone), 2 failed") {
		t.Fatalf("user import again: %q, %v", out, err)
	}
	check("login", map[string]any{"user": "frank@example.test", "password": "secret pw"})
	check("login", map[string]any{"user": "grace@example.test", "password": "long-enough-password"})
	if _, err := mc.adminStdin(ctx, "short\n", "user", "passwd", "grace@example.test"); err == nil || !strings.Contains(err.Error(), "at least 8") {
		t.Fatalf("a short password was accepted: %v", err)
	}

	if _, err := mc.adminStdin(ctx, "", "user", "disable", user); err != nil {
		t.Fatal(err)
	}
	check("refused", map[string]any{"user": user, "password": mc.pw["dave"]})
	if _, err := mc.adminStdin(ctx, "", "user", "enable", user); err != nil {
		t.Fatal(err)
	}
	check("login", map[string]any{"user": user, "password": mc.pw["dave"]})
}
