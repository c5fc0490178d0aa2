package httpserve_test

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"hastore/webfs/httpserve"
	"hastore/webfs/httpserve/sitestest"
)

// FuzzHTTPRequest sends raw HTTP/1.1 requests — any request line, Host,
// absolute-form target, percent-encoding, dot segments, NUL, Range... — as
// net/http's server parses them to the real handler over the fake sites of
// the conformance fixture, and checks what a hostile client must never get:
// a panic, a status outside the documented set, a body that is not the
// file the path names in the site the Host names (a path outside the site,
// or another site's file), or a redirect off the site.
func FuzzHTTPRequest(f *testing.F) {
	fix := sitestest.NewFixture()
	delete(fix.Sites[0].Files, "/big.bin") // 9 MiB per request is all cost, no coverage
	m := newMem(fix)
	m.Put(one, "/dir/index.html", []byte("<p>dir index</p>\n"))
	m.Put(one, "/a%20b.txt", []byte("percent in the name\n"))
	m.Put(one, "/.well-known/acme", []byte("token\n"))
	m.Put(one, "/long.txt", bytes.Repeat([]byte("0123456789abcdef"), 100))
	// Files above 64 bytes are streamed, the rest read whole and cached:
	// both paths see the fuzzer's requests.
	h := httpserve.Handler(m, httpserve.Options{Logger: quiet, SmallFile: 64, WriteIdleTimeout: -1})

	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /a.txt HTTP/1.1\r\nHost: one.test:8080\r\n\r\n",
		"HEAD /dir/ HTTP/1.1\r\nHost: alias.one.test.\r\n\r\n",
		"GET /dir HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /dir?x=1 HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET http://www.two.test/a.txt HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET http://www.one.test HTTP/1.1\r\n\r\n",
		"GET /../../etc/passwd HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /dir/%2e%2e/a.txt HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET //www.two.test/a.txt HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /escape HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /dir/escape/ HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /dirlink/up.txt HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /a.txt%00.html HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /a%20b.txt HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /a%2520b.txt HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /caf%C3%A9%20%E2%98%BA.txt HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /%c0%ae%c0%ae/ HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /a\\..\\b HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /long.txt HTTP/1.1\r\nHost: www.one.test\r\nRange: bytes=10-20,-5,1500-\r\n\r\n",
		"GET /long.txt HTTP/1.1\r\nHost: www.one.test\r\nRange: bytes=5-\r\nIf-Range: \"x\"\r\n\r\n",
		"GET /a.txt HTTP/1.1\r\nHost: www.one.test\r\nRange: bytes=0-0,2-3\r\n\r\n",
		"GET /a.txt HTTP/1.1\r\nHost: www.one.test\r\nIf-None-Match: *\r\n\r\n",
		"GET /a.txt HTTP/1.1\r\nHost: www.one.test\r\nIf-Match: \"nope\"\r\n\r\n",
		"POST /a.txt HTTP/1.1\r\nHost: www.one.test\r\nContent-Length: 3\r\n\r\nabc",
		"GET * HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /" + strings.Repeat("a/", 4200) + " HTTP/1.1\r\nHost: www.one.test\r\n\r\n",
		"GET /a.txt HTTP/1.0\r\n\r\n",
		"GET /.well-known/acme HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return // net/http's server answers 400 before any handler runs
		}
		r.RemoteAddr = "192.0.2.1:1234"
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { defer close(done); h.ServeHTTP(w, r) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second): // a hang, not a slow machine
			buf := make([]byte, 1<<20)
			t.Fatalf("no answer in 10s to %q\n%s", raw, buf[:runtime.Stack(buf, true)])
		}
		resp := w.Result()
		body, _ := io.ReadAll(resp.Body)

		switch resp.StatusCode {
		case 200, 206, 301, 304, 400, 403, 404, 405, 412, 414, 416:
		default:
			t.Fatalf("status %d for %q", resp.StatusCode, raw)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("no nosniff on %d for %q", resp.StatusCode, raw)
		}
		if resp.StatusCode == 301 {
			loc := resp.Header.Get("Location")
			if !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.ContainsAny(loc, "\\\r\n\x00") {
				t.Fatalf("redirect to %q off the site for %q", loc, raw)
			}
		}
		if resp.StatusCode != 200 && resp.StatusCode != 206 {
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			t.Fatalf("%s served %d for %q", r.Method, resp.StatusCode, raw)
		}
		if r.Method == http.MethodHead && len(body) != 0 {
			t.Fatalf("HEAD answered with %d body bytes for %q", len(body), raw)
		}
		// The file the target names, looked up in the fake with its own
		// resolution (symbolic links within the site only): what was
		// served must be it, or part of it.
		host := r.Host
		if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
			host = host[:i]
		}
		host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
		site, ok, _ := m.Resolve(t.Context(), host)
		if !ok {
			t.Fatalf("%d for unknown host %q: %q", resp.StatusCode, r.Host, raw)
		}
		p := r.URL.EscapedPath()
		if p == "" {
			p = "/" // "GET http://host HTTP/1.1"
		}
		if strings.HasPrefix(r.RequestURI, "/") {
			p, _, _ = strings.Cut(r.RequestURI, "?")
		}
		name, err := url.PathUnescape(p)
		if err != nil {
			t.Fatalf("%d for undecodable path %q: %q", resp.StatusCode, p, raw)
		}
		if strings.HasSuffix(name, "/") {
			name += "index.html"
		}
		n, err := m.lookup(site, name)
		if err != nil || n.dir || n.gen != nil {
			t.Fatalf("%d for %q in %s, which is no file there (%v): %q", resp.StatusCode, name, site, err, raw)
		}
		if r.Method == http.MethodHead {
			return
		}
		if resp.StatusCode == 200 {
			if !bytes.Equal(body, n.data) {
				t.Fatalf("200 for %s%s served %q, the file holds %q: %q", site, name, body, n.data, raw)
			}
			return
		}
		// 206: one range, or multipart/byteranges; every part must be
		// bytes of the file.
		parts := [][]byte{body}
		if mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil && mt == "multipart/byteranges" {
			parts = nil
			mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
			for {
				part, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("206 multipart unreadable (%v) for %q", err, raw)
				}
				b, _ := io.ReadAll(part)
				parts = append(parts, b)
			}
		}
		for _, b := range parts {
			if !bytes.Contains(n.data, b) {
				t.Fatalf("206 for %s%s served %q, not part of the file: %q", site, name, b, raw)
			}
		}
	})
}
