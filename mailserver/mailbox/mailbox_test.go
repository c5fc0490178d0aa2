package mailbox

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const nested = "From: =?utf-8?q?J=C3=B6rg?= <joerg@example.test>\r\n" +
	"To: a@example.test, \"B\" <b@example.test>\r\n" +
	"Subject: =?iso-8859-1?q?gr=FC=DFe?=\r\n" +
	"Date: Tue, 14 Nov 2023 22:13:20 +0100\r\n" +
	"Message-ID: <id1@example.test>\r\n" +
	"In-Reply-To: <id0@example.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"outer\"\r\n" +
	"\r\n" +
	"preamble\r\n" +
	"--outer\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello\r\nWorld\r\n" +
	"--outer\r\n" +
	"Content-Type: message/rfc822\r\n" +
	"\r\n" +
	"Subject: inner\r\n" +
	"From: x@y.test\r\n" +
	"Content-Type: multipart/alternative; boundary=inner\r\n" +
	"\r\n" +
	"--inner\r\n" +
	"\r\n" +
	"plain default\r\n" +
	"--inner\r\n" +
	"Content-Type: text/html\r\n" +
	"Content-Transfer-Encoding: Quoted-Printable\r\n" +
	"\r\n" +
	"<b>x</b>\r\n" +
	"--inner--\r\n" +
	"--outerX not a delimiter\r\n" +
	"--outer\r\n" +
	"Content-Type: application/pdf; name=a.pdf\r\n" +
	"Content-Disposition: attachment; filename=\"a.pdf\"\r\n" +
	"Content-Language: en, de\r\n" +
	"\r\n" +
	"PDF\r\n" +
	"--outer--\r\n" +
	"epilogue\r\n"

func TestParseInfoOffsets(t *testing.T) {
	msg := []byte(nested)
	info := ParseInfo(msg)
	b, err := EncodeInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	if info, err = DecodeInfo(b); err != nil {
		t.Fatal(err)
	}
	env := info.Envelope
	if env.Subject != "grüße" || len(env.From) != 1 || env.From[0].Name != "Jörg" || env.From[0].Host != "example.test" ||
		len(env.To) != 2 || env.To[1].Name != "B" || env.MessageID != "id1@example.test" || len(env.InReplyTo) != 1 ||
		env.Date.Unix() != 1699996400 {
		t.Fatalf("envelope %+v", env)
	}
	part := func(p Part) (string, string) {
		return string(msg[p.Header:p.Body]), string(msg[p.Body:p.End])
	}
	root := info.Body
	if root.MediaType() != "multipart/mixed" || len(root.Parts) != 3 || root.End != int64(len(msg)) {
		t.Fatalf("root %+v", root)
	}
	if h, body := part(root.Parts[0]); h != "Content-Type: text/plain; charset=utf-8\r\n\r\n" || body != "Hello\r\nWorld" || root.Parts[0].Lines != 1 {
		t.Fatalf("part 1: %q %q lines %d", h, body, root.Parts[0].Lines)
	}
	rfc := root.Parts[1]
	if rfc.MediaType() != "message/rfc822" || rfc.Envelope == nil || rfc.Envelope.Subject != "inner" || len(rfc.Parts) != 1 {
		t.Fatalf("part 2 %+v", rfc)
	}
	inner := rfc.Parts[0]
	if inner.MediaType() != "multipart/alternative" || len(inner.Parts) != 2 {
		t.Fatalf("embedded message %+v", inner)
	}
	if h, body := part(inner.Parts[0]); h != "\r\n" || body != "plain default" || inner.Parts[0].MediaType() != "text/plain" || inner.Parts[0].Params["charset"] != "us-ascii" {
		t.Fatalf("part 2.1: %q %q %+v", h, body, inner.Parts[0])
	}
	if _, body := part(inner.Parts[1]); body != "<b>x</b>" || inner.Parts[1].Encoding != "quoted-printable" {
		t.Fatalf("part 2.2: %q %+v", body, inner.Parts[1])
	}
	// The embedded message ends where its enclosing part does: the
	// "--outerX" line belongs to it.
	if _, body := part(rfc); !strings.HasSuffix(body, "--outerX not a delimiter") {
		t.Fatalf("part 2 body ends %q", body[len(body)-30:])
	}
	pdf := root.Parts[2]
	if _, body := part(pdf); body != "PDF" || pdf.Disposition != "attachment" || pdf.DispositionParams["filename"] != "a.pdf" ||
		pdf.Params["name"] != "a.pdf" || len(pdf.Language) != 2 || pdf.Size() != 3 {
		t.Fatalf("part 3: %q %+v", body, pdf)
	}
}

func TestParseInfoDegrades(t *testing.T) {
	for name, msg := range map[string]string{
		"empty":              "",
		"header only":        "Subject: x\r\n",
		"no header":          "\r\nbody",
		"LF only":            "Subject: x\n\nbody\n",
		"unterminated multi": "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nlast",
		"no boundary":        "Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
		"garbage type":       "Content-Type: ;;;\r\n\r\nx",
		"deep":               strings.Repeat("Content-Type: message/rfc822\r\n\r\n", 100) + "x",
	} {
		info := ParseInfo([]byte(msg))
		var check func(p Part, depth int)
		check = func(p Part, depth int) {
			if p.Header > p.Body || p.Body > p.End || p.End > int64(len(msg)) || depth > maxPartDepth+1 {
				t.Fatalf("%s: bad part %+v at depth %d", name, p, depth)
			}
			for _, c := range p.Parts {
				check(c, depth+1)
			}
		}
		check(info.Body, 0)
	}
	info := ParseInfo([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nlast"))
	if len(info.Body.Parts) != 1 || info.Body.Parts[0].Size() != 4 {
		t.Fatalf("unterminated multipart: %+v", info.Body)
	}
}

func FuzzParseInfo(f *testing.F) {
	f.Add([]byte(nested))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--b--"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		info := ParseInfo(msg)
		var check func(p Part)
		check = func(p Part) {
			if p.Header < 0 || p.Header > p.Body || p.Body > p.End || p.End > int64(len(msg)) {
				t.Fatalf("bad part %+v of a %d-byte message", p, len(msg))
			}
			for _, c := range p.Parts {
				if c.Header < p.Body || c.End > p.End {
					t.Fatalf("child %+v outside parent %+v", c, p)
				}
				check(c)
			}
		}
		check(info.Body)
		if _, err := EncodeInfo(info); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPasswords(t *testing.T) {
	p := HashParams{Memory: 1024, Time: 1, Threads: 1}
	h, err := HashPassword("s3cret", p)
	if err != nil || !strings.HasPrefix(h, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("hash %q, %v", h, err)
	}
	h2, _ := HashPassword("s3cret", p)
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for pw, want := range map[string]bool{"s3cret": true, "s3cre": false, "": false} {
		if ok, err := VerifyPassword(h, pw); ok != want || err != nil {
			t.Errorf("VerifyPassword(%q) = %v, %v", pw, ok, err)
		}
	}
	// bcrypt, as imported from another server.
	bc, _ := bcrypt.GenerateFromPassword([]byte("demo"), bcrypt.MinCost)
	if ok, err := VerifyPassword(string(bc), "demo"); !ok || err != nil {
		t.Errorf("bcrypt: %v, %v", ok, err)
	}
	if ok, _ := VerifyPassword(string(bc), "dem0"); ok {
		t.Error("bcrypt accepted a wrong password")
	}
	if _, err := VerifyPassword("plain", "x"); err == nil {
		t.Error("a non-hash verified without error")
	}
	if _, err := HashPassword("", p); err == nil {
		t.Error("empty password hashed")
	}
}

func TestNormalizeCRLF(t *testing.T) {
	for in, want := range map[string]string{
		"":              "",
		"a\r\nb\r\n":    "a\r\nb\r\n",
		"a\nb\n":        "a\r\nb\r\n",
		"\n\r\n\n":      "\r\n\r\n\r\n",
		"a\rb\n\r\nend": "a\rb\r\n\r\nend",
	} {
		if got := NormalizeCRLF([]byte(in)); !bytes.Equal(got, []byte(want)) {
			t.Errorf("NormalizeCRLF(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkDefaultHash(b *testing.B) {
	h, _ := HashPassword("x", DefaultHashParams)
	for b.Loop() {
		_, _ = VerifyPassword(h, "x")
	}
}

func TestCatchUpCoalesces(t *testing.T) {
	var (
		mu      sync.Mutex
		calls   int
		release = make(chan struct{})
	)
	c := &catchUpper{timeout: time.Second, fn: func(context.Context) error {
		mu.Lock()
		calls++
		mu.Unlock()
		<-release
		return nil
	}}
	// The first caller starts a barrier; 50 callers arriving while it runs
	// share the next one.
	first := make(chan error)
	go func() { first <- c.do(context.Background()) }()
	for {
		mu.Lock()
		n := calls
		mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.do(context.Background()) }()
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	<-first
	wg.Wait()
	if calls != 2 {
		t.Fatalf("%d barriers for 51 callers, want 2", calls)
	}
}
