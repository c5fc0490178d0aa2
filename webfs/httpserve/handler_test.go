package httpserve_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hastore/webfs/httpserve"
	"hastore/webfs/httpserve/sitestest"
)

const one = "www.one.test"

// TestSites runs the conformance suite against the fake, so the fake the
// server's tests use is held to the contract webfs is.
func TestSites(t *testing.T) {
	sitestest.Test(t, func(t *testing.T, f sitestest.Fixture) httpserve.Sites { return newMem(f) })
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixture returns the fake with the conformance fixture plus what the
// server's tests need.
func fixture() *memSites {
	m := newMem(sitestest.NewFixture())
	for name, data := range map[string]string{
		"/dir/index.html":          "<p>dir index</p>\n",
		"/noindex/x.txt":           "x\n",
		"/idxdir/index.html/x":     "index.html is a directory here\n",
		"/style.css":               "body{}\n",
		"/noext":                   "<html><body>sniff me</body></html>\n",
		"/blob.unknownext":         "\x00\x01\x02binary",
		"/a%20b.txt":               "percent in the name\n",
		"/.well-known/acme":        "token\n",
		"/big.unknownext":          strings.Repeat("<html>", 20000),
		"/q?.txt":                  "question mark\n",
		"/forbidden.txt":           "no\n",
		"/broken.txt":              "cannot be read\n",
		"/unopenable.txt":          "cannot be opened\n",
		"/statfails.txt":           "cannot be statted\n",
		"/invalid.txt":             "invalid\n",
		"/caf\u00e9.html":          "caf\u00e9\n",
		"/sub/dir with space/f.js": "f()\n",
	} {
		m.Put(one, name, []byte(data))
	}
	unavailable := errors.New("cluster unavailable")
	m.statErr[one+":/statfails.txt"] = unavailable
	m.statErr[one+":/forbidden.txt"] = &fs.PathError{Op: "stat", Path: "/forbidden.txt", Err: fs.ErrPermission}
	m.statErr[one+":/invalid.txt"] = fs.ErrInvalid
	m.openErr[one+":/unopenable.txt"] = unavailable
	m.readErr[one+":/broken.txt"] = unavailable
	return m
}

func serve(t testing.TB, m *memSites, opts httpserve.Options) *httptest.Server {
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	srv := httptest.NewServer(httpserve.Handler(m, opts))
	t.Cleanup(func() {
		srv.Close()
		if n := m.open(); n != 0 {
			t.Errorf("%d Files left open", n)
		}
	})
	return srv
}

// do sends one request with the target exactly as given, bypassing the
// client's URL handling, and returns the response with its body read.
func do(t testing.TB, srv *httptest.Server, method, target, host string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, host)
	for _, h := range hdr {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, target, err)
	}
	return resp, body
}

type want struct {
	status int
	body   string            // checked when not empty
	hdr    map[string]string // "" means absent
}

func check(t *testing.T, resp *http.Response, body []byte, w want) {
	t.Helper()
	if resp.StatusCode != w.status {
		t.Errorf("status %d, want %d (body %.80q)", resp.StatusCode, w.status, body)
	}
	if w.body != "" && string(body) != w.body {
		t.Errorf("body %.80q, want %.80q", body, w.body)
	}
	for k, v := range w.hdr {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
}

func TestStatus(t *testing.T) {
	srv := serve(t, fixture(), httpserve.Options{})
	aETag := etagOf([]byte("hello, a\n"))
	plain := "text/plain; charset=utf-8"
	tests := []struct {
		name, method, target, host string
		hdr                        []string
		want                       want
	}{
		{"root index", "GET", "/", one, nil, want{200, "<!doctype html><title>one</title>\n", map[string]string{"Content-Type": "text/html; charset=utf-8", "X-Content-Type-Options": "nosniff"}}},
		{"file", "GET", "/a.txt", one, nil, want{200, "hello, a\n", map[string]string{"Etag": aETag, "Last-Modified": modTime.Format(http.TimeFormat), "Accept-Ranges": "bytes", "Content-Length": "9"}}},
		{"alias", "GET", "/a.txt", "alias.one.test", nil, want{200, "hello, a\n", nil}},
		{"host upper case, port, trailing dot", "GET", "/a.txt", "WWW.One.Test.:8080", nil, want{200, "hello, a\n", nil}},
		{"other site", "GET", "/a.txt", "www.two.test", nil, want{200, "hello from two\n", nil}},
		{"unknown host", "GET", "/a.txt", "www.nope.test", nil, want{404, "", nil}},
		{"empty host", "GET", "/a.txt", "", nil, want{404, "", nil}},
		{"IP host", "GET", "/a.txt", "127.0.0.1:80", nil, want{404, "", nil}},
		{"IPv6 host", "GET", "/a.txt", "[::1]:80", nil, want{404, "", nil}},
		{"missing", "GET", "/nope.html", one, nil, want{404, "Not Found\n", map[string]string{"Content-Type": plain, "Etag": ""}}},
		{"missing in other site", "GET", "/index.html", "www.two.test", nil, want{404, "", nil}},
		{"file with slash", "GET", "/a.txt/", one, nil, want{404, "", nil}},
		{"through a file", "GET", "/a.txt/b", one, nil, want{404, "", nil}},
		{"dir redirect", "GET", "/dir", one, nil, want{301, "", map[string]string{"Location": "/dir/"}}},
		{"dir redirect keeps query", "GET", "/dir?x=1&y=%2F", one, nil, want{301, "", map[string]string{"Location": "/dir/?x=1&y=%2F"}}},
		{"dir redirect HEAD", "HEAD", "/dir", one, nil, want{301, "", map[string]string{"Location": "/dir/"}}},
		{"dir redirect escapes", "GET", "/sub/dir%20with%20space", one, nil, want{301, "", map[string]string{"Location": "/sub/dir%20with%20space/"}}},
		{"symlinked dir redirect", "GET", "/dirlink", one, nil, want{301, "", map[string]string{"Location": "/dirlink/"}}},
		{"dir index", "GET", "/dir/", one, nil, want{200, "<p>dir index</p>\n", map[string]string{"Content-Type": "text/html; charset=utf-8"}}},
		{"dir index through link", "GET", "/dirlink/", one, nil, want{200, "<p>dir index</p>\n", nil}},
		{"index directly", "GET", "/dir/index.html", one, nil, want{200, "<p>dir index</p>\n", nil}},
		{"dir without index", "GET", "/noindex/", one, nil, want{403, "Forbidden\n", nil}},
		{"empty dir", "GET", "/emptydir/", one, nil, want{403, "", nil}},
		{"index.html is a dir", "GET", "/idxdir/", one, nil, want{403, "", nil}},
		{"site without index", "GET", "/", "www.two.test", nil, want{403, "", nil}},
		{"missing dir", "GET", "/nodir/", one, nil, want{404, "", nil}},
		{"symlink", "GET", "/link.txt", one, nil, want{200, "hello, a\n", map[string]string{"Etag": aETag}}},
		{"symlink loop", "GET", "/loop1", one, nil, want{404, "", nil}},
		{"symlink escaping", "GET", "/escape", one, nil, want{404, "", nil}},
		{"dotfile dir", "GET", "/.well-known/acme", one, nil, want{200, "token\n", nil}},
		{"percent in name", "GET", "/a%2520b.txt", one, nil, want{200, "percent in the name\n", nil}},
		{"encoded question mark", "GET", "/q%3F.txt", one, nil, want{200, "question mark\n", nil}},
		{"unicode name", "GET", "/caf%C3%A9.html", one, nil, want{200, "caf\u00e9\n", nil}},
		{"query ignored", "GET", "/a.txt?x=/../../etc/passwd", one, nil, want{200, "hello, a\n", nil}},
		{"absolute form", "GET", "http://" + one + "/a.txt", one, nil, want{400, "", nil}},
		{"POST", "POST", "/a.txt", one, []string{"Content-Length: 0"}, want{405, "", map[string]string{"Allow": "GET, HEAD"}}},
		{"PUT", "PUT", "/a.txt", one, []string{"Content-Length: 3"}, want{405, "", map[string]string{"Allow": "GET, HEAD"}}},
		{"DELETE", "DELETE", "/a.txt", one, nil, want{405, "", map[string]string{"Allow": "GET, HEAD"}}},
		{"OPTIONS", "OPTIONS", "/", one, nil, want{405, "", map[string]string{"Allow": "GET, HEAD"}}},
		{"PROPFIND", "PROPFIND", "/", one, nil, want{405, "", map[string]string{"Allow": "GET, HEAD"}}},
		{"permission", "GET", "/forbidden.txt", one, nil, want{403, "", nil}},
		{"invalid name", "GET", "/invalid.txt", one, nil, want{400, "", nil}},
		{"stat fails", "GET", "/statfails.txt", one, nil, want{503, "", map[string]string{"Retry-After": "1"}}},
		{"open fails", "GET", "/unopenable.txt", one, nil, want{503, "", map[string]string{"Etag": ""}}},
		{"read fails", "GET", "/broken.txt", one, nil, want{503, "Service Unavailable\n", map[string]string{"Etag": "", "Content-Type": plain}}},
		{"long path", "GET", "/" + strings.Repeat("a", httpserve.MaxPath), one, nil, want{414, "", nil}},
		{"longest path", "GET", "/" + strings.Repeat("a", httpserve.MaxPath-1), one, nil, want{404, "", nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, srv, tc.method, tc.target, tc.host, tc.hdr...)
			check(t, resp, body, tc.want)
		})
	}
}

func TestResolveError(t *testing.T) {
	m := fixture()
	m.resolveErr = errors.New("no quorum")
	srv := serve(t, m, httpserve.Options{})
	resp, body := do(t, srv, "GET", "/", one)
	check(t, resp, body, want{status: 503})
}

// TestPathTricks sends each trick as raw bytes on the wire, for a file that
// exists, so a 404 would mean the trick got through to a lookup.
func TestPathTricks(t *testing.T) {
	srv := serve(t, fixture(), httpserve.Options{})
	for _, target := range []string{
		// Dot segments, raw.
		"/../etc/passwd", "/..", "/.", "/./a.txt", "/dir/../a.txt", "/dir/./b.txt", "/dir/..", "/dir/.",
		"/../../../../../../etc/passwd",
		// Encoded dots, any case, alone or mixed.
		"/%2e%2e/etc/passwd", "/%2E%2E/", "/.%2e/a.txt", "/%2e./a.txt", "/%2e", "/a%2etxt", "/dir/%2e%2e/a.txt",
		// Encoded slashes and backslashes.
		"/a/%2F..", "/a/%2f%2e%2e", "/dir%2fb.txt", "/dir%2Fb.txt", "/%2F", "/a%5cb", "/a%5Cb", "/..%5c..%5cetc",
		// Raw backslashes.
		"/a\\b", "/..\\..\\etc\\passwd", "/\\a.txt", "/dir\\b.txt",
		// NUL and other control characters.
		"/a%00b", "/a.txt%00.html", "/%00", "/a%0d%0aSet-Cookie:%20x=1", "/a%0a", "/a%09b", "/a%7f",
		// Double (and triple) encoding.
		"/%252e%252e/etc/passwd", "/%252E%252E/", "/a%252fb", "/a%255cb", "/a%2500", "/a%25252e%25252e",
		"/a%2525", "/%25%32%65%25%32%65/",
		// Overlong and invalid UTF-8.
		"/%c0%ae%c0%ae/etc/passwd", "/%c0%af", "/%e0%80%ae", "/%ff", "/a%80",
		// Empty segments: "//host" must never reach a Location header.
		"//a.txt", "/dir//b.txt", "//www.evil.test/", "///", "/dir/b.txt//",
		// Malformed escapes.
		"/a%zz", "/a%", "/a%2", "/%%32%65",
		// Not a path at all.
		"a.txt", "*",
		// Absolute form carrying a trick.
		"http://" + one + "/%2e%2e/a.txt", "http://" + one + "/../a.txt",
	} {
		t.Run(target, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD"} {
				resp, body := do(t, srv, method, target, one)
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s %q: status %d, want 400 (body %.60q)", method, target, resp.StatusCode, body)
				}
				if loc := resp.Header.Get("Location"); loc != "" {
					t.Errorf("%s %q: Location %q", method, target, loc)
				}
			}
		})
	}
	// Tricks that are only odd names: looked up literally, found or not.
	for target, status := range map[string]int{
		"/..;/index.html":     404, // Tomcat's path parameter: a literal segment here
		"/...":                404,
		"/a.txt.":             404,
		"/%20":                404,
		"/%ef%bc%8e%ef%bc%8e": 404, // fullwidth dots are not dots
		"/a%20b.txt":          404, // the file is named "a%20b.txt"
		"/a%2520b.txt":        200,
		"/dir/b.txt?/../..":   200,
	} {
		resp, body := do(t, srv, "GET", target, one)
		if resp.StatusCode != status {
			t.Errorf("GET %q: status %d, want %d (body %.60q)", target, resp.StatusCode, status, body)
		}
	}
}

func TestHEAD(t *testing.T) {
	srv := serve(t, fixture(), httpserve.Options{})
	for _, tc := range []struct {
		target string
		hdr    []string
	}{
		{"/", nil}, {"/a.txt", nil}, {"/big.bin", nil}, {"/noext", nil}, {"/big.unknownext", nil},
		{"/a.txt", []string{"Range: bytes=2-4"}}, {"/big.bin", []string{"Range: bytes=100-199"}},
		{"/big.bin", []string{"Range: bytes=1-2,10-20"}},
		{"/a.txt", []string{"If-None-Match: " + etagOf([]byte("hello, a\n"))}},
		{"/nope", nil}, {"/dir", nil}, {"/noindex/", nil}, {"/%2e%2e/", nil}, {"/broken.txt", nil},
	} {
		t.Run(tc.target, func(t *testing.T) {
			g, gbody := do(t, srv, "GET", tc.target, one, tc.hdr...)
			h, hbody := do(t, srv, "HEAD", tc.target, one, tc.hdr...)
			if len(hbody) != 0 {
				t.Errorf("HEAD has a body of %d bytes", len(hbody))
			}
			if g.StatusCode != h.StatusCode {
				t.Errorf("status: GET %d, HEAD %d", g.StatusCode, h.StatusCode)
			}
			for _, k := range []string{"Content-Length", "Content-Type", "Etag", "Last-Modified", "Accept-Ranges", "Content-Range", "Location", "X-Content-Type-Options"} {
				gv, hv := g.Header.Get(k), h.Header.Get(k)
				if k == "Content-Type" && strings.HasPrefix(gv, "multipart/byteranges") {
					gv, hv = gv[:strings.Index(gv, "boundary=")], hv[:strings.Index(hv, "boundary=")]
				}
				if gv != hv {
					t.Errorf("%s: GET %q, HEAD %q", k, gv, hv)
				}
			}
			if cl := g.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(gbody)) {
				t.Errorf("GET Content-Length %s, body %d bytes", cl, len(gbody))
			}
		})
	}
}

func TestContentType(t *testing.T) {
	srv := serve(t, fixture(), httpserve.Options{})
	for target, ctype := range map[string]string{
		"/index.html":                  "text/html; charset=utf-8",
		"/style.css":                   "text/css; charset=utf-8",
		"/sub/dir%20with%20space/f.js": mime.TypeByExtension(".js"),
		"/noext":                       "text/html; charset=utf-8", // sniffed
		"/blob.unknownext":             "application/octet-stream", // sniffed
		"/big.unknownext":              "text/html; charset=utf-8", // sniffed, streamed
		"/empty":                       "text/plain; charset=utf-8",
		"/big.bin":                     "application/octet-stream",
	} {
		resp, _ := do(t, srv, "GET", target, one)
		if got := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || got != ctype {
			t.Errorf("GET %s: %d, Content-Type %q; want 200, %q", target, resp.StatusCode, got, ctype)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", target, got)
		}
	}
}

// TestRanges runs the same cases against a small file (served from memory)
// and a large one (streamed through the window reader).
func TestRanges(t *testing.T) {
	m := fixture()
	big := sitestest.Big()
	small := []byte("0123456789abcdefghij")
	m.Put(one, "/small.bin", small)
	srv := serve(t, m, httpserve.Options{})
	for _, f := range []struct {
		name string
		data []byte
	}{{"/small.bin", small}, {"/big.bin", big}} {
		size := int64(len(f.data))
		etag := etagOf(f.data)
		part := func(a, b int64) string { return string(f.data[a : b+1]) }
		cr := func(a, b int64) string { return fmt.Sprintf("bytes %d-%d/%d", a, b, size) }
		t.Run(f.name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				hdr  []string
				want want
			}{
				{"first bytes", []string{"Range: bytes=0-3"}, want{206, part(0, 3), map[string]string{"Content-Range": cr(0, 3), "Content-Length": "4", "Etag": etag}}},
				{"middle", []string{"Range: bytes=5-9"}, want{206, part(5, 9), map[string]string{"Content-Range": cr(5, 9)}}},
				{"open ended", []string{"Range: bytes=15-"}, want{206, part(15, size-1), map[string]string{"Content-Range": cr(15, size-1)}}},
				{"suffix", []string{"Range: bytes=-4"}, want{206, part(size-4, size-1), map[string]string{"Content-Range": cr(size-4, size-1)}}},
				{"past the end clamps", []string{"Range: bytes=10-99999999999"}, want{206, part(10, size-1), nil}},
				{"last byte", []string{fmt.Sprintf("Range: bytes=%d-%d", size-1, size-1)}, want{206, part(size-1, size-1), nil}},
				{"unsatisfiable", []string{fmt.Sprintf("Range: bytes=%d-", size)}, want{416, "", map[string]string{"Content-Range": fmt.Sprintf("bytes */%d", size)}}},
				{"unsatisfiable far", []string{"Range: bytes=99999999999-"}, want{416, "", nil}},
				{"malformed", []string{"Range: bytes=x-y"}, want{416, "", nil}},
				{"other unit ignored", []string{"Range: items=0-3"}, want{200, string(f.data), nil}},
				{"If-Range matches", []string{"Range: bytes=0-3", "If-Range: " + etag}, want{206, part(0, 3), nil}},
				{"If-Range stale", []string{"Range: bytes=0-3", `If-Range: "stale"`}, want{200, string(f.data), nil}},
				{"If-Range weak never matches", []string{"Range: bytes=0-3", "If-Range: W/" + etag}, want{200, string(f.data), nil}},
				{"If-Range date", []string{"Range: bytes=0-3", "If-Range: " + modTime.Format(http.TimeFormat)}, want{206, part(0, 3), nil}},
				{"If-Range old date", []string{"Range: bytes=0-3", "If-Range: " + modTime.Add(-time.Hour).Format(http.TimeFormat)}, want{200, string(f.data), nil}},
				{"too many ranges", []string{"Range: bytes=" + strings.Repeat("0-0,", httpserve.MaxRanges) + "1-1"}, want{200, string(f.data), nil}},
				{"overlapping beyond size", []string{"Range: bytes=" + strings.Repeat("0-,", 3) + "0-"}, want{200, string(f.data), nil}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, body := do(t, srv, "GET", f.name, one, tc.hdr...)
					check(t, resp, body, tc.want)
				})
			}
			t.Run("multipart", func(t *testing.T) {
				ranges := [][2]int64{{0, 1}, {4, 7}, {size - 3, size - 1}}
				resp, body := do(t, srv, "GET", f.name, one, "Range: bytes=0-1,4-7,-3")
				if resp.StatusCode != 206 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
				if err != nil || mt != "multipart/byteranges" {
					t.Fatalf("Content-Type %q: %v", resp.Header.Get("Content-Type"), err)
				}
				if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
					t.Errorf("Content-Length %s, body %d bytes", cl, len(body))
				}
				mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
				for i := 0; ; i++ {
					p, err := mr.NextPart()
					if err == io.EOF {
						if i != len(ranges) {
							t.Errorf("%d parts, want %d", i, len(ranges))
						}
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					got, _ := io.ReadAll(p)
					a, b := ranges[i][0], ranges[i][1]
					if p.Header.Get("Content-Range") != cr(a, b) || string(got) != part(a, b) {
						t.Errorf("part %d: %q %q; want %q %q", i, p.Header.Get("Content-Range"), got, cr(a, b), part(a, b))
					}
					if p.Header.Get("Content-Type") != "application/octet-stream" {
						t.Errorf("part %d: Content-Type %q", i, p.Header.Get("Content-Type"))
					}
				}
			})
		})
	}
}

func TestConditional(t *testing.T) {
	m := fixture()
	srv := serve(t, m, httpserve.Options{CacheBytes: -1}) // every non-304 opens
	data := []byte("hello, a\n")
	etag := etagOf(data)
	lm := modTime.Format(http.TimeFormat)
	before, after := modTime.Add(-time.Second).Format(http.TimeFormat), modTime.Add(time.Second).Format(http.TimeFormat)
	for _, tc := range []struct {
		name   string
		hdr    []string
		status int
		opens  bool // whether the file is opened
	}{
		{"If-None-Match", []string{"If-None-Match: " + etag}, 304, false},
		{"If-None-Match weak", []string{"If-None-Match: W/" + etag}, 304, false},
		{"If-None-Match list", []string{`If-None-Match: "x", ` + etag + `, "y"`}, 304, false},
		{"If-None-Match star", []string{"If-None-Match: *"}, 304, false},
		{"If-None-Match other", []string{`If-None-Match: "other"`}, 200, true},
		{"If-None-Match malformed", []string{`If-None-Match: garbage`}, 200, true},
		{"If-Modified-Since same", []string{"If-Modified-Since: " + lm}, 304, false},
		{"If-Modified-Since later", []string{"If-Modified-Since: " + after}, 304, false},
		{"If-Modified-Since earlier", []string{"If-Modified-Since: " + before}, 200, true},
		{"If-Modified-Since garbage", []string{"If-Modified-Since: yesterday"}, 200, true},
		{"If-None-Match wins over If-Modified-Since", []string{`If-None-Match: "other"`, "If-Modified-Since: " + after}, 200, true},
		{"If-None-Match match, old If-Modified-Since", []string{"If-None-Match: " + etag, "If-Modified-Since: " + before}, 304, false},
		{"If-Match ok", []string{"If-Match: " + etag}, 200, true},
		{"If-Match fails", []string{`If-Match: "other"`}, 412, true},
		{"If-Match then If-None-Match", []string{"If-Match: " + etag, "If-None-Match: " + etag}, 304, true},
		{"If-Unmodified-Since fails", []string{"If-Unmodified-Since: " + before}, 412, true},
		{"If-Unmodified-Since ok", []string{"If-Unmodified-Since: " + lm}, 200, true},
		{"304 beats Range", []string{"If-None-Match: " + etag, "Range: bytes=0-1"}, 304, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD"} {
				opens := m.opens.Load()
				resp, body := do(t, srv, method, "/a.txt", one, tc.hdr...)
				if resp.StatusCode != tc.status {
					t.Errorf("%s: status %d, want %d", method, resp.StatusCode, tc.status)
				}
				if opened := m.opens.Load() > opens; opened != tc.opens {
					t.Errorf("%s: opened the file: %v, want %v", method, opened, tc.opens)
				}
				switch resp.StatusCode {
				case 304:
					if len(body) != 0 || resp.Header.Get("Etag") != etag || resp.Header.Get("Content-Type") != "" ||
						resp.Header.Get("Content-Length") != "" || resp.Header.Get("Last-Modified") != "" {
						t.Errorf("%s 304: body %q, headers %v", method, body, resp.Header)
					}
				case 200:
					if method == "GET" && string(body) != string(data) {
						t.Errorf("%s: body %q", method, body)
					}
				}
			}
		})
	}

	// Without an ETag, If-Modified-Since still works and the 304 carries
	// Last-Modified; If-None-Match cannot match.
	m.PutGen(one, "/noetag.bin", 100, "", pattern)
	resp, _ := do(t, srv, "GET", "/noetag.bin", one, "If-Modified-Since: "+lm)
	if resp.StatusCode != 304 || resp.Header.Get("Last-Modified") != lm || resp.Header.Get("Etag") != "" {
		t.Errorf("no ETag, If-Modified-Since: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = do(t, srv, "GET", "/noetag.bin", one, `If-None-Match: ""`)
	if resp.StatusCode != 200 || resp.Header.Get("Etag") != "" {
		t.Errorf("no ETag, If-None-Match: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestCacheNeverStale: a change acknowledged before a request is what the
// request gets, and every response's body is the one its ETag names.
func TestCacheNeverStale(t *testing.T) {
	m := fixture()
	srv := serve(t, m, httpserve.Options{})
	get := func() (string, string) {
		resp, body := do(t, srv, "GET", "/hot.txt", one)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header.Get("Etag"), string(body)
	}

	m.Put(one, "/hot.txt", []byte("version 0"))
	opens := m.opens.Load()
	for range 3 {
		if _, body := get(); body != "version 0" {
			t.Fatalf("got %q", body)
		}
	}
	if n := m.opens.Load() - opens; n != 1 {
		t.Errorf("3 GETs of a hot file opened it %d times; want 1 (cached)", n)
	}
	m.Put(one, "/hot.txt", []byte("version 1, longer"))
	if _, body := get(); body != "version 1, longer" {
		t.Fatalf("after a change: got %q", body)
	}
	m.Put(one, "/hot.txt", []byte("version 0")) // back: the old entry is right again
	if _, body := get(); body != "version 0" {
		t.Fatalf("after a change back: got %q", body)
	}

	// Concurrent writers and readers: after Put returns, no reader sees an
	// older version; every body matches its ETag.
	var (
		mu    sync.Mutex
		acked = 0
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	version := func(i int) []byte { return []byte(fmt.Sprintf("version %04d %s", i, strings.Repeat("x", i%50))) }
	m.Put(one, "/hot.txt", version(0))
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				floor := acked
				mu.Unlock()
				etag, body := get()
				if etagOf([]byte(body)) != etag {
					t.Errorf("body %q does not match ETag %s", body, etag)
					return
				}
				var v int
				if _, err := fmt.Sscanf(body, "version %d", &v); err != nil || v < floor {
					t.Errorf("got %q after version %d was acknowledged", body, floor)
					return
				}
			}
		}()
	}
	for i := 1; i <= 200; i++ {
		m.Put(one, "/hot.txt", version(i))
		mu.Lock()
		acked = i
		mu.Unlock()
		if i%20 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
}

// TestChangeBetweenStatAndOpen: a change racing with a request serves the
// version opened, under that version's ETag, and does not poison the cache.
func TestChangeBetweenStatAndOpen(t *testing.T) {
	for _, name := range []string{"/race.txt", "/race.bin"} {
		t.Run(name, func(t *testing.T) {
			m := fixture()
			size := 10
			if name == "/race.bin" {
				size = 300 << 10 // streamed
			}
			v1, v2 := bytes.Repeat([]byte("1"), size), bytes.Repeat([]byte("2"), size+1)
			m.Put(one, name, v1)
			var once sync.Once
			m.beforeOpen = func(site, n string) {
				if n == name {
					once.Do(func() { m.Put(one, name, v2) })
				}
			}
			srv := serve(t, m, httpserve.Options{})
			resp, body := do(t, srv, "GET", name, one)
			if resp.StatusCode != 200 || !bytes.Equal(body, v2) || resp.Header.Get("Etag") != etagOf(v2) {
				t.Fatalf("got %d, %d bytes, ETag %s; want v2 under its ETag %s", resp.StatusCode, len(body), resp.Header.Get("Etag"), etagOf(v2))
			}
			for range 2 {
				resp, body = do(t, srv, "GET", name, one)
				if !bytes.Equal(body, v2) || resp.Header.Get("Etag") != etagOf(v2) {
					t.Fatalf("then got %d bytes, ETag %s", len(body), resp.Header.Get("Etag"))
				}
			}
		})
	}
}

// TestLargeFile streams a 50 MiB file and checks that the server's memory
// does not grow with it.
func TestLargeFile(t *testing.T) {
	const size = 50 << 20
	m := fixture()
	m.PutGen(one, "/large.bin", size, `"large"`, pattern)
	srv := serve(t, m, httpserve.Options{})
	want := make([]byte, 1<<20)

	client := srv.Client()
	get := func(rg string) (*http.Response, io.ReadCloser) {
		req, _ := http.NewRequest("GET", srv.URL+"/large.bin", nil)
		req.Host = one
		if rg != "" {
			req.Header.Set("Range", rg)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, resp.Body
	}
	// Warm up: connection, pools.
	_, body := get("bytes=0-0")
	io.Copy(io.Discard, body)
	body.Close()

	runtimeGC()
	before := memStats()
	resp, body := get("")
	if resp.StatusCode != 200 || resp.ContentLength != size {
		t.Fatalf("status %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	got := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(body, got)
		if n > 0 {
			pattern(want[:n], off)
			if !bytes.Equal(got[:n], want[:n]) {
				t.Fatalf("wrong bytes in the MiB at %d", off)
			}
			off += int64(n)
		}
		if err != nil {
			break
		}
	}
	body.Close()
	after := memStats()
	if off != size {
		t.Fatalf("read %d bytes, want %d", off, size)
	}
	grew := after.totalAlloc - before.totalAlloc
	t.Logf("50 MiB streamed: %.1f MiB allocated in the process (client and server), heap in use %.1f → %.1f MiB",
		float64(grew)/(1<<20), float64(before.heapInuse)/(1<<20), float64(after.heapInuse)/(1<<20))
	if grew > 16<<20 {
		t.Errorf("streaming 50 MiB allocated %d MiB: not bounded", grew>>20)
	}

	// A range deep inside, and several: only what they cover.
	resp, body = get("bytes=40000000-40000099")
	b, _ := io.ReadAll(body)
	body.Close()
	pattern(want[:100], 40000000)
	if resp.StatusCode != 206 || !bytes.Equal(b, want[:100]) {
		t.Errorf("range: %d, %d bytes", resp.StatusCode, len(b))
	}
	resp, body = get("bytes=1-2,30000000-30000009,-5")
	b, _ = io.ReadAll(body)
	body.Close()
	if resp.StatusCode != 206 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") {
		t.Errorf("multipart: %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	pattern(want[:10], 30000000)
	if !bytes.Contains(b, want[:10]) {
		t.Errorf("multipart: the middle range is missing")
	}
}

// TestAbortMultipart: a client leaving in the middle of a multipart
// response, while ServeContent's writer goroutine is reading, must not have
// the File read after Close (the fake panics) nor left open.
func TestAbortMultipart(t *testing.T) {
	m := fixture()
	m.PutGen(one, "/large.bin", 64<<20, `"large"`, pattern)
	srv := serve(t, m, httpserve.Options{})
	for i := range 20 {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /large.bin HTTP/1.1\r\nHost: %s\r\nRange: bytes=0-9999999,20000000-29999999,40000000-49999999\r\n\r\n", one)
		buf := make([]byte, 1<<10*(1+i*97))
		io.ReadFull(conn, buf)
		conn.Close()
	}
	waitFor(t, func() bool { return m.open() == 0 })
}

// TestReadErrorMidStream: once a streamed response has started, a read
// error cuts it short — the client must see a truncated body, never a
// complete-looking wrong one — and the error is logged.
func TestReadErrorMidStream(t *testing.T) {
	m := fixture()
	m.PutGen(one, "/flaky.bin", 8<<20, `"flaky"`, pattern)
	m.readErr[one+":/flaky.bin"] = errors.New("shard lost")
	m.readErrAt = 3 << 20
	var logs syncBuffer
	srv := serve(t, m, httpserve.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	req, _ := http.NewRequest("GET", srv.URL+"/flaky.bin", nil)
	req.Host = one
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err == nil || n >= 8<<20 {
		t.Errorf("status %d, read %d bytes, err %v; want a truncated 200", resp.StatusCode, n, err)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "shard lost") })
}

// TestWriteIdleTimeout: a client that stops reading does not hold the
// request (and its File and buffer) forever.
func TestWriteIdleTimeout(t *testing.T) {
	m := fixture()
	m.PutGen(one, "/large.bin", 200<<20, `"large"`, pattern)
	srv := serve(t, m, httpserve.Options{WriteIdleTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(conn, "GET /large.bin HTTP/1.1\r\nHost: %s\r\n\r\n", one)
	waitFor(t, func() bool { return m.opens.Load() > 0 })
	// Not reading: the server must give up and close the file.
	waitFor(t, func() bool { return m.open() == 0 })
}

// TestClientGone: a client that leaves while the cluster is slow is logged
// as 499, and the request's context is cancelled.
func TestClientGone(t *testing.T) {
	m := fixture()
	entered := make(chan struct{}, 1)
	m.statHook = func(ctx context.Context, site, name string) {
		if name == "/slow.txt" {
			entered <- struct{}{}
			<-ctx.Done()
		}
	}
	var logs syncBuffer
	srv := serve(t, m, httpserve.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /slow.txt HTTP/1.1\r\nHost: %s\r\n\r\n", one)
	<-entered
	conn.Close()
	waitFor(t, func() bool { return strings.Contains(logs.String(), `"status":499`) })
}

func TestAccessLog(t *testing.T) {
	var logs syncBuffer
	srv := serve(t, fixture(), httpserve.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	do(t, srv, "GET", "/a.txt?q=1", "WWW.ONE.TEST:80")
	do(t, srv, "HEAD", "/a.txt", one)
	do(t, srv, "GET", "/statfails.txt", one)
	waitFor(t, func() bool { return strings.Count(logs.String(), "\n") >= 3 })
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	for i, want := range []string{
		`"level":"INFO","msg":"http","method":"GET","host":"www.one.test","path":"/a.txt","status":200,"bytes":9,"duration":`,
		`"level":"INFO","msg":"http","method":"HEAD","host":"www.one.test","path":"/a.txt","status":200,"bytes":0,"duration":`,
		`"level":"ERROR","msg":"http","method":"GET","host":"www.one.test","path":"/statfails.txt","status":503,`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("log line %d:\n%s\nwant it to contain\n%s", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[2], `"err":"cluster unavailable"`) || !strings.Contains(lines[0], `"remote":"127.0.0.1:`) {
		t.Errorf("log lines lack err or remote:\n%s", logs.String())
	}
}

func TestNewServer(t *testing.T) {
	s := httpserve.NewServer("127.0.0.1:0", httpserve.Handler(fixture(), httpserve.Options{Logger: quiet}))
	if s.ReadHeaderTimeout == 0 || s.ReadTimeout == 0 || s.IdleTimeout == 0 || s.WriteTimeout != 0 || s.MaxHeaderBytes == 0 {
		t.Errorf("timeouts: %+v", s)
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/a.txt", nil)
	req.Host = one
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello, a\n" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
	s.Shutdown(context.Background())
	if err := <-done; err != http.ErrServerClosed {
		t.Errorf("Serve: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the log handler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
	}
}
