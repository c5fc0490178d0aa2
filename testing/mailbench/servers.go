package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
	"hastore/testing/benchproc"
)

const (
	benchDomain = "bench.test"
	benchUser   = "bench@" + benchDomain
	benchPass   = "mailbench-password"
)

// target is one system under test: where to deliver and where to read.
type target struct {
	name       string
	lmtpAddrs  []string // connection i goes to lmtpAddrs[i%len]
	imapAddr   string
	procs      benchproc.Group // whose CPU counts
	pprofAddrs []string        // hastore nodes' pprof servers, with -profile
	note       string
	warm       int // messages delivered while warming up (in INBOX, not in the figures)
}

func (t *target) cpu() float64 { return t.procs.CPU(true) }

func (t *target) checkAlive(during string) { t.procs.CheckAlive(during) }

// ---- hastore: a loopback cluster of `hastore serve` processes ----

func startHastore(ctx context.Context, cfg config, bin, work string) *target {
	key, err := transport.GenerateKey()
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	keyFile := filepath.Join(work, "cluster.key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		benchproc.Fatalf("%v", err)
	}
	addrs, err := benchproc.FreeAddrs(4 * cfg.nodes)
	if err != nil {
		benchproc.Fatalf("free ports: %v", err)
	}
	var peers, clusterAddrs []string
	for i := range cfg.nodes {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, addrs[i]))
		clusterAddrs = append(clusterAddrs, addrs[i])
	}
	t := &target{name: fmt.Sprintf("hastore (%d nodes)", cfg.nodes)}
	var procs []*benchproc.Proc
	benchproc.AtCleanup(func() {
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(p.Stop)
		}
		wg.Wait()
	})
	benchproc.Progress("starting %d hastore serve processes (scheme %s) in %s", cfg.nodes, cfg.scheme, work)
	for i := range cfg.nodes {
		id := fmt.Sprintf("n%d", i+1)
		lmtp, imap := addrs[cfg.nodes+2*i], addrs[cfg.nodes+2*i+1]
		var env []string
		if cfg.profile != "" {
			t.pprofAddrs = append(t.pprofAddrs, addrs[3*cfg.nodes+i])
			env = append(env, "HASTORE_BENCH_PPROF="+addrs[3*cfg.nodes+i])
		}
		p, err := benchproc.Start("hastore node "+id, filepath.Join(work, id+".log"), env,
			bin, "serve", "--node", id, "--data", filepath.Join(work, id), "--listen", addrs[i],
			"--peers", strings.Join(peers, ","), "--cluster-key-file", keyFile, "--insecure", "--shards", cfg.scheme,
			"--log-level", "warn", "--lmtp", lmtp, "--imap", imap, "--allow-insecure-auth", "--hostname", "localhost")
		if err != nil {
			benchproc.Fatalf("starting node %s: %v", id, err)
		}
		procs = append(procs, p)
		t.lmtpAddrs = append(t.lmtpAddrs, lmtp)
		if i == 0 {
			t.imapAddr = imap
		}
	}
	t.procs = procs
	t0 := time.Now()
	waitHealthy(ctx, key, clusterAddrs, procs, 90*time.Second)
	for i, p := range procs {
		if err := benchproc.WaitListening(ctx, p, 30*time.Second, t.lmtpAddrs[i]); err != nil {
			benchproc.Fatalf("%v", err)
		}
	}
	if err := benchproc.WaitListening(ctx, procs[0], 30*time.Second, t.imapAddr); err != nil {
		benchproc.Fatalf("%v", err)
	}
	benchproc.Progress("hastore healthy after %v", time.Since(t0).Round(time.Millisecond))

	admin := func(stdin string, args ...string) {
		argv := append([]string{"admin", "--addr", strings.Join(clusterAddrs, ","), "--cluster-key-file", keyFile}, args...)
		var last []byte
		for try := 0; try < 20; try++ {
			cmd := exec.CommandContext(ctx, bin, argv...)
			cmd.Stdin = strings.NewReader(stdin)
			out, err := cmd.CombinedOutput()
			if err == nil {
				return
			}
			last = out
			time.Sleep(500 * time.Millisecond)
		}
		benchproc.Fatalf("hastore admin %s: %s", strings.Join(args, " "), last)
	}
	admin("", "domain", "add", benchDomain)
	admin(benchPass+"\n", "user", "add", benchUser)
	t.note = fmt.Sprintf("hastore: %d `hastore serve` processes, shards %s, LMTP connections spread over all nodes, IMAP on node n1", cfg.nodes, cfg.scheme)
	return t
}

// waitHealthy waits until some node is Raft leader and every node sees every
// node up (writes place shards only on nodes their health view has up).
func waitHealthy(ctx context.Context, key []byte, addrs []string, procs []*benchproc.Proc, timeout time.Duration) {
	opts, err := transport.DialOptions(transport.Config{Key: key})
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	var clients []pb.ClusterClient
	for _, a := range addrs {
		conn, err := grpc.NewClient("passthrough:///"+a, opts...)
		if err != nil {
			benchproc.Fatalf("%v", err)
		}
		defer conn.Close()
		clients = append(clients, pb.NewClusterClient(conn))
	}
	deadline := time.Now().Add(timeout)
	var last error
	for {
		last = nil
		for i, c := range clients {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := c.Status(cctx, &pb.StatusRequest{})
			cancel()
			if err != nil {
				last = fmt.Errorf("%s: %v", addrs[i], err)
				break
			}
			if st.Leader == "" {
				last = fmt.Errorf("%s knows no leader", addrs[i])
				break
			}
			up := 0
			for _, s := range st.Nodes {
				if s.Up {
					up++
				}
			}
			if up < len(addrs) {
				last = fmt.Errorf("%s sees %d of %d nodes up", addrs[i], up, len(addrs))
				break
			}
		}
		if last == nil {
			return
		}
		for _, p := range procs {
			if !p.Alive() {
				benchproc.Fatalf("%s exited while starting: %v\n--- its log ---\n%s", p.Name, p.Err(), p.LogTail())
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			benchproc.Fatalf("cluster not healthy within %v: %v", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- dovecot: maildir, own config, passdb and userdb in a temp dir ----

const dovecotConf = `# generated by testing/mailbench
instance_name = {{NAME}}
base_dir = {{DIR}}/run
state_dir = {{DIR}}/state
log_path = {{DIR}}/dovecot.log
info_log_path = {{DIR}}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# The master runs as root (as packaged); logins and mail access never do:
# mail is owned by {{MAILUSER}}, and uid 0 is below first_valid_uid.
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 100
mail_location = maildir:~/Maildir
mail_fsync = optimized
lmtp_save_to_detail_mailbox = no
recipient_delimiter =
postmaster_address = postmaster@{{DOMAIN}}
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
    port = {{IMAPPORT}}
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = {{LMTPPORT}}
  }
  unix_listener lmtp {
    mode = 0600
  }
}
service imap {
  process_limit = 64
}
namespace inbox {
  inbox = yes
}
`

func startDovecot(ctx context.Context, cfg config) *target {
	bin := cfg.dovecot
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("dovecot"); err != nil {
			if _, err2 := os.Stat("/usr/sbin/dovecot"); err2 == nil {
				bin = "/usr/sbin/dovecot"
			} else {
				benchproc.Fatalf("dovecot not found (Debian: apt-get install -y dovecot-imapd dovecot-lmtpd), or give -dovecot PATH")
			}
		}
	}
	mailUser := "nobody"
	uid, gid, err := lookupUser(mailUser)
	if err != nil {
		benchproc.Fatalf("dovecot mail user: %v", err)
	}
	// Its own temp dir, traversable by the unprivileged mail and login
	// users (MkdirTemp makes it 0700).
	dir, err := os.MkdirTemp(cfg.dir, "mailbench-dovecot-")
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	benchproc.AtCleanup(func() {
		if cfg.keep {
			fmt.Fprintf(os.Stderr, "mailbench: dovecot data kept in %s\n", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		benchproc.Fatalf("%v", err)
	}
	home := filepath.Join(dir, "home", "bench")
	for _, d := range []string{filepath.Join(dir, "home"), home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			benchproc.Fatalf("%v", err)
		}
	}
	if err := os.Chown(home, uid, gid); err != nil {
		benchproc.Fatalf("%v", err)
	}
	// user:password:uid:gid:gecos:home:shell:extra
	pw := fmt.Sprintf("%s:{PLAIN}%s:%d:%d::%s::\n", benchUser, benchPass, uid, gid, home)
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw), 0o644); err != nil {
		benchproc.Fatalf("%v", err)
	}
	addrs, err := benchproc.FreeAddrs(2)
	if err != nil {
		benchproc.Fatalf("free ports: %v", err)
	}
	lmtp, imap := addrs[0], addrs[1]
	_, lport, _ := strings.Cut(lmtp, ":")
	_, iport, _ := strings.Cut(imap, ":")
	conf := strings.NewReplacer("{{NAME}}", filepath.Base(dir), "{{DIR}}", dir, "{{MAILUSER}}", mailUser,
		"{{DOMAIN}}", benchDomain, "{{IMAPPORT}}", iport, "{{LMTPPORT}}", lport).Replace(dovecotConf)
	confFile := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		benchproc.Fatalf("%v", err)
	}
	if out, err := exec.Command(bin, "-c", confFile, "-n").CombinedOutput(); err != nil {
		benchproc.Fatalf("dovecot rejects its config: %v\n%s", err, out)
	}
	benchproc.Progress("starting dovecot (%s) in %s", bin, dir)
	p, err := benchproc.Start("dovecot", filepath.Join(dir, "dovecot.stdout"), nil, bin, "-F", "-c", confFile)
	if err != nil {
		benchproc.Fatalf("starting dovecot: %v", err)
	}
	benchproc.AtCleanup(p.Stop)
	if err := benchproc.WaitListening(ctx, p, 30*time.Second, lmtp, imap); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
		benchproc.Fatalf("%v\n--- dovecot.log ---\n%s", err, b)
	}
	ver, _ := exec.Command(bin, "--version").Output()
	return &target{name: "dovecot", lmtpAddrs: []string{lmtp}, imapAddr: imap, procs: []*benchproc.Proc{p},
		note: fmt.Sprintf("dovecot %s: maildir, mail_fsync=optimized, one instance, passwd-file passdb/userdb, mail owned by %s",
			strings.TrimSpace(string(ver)), mailUser)}
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
			if err1 != nil || err2 != nil {
				return 0, 0, fmt.Errorf("/etc/passwd: bad entry for %s", name)
			}
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("no user %q in /etc/passwd", name)
}
