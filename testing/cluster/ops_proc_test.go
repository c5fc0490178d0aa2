package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hastore/replica/transport"
	"hastore/storage"
)

// scrape GETs url and returns the exposition's samples keyed by the series
// as printed (name{label="value",...}), labels in the exposition's order.
func scrape(t *testing.T, url string) (map[string]float64, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("sample %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// get returns the status code and body of a GET.
func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestProcMetrics scrapes real nodes' metrics endpoints: the series an
// operator alerts on are there, counters move with the work done, and
// /readyz turns false on a node cut off from its quorum.
func TestProcMetrics(t *testing.T) {
	mports := FreePorts(t, 3)
	c := StartProcesses(t, ProcOptions{NodeArgs: func(i int) []string { return []string{"--metrics", mports[i]} }})
	url := func(i int, path string) string { return "http://" + mports[i] + path }

	for i := range c.IDs {
		code, body, err := get(url(i, "/healthz"))
		if err != nil || code != 200 || strings.TrimSpace(body) != "ok" {
			t.Fatalf("%s /healthz: %d %q %v", c.IDs[i], code, body, err)
		}
		Eventually(t, 30*time.Second, c.IDs[i]+" ready", func() error {
			code, body, err := get(url(i, "/readyz"))
			if err != nil || code != 200 {
				return fmt.Errorf("/readyz: %d %q %v", code, body, err)
			}
			return nil
		})
	}

	leader := c.Leader()
	if leader < 0 {
		t.Fatal("no leader")
	}
	lid := c.IDs[leader]
	m, err := scrape(t, url(leader, "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	series := func(name string, labels ...string) string {
		return name + "{" + strings.Join(labels, ",") + "}"
	}
	want := map[string]float64{
		series("hastore_raft_state", `node="`+lid+`"`, `state="leader"`):    1,
		series("hastore_raft_state", `node="`+lid+`"`, `state="follower"`):  0,
		series("hastore_raft_has_leader", `node="`+lid+`"`):                 1,
		series("hastore_raft_leader", `leader="`+lid+`"`, `node="`+lid+`"`): 1,
		series("hastore_store_at_reserve", `node="`+lid+`"`):                0,
	}
	for _, id := range c.IDs {
		want[series("hastore_member_up", `member="`+id+`"`, `node="`+lid+`"`)] = 1
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	for _, k := range []string{
		series("hastore_raft_term", `node="`+lid+`"`),
		series("hastore_store_reserve_bytes", `node="`+lid+`"`),
		series("hastore_store_disk_free_bytes", `node="`+lid+`"`),
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if m[k] <= 0 {
			t.Errorf("%s = %v, want > 0", k, m[k])
		}
	}

	// Work done through the leader shows in its counters.
	puts := series("hastore_object_ops_total", `op="put"`, `result="ok"`)
	gets := series("hastore_object_ops_total", `op="get"`, `result="ok"`)
	props := series("hastore_proposals_total", `result="ok"`)
	objs := series("hastore_objects", `node="`+lid+`"`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 5
	for k := range n {
		id, err := c.Put(ctx, leader, object{seed: uint64(k + 1), size: 100 << 10}.data())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, leader, id); err != nil {
			t.Fatal(err)
		}
	}
	m2, err := scrape(t, url(leader, "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{puts, gets} {
		if d := m2[k] - m[k]; d != n {
			t.Errorf("%s moved by %v after %d calls, want %d", k, d, n, n)
		}
	}
	if d := m2[props] - m[props]; d < n {
		t.Errorf("%s moved by %v after %d puts, want >= %d", props, d, n, n)
	}
	if d := m2[objs] - m[objs]; d != n {
		t.Errorf("%s moved by %v after %d puts, want %d", objs, d, n, n)
	}

	// A node down: the others see it, and objects written meanwhile are
	// under-replicated.
	other := (leader + 1) % 3
	down := (leader + 2) % 3
	c.Kill(down)
	Eventually(t, 30*time.Second, "the leader sees "+c.IDs[down]+" down", func() error {
		m, err := scrape(t, url(leader, "/metrics"))
		if err != nil {
			return err
		}
		if k := series("hastore_member_up", `member="`+c.IDs[down]+`"`, `node="`+lid+`"`); m[k] != 0 {
			return fmt.Errorf("%s = %v", k, m[k])
		}
		return nil
	})
	if _, err := c.Put(ctx, leader, object{seed: 99, size: 100 << 10}.data()); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "under-replicated counted", func() error {
		m, err := scrape(t, url(leader, "/metrics"))
		if err != nil {
			return err
		}
		if k := series("hastore_objects_under_replicated", `node="`+lid+`"`); m[k] < 1 {
			return fmt.Errorf("%s = %v", k, m[k])
		}
		return nil
	})

	// Quorum lost: the last node is not ready, and says why.
	c.Kill(leader)
	Eventually(t, 30*time.Second, c.IDs[other]+" not ready without a quorum", func() error {
		code, body, err := get(url(other, "/readyz"))
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "no Raft leader") {
			return fmt.Errorf("/readyz: %d %q", code, body)
		}
		return nil
	})
	m3, err := scrape(t, url(other, "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	if k := series("hastore_raft_has_leader", `node="`+c.IDs[other]+`"`); m3[k] != 0 {
		t.Errorf("%s = %v with no quorum", k, m3[k])
	}
	if code, _, err := get(url(other, "/healthz")); err != nil || code != 200 {
		t.Errorf("/healthz of a live node without quorum: %d %v (want 200: the process is alive)", code, err)
	}
}

// signal sends sig to node i's process (not its group).
func (c *Processes) signal(t *testing.T, i int, sig syscall.Signal) {
	t.Helper()
	c.mu.Lock()
	p := c.procs[i]
	c.mu.Unlock()
	if p == nil {
		t.Fatalf("node %s is not running", c.IDs[i])
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits for s to appear in node i's log.
func (c *Processes) waitLog(t *testing.T, i int, s string) {
	t.Helper()
	Eventually(t, 20*time.Second, fmt.Sprintf("%q in %s's log", s, c.IDs[i]), func() error {
		b, err := os.ReadFile(c.LogFile(i))
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), s) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
}

// TestProcSIGHUPReloads sends SIGHUP to a real node serving IMAPS: the node
// lives on, a new connection gets the renewed certificate, a connection
// made before keeps working, and the log level file is applied.
func TestProcSIGHUPReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "mail.crt"), filepath.Join(dir, "mail.key")
	levelFile := filepath.Join(dir, "log-level")
	writeCert := func() []byte {
		certPEM, keyPEM, err := transport.SelfSignedCert("localhost", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		// Written aside and renamed, as certbot's deploy hooks do.
		for _, f := range []struct {
			name string
			b    []byte
		}{{keyFile, keyPEM}, {certFile, certPEM}} {
			if err := os.WriteFile(f.name+".new", f.b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(f.name+".new", f.name); err != nil {
				t.Fatal(err)
			}
		}
		return certPEM
	}
	writeCert()
	if err := os.WriteFile(levelFile, []byte("info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	imaps := FreePorts(t, 1)[0]
	c := StartProcesses(t, ProcOptions{Nodes: 1, ExtraArgs: []string{
		"--imaps", imaps, "--mail-tls-cert", certFile, "--mail-tls-key", keyFile, "--log-level-file", levelFile,
	}})

	served := func(conn *tls.Conn) string {
		return string(conn.ConnectionState().PeerCertificates[0].Raw)
	}
	dial := func() *tls.Conn {
		t.Helper()
		conn, err := tls.Dial("tcp", imaps, &tls.Config{InsecureSkipVerify: true}) // the test checks which certificate, not its chain
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "* OK") {
			t.Fatalf("IMAPS greeting: %q %v", line, err)
		}
		return conn
	}
	before := dial()
	defer before.Close()
	first := served(before)

	writeCert()
	if err := os.WriteFile(levelFile, []byte("debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.signal(t, 0, syscall.SIGHUP)
	c.waitLog(t, 0, "SIGHUP: done")

	c.checkAlive() // SIGHUP used to kill the node
	after := dial()
	defer after.Close()
	if served(after) == first {
		t.Error("after SIGHUP a new connection still gets the old certificate")
	}
	// The connection from before the reload still works.
	br := bufio.NewReader(before)
	if _, err := fmt.Fprintf(before, "a1 NOOP\r\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "a1 OK") {
		t.Errorf("a connection made before SIGHUP: NOOP answered %q %v", line, err)
	}
	for _, s := range []string{"SIGHUP: certificate reloaded", "listener=mail", "SIGHUP: log level changed", "to=DEBUG"} {
		c.waitLog(t, 0, s)
	}

	// A broken certificate file keeps the old certificate in use.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.signal(t, 0, syscall.SIGHUP)
	c.waitLog(t, 0, "certificate not reloaded; the old one stays in use")
	c.checkAlive()
	again := dial()
	defer again.Close()
	if served(again) != served(after) {
		t.Error("a failed reload changed the certificate served")
	}
	c.Stop(0) // and SIGTERM still shuts it down cleanly
}

// adminStatus runs `hastore admin status` and returns its output and exit
// code.
func (c *Processes) adminStatus(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _, err := c.Admin(ctx, append([]string{"status"}, args...)...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatal(err)
	return "", -1
}

// waitStatus waits until admin status exits with code and prints want.
func (c *Processes) waitStatus(t *testing.T, code int, want string) string {
	t.Helper()
	var out string
	Eventually(t, 60*time.Second, fmt.Sprintf("admin status exit %d with %q", code, want), func() error {
		var got int
		out, got = c.adminStatus(t)
		if code >= 0 && got != code || code < 0 && got != 0 && got != 2 || !strings.Contains(out, want) {
			return fmt.Errorf("exit %d:\n%s", got, out)
		}
		return nil
	})
	return out
}

// TestProcAdminStatusExitCodes takes a real cluster through the states an
// operator's check must tell apart: healthy (0), a wiped node rebuilding,
// a node down (2), quorum lost (3), and a node at its disk reserve (2).
func TestProcAdminStatusExitCodes(t *testing.T) {
	c := StartProcesses(t, ProcOptions{})
	c.waitStatus(t, 0, "healthy")
	if _, code := c.adminStatus(t, "extra-arg"); code != 1 {
		t.Errorf("status extra-arg exited %d, want 1 (refused)", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for k := range 20 {
		if _, err := c.Put(ctx, 0, object{seed: uint64(k + 1), size: 64 << 10}.data()); err != nil {
			t.Fatal(err)
		}
	}
	// A wiped store: the node comes back empty; status says so.
	c.Stop(2)
	if err := os.RemoveAll(filepath.Join(c.DataDir(2), "shards")); err != nil {
		t.Fatal(err)
	}
	c.Start(2)
	c.waitStatus(t, -1, "replaced") // exit 2 while rebuilding, 0 once rebuilt: either
	c.waitStatus(t, 0, "the shards it lacked were rebuilt")

	c.Kill(1)
	out := c.waitStatus(t, 2, "node n2 (")
	if !strings.Contains(out, "is down or unreachable") {
		t.Errorf("status with a node down does not say why:\n%s", out)
	}
	// --json exits 0 once it printed; the verdict is in the document.
	var js struct {
		Healthy  bool `json:"healthy"`
		ExitCode int  `json:"exit_code"`
		Problems []struct {
			Code int    `json:"code"`
			Text string `json:"text"`
		} `json:"problems"`
	}
	if err := c.AdminJSON(ctx, &js, "status", "--json"); err != nil {
		t.Fatal(err)
	}
	if js.Healthy || js.ExitCode != 2 || len(js.Problems) == 0 {
		t.Errorf("status --json with a node down: %+v", js)
	}
	c.Kill(0)
	c.waitStatus(t, 3, "no Raft leader")

	// A node whose disk is down to its reserve (here: a reserve of 1.5
	// times the free space; the store refuses to open below half of it).
	var fs syscall.Statfs_t
	if err := syscall.Statfs(t.TempDir(), &fs); err != nil {
		t.Fatal(err)
	}
	reserve := int64(fs.Bavail) * int64(fs.Bsize) * 3 / 2
	mport := FreePorts(t, 1)[0]
	d := StartProcesses(t, ProcOptions{Nodes: 1, ExtraArgs: []string{"--reserve", strconv.FormatInt(reserve, 10), "--metrics", mport}})
	out = d.waitStatus(t, 2, "at its disk reserve")
	if !strings.Contains(out, "AT RESERVE") {
		t.Errorf("the node table does not mark the node at its reserve:\n%s", out)
	}
	t.Logf("admin status of a node at its reserve:\n%s", out)
	if code, body, err := get("http://" + mport + "/readyz"); err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "disk at its reserve") {
		t.Errorf("/readyz of a node at its reserve: %d %q %v", code, body, err)
	}
}

// TestProcMailMetrics: deliveries, logins, the login cache, password
// hashing and open IMAP and HTTP connections show on a real node's
// metrics as they happen.
func TestProcMailMetrics(t *testing.T) {
	ports := FreePorts(t, 12)
	c := StartProcesses(t, ProcOptions{NodeArgs: func(i int) []string {
		return []string{"--metrics", ports[4*i], "--smtp", ports[4*i+1], "--imap", ports[4*i+2], "--http", ports[4*i+3],
			"--allow-insecure-auth", "--hostname", "mx" + strconv.Itoa(i+1) + ".test"}
	}})
	metricsURL, smtpAddr, imapAddr, httpAddr := "http://"+ports[0]+"/metrics", ports[1], ports[2], ports[3]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, _, err := c.Admin(ctx, "domain", "add", "example.test"); err != nil {
		t.Fatal(err)
	}
	const pw = "a-Secret-password-1"
	cmd := exec.CommandContext(ctx, c.Bin, "admin", "--addr", strings.Join(c.Addrs, ","), "--cluster-key-file", c.KeyFile, "user", "add", "bob@example.test")
	cmd.Stdin = strings.NewReader(pw + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	m0, err := scrape(t, metricsURL)
	if err != nil {
		t.Fatal(err)
	}

	// Two messages over SMTP.
	for k := range 2 {
		msg := fmt.Sprintf("From: a@remote.test\r\nTo: bob@example.test\r\nSubject: m%d\r\n\r\nhello\r\n", k)
		if err := smtpSend(smtpAddr, "a@remote.test", "bob@example.test", msg); err != nil {
			t.Fatal(err)
		}
	}
	// IMAP: a good login (hashed), a second one (from the cache), a bad
	// one; the first connection stays open.
	imapLogin := func(pass string) (net.Conn, string) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", imapAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(conn)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "a1 LOGIN bob@example.test %q\r\n", pass)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(line, "a1 ") {
				return conn, line
			}
		}
	}
	open, line := imapLogin(pw)
	defer open.Close()
	if !strings.HasPrefix(line, "a1 OK") {
		t.Fatalf("IMAP login: %q", line)
	}
	c2, line := imapLogin(pw)
	c2.Close()
	if !strings.HasPrefix(line, "a1 OK") {
		t.Fatalf("second IMAP login: %q", line)
	}
	c3, line := imapLogin("wrong-password")
	c3.Close()
	if !strings.HasPrefix(line, "a1 NO") {
		t.Fatalf("IMAP login with a wrong password: %q", line)
	}
	// An idle HTTP connection.
	hc, err := net.DialTimeout("tcp", httpAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()

	var m map[string]float64
	Eventually(t, 20*time.Second, "mail metrics moved", func() error {
		if m, err = scrape(t, metricsURL); err != nil {
			return err
		}
		d := func(k string) float64 { return m[k] - m0[k] }
		checks := []struct {
			series string
			min    float64
		}{
			{`hastore_mail_deliveries_total{mode="smtp",result="stored"}`, 2},
			{`hastore_mail_delivered_recipients_total{mode="smtp"}`, 2},
			{`hastore_logins_total{method="hash",proto="imap",result="ok"}`, 1},
			{`hastore_logins_total{method="cache",proto="imap",result="ok"}`, 1},
			{`hastore_login_cache_hits_total{node="n1"}`, 1},
			{`hastore_password_hashes_total{node="n1"}`, 2}, // the first login and the wrong password
		}
		for _, ch := range checks {
			if got := d(ch.series); got < ch.min {
				return fmt.Errorf("%s moved by %v, want >= %v", ch.series, got, ch.min)
			}
		}
		bad := 0.0
		for k, v := range m {
			if strings.HasPrefix(k, "hastore_logins_total{") && strings.Contains(k, `result="bad password"`) {
				bad += v - m0[k]
			}
		}
		if bad < 1 {
			return fmt.Errorf("no bad-password login counted")
		}
		for _, k := range []string{`hastore_imap_connections{node="n1"}`, "hastore_http_connections", `hastore_hash_slots{node="n1"}`} {
			if m[k] < 1 {
				return fmt.Errorf("%s = %v, want >= 1", k, m[k])
			}
		}
		return nil
	})
	if _, ok := m[`hastore_hash_slots_in_use{node="n1"}`]; !ok {
		t.Error("hastore_hash_slots_in_use missing")
	}
	// Closed connections are no longer counted.
	open.Close()
	hc.Close()
	Eventually(t, 20*time.Second, "connections closed", func() error {
		if m, err = scrape(t, metricsURL); err != nil {
			return err
		}
		for _, k := range []string{`hastore_imap_connections{node="n1"}`, "hastore_http_connections"} {
			if m[k] != 0 {
				return fmt.Errorf("%s = %v after closing", k, m[k])
			}
		}
		return nil
	})
}

// smtpSend delivers one message with a plain SMTP dialogue.
func smtpSend(addr, from, to, msg string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// TestProcSDNotify: a node started by systemd as Type=notify says READY=1
// once it serves, RELOADING=1 then READY=1 around SIGHUP, and STOPPING=1
// on SIGTERM.
func TestProcSDNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", sock) // the nodes inherit the test's environment
	c := StartProcesses(t, ProcOptions{Nodes: 1})
	next := func() string {
		t.Helper()
		_ = l.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 4096)
		n, err := l.Read(buf)
		if err != nil {
			t.Fatalf("waiting for an sd_notify message: %v", err)
		}
		return string(buf[:n])
	}
	if got := next(); !strings.HasPrefix(got, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	c.signal(t, 0, syscall.SIGHUP)
	if got := next(); got != "RELOADING=1" {
		t.Errorf("on SIGHUP: %q, want RELOADING=1", got)
	}
	if got := next(); got != "READY=1" {
		t.Errorf("after SIGHUP: %q, want READY=1", got)
	}
	c.Stop(0)
	if got := next(); got != "STOPPING=1" {
		t.Errorf("on SIGTERM: %q, want STOPPING=1", got)
	}
}

// TestProcMetricsCorruptShard: a shard corrupted on disk shows on the
// reading node's metrics as a corrupt bad shard and a degraded read (the
// read still returns the right bytes), and its repair is counted.
func TestProcMetricsCorruptShard(t *testing.T) {
	mports := FreePorts(t, 3)
	c := StartProcesses(t, ProcOptions{NodeArgs: func(i int) []string { return []string{"--metrics", mports[i]} }})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := object{seed: 7, size: 300 << 10}.data() // erasure-coded, not small
	id, err := c.Put(ctx, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Stat(ctx, 0, id, false)
	if err != nil {
		t.Fatal(err)
	}
	// Corrupt data shard 0 on its node, and read through another node.
	victim := -1
	for _, sh := range st.Shards {
		if sh.Index == 0 {
			victim = c.Index(sh.Node)
		}
	}
	if victim < 0 {
		t.Fatalf("no node holds shard 0: %+v", st.Shards)
	}
	reader := (victim + 1) % 3
	c.Stop(victim)
	if err := CorruptShard(c.DataDir(victim), storage.ShardKey{Blob: id, Index: 0}); err != nil {
		t.Fatal(err)
	}
	c.Start(victim)
	c.WaitHealthy(60 * time.Second)

	url := "http://" + mports[reader] + "/metrics"
	m0, err := scrape(t, url)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, reader, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the read returned other bytes")
	}
	Eventually(t, 30*time.Second, "bad shard, degraded read and repair counted", func() error {
		m, err := scrape(t, url)
		if err != nil {
			return err
		}
		for _, k := range []string{`hastore_bad_shards_total{kind="corrupt"}`, "hastore_degraded_reads_total", `hastore_repair_objects_total{result="repaired"}`} {
			if m[k]-m0[k] < 1 {
				return fmt.Errorf("%s moved by %v", k, m[k]-m0[k])
			}
		}
		return nil
	})
}
