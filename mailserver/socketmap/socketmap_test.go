package socketmap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hastore/mailserver"
	"hastore/mailserver/mailbox"
	"hastore/testing/cluster"
)

// env is a 3-node in-process cluster with a mail store on each node and a
// socketmap server on node 0.
type env struct {
	c      *cluster.InProcess
	stores []*mailbox.Store
	srv    *Server
}

func startEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	e := &env{c: cluster.StartInProcess(t, cluster.Options{Nodes: 3})}
	opt := mailbox.Options{Hash: mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1}}
	for _, n := range e.c.Nodes {
		e.stores = append(e.stores, mailserver.NewStore(n, opt))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store = e.stores[0]
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	e.srv = Serve(l, cfg)
	t.Cleanup(func() { e.srv.Close() })
	return e
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// admin runs an administrative call on node 2 (not the one answering, so
// the answers must come from the replicated state), retrying while the
// cluster elects a leader.
func (e *env) admin(t *testing.T, what string, fn func(context.Context, *mailbox.Store) error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := fn(ctx, e.stores[2])
		cancel()
		if err == nil || errors.Is(err, mailbox.ErrExists) {
			return
		}
		if !errors.Is(err, mailbox.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *env) setup(t *testing.T) {
	for _, d := range []string{"example.test", "other.test"} {
		e.admin(t, "add domain "+d, func(ctx context.Context, s *mailbox.Store) error { return s.AddDomain(ctx, d) })
	}
	for _, u := range []string{"alice@example.test", "bob@example.test", "carol@example.test"} {
		e.admin(t, "add user "+u, func(ctx context.Context, s *mailbox.Store) error { return s.AddUser(ctx, u, "pw", 0) })
	}
	e.admin(t, "disable carol", func(ctx context.Context, s *mailbox.Store) error {
		return s.SetDisabled(ctx, "carol@example.test", true)
	})
	aliases := map[string][]string{
		"sales@example.test": {"bob@example.test"},
		"postmaster@*":       {"alice@example.test"},
		"@other.test":        {"alice@example.test"},
	}
	for a, ts := range aliases {
		e.admin(t, "add alias "+a, func(ctx context.Context, s *mailbox.Store) error { return s.AddAlias(ctx, a, ts) })
	}
}

// client is a raw netstring client.
type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &client{c: c, r: bufio.NewReader(c)}
}

func (c *client) send(t *testing.T, raw string) {
	t.Helper()
	if _, err := io.WriteString(c.c, raw); err != nil {
		t.Fatal(err)
	}
}

func (c *client) query(t *testing.T, req string) string {
	t.Helper()
	c.send(t, fmt.Sprintf("%d:%s,", len(req), req))
	reply, err := readNetstring(c.r, 100000)
	if err != nil {
		t.Fatalf("reply to %q: %v", req, err)
	}
	return string(reply)
}

// closed reports whether the server closed the connection (EOF or reset).
func (c *client) closed(t *testing.T) bool {
	t.Helper()
	b, err := c.r.ReadByte()
	if err == nil {
		t.Errorf("server sent %q instead of closing", b)
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true
}

// TestLookup: every kind of address hastore takes at RCPT is OK, the rest
// NOTFOUND, all answered over one connection as Postfix keeps it.
func TestLookup(t *testing.T) {
	e := startEnv(t, Config{})
	e.setup(t)
	c := dial(t, e.srv.Addr().String())
	for _, tc := range []struct{ req, want string }{
		{"recipients alice@example.test", "OK alice@example.test"},
		{"recipients Bob@Example.TEST", "OK bob@example.test"},
		{"recipients bob+lists@example.test", "OK bob+lists@example.test"},
		{"recipients sales@example.test", "OK sales@example.test"},
		{"recipients postmaster@example.test", "OK postmaster@example.test"},
		{"recipients abuse@example.test", "OK abuse@example.test"},
		{"recipients anyone@other.test", "OK anyone@other.test"},
		{"virtual alice@example.test", "OK alice@example.test"},
		{"recipients nobody@example.test", "NOTFOUND "},
		{"recipients nobody+x@example.test", "NOTFOUND "},
		{"recipients carol@example.test", "NOTFOUND "}, // disabled
		{"recipients alice@elsewhere.test", "NOTFOUND "},
		{"recipients @example.test", "NOTFOUND "},
		{"recipients alice", "NOTFOUND "},
		{"recipients", "PERM malformed request: want <name> <key>"},
		{"recipients ", "PERM malformed request: want <name> <key>"},
	} {
		if got := c.query(t, tc.req); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.req, got, tc.want)
		}
	}
}

// TestMalformed: what is not a netstring of at most MaxRequest bytes
// closes the connection; the server goes on answering others.
func TestMalformed(t *testing.T) {
	e := startEnv(t, Config{})
	e.setup(t)
	long := "recipients " + strings.Repeat("a", MaxRequest) + "@example.test"
	for _, raw := range []string{
		"recipients alice@example.test\n",    // no netstring at all
		"29:recipients alice@example.test!",  // no ','
		"029:recipients alice@example.test,", // leading zero
		":,",                                 // no length
		"-1:x,",                              // sign
		"1001:" + strings.Repeat("x", 1001) + ",", // over MaxRequest
		fmt.Sprintf("%d:%s,", len(long), long),    // over MaxRequest
		"99999999999999999999999999:x,",           // overflowing length
		"30:recipients alice@example.test,",       // cut short, then EOF
	} {
		c := dial(t, e.srv.Addr().String())
		c.send(t, raw)
		if cw, ok := c.c.(*net.TCPConn); ok {
			cw.CloseWrite()
		}
		if !c.closed(t) {
			t.Errorf("%.40q: connection not closed", raw)
		}
	}
	c := dial(t, e.srv.Addr().String())
	if got := c.query(t, "recipients alice@example.test"); got != "OK alice@example.test" {
		t.Fatalf("after malformed requests: got %q", got)
	}
}

// TestNetstring checks the reader on its own: exact lengths, the bound.
func TestNetstring(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"0:,", "", true},
		{"3:abc,", "abc", true},
		{"5:a b c,", "a b c", true},
		{"10:abc,", "", false},
		{"3:abcd", "", false},
		{"1000:" + strings.Repeat("x", 1000) + ",", strings.Repeat("x", 1000), true},
		{"1001:" + strings.Repeat("x", 1001) + ",", "", false},
		{"00:,", "", false},
		{"a:,", "", false},
		{"", "", false},
	} {
		got, err := readNetstring(bufio.NewReader(strings.NewReader(tc.in)), MaxRequest)
		if (err == nil) != tc.ok || string(got) != tc.want {
			t.Errorf("%.20q: got %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestLimits: connections past the cap are closed at once, and so are
// idle ones; a freed slot is usable again.
func TestLimits(t *testing.T) {
	e := startEnv(t, Config{MaxConnections: 1, IdleTimeout: time.Second})
	e.setup(t)
	addr := e.srv.Addr().String()
	first := dial(t, addr)
	if got := first.query(t, "recipients alice@example.test"); got != "OK alice@example.test" {
		t.Fatalf("first connection: got %q", got)
	}
	second := dial(t, addr)
	if !second.closed(t) {
		t.Fatal("a connection past MaxConnections was not closed")
	}
	// The first goes idle past IdleTimeout: closed, its slot freed.
	if !first.closed(t) {
		t.Fatal("an idle connection was not closed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := dial(t, addr)
		c.send(t, "27:recipients bob@example.test,")
		reply, err := readNetstring(c.r, 1000)
		if err == nil {
			if string(reply) != "OK bob@example.test" {
				t.Fatalf("after the slot was freed: got %q", reply)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of the closed connection is not freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTemp: a node cut off from the quorum cannot confirm a miss: it
// answers TEMP (Postfix defers) rather than NOTFOUND (a bounce).
func TestTemp(t *testing.T) {
	e := startEnv(t, Config{LookupTimeout: 2 * time.Second})
	e.setup(t)
	c := dial(t, e.srv.Addr().String())
	if got := c.query(t, "recipients nobody@example.test"); got != "NOTFOUND " {
		t.Fatalf("with quorum: got %q", got)
	}
	e.c.Stop(1)
	e.c.Stop(2)
	for _, req := range []string{"recipients nobody@example.test", "recipients x@unknown-domain.test"} {
		if got := c.query(t, req); !strings.HasPrefix(got, "TEMP ") {
			t.Errorf("%q without quorum: got %q, want TEMP", req, got)
		}
	}
}

// TestPostmap: Postfix's own socketmap client (postmap -q) gets the
// answers. Postfix's dict_sockmap is the client that matters.
func TestPostmap(t *testing.T) {
	postmap, err := exec.LookPath("postmap")
	if err != nil {
		if postmap, err = exec.LookPath("/usr/sbin/postmap"); err != nil {
			t.Skip("postmap not installed (testing/deps.sh installs postfix)")
		}
	}
	e := startEnv(t, Config{})
	e.setup(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte("compatibility_level = 3.6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	table := "socketmap:inet:" + e.srv.Addr().String() + ":recipients"
	for _, tc := range []struct {
		key, want string
		found     bool
	}{
		{"bob@example.test", "bob@example.test", true},
		{"sales@example.test", "sales@example.test", true},
		{"nobody@example.test", "", false},
	} {
		out, err := exec.Command(postmap, "-c", dir, "-q", tc.key, table).CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil && tc.found:
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("postmap -q %s: got %q, want %q", tc.key, got, tc.want)
			}
		case errors.As(err, &ee) && ee.ExitCode() == 1 && !tc.found && len(strings.TrimSpace(string(out))) == 0:
		default:
			t.Errorf("postmap -q %s: %v, output %q (want found=%v)", tc.key, err, out, tc.found)
		}
	}
}
