//go:build linux

package roundcube

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hastore/testing/cluster"
	"hastore/testing/idleload"
)

// dovecotConf is a private Dovecot configured as a hosting company's:
// special-use folders created for every user, a 10M quota, "/" as the
// hierarchy separator, STARTTLS and IMAPS.
const dovecotConf = `instance_name = {{NAME}}
base_dir = {{DIR}}/run
state_dir = {{DIR}}/state
log_path = {{DIR}}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{{DIR}}/cert.pem
ssl_key = <{{DIR}}/key.pem
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 100
mail_location = maildir:~/Maildir
mail_plugins = $mail_plugins quota
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
plugin {
  quota = count:User quota
  quota_rule = *:storage=10M
  quota_vsizes = yes
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {{DIR}}/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u {{DIR}}/passwd
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{IMAP}}
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = {{IMAPS}}
    ssl = yes
  }
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \Drafts
    auto = create
  }
  mailbox Junk {
    special_use = \Junk
    auto = create
  }
  mailbox Sent {
    special_use = \Sent
    auto = create
  }
  mailbox Trash {
    special_use = \Trash
    auto = create
  }
}
`

// TestRoundcubeDovecot runs the same Roundcube session against Dovecot 2.3,
// the server whose protocol hastore's is measured against: it shows that
// what TestRoundcube expects is IMAP as Dovecot speaks it, not hastore's
// own reading of the RFCs. It needs root (Dovecot's master) and
// dovecot-imapd; without them it skips.
func TestRoundcubeDovecot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dovecot")
	}
	php, lib := roundcube(t)
	dovecot, err := exec.LookPath("dovecot")
	if err != nil {
		dovecot = "/usr/sbin/dovecot"
	}
	if _, err := os.Stat("/usr/lib/dovecot/imap"); err != nil || os.Getuid() != 0 {
		t.Skip("needs root and Dovecot's IMAP server (apt-get install dovecot-imapd)")
	}
	uid, gid, err := lookupUser("nobody")
	if err != nil {
		t.Skipf("no user nobody to run Dovecot's mail processes as: %v", err)
	}
	dir, err := os.MkdirTemp("", "roundcube-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // traversable by the mail user
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	tlsCfg, err := idleload.SelfSigned(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	pw := fmt.Sprintf("%s:{PLAIN}%s:%d:%d::%s::\n", user, pass, uid, gid, home)
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw), 0o644); err != nil {
		t.Fatal(err)
	}
	ports := cluster.FreePorts(t, 2)
	_, imapPort, _ := strings.Cut(ports[0], ":")
	_, imapsPort, _ := strings.Cut(ports[1], ":")
	conf := strings.NewReplacer("{{NAME}}", filepath.Base(dir), "{{DIR}}", dir, "{{IMAP}}", imapPort, "{{IMAPS}}", imapsPort).Replace(dovecotConf)
	confFile := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(dovecot, "-c", confFile, "-n").CombinedOutput(); err != nil {
		t.Fatalf("dovecot rejects its config: %v\n%s", err, out)
	}
	cmd := exec.Command(dovecot, "-F", "-c", confFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Logf("dovecot.log:\n%s", b)
		}
	})
	for _, a := range ports {
		cluster.Eventually(t, 20*time.Second, "dovecot on "+a, func() error {
			nc, err := net.DialTimeout("tcp", a, 3*time.Second)
			if err != nil {
				return err
			}
			return nc.Close()
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	roundcubeSession(t, ctx, php, lib, ports[1], ports[1], ports[0], certFile, tlsCfg)
}

func lookupUser(name string) (uid, gid int, err error) {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == name {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err1 == nil && err2 == nil {
				return uid, gid, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no user %q in /etc/passwd", name)
}
