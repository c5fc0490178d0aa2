package smtp_test

import (
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
	"strings"
	"sync"
	"testing"
	"time"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/smtp"
	"hastore/testing/cluster"
)

// sessionBound is how long a session may take once the client has sent
// everything and closed its side. Generous: the machine running the fuzzer
// is often busy, and a session may hold several deliveries to the cluster.
const sessionBound = 20 * time.Second

// panicLog counts the library's "panic serving" records: go-smtp recovers
// a panic in a session, answers 421 and only logs it.
type panicLog struct {
	mu     sync.Mutex
	panics []string
}

func (p *panicLog) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		p.mu.Lock()
		p.panics = append(p.panics, r.Message)
		p.mu.Unlock()
	}
	return nil
}
func (p *panicLog) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panicLog) WithGroup(string) slog.Handler      { return p }

func (p *panicLog) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.panics
	p.panics = nil
	return out
}

func selfSigned(tb testing.TB) *tls.Config {
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

// accepted is go-smtp's reply to a RCPT the session accepted.
var accepted = regexp.MustCompile(`^250 2\.0\.0 I'll make sure <(.*)> gets this$`)

// FuzzSMTPSession plays any client byte stream — commands, DATA and BDAT
// bodies, AUTH exchanges, bare LF, NUL, over-long lines — against the real
// MX, submission and LMTP listeners over a one-node in-process cluster
// (started once per fuzzing process), and checks: the session ends soon
// after the client has said everything, every reply line is a well-formed
// SMTP reply, nothing panicked, and no recipient outside the local domain
// is ever accepted (on submission, no recipient at all before a
// successful AUTH).
func FuzzSMTPSession(f *testing.F) {
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
	for _, u := range []struct {
		addr  string
		quota int64
	}{{"alice@example.test", 0}, {"full@example.test", 1}} {
		if err := st.AddUser(ctx, u.addr, "pw-"+strings.Split(u.addr, "@")[0], u.quota); err != nil {
			f.Fatal(err)
		}
	}
	logs := &panicLog{}
	tlsCfg := selfSigned(f)
	var addrs []string
	for _, mode := range []smtp.Mode{smtp.MX, smtp.Submission, smtp.LMTP} {
		srv, err := smtp.Listen("127.0.0.1:0", st, smtp.Config{
			Mode: mode, Hostname: "mx.test", TLS: tlsCfg, AllowInsecureAuth: true,
			MaxMessageBytes: 64 << 10, MaxLineLength: 1000, MaxConnectionsPerIP: -1,
			ReadTimeout: sessionBound, WriteTimeout: sessionBound, CommitTimeout: 10 * time.Second,
			Logger: slog.New(logs),
		})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { srv.Close() }) // before the cluster stops
		addrs = append(addrs, srv.Addr().String())
	}

	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00pw-alice"))
	prelude := map[smtp.Mode]string{
		smtp.MX:         "EHLO fuzz.test\r\n",
		smtp.Submission: "EHLO fuzz.test\r\nAUTH PLAIN " + plain + "\r\n",
		smtp.LMTP:       "LHLO fuzz.test\r\n",
	}
	for _, s := range []struct {
		mode   uint8 // low bits: the listener; 0x80: after the prelude
		script string
	}{
		{0, "EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"},
		{0, "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<victim@elsewhere.test>\r\nRCPT TO:<alice@EXAMPLE.test>\r\nRCPT TO:<nobody@example.test>\r\nRSET\r\nNOOP\r\nVRFY alice\r\nQUIT\r\n"},
		{0, "EHLO c\r\nMAIL FROM:<a@b> SIZE=999999999\r\nRCPT TO:<full@example.test>\r\nRCPT TO:<alice@example.test> NOTIFY=NEVER\r\nDATA\r\n..dot\r\n.\r\n"},
		{0, "EHLO c\r\nMAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<alice@example.test>\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\nQUIT\r\n"},
		{0, "EHLO c\nMAIL FROM:<a@b>\nRCPT TO:<alice@example.test\x00@evil.test>\nDATA\nbare\nLF\n.\n"},
		{0, "EHLO c\r\n" + strings.Repeat("x", 1200) + "\r\nQUIT\r\n"},
		{0, "EHLO c\r\nSTARTTLS\r\n\x16\x03\x01garbage"},
		{0, "MAIL FROM:<a@b>\r\nRCPT TO:<\"quoted@x\"@elsewhere.test>\r\nRCPT TO:<@route.test:alice@example.test>\r\nDATA\r\n.\r\n"},
		{1, "EHLO c\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<alice@example.test>\r\nAUTH PLAIN " + plain + "\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n"},
		{1, "EHLO c\r\nAUTH LOGIN\r\nYWxpY2VAZXhhbXBsZS50ZXN0\r\ncHctYWxpY2U=\r\nMAIL FROM:<bob@example.test>\r\nQUIT\r\n"},
		{1, "EHLO c\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\nAUTH LOGIN x\r\ny\r\n"},
		{2, "LHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<full@example.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nSubject: lmtp\r\n\r\nx\r\n.\r\nQUIT\r\n"},
		{2, "EHLO c\r\nHELO c\r\nLHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3 LAST\r\nabc"},
		{0x80, "MAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<alice@example.test.evil.test>\r\nBDAT 4\r\nab\r\nBDAT 2 LAST\r\ncd"},
		{0x81, "MAIL FROM:<ALICE@example.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: s\r\n\r\n.\r\n"},
		{0x82, "MAIL FROM:<>\r\nRCPT TO:<full@example.test>\r\nDATA\r\n" + strings.Repeat("x", 70) + "\r\n.\r\n"},
	} {
		f.Add(s.mode, []byte(s.script))
	}

	f.Fuzz(func(t *testing.T, mode uint8, script []byte) {
		// The low bits choose the listener; the high bit starts from a
		// client that has introduced itself and, on submission, logged
		// in, so the fuzzer reaches the mail transaction sooner.
		m := smtp.Mode(int(mode&0x7f) % 3)
		if mode&0x80 != 0 {
			script = append([]byte(prelude[m]), script...)
		}
		conn, err := net.Dial("tcp", addrs[m])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var out bytes.Buffer
		read := make(chan error, 1)
		go func() { _, err := io.Copy(&out, conn); read <- err }()
		// The server may stop reading (a too-long line closes the session):
		// a failed write is an answer, not a failure.
		_ = conn.SetWriteDeadline(time.Now().Add(sessionBound))
		_, _ = conn.Write(script)
		_ = conn.(*net.TCPConn).CloseWrite()
		select {
		case <-read:
		case <-time.After(sessionBound):
			conn.Close()
			<-read
			t.Fatalf("%s session still open %v after the client's last byte: %q\nreplies: %q", m, sessionBound, script, out.Bytes())
		}
		if p := logs.take(); len(p) > 0 {
			t.Fatalf("%s session panicked: %s\nscript: %q", m, p[0], script)
		}
		checkReplies(t, m, script, out.Bytes())
	})
}

// checkReplies checks the server's side of a session.
func checkReplies(t *testing.T, m smtp.Mode, script, out []byte) {
	// After "220 Ready to start TLS" the bytes are TLS records.
	if i := bytes.Index(out, []byte(" Ready to start TLS\r\n")); i >= 0 {
		out = out[:i+len(" Ready to start TLS\r\n")]
	}
	if len(out) == 0 {
		t.Fatalf("%s: no greeting: %q", m, script)
	}
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		t.Fatalf("%s: replies end mid-line: %q\nscript: %q", m, out, script)
	}
	lines := strings.Split(string(out[:len(out)-2]), "\r\n")
	if !strings.HasPrefix(lines[0], "220 ") {
		t.Fatalf("%s: greeting %q", m, lines[0])
	}
	authed := false
	cont := "" // code of an unfinished multi-line reply
	for i, l := range lines {
		if len(l) < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' ||
			len(l) > 3 && l[3] != ' ' && l[3] != '-' || strings.Contains(l, "\n") {
			t.Fatalf("%s: reply line %d malformed: %q\nscript: %q\nreplies: %q", m, i, l, script, out)
		}
		if strings.Contains(l, "\r") {
			// go-smtp echoes an unknown command verbatim, a bare CR
			// included ("500 5.5.2 Syntax errors, X\rY command
			// unrecognized"): the client's own bytes, to itself, so a
			// finding to report, not a failure.
			finding(t, "bare CR in a reply", m, script, l)
		}
		if cont != "" && l[:3] != cont {
			t.Fatalf("%s: reply line %d %q continues a %s reply\nscript: %q", m, i, l, cont, script)
		}
		cont = ""
		if len(l) > 3 && l[3] == '-' {
			cont = l[:3]
		}
		if strings.Contains(l, "Internal server error") {
			t.Fatalf("%s: %q (a recovered panic)\nscript: %q", m, l, script)
		}
		if strings.HasPrefix(l, "235 ") {
			authed = true
		}
		if a := accepted.FindStringSubmatch(l); a != nil {
			addr := strings.ToLower(a[1])
			domain := addr[strings.LastIndexByte(addr, '@')+1:]
			if domain != "example.test" || m == smtp.Submission && !authed {
				t.Fatalf("%s: open relay: %q accepted (authenticated: %v)\nscript: %q\nreplies: %q", m, l, authed, script, out)
			}
		}
	}
	if cont != "" {
		t.Fatalf("%s: multi-line reply never finished\nscript: %q\nreplies: %q", m, script, out)
	}
}

// finding logs a suspicious but tolerated answer and, with
// HASTORE_FUZZ_FINDINGS=file, appends it there for the fuzzing report.
func finding(t *testing.T, what string, m smtp.Mode, script []byte, line string) {
	t.Logf("%s: %s: %q for script %q", m, what, line, script)
	if name := os.Getenv("HASTORE_FUZZ_FINDINGS"); name != "" {
		if fh, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintf(fh, "%s: %s: mode=%s script=%q\n\t%q\n", "FuzzSMTPSession", what, m, script, line)
			fh.Close()
		}
	}
}
