//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hastore/storage"
	"hastore/testing/cluster"
)

// lineConn is a plaintext SMTP/LMTP or IMAP client conversation.
type lineConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialLines(t *testing.T, addr string) *lineConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (l *lineConn) send(s string) {
	l.t.Helper()
	if _, err := io.WriteString(l.c, s); err != nil {
		l.t.Fatalf("sending %q: %v", s, err)
	}
}

// line reads one line, within d.
func (l *lineConn) line(d time.Duration) (string, error) {
	_ = l.c.SetReadDeadline(time.Now().Add(d))
	s, err := l.r.ReadString('\n')
	return strings.TrimRight(s, "\r\n"), err
}

// reply reads an SMTP reply (its last line) and fails unless it has code.
func (l *lineConn) reply(code string) string {
	l.t.Helper()
	for {
		s, err := l.line(30 * time.Second)
		if err != nil {
			l.t.Fatalf("waiting for %s: %v", code, err)
		}
		if len(s) >= 4 && s[3] == '-' {
			continue
		}
		if !strings.HasPrefix(s, code) {
			l.t.Fatalf("got %q, want %s", s, code)
		}
		return s
	}
}

// untilClosed reads until the server closes the connection and returns
// what it sent.
func (l *lineConn) untilClosed(d time.Duration) ([]string, error) {
	var got []string
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		s, err := l.line(time.Until(deadline))
		if s != "" {
			got = append(got, s)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
	return got, errors.New("still open")
}

func logHas(t *testing.T, file string, re *regexp.Regexp) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return re.FindStringSubmatch(string(b))
}

// TestProcDrainAndRemove runs a 4-node cluster of real processes with LMTP
// and IMAP on every node.
//
// SIGTERM of the Raft leader: the node hands leadership to another voter
// (its log names the new leader, which every other node then reports), an
// LMTP delivery in DATA at the signal finishes with 250 and that message
// can then be read over IMAP from another node; an idle LMTP connection
// gets 421; an IMAP connection is closed; the process exits 0; every
// object write acknowledged meanwhile by the other nodes reads back.
//
// `admin node remove` of a dead node, whose machine then comes back: the
// node finds out it was removed, says so in its log, closes its listeners
// (its LMTP port refuses connections) and exits 0. (A node removed while
// running: TestProcNodeRemove in testing/cluster.)
func TestProcDrainAndRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 4-node cluster")
	}
	const nodes = 4
	ports := cluster.FreePorts(t, 3*nodes)
	lmtp, imapAddr, metricsAddr := ports[:nodes], ports[nodes:2*nodes], ports[2*nodes:]
	c := cluster.StartProcesses(t, cluster.ProcOptions{
		Nodes: nodes,
		NodeArgs: func(i int) []string {
			return []string{"--lmtp", lmtp[i], "--imap", imapAddr[i], "--allow-insecure-auth", "--hostname", "mx.test",
				"--shutdown-grace", "25s", "--metrics", metricsAddr[i]}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, _, err := c.Admin(ctx, "domain", "add", "example.test"); err != nil {
		t.Fatal(err)
	}
	const user, pw = "u@example.test", "drain-Secret-1"
	add := exec.CommandContext(ctx, c.Bin, "admin", "--addr", strings.Join(c.Addrs, ","), "--cluster-key-file", c.KeyFile, "user", "add", user)
	add.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HASTORE_CRED=")
	add.Stdin = strings.NewReader(pw + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}

	var leader int
	cluster.Eventually(t, 30*time.Second, "a leader", func() error {
		if leader = c.Leader(); leader < 0 {
			return errors.New("no leader agreed on")
		}
		return nil
	})
	leaderID := c.IDs[leader]
	t.Logf("leader %s", leaderID)

	// An LMTP delivery half-way through DATA, an idle LMTP session, an
	// IMAP session logged in: all on the leader.
	busy := dialLines(t, lmtp[leader])
	busy.reply("220")
	busy.send("LHLO test\r\n")
	busy.reply("250")
	busy.send("MAIL FROM:<s@elsewhere.test>\r\n")
	busy.reply("250")
	busy.send("RCPT TO:<" + user + ">\r\n")
	busy.reply("250")
	busy.send("DATA\r\n")
	busy.reply("354")
	token := fmt.Sprintf("drain-token-%d", time.Now().UnixNano())
	busy.send("From: s@elsewhere.test\r\nTo: " + user + "\r\nSubject: " + token + "\r\n\r\n")
	busy.send(strings.Repeat("a line of the body written before the signal\r\n", 200))

	idle := dialLines(t, lmtp[leader])
	idle.reply("220")
	idle.send("LHLO test\r\n")
	idle.reply("250")

	im := dialLines(t, imapAddr[leader])
	if s, err := im.line(10 * time.Second); err != nil || !strings.HasPrefix(s, "* OK") {
		t.Fatalf("IMAP greeting %q, %v", s, err)
	}
	im.send("a1 LOGIN " + user + " " + pw + "\r\n")
	for {
		s, err := im.line(30 * time.Second)
		if err != nil {
			t.Fatalf("IMAP login: %v", err)
		}
		if strings.HasPrefix(s, "a1 ") {
			if !strings.HasPrefix(s, "a1 OK") {
				t.Fatalf("IMAP login: %q", s)
			}
			break
		}
	}

	// Writes through the other nodes while the leader goes.
	others := []int{}
	for i := range nodes {
		if i != leader {
			others = append(others, i)
		}
	}
	var (
		wmu   sync.Mutex
		acked = map[storage.BlobID][]byte{}
		stopW = make(chan struct{})
		wwg   sync.WaitGroup
	)
	wwg.Add(1)
	go func() {
		defer wwg.Done()
		for k := 0; ; k++ {
			select {
			case <-stopW:
				return
			default:
			}
			data := []byte(fmt.Sprintf("object %d written while %s drains %s", k, leaderID, strings.Repeat("x", k%5000)))
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			id, err := c.Put(wctx, others[k%len(others)], data)
			wcancel()
			if err == nil {
				wmu.Lock()
				acked[id] = data
				wmu.Unlock()
			}
		}
	}()

	// Objects with shards on the leader, for the scrub below.
	var onLeader []storage.BlobID
	for k := 0; k < 8; k++ {
		id, err := c.Put(ctx, others[0], []byte(fmt.Sprintf("object %d before the drain %s", k, strings.Repeat("y", 20000))))
		if err != nil {
			t.Fatal(err)
		}
		onLeader = append(onLeader, id)
	}

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c.Stop(leader) // SIGTERM; fails the test unless the exit is clean
	}()

	// The idle session is told to go first, then the delivery in DATA
	// completes and is acknowledged.
	got, err := idle.untilClosed(30 * time.Second)
	if err != nil || len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "421") {
		t.Fatalf("idle LMTP session at SIGTERM: got %q, %v; want 421 and a close", got, err)
	}
	// Still draining (the delivery above holds it): /readyz says so.
	resp, err := http.Get("http://" + metricsAddr[leader] + "/readyz")
	if err != nil {
		t.Fatalf("/readyz while draining: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "shutting down") {
		t.Fatalf("/readyz while draining: %d %q, want 503 shutting down", resp.StatusCode, body)
	}
	busy.send("the rest of the body, after the signal\r\n.\r\n")
	busy.reply("250")
	if got, err := busy.untilClosed(30 * time.Second); err != nil {
		t.Fatalf("LMTP session after its delivery during the drain: %q, %v; want it closed", got, err)
	}
	if got, err := im.untilClosed(30 * time.Second); err != nil {
		t.Fatalf("IMAP session at SIGTERM: %q, %v; want it closed", got, err)
	}
	<-stopped
	close(stopW)
	wwg.Wait()

	m := logHas(t, c.LogFile(leader), regexp.MustCompile(`shutdown: Raft leadership handed over.* to=(\w+)`))
	if m == nil {
		t.Fatalf("the leader's log does not say it handed leadership over:\n%s", tailFile(t, c.LogFile(leader), 40))
	}
	newLeader := m[1]
	cluster.Eventually(t, 30*time.Second, "the others agree on the new leader", func() error {
		for _, i := range others {
			st, err := c.Status(ctx, i)
			if err != nil {
				return err
			}
			if st.Leader != newLeader {
				return fmt.Errorf("%s says the leader is %q, the old leader's log %q", c.IDs[i], st.Leader, newLeader)
			}
		}
		return nil
	})
	if conn, err := net.DialTimeout("tcp", lmtp[leader], time.Second); err == nil {
		conn.Close()
		t.Fatalf("the stopped node's LMTP port %s still accepts", lmtp[leader])
	}

	wmu.Lock()
	t.Logf("%d object writes acknowledged during the drain", len(acked))
	for id, data := range acked {
		got, err := c.Get(ctx, others[0], id)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("acknowledged object %s: read %d bytes, %v", id, len(got), err)
		}
	}
	wmu.Unlock()

	// The message acknowledged during the drain is there, read from
	// another node.
	rd := dialLines(t, imapAddr[others[0]])
	rd.line(10 * time.Second)
	rd.send("a1 LOGIN " + user + " " + pw + "\r\na2 SELECT INBOX\r\na3 SEARCH SUBJECT " + token + "\r\n")
	found := false
	for {
		s, err := rd.line(30 * time.Second)
		if err != nil {
			t.Fatalf("IMAP on %s: %v", c.IDs[others[0]], err)
		}
		if strings.HasPrefix(s, "* SEARCH ") {
			found = true
		}
		if strings.HasPrefix(s, "a3 ") {
			break
		}
	}
	if !found {
		t.Fatalf("the message acknowledged during the drain is not in INBOX")
	}

	// Bit rot on the stopped node: one of its shards. It comes back, and
	// `admin scrub` counts the bad shard and its rebuilding.
	corrupted := false
	for _, id := range onLeader {
		st, err := c.Stat(ctx, others[0], id, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, sh := range st.Shards {
			if sh.Node == leaderID && !corrupted {
				if err := cluster.CorruptShard(c.DataDir(leader), storage.ShardKey{Blob: id, Index: int(sh.Index)}); err != nil {
					t.Fatal(err)
				}
				corrupted = true
			}
		}
	}
	if !corrupted {
		t.Fatalf("none of %d objects has a shard on %s", len(onLeader), leaderID)
	}
	c.Start(leader)
	c.WaitHealthy(60 * time.Second)
	out, stderr, err := c.Admin(ctx, "scrub")
	if err != nil {
		t.Fatalf("scrub: %v\n%s", err, stderr)
	}
	want := regexp.MustCompile(`(?m)^scrub ` + leaderID + `: [1-9]\d* shards verified \(.*\): 1 bad or missing, 1 rebuilt, 0 left unfixed$`)
	if !want.Match(out) {
		t.Fatalf("scrub's summary does not count the corrupt shard on %s:\n%s", leaderID, out)
	}
	victim := -1
	for _, i := range others {
		if c.IDs[i] != newLeader {
			victim = i
		}
	}
	// The victim dies (its removal cannot reach it), is removed, and its
	// machine comes back: the node must find out and stop by itself.
	c.Kill(victim)
	_, stderr, err = c.Admin(ctx, "node", "remove", c.IDs[victim])
	if err != nil {
		t.Fatalf("node remove %s: %v\n%s", c.IDs[victim], err, stderr)
	}
	// The progress counts the objects that had shards there: not 0/0.
	if m := regexp.MustCompile(`remove ` + c.IDs[victim] + `: done (\d+)/(\d+)`).FindSubmatch(stderr); m == nil || string(m[1]) != string(m[2]) || string(m[2]) == "0" {
		t.Fatalf("node remove's progress does not count the objects on %s:\n%s", c.IDs[victim], stderr)
	}
	c.Start(victim)
	c.WaitExit(victim, 120*time.Second) // exit status 0
	if logHas(t, c.LogFile(victim), regexp.MustCompile(`was removed from the cluster \('hastore admin node remove'\)`)) == nil {
		t.Fatalf("%s's log does not say it was removed:\n%s", c.IDs[victim], tailFile(t, c.LogFile(victim), 30))
	}
	if m := logHas(t, c.LogFile(victim), regexp.MustCompile(`evidence="([^"]*)"`)); m != nil {
		t.Logf("%s knew it was removed: %s", c.IDs[victim], m[1])
	}
	if conn, err := net.DialTimeout("tcp", lmtp[victim], time.Second); err == nil {
		conn.Close()
		t.Fatalf("LMTP %s of the removed node still accepts", lmtp[victim])
	}
}

func tailFile(t *testing.T, file string, n int) string {
	b, _ := os.ReadFile(file)
	lines := strings.Split(string(b), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
