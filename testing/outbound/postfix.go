package outbound

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Postfix is a private Debian Postfix instance (its own configuration,
// queue and mail directories) receiving mail for one domain on a loopback
// address, into a Maildir per user: the "remote" MTA of the multi-process
// test. Unknown users are refused at RCPT (550 5.1.1); STARTTLS is offered
// with a self-signed certificate.
type Postfix struct {
	Addr string // host:port it listens on
	dir  string
}

// StartPostfix starts Postfix on host (e.g. 127.0.0.2, another loopback
// address) for domain with the given local parts, stopped when the test
// ends. It skips the test if Postfix is not installed (testing/deps.sh
// installs it).
func StartPostfix(t testing.TB, host, domain string, users ...string) *Postfix {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
		t.Skip("Debian postfix not installed (testing/deps.sh test installs it)")
	}
	pu, err := user.Lookup("postfix")
	if err != nil {
		t.Skipf("no postfix user: %v", err)
	}
	if os.Getuid() != 0 {
		t.Skip("a private Postfix instance needs root")
	}
	// Postfix's delivery runs as the postfix user: its directories must be
	// reachable, unlike t.TempDir's.
	dir, err := os.MkdirTemp("", "hastore-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &Postfix{dir: dir}
	conf := filepath.Join(dir, "conf")
	for _, d := range []string{"conf", "queue", "data", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("chown", pu.Uid+":"+pu.Gid, filepath.Join(dir, "data"), filepath.Join(dir, "mail"))
	run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", filepath.Join(conf, "key.pem"),
		"-out", filepath.Join(conf, "cert.pem"), "-days", "2", "-subj", "/CN=mx."+domain)
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("cannot listen on %s (another loopback address): %v", host, err)
	}
	p.Addr = l.Addr().String()
	l.Close()
	var vmail strings.Builder
	for _, u := range users {
		fmt.Fprintf(&vmail, "%s@%s %s/\n", u, domain, u)
	}
	files := map[string]string{
		"vmailbox": vmail.String(),
		"main.cf": fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = all
inet_protocols = ipv4
myhostname = mx.%[2]s
mydestination =
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = %[2]s
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = texthash:%[1]s/conf/vmailbox
virtual_uid_maps = static:%[3]s
virtual_gid_maps = static:%[4]s
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file_prefixes = %[1]s
maillog_file = %[1]s/maillog
smtpd_tls_security_level = may
smtpd_tls_cert_file = %[1]s/conf/cert.pem
smtpd_tls_key_file = %[1]s/conf/key.pem
smtpd_tls_received_header = yes
`, dir, domain, pu.Uid, pu.Gid),
		// Only what receiving into Maildirs needs, none chrooted.
		"master.cf": p.Addr + ` inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run("postfix", "-c", conf, "start")
	t.Cleanup(func() {
		_ = exec.Command("postfix", "-c", conf, "stop").Run()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "maillog")); err == nil {
				t.Logf("postfix log:\n%s", b)
			}
		}
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Fatalf("postfix not listening on %s: %v\n%s", p.Addr, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Messages returns the messages in user's Maildir (new/), oldest first.
func (p *Postfix) Messages(t testing.TB, user string) [][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(p.dir, "mail", user, "new", "*"))
	sort.Strings(files)
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")))
	}
	return out
}

// Log returns Postfix's log so far.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}
