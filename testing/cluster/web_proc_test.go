package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A site uploaded with 'admin site put' is served byte-identical by every
// node over HTTP, with working conditional (304) and range (206) requests.
func TestProcSiteOverHTTP(t *testing.T) {
	httpAddrs := FreePorts(t, 3)
	c := StartProcesses(t, ProcOptions{Nodes: 3, NodeArgs: func(i int) []string { return []string{"--http", httpAddrs[i]} }})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A generated tree: a few thousand files, small and not so small, in
	// nested directories, names with spaces and UTF-8.
	src := t.TempDir()
	rng := rand.New(rand.NewPCG(11, 12))
	files := map[string][]byte{}
	for i := range 2500 {
		dir := fmt.Sprintf("d%02d/sub %d", i%40, i%7)
		name := fmt.Sprintf("f%04d-é.txt", i)
		if i%10 == 0 {
			name = fmt.Sprintf("img%04d.png", i)
		}
		size := rng.IntN(8 << 10)
		if i%250 == 0 {
			size = 300<<10 + rng.IntN(6<<20) // a few multi-chunk-ish files
		}
		data := randBytes(rng, size)
		rel := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(src, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
		files[filepath.ToSlash(rel)] = data
	}
	index := []byte("<!doctype html><title>site</title>hello\n")
	if err := os.WriteFile(filepath.Join(src, "index.html"), index, 0o644); err != nil {
		t.Fatal(err)
	}
	files["index.html"] = index
	const site = "www.web-e2e.test"
	if out, errOut, err := c.Admin(ctx, "site", "add", site, "--alias", "web-e2e.test"); err != nil {
		t.Fatalf("site add: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := c.Admin(ctx, "site", "put", site, src); err != nil {
		t.Fatalf("site put: %v\n%s%s", err, out, errOut)
	}

	client := &http.Client{Timeout: 30 * time.Second}
	get := func(addr, host, path string, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s%s from %s: %v", host, path, addr, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s%s from %s: reading body: %v", host, path, addr, err)
		}
		return resp, body
	}
	escape := func(rel string) string {
		parts := strings.Split(rel, "/")
		for i, p := range parts {
			parts[i] = url.PathEscape(p)
		}
		return "/" + strings.Join(parts, "/")
	}
	for i, addr := range httpAddrs {
		for rel, want := range files {
			resp, body := get(addr, site, escape(rel), nil)
			if resp.StatusCode != 200 || !bytes.Equal(body, want) {
				t.Fatalf("node %s GET /%s: status %d, %d bytes, want 200 and %d identical bytes", c.IDs[i], rel, resp.StatusCode, len(body), len(want))
			}
		}
	}
	// Conditional and ranged requests, on every node, and the alias.
	var big string
	for rel, data := range files {
		if len(data) > 300<<10 {
			big = rel
			break
		}
	}
	want := files[big]
	for i, addr := range httpAddrs {
		resp, _ := get(addr, "web-e2e.test", escape(big), nil)
		etag := resp.Header.Get("ETag")
		if resp.StatusCode != 200 || etag == "" {
			t.Fatalf("node %s alias: status %d etag %q", c.IDs[i], resp.StatusCode, etag)
		}
		resp, body := get(addr, site, escape(big), map[string]string{"If-None-Match": etag})
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Fatalf("node %s If-None-Match: status %d, %d bytes; want 304, empty", c.IDs[i], resp.StatusCode, len(body))
		}
		resp, body = get(addr, site, escape(big), map[string]string{"Range": "bytes=1000-299999"})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[1000:300000]) {
			t.Fatalf("node %s Range: status %d, %d bytes; want 206 and bytes 1000-299999", c.IDs[i], resp.StatusCode, len(body))
		}
		resp, body = get(addr, site, "/", nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, index) {
			t.Fatalf("node %s /: status %d; want index.html", c.IDs[i], resp.StatusCode)
		}
		for path, code := range map[string]int{"/missing.txt": 404, "/../etc/passwd": 400, "/d00/": 403} {
			if resp, _ := get(addr, site, path, nil); resp.StatusCode != code {
				t.Fatalf("node %s GET %s: status %d, want %d", c.IDs[i], path, resp.StatusCode, code)
			}
		}
		if resp, _ := get(addr, "unknown.test", "/", nil); resp.StatusCode != 404 {
			t.Fatalf("node %s unknown host: status %d, want 404", c.IDs[i], resp.StatusCode)
		}
	}
	// A node killed: the others keep serving every file.
	c.Kill(0)
	for _, i := range []int{1, 2} {
		n := 0
		for rel, want := range files {
			if n++; n > 300 {
				break
			}
			resp, body := get(httpAddrs[i], site, escape(rel), nil)
			if resp.StatusCode != 200 || !bytes.Equal(body, want) {
				t.Fatalf("node %s with n1 killed GET /%s: status %d", c.IDs[i], rel, resp.StatusCode)
			}
		}
	}
}
