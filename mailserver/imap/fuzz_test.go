package imap_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hastore/mailserver/imap"
	"hastore/mailserver/mailbox"
	"hastore/testing/cluster"
)

const (
	fuzzUser = "alice@example.test"
	fuzzPass = "alice-pw"
	// fuzzBound is how long a session may take once the client has sent
	// everything and closed its side (the fuzzing machine is often busy).
	fuzzBound = 20 * time.Second
)

// fuzzLog collects the library's recovered panics ("panic handling
// command", "panic idling"): go-imap logs them and drops the connection.
type fuzzLog struct {
	mu     sync.Mutex
	panics []string
	errs   []string // "handling X command: err", the cause of a SERVERBUG
}

func (p *fuzzLog) Enabled(context.Context, slog.Level) bool { return true }
func (p *fuzzLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		p.mu.Lock()
		p.panics = append(p.panics, r.Message)
		p.mu.Unlock()
	}
	if strings.HasPrefix(r.Message, "handling ") {
		p.mu.Lock()
		p.errs = append(p.errs, strings.TrimSpace(r.Message))
		p.mu.Unlock()
	}
	return nil
}
func (p *fuzzLog) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *fuzzLog) WithGroup(string) slog.Handler      { return p }

func (p *fuzzLog) take() (panics, errs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	panics, errs = p.panics, p.errs
	p.panics, p.errs = nil, nil
	return panics, errs
}

func fuzzTLS(tb testing.TB) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

var fuzzMessages = []string{
	"From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: plain\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\nMessage-ID: <1@remote.test>\r\n\r\nHello Alice.\r\n",
	"From: carol@remote.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--b1--\r\n",
	"Subject: no end of headers",
}

// FuzzIMAPCommand plays any command stream — tags, atoms, quoted strings,
// synchronizing and non-synchronizing literals, IDLE, STARTTLS, garbage —
// at the real IMAP listener over a one-node in-process cluster (started
// once per fuzzing process), optionally after a LOGIN as a user whose INBOX
// holds messages. It checks that nothing panics, the session ends soon
// after the client has said everything, every response is a well-formed
// IMAP response (greeting, untagged "*", continuation "+", or a tagged
// OK/NO/BAD, with literals where announced), and the server still answers
// NOOP on a new connection. A "NO [SERVERBUG]", or a tag with "+" or
// non-ASCII bytes echoed, is logged, not failed: with HASTORE_FUZZ_FINDINGS=file, each such input is
// appended there.
func FuzzIMAPCommand(f *testing.F) {
	c := cluster.StartInProcess(f, cluster.Options{Nodes: 1, Scheme: "1+0"})
	st := mailbox.New(c.Nodes[0].Cluster, c.Nodes[0].Meta, mailbox.Options{
		Hash:     mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1},
		Throttle: mailbox.ThrottleOptions{PerAddress: 1 << 30, PerAccount: 1 << 30, FailDelay: -1},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.AddDomain(ctx, "example.test"); err != nil {
		f.Fatal(err)
	}
	if err := st.AddUser(ctx, fuzzUser, fuzzPass, 0); err != nil {
		f.Fatal(err)
	}
	logs := &fuzzLog{}
	srv, err := imap.Listen(st, imap.Config{IMAP: "127.0.0.1:0", TLS: fuzzTLS(f), AllowInsecureAuth: true, MaxMessageBytes: 64 << 10, Logger: slog.New(logs)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() }) // before the cluster stops
	addr := srv.Addrs()["imap"].String()

	// topUp keeps a few messages in INBOX, whatever earlier inputs
	// expunged, so FETCH, SEARCH, STORE and COPY have something to chew.
	topUp := func(tb testing.TB) {
		if _, ok, _ := st.Mailbox(fuzzUser, "Archive"); !ok {
			if _, err := st.CreateMailbox(context.Background(), fuzzUser, "Archive", ""); err != nil {
				tb.Logf("creating Archive: %v", err)
			}
		}
		inbox, ok, err := st.Mailbox(fuzzUser, "INBOX")
		if err != nil || !ok {
			tb.Fatalf("INBOX: %v %v", ok, err)
		}
		if msgs, err := st.Messages(fuzzUser, inbox.ID); err != nil || len(msgs) >= len(fuzzMessages) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, m := range fuzzMessages {
			d := st.NewDelivery()
			if err := d.AddRecipient(mailbox.Recipient{Address: fuzzUser}); err != nil {
				tb.Fatal(err)
			}
			if err := d.Body(ctx, []byte(m), time.Time{}); err != nil {
				tb.Fatal(err)
			}
			if _, err := d.Commit(ctx, true); err != nil {
				tb.Fatal(err)
			}
		}
	}
	topUp(f)

	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + fuzzUser + "\x00" + fuzzPass))
	for _, s := range []struct {
		login  bool
		script string
	}{
		{true, "a1 SELECT INBOX\r\na2 FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\na3 UID SEARCH OR SUBJECT plain BODY inner\r\na4 STORE 1 +FLAGS (\\Seen $Label)\r\na5 COPY 1:2 Archive\r\na6 LOGOUT\r\n"},
		{true, "a1 EXAMINE INBOX\r\na2 FETCH 2 (BODY[1] BODY[2.HEADER] BODY[3.MIME] BINARY[3] BINARY.SIZE[1] BODY[]<1.20>)\r\na3 STORE 1 FLAGS ()\r\na4 CLOSE\r\n"},
		{true, "a1 APPEND INBOX (\\Seen) {5}\r\nhello\r\na2 APPEND Archive {14+}\r\nSubject: x\r\n\r\n\r\na3 APPEND nosuch {1+}\r\nx\r\n"},
		{true, "a1 APPEND INBOX {4294967295}\r\n"},
		{true, "a1 SELECT INBOX\r\na2 IDLE\r\nDONE\r\na3 UID FETCH 1:* FAST\r\na4 UID EXPUNGE 1\r\na5 MOVE 1 Archive\r\n"},
		{true, "a1 LIST \"\" *\r\na2 LIST (SPECIAL-USE) \"\" % RETURN (STATUS (MESSAGES SIZE))\r\na3 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE)\r\na4 CREATE foo/bar\r\na5 RENAME foo x\r\na6 DELETE x/bar\r\na7 SUBSCRIBE INBOX\r\na8 LSUB \"\" *\r\na9 NAMESPACE\r\n"},
		{true, "a1 SELECT INBOX\r\na2 FETCH 4294967295:1 BODY[1.2.3.HEADER.FIELDS.NOT (A B)]<0.100>\r\na3 SEARCH CHARSET UTF-8 TEXT {4}\r\ncafé\r\na4 SEARCH LARGER 1 SMALLER 99999 SINCE 1-Jan-2000 NOT DELETED\r\na5 FETCH * (BODY[TEXT] RFC822 RFC822.HEADER)\r\n"},
		{true, "a1 SELECT INBOX\r\na2 FETCH 1 BODY[\r\na3 FETCH 0 FLAGS\r\na4 STORE * -FLAGS.SILENT (\\Deleted)\r\na5 EXPUNGE\r\na6 UNSELECT\r\n"},
		{false, "a1 CAPABILITY\r\na2 LOGIN alice@example.test wrong\r\na3 LOGIN {18}\r\nalice@example.test {8}\r\nalice-pw\r\na4 SELECT INBOX\r\n"},
		{false, "a1 AUTHENTICATE PLAIN\r\n" + plain + "\r\na2 AUTHENTICATE PLAIN " + plain + "\r\na3 AUTHENTICATE PLAIN\r\n*\r\na4 AUTHENTICATE CRAM-MD5\r\n"},
		{false, "a1 STARTTLS\r\n\x16\x03\x01garbage"},
		{false, "\x00\r\n* OK\r\n+\r\na1\r\na1 \r\n\"a\" NOOP\r\na1 NOOP extra\r\na1 FETCH\r\na1 SELECT \"unterminated\r\n"},
		{true, "a1 SELECT INBOX\nbare LF\na2 NOOP\r\n" + strings.Repeat("x", 70000) + "\r\na3 NOOP\r\n"},
		{true, "a1 ENABLE IMAP4rev2 UTF8=ACCEPT\r\na2 SELECT INBOX\r\na3 SEARCH RETURN (MIN MAX COUNT ALL) UID 1:*\r\na4 FETCH 1:3 (BODYSTRUCTURE BINARY.PEEK[2])\r\n"},
	} {
		f.Add(s.login, []byte(s.script))
	}

	f.Fuzz(func(t *testing.T, login bool, script []byte) {
		topUp(t)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var out bytes.Buffer
		read := make(chan struct{})
		go func() { io.Copy(&out, conn); close(read) }()
		_ = conn.SetWriteDeadline(time.Now().Add(fuzzBound))
		if login {
			_, _ = io.WriteString(conn, "a0 LOGIN "+fuzzUser+" "+fuzzPass+"\r\n")
		}
		_, _ = conn.Write(script) // the server may close early: an answer, not a failure
		_ = conn.(*net.TCPConn).CloseWrite()
		select {
		case <-read:
		case <-time.After(fuzzBound):
			conn.Close()
			<-read
			t.Fatalf("session still open %v after the client's last byte: %q\nresponses: %q", fuzzBound, script, out.Bytes())
		}
		p, causes := logs.take()
		if len(p) > 0 {
			t.Fatalf("session panicked: %s\nscript: %q", p[0], script)
		}
		found, err := checkIMAPResponses(out.Bytes())
		if err != nil {
			t.Fatalf("%v\nscript: %q\nresponses: %q", err, script, out.Bytes())
		}
		for _, b := range found {
			t.Logf("finding: %q (logged: %q) for script %q", b, causes, script)
			if name := os.Getenv("HASTORE_FUZZ_FINDINGS"); name != "" {
				if fh, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
					fmt.Fprintf(fh, "login=%v script=%q\n\t%q\n\tlogged: %q\n", login, script, b, causes)
					fh.Close()
				}
			}
		}
		if err := noop(addr); err != nil {
			t.Fatalf("server unresponsive after %q: %v", script, err)
		}
	})
}

var (
	// A response's first line: untagged, continuation, or tagged status.
	untagged = regexp.MustCompile(`^\* [^\r\n]*$`)
	contReq  = regexp.MustCompile(`^\+( [^\r\n]*)?$`)
	// The tag is the client's, echoed: any ASTRING-CHAR but "+". go-imap
	// also takes "+" and non-ASCII bytes; such an echo is reported as a
	// finding ("+0 BAD ..." reads as a continuation request).
	tagged = regexp.MustCompile(`^([^\x00-\x20\x7f(){%*"\\]+) (OK|NO|BAD)( [^\r\n]*)?$`)
	// A line announcing a literal, which follows it.
	literalAt = regexp.MustCompile(`~?\{([0-9]+)\}$`)
)

// checkIMAPResponses splits a server's output into responses and checks
// each; it returns the lines to report: those holding [SERVERBUG], and
// tagged ones whose (echoed) tag holds "+" or non-ASCII bytes.
func checkIMAPResponses(out []byte) (findings []string, err error) {
	// After the OK to STARTTLS the bytes are TLS records.
	if i := bytes.Index(out, []byte(" OK Begin TLS negotiation now\r\n")); i >= 0 {
		out = out[:i+len(" OK Begin TLS negotiation now\r\n")]
	}
	first := true
	for len(out) > 0 {
		i := bytes.Index(out, []byte("\r\n"))
		if i < 0 {
			return findings, fmt.Errorf("output ends mid-line: %q", out)
		}
		line := string(out[:i])
		out = out[i+2:]
		if first && !strings.HasPrefix(line, "* OK") {
			return findings, fmt.Errorf("greeting %q", line)
		}
		first = false
		if !untagged.MatchString(line) && !contReq.MatchString(line) && !tagged.MatchString(line) {
			return findings, fmt.Errorf("malformed response line %q", line)
		}
		if strings.Contains(line, "[SERVERBUG]") {
			findings = append(findings, line)
		}
		if m := tagged.FindStringSubmatch(line); m != nil && (!isASCII(m[1]) || strings.Contains(m[1], "+")) {
			findings = append(findings, "tag outside RFC 9051's syntax echoed: "+line)
		}
		// Literals continue the response on the line after their bytes.
		for {
			m := literalAt.FindStringSubmatch(line)
			if m == nil {
				break
			}
			n, err := strconv.Atoi(m[1])
			if err != nil || n > len(out) {
				return findings, fmt.Errorf("literal of %s bytes, %d left: %q", m[1], len(out), line)
			}
			out = out[n:]
			i := bytes.Index(out, []byte("\r\n"))
			if i < 0 {
				return findings, fmt.Errorf("output ends after a literal: %q", out)
			}
			line = string(out[:i])
			out = out[i+2:]
			if strings.ContainsAny(line, "\r\n") {
				return findings, fmt.Errorf("malformed line after a literal %q", line)
			}
		}
	}
	if first {
		return nil, fmt.Errorf("no greeting")
	}
	return findings, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// noop checks that a new connection gets a greeting and an OK to NOOP.
func noop(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(fuzzBound))
	r := bufio.NewReader(conn)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		return fmt.Errorf("greeting %q: %v", l, err)
	}
	if _, err := io.WriteString(conn, "n1 NOOP\r\n"); err != nil {
		return err
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("NOOP: %v", err)
		}
		if strings.HasPrefix(l, "n1 ") {
			if !strings.HasPrefix(l, "n1 OK") {
				return fmt.Errorf("NOOP answered %q", l)
			}
			return nil
		}
	}
}
