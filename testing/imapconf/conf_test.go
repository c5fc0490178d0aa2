//go:build linux

package imapconf

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"hastore/testing/cluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.RemoveHastoreBinary()
	os.Exit(code)
}

const domain = "example.test"

// lineTimeout bounds the wait for any one response line; waitTimeout that
// of a W: line.
const (
	lineTimeout = 15 * time.Second
	waitTimeout = 10 * time.Second
)

// TestParseScripts checks that every script parses (cheap, no cluster), and
// that the format's escapes do what doc.go says.
func TestParseScripts(t *testing.T) {
	scripts := loadScripts(t)
	if len(scripts) < 20 {
		t.Fatalf("%d scripts in scripts/, want the whole suite", len(scripts))
	}
	vars := map[string]string{"V": "a.b"}
	msgs := map[string][]byte{"m": []byte("x\r\n")}
	for _, c := range []struct {
		pat, line string
		want      bool
	}{
		{`* 3 EXISTS`, `* 3 exists`, true},
		{`* 3 EXISTS`, `* 13 EXISTS`, false},
		{`* OK [UIDVALIDITY {{U=\d+}}] ...`, `* OK [UIDVALIDITY 77] UIDs valid`, true},
		{`* LIST (...) "/" ${V}`, `* LIST (\HasNoChildren) "/" a.b`, true},
		{`* LIST (...) "/" ${V}`, `* LIST (\HasNoChildren) "/" aXb`, false},
		{`* 1 FETCH (BODY[] {${SIZE:m}}${MSG:m})`, "* 1 FETCH (BODY[] {3}x\r\n)", true},
		{`a1 {{OK|NO}} ...`, `a1 NO [TRYCREATE] no`, true},
		{`* 2 FETCH (BODY[1.MIME] {{{\d+}}}x)`, `* 2 FETCH (BODY[1.MIME] {12}x)`, true},
		{`* 2 FETCH (BODY[1.MIME] {{{\d+}}}x)`, `* 2 FETCH (BODY[1.MIME] 12x)`, false},
	} {
		re, err := compile(c.pat, vars, msgs)
		if err != nil {
			t.Fatal(err)
		}
		if got := re.MatchString(c.line); got != c.want {
			t.Errorf("pattern %q on %q: %v, want %v (regexp %s)", c.pat, c.line, got, c.want, re)
		}
	}
	segs, err := segments("a APPEND INBOX {MSG:m} x {LIT+:abc}", msgs)
	if err != nil || len(segs) != 5 || string(segs[1].Literal) != "x\r\n" || segs[1].NonSync || !segs[3].NonSync || string(segs[3].Literal) != "abc" {
		t.Errorf("segments: %+v, %v", segs, err)
	}
}

func loadScripts(t *testing.T) []*Script {
	t.Helper()
	files, err := filepath.Glob("scripts/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	var out []*Script
	for _, f := range files {
		s, err := ParseFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestConformance runs every script against one 3-node cluster of the
// real binary, each script as a subtest on a user of its own.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	scripts := loadScripts(t)
	if f := os.Getenv("IMAPCONF_RUN"); f != "" { // a quicker loop while writing a script
		var keep []*Script
		for _, s := range scripts {
			if strings.Contains(s.Name, f) {
				keep = append(keep, s)
			}
		}
		scripts = keep
	}
	env := startEnv(t, scripts)
	for _, s := range scripts {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			env.run(t, s)
		})
	}
}

type env struct {
	c    *cluster.Processes
	imap []string // IMAP address per node
}

func user(s *Script) string     { return s.Name + "@" + domain }
func password(s *Script) string { return "pw-" + s.Name + "-conf" }

func startEnv(t *testing.T, scripts []*Script) *env {
	t.Helper()
	e := &env{}
	e.imap = cluster.FreePorts(t, 3)
	e.c = cluster.StartProcesses(t, cluster.ProcOptions{Nodes: 3, NodeArgs: func(i int) []string {
		return []string{"--imap", e.imap[i], "--hostname", fmt.Sprintf("mx%d.conf.test", i+1),
			"--allow-insecure-auth", "--mail-max-connections-per-ip", "500"}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e.admin(t, ctx, "", "domain", "add", domain)
	var users strings.Builder
	for _, s := range scripts {
		fmt.Fprintf(&users, "%s %s\n", user(s), password(s))
	}
	list := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(list, []byte(users.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	e.admin(t, ctx, "", "user", "import", list)
	for _, s := range scripts {
		if s.Quota != "" {
			e.admin(t, ctx, "", "user", "quota", user(s), s.Quota)
		}
	}
	for i, a := range e.imap {
		cluster.Eventually(t, 30*time.Second, fmt.Sprintf("node %d IMAP on %s", i, a), func() error {
			c, err := net.DialTimeout("tcp", a, 3*time.Second)
			if err != nil {
				return err
			}
			return c.Close()
		})
	}
	return e
}

// admin runs `hastore admin`, retrying while the cluster settles.
func (e *env) admin(t *testing.T, ctx context.Context, stdin string, args ...string) string {
	t.Helper()
	for {
		full := append([]string{"admin", "--addr", strings.Join(e.c.Addrs, ","), "--cluster-key-file", e.c.KeyFile}, args...)
		cmd := exec.CommandContext(ctx, e.c.Bin, full...)
		cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HASTORE_CRED=")
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if err == nil {
			return out.String()
		}
		if ctx.Err() != nil || !strings.Contains(errb.String(), "navailable") {
			t.Fatalf("hastore admin %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// conn is one IMAP connection of a script.
type conn struct {
	name    string
	nc      net.Conn
	br      *bufio.Reader
	pending string // the tag of a command left at a "+" continuation
	closed  bool
	// backlog holds the untagged lines of the exchanges since the last W:
	// that matched, so that a W: finds an update whichever response it
	// came with.
	backlog []string
}

const closedLine = "[closed]"

var errClosed = errors.New("connection closed by the server")

var literalEnd = regexp.MustCompile(`~?\{(\d+)\+?\}$`)

// readLine reads one response line, with any literals in it: a literal's
// bytes follow its {N} directly (the CRLF after {N} is dropped).
func (c *conn) readLine(timeout time.Duration) (string, error) {
	if c.closed {
		return closedLine, errClosed
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	var out strings.Builder
	for {
		l, err := c.br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
				c.closed = true
				if out.Len() == 0 && l == "" {
					return closedLine, errClosed
				}
				return out.String() + l, errClosed
			}
			return out.String() + l, err
		}
		l = strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r")
		out.WriteString(l)
		m := literalEnd.FindStringSubmatch(l)
		if m == nil {
			return out.String(), nil
		}
		n, err := strconv.Atoi(m[1])
		if err != nil || n > 64<<20 {
			return out.String(), fmt.Errorf("literal of %s bytes", m[1])
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.br, buf); err != nil {
			return out.String(), fmt.Errorf("reading a literal of %d bytes: %w", n, err)
		}
		out.Write(buf)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// runner runs one script.
type runner struct {
	t     *testing.T
	e     *env
	s     *Script
	vars  map[string]string
	conns map[string]*conn
	cur   *conn
	known []string // reasons of KNOWN exchanges that failed
}

func (e *env) run(t *testing.T, s *Script) {
	r := &runner{t: t, e: e, s: s, conns: map[string]*conn{},
		vars: map[string]string{"USER": user(s), "PASS": password(s),
			"PLAIN": base64.StdEncoding.EncodeToString([]byte("\x00" + user(s) + "\x00" + password(s)))}}
	defer func() {
		for _, c := range r.conns {
			c.nc.Close()
		}
	}()
	if err := r.open("a", 0); err != nil {
		t.Fatalf("%s: %v", s.File, err)
	}
	for _, st := range s.Steps {
		var err error
		switch st.Kind {
		case StepConn:
			err = r.open(st.Conn, st.Node)
		case StepUse:
			c, ok := r.conns[st.Conn]
			if !ok {
				err = fmt.Errorf("no connection %q (CONN it first)", st.Conn)
			}
			r.cur = c
		case StepWait:
			err = r.wait(st)
		case StepCmd:
			err = r.exchange(st)
		}
		if err == nil {
			if st.Known != "" {
				t.Logf("%s:%d is marked KNOWN (%s) but passes now: remove the mark", s.File, st.Line, st.Known)
			}
			continue
		}
		msg := fmt.Sprintf("%s:%d: %v", s.File, st.Line, err)
		if st.Known == "" {
			t.Fatal(msg)
		}
		t.Logf("KNOWN failure: %s", msg)
		r.known = append(r.known, fmt.Sprintf("line %d: %s", st.Line, st.Known))
	}
	if len(r.known) > 0 {
		t.Skipf("KNOWN: %s", strings.Join(r.known, "; "))
	}
}

func (r *runner) open(name string, node int) error {
	if old, ok := r.conns[name]; ok {
		old.nc.Close()
	}
	nc, err := net.DialTimeout("tcp", r.e.imap[node], 5*time.Second)
	if err != nil {
		return fmt.Errorf("connecting %s to node %d: %w", name, node, err)
	}
	c := &conn{name: name, nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}
	r.conns[name] = c
	r.cur = c
	g, err := c.readLine(lineTimeout)
	if err != nil {
		return fmt.Errorf("greeting on %s: %v", name, err)
	}
	if !strings.HasPrefix(g, "* OK") {
		return fmt.Errorf("greeting on %s: %q, want * OK", name, g)
	}
	return nil
}

func (r *runner) wait(st Step) error {
	re, err := compile(st.Text, r.vars, r.s.Msgs)
	if err != nil {
		return err
	}
	c := r.cur
	for i, l := range c.backlog {
		if re.MatchString(l) {
			r.capture(re, l)
			c.backlog = c.backlog[i+1:]
			return nil
		}
	}
	seen := c.backlog
	c.backlog = nil
	deadline := time.Now().Add(waitTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("W: %s\n  not seen within %v; the server said:%s", st.Text, waitTimeout, show(seen))
		}
		l, err := c.readLine(left)
		if l != "" {
			seen = append(seen, l)
		}
		if strings.Contains(l, "[SERVERBUG]") {
			return fmt.Errorf("W: %s\n  the server answered SERVERBUG:%s", st.Text, show(seen))
		}
		if re.MatchString(l) {
			r.capture(re, l)
			return nil
		}
		if err != nil {
			return fmt.Errorf("W: %s\n  %v; the server said:%s", st.Text, err, show(seen))
		}
	}
}

func (r *runner) capture(re *regexp.Regexp, line string) {
	m := re.FindStringSubmatch(line)
	for i, name := range re.SubexpNames() {
		if name != "" && i < len(m) {
			r.vars[name] = m[i]
		}
	}
}

// exchange sends one command and checks what came back.
func (r *runner) exchange(st Step) error {
	c := r.cur
	text, err := expand(st.Text, r.vars, r.s.Msgs)
	if err != nil {
		return err
	}
	tag := c.pending
	c.pending = ""
	if tag == "" {
		tag, _, _ = strings.Cut(text, " ")
	}
	segs, err := segments(text, r.s.Msgs)
	if err != nil {
		return err
	}
	var lines []string // untagged and continuation lines
	tagged := ""
	ioErr := func() error {
		w := bufio.NewWriter(c.nc)
		_ = c.nc.SetWriteDeadline(time.Now().Add(lineTimeout))
		for i, seg := range segs {
			if !seg.IsLit {
				w.WriteString(seg.Text)
				if i == len(segs)-1 {
					w.WriteString("\r\n")
				}
				continue
			}
			plus := ""
			if seg.NonSync {
				plus = "+"
			}
			if seg.Binary {
				w.WriteString("~")
			}
			fmt.Fprintf(w, "{%d%s}\r\n", len(seg.Literal), plus)
			if !seg.NonSync {
				if err := w.Flush(); err != nil {
					return err
				}
				for {
					l, err := c.readLine(lineTimeout)
					if err != nil {
						lines = append(lines, l)
						return err
					}
					if strings.HasPrefix(l, tag+" ") {
						tagged = l // refused before the literal: nothing more is sent
						return nil
					}
					if strings.HasPrefix(l, "+") {
						break
					}
					lines = append(lines, l)
				}
			}
			w.Write(seg.Literal)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		for {
			l, err := c.readLine(lineTimeout)
			if err != nil {
				lines = append(lines, l)
				return err
			}
			if strings.HasPrefix(l, tag+" ") {
				tagged = l
				return nil
			}
			lines = append(lines, l)
			if strings.HasPrefix(l, "+") {
				c.pending = tag // the next C: line goes on with this command
				return nil
			}
		}
	}()
	c.backlog = append(c.backlog, lines...)
	all := append(append([]string(nil), lines...), tagged)
	fail := func(format string, a ...any) error {
		return fmt.Errorf("C: %s\n  %s\n  the server said:%s", st.Text, fmt.Sprintf(format, a...), show(all))
	}
	if ioErr != nil && !errors.Is(ioErr, errClosed) {
		return fail("%v", ioErr)
	}
	for _, l := range all {
		if strings.Contains(l, "[SERVERBUG]") {
			return fail("a SERVERBUG answer (never right: a client error is BAD or NO, a fault is a bug)")
		}
	}
	sawTagged := false
	for _, p := range st.Expect {
		re, err := compile(p.Src, r.vars, r.s.Msgs)
		if err != nil {
			return fmt.Errorf("line %d: %v", p.Line, err)
		}
		if strings.HasPrefix(strings.ToUpper(p.Src), strings.ToUpper(tag)+" ") {
			sawTagged = true
			if tagged == "" || !re.MatchString(tagged) {
				return fail("want the tagged line (line %d) S: %s", p.Line, p.Src)
			}
			r.capture(re, tagged)
			continue
		}
		found := false
		for _, l := range lines {
			if re.MatchString(l) {
				r.capture(re, l)
				found = true
				break
			}
		}
		if !found {
			return fail("missing (line %d) S: %s", p.Line, p.Src)
		}
	}
	for _, p := range st.Forbid {
		re, err := compile(p.Src, r.vars, r.s.Msgs)
		if err != nil {
			return fmt.Errorf("line %d: %v", p.Line, err)
		}
		for _, l := range all {
			if l != "" && re.MatchString(l) {
				return fail("forbidden (line %d) !S: %s\n  matched: %s", p.Line, p.Src, quote(l))
			}
		}
	}
	if !sawTagged && c.pending == "" && !strings.HasPrefix(tagged, tag+" OK") {
		return fail("want %s OK ...", tag)
	}
	return nil
}

func show(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		if l == "" {
			continue
		}
		b.WriteString("\n    ")
		b.WriteString(quote(l))
	}
	if b.Len() == 0 {
		return " (nothing)"
	}
	return b.String()
}

func quote(l string) string {
	if len(l) > 600 {
		l = l[:600] + "…"
	}
	if strings.ContainsAny(l, "\r\n\t") {
		return strconv.Quote(l)
	}
	return l
}
