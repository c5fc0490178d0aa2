package httpserve_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"hastore/webfs/httpserve"
)

// secretFixture is the fixture plus what a PHP site's tree holds besides
// its public files.
func secretFixture() *memSites {
	m := fixture()
	for _, name := range []string{
		"/.env", "/.git/config", "/.git/HEAD", "/.htaccess", "/.htpasswd", "/sub/.svn/entries",
		"/wp-config.php", "/INDEX.PHP", "/lib/x.php5", "/lib/page.phtml", "/lib/app.phar", "/lib/db.inc",
		"/composer.json", "/composer.lock", "/vendor/composer.json",
		"/index.html~", "/db.sql", "/config.bak", "/config.orig",
		"/sub/.well-known/x", "/.well-known/.hidden",
		"/public.json", "/phpinfo.txt", "/notes.inc.txt",
	} {
		m.Put(one, name, []byte("secret "+name+"\n"))
	}
	return m
}

func TestDenyList(t *testing.T) {
	m := secretFixture()
	def := serve(t, m, httpserve.Options{})
	none := serve(t, m, httpserve.Options{Deny: []string{}})
	custom := serve(t, m, httpserve.Options{Deny: []string{"*.txt"}})
	for _, tc := range []struct {
		target            string
		def, none, custom int
	}{
		{"/.env", 404, 200, 200},
		{"/.git/config", 404, 200, 200},
		{"/.git/", 404, 403, 403},
		{"/.git", 404, 301, 301},
		{"/.htaccess", 404, 200, 200},
		{"/.htpasswd", 404, 200, 200},
		{"/sub/.svn/entries", 404, 200, 200},
		{"/wp-config.php", 404, 200, 200},
		{"/INDEX.PHP", 404, 200, 200},
		{"/lib/x.php5", 404, 200, 200},
		{"/lib/page.phtml", 404, 200, 200},
		{"/lib/app.phar", 404, 200, 200},
		{"/lib/db.inc", 404, 200, 200},
		{"/composer.json", 404, 200, 200},
		{"/composer.lock", 404, 200, 200},
		{"/vendor/composer.json", 404, 200, 200},
		{"/index.html~", 404, 200, 200},
		{"/db.sql", 404, 200, 200},
		{"/config.bak", 404, 200, 200},
		{"/config.orig", 404, 200, 200},
		{"/sub/.well-known/x", 404, 200, 200}, // only the top-level .well-known is exempt
		{"/.well-known/.hidden", 404, 200, 200},
		{"/.well-known/acme", 200, 200, 200},
		{"/public.json", 200, 200, 200},
		{"/phpinfo.txt", 200, 200, 404},
		{"/notes.inc.txt", 200, 200, 404},
		{"/a.txt", 200, 200, 404},
		{"/", 200, 200, 200},
	} {
		check := func(label string, srvWant int, code int) {
			if code != srvWant {
				t.Errorf("%s deny list: GET %s: status %d, want %d", label, tc.target, code, srvWant)
			}
		}
		resp, _ := do(t, def, "GET", tc.target, one)
		check("default", tc.def, resp.StatusCode)
		resp, _ = do(t, none, "GET", tc.target, one)
		check("empty", tc.none, resp.StatusCode)
		resp, _ = do(t, custom, "GET", tc.target, one)
		check("custom", tc.custom, resp.StatusCode)
	}
}

func TestParseDeny(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "default", want: httpserve.DefaultDeny},
		{in: "none", want: []string{}},
		{in: "", want: []string{}},
		{in: "*.txt, .*", want: []string{"*.txt", ".*"}},
		{in: "default,*.sqlite", want: append(append([]string{}, httpserve.DefaultDeny...), "*.sqlite")},
		{in: "a/b", wantErr: "may not hold '/'"},
		{in: "[", wantErr: "syntax error"},
	} {
		got, err := httpserve.ParseDeny(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseDeny(%q) = %q, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) || got == nil {
			t.Errorf("ParseDeny(%q) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}
}

// TestAbsoluteFormRefused: the Host header names the site, never a URL in
// the request line (net/http would let the URL win and drop the header).
func TestAbsoluteFormRefused(t *testing.T) {
	srv := serve(t, fixture(), httpserve.Options{})
	for _, tc := range []struct {
		target, host string
		want         int
	}{
		{"http://www.two.test/a.txt", one, 400},
		{"http://" + one + "/a.txt", "www.two.test", 400},
		{"http://" + one + "/a.txt", one, 400},
		{"https://www.two.test/a.txt", one, 400},
		{"/a.txt", "www.two.test", 200}, // the Host header's site
	} {
		resp, body := do(t, srv, "GET", tc.target, tc.host)
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s with Host %s: status %d, want %d (body %q)", tc.target, tc.host, resp.StatusCode, tc.want, body)
		}
		if tc.want == 200 && string(body) != "hello from two\n" {
			t.Errorf("GET %s with Host %s: body %q, not www.two.test's", tc.target, tc.host, body)
		}
	}
}

// keepAlive opens a connection and makes one keep-alive request on it,
// returning the connection (still open) and the response status.
func keepAlive(t *testing.T, addr string) (net.Conn, int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /a.txt HTTP/1.1\r\nHost: %s\r\n\r\n", one)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c, resp.StatusCode
}

// TestConnectionCap runs the real server on a capped listener: idle
// keep-alive connections count, the one over the cap gets a 503, and a
// closed one frees its place.
func TestConnectionCap(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := httpserve.NewServer("", httpserve.Handler(fixture(), httpserve.Options{Logger: quiet}))
	go s.Serve(httpserve.LimitListener(raw, 100, 2, quiet))
	t.Cleanup(func() { s.Close() })
	addr := raw.Addr().String()
	c1, code1 := keepAlive(t, addr)
	_, code2 := keepAlive(t, addr)
	if code1 != 200 || code2 != 200 {
		t.Fatalf("connections under the cap: %d, %d", code1, code2)
	}
	if _, code := keepAlive(t, addr); code != http.StatusServiceUnavailable {
		t.Fatalf("third connection from one address with a cap of 2: status %d, want 503", code)
	}
	c1.Close()
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /a.txt HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", one)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == 200
	})
}
