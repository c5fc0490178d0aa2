package httpserve_test

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"hastore/webfs/httpserve"
)

func runtimeGC() { runtime.GC(); runtime.GC() }

type mem struct{ totalAlloc, heapInuse uint64 }

func memStats() mem {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	return mem{s.TotalAlloc, s.HeapInuse}
}

func BenchmarkServe4KiB(b *testing.B) {
	b.Run("cached", func(b *testing.B) { benchServe(b, 4<<10, httpserve.Options{}) })
	b.Run("uncached", func(b *testing.B) { benchServe(b, 4<<10, httpserve.Options{CacheBytes: -1}) })
	b.Run("304", func(b *testing.B) { benchServe(b, -(4 << 10), httpserve.Options{}) })
}

func BenchmarkServe1MiB(b *testing.B) { benchServe(b, 1<<20, httpserve.Options{}) }

// benchServe GETs one file of size bytes over loopback HTTP with keep-alive,
// from GOMAXPROCS goroutines; a negative size revalidates with
// If-None-Match instead (304).
func benchServe(b *testing.B, size int, opts httpserve.Options) {
	revalidate := size < 0
	size = max(size, -size)
	m := fixture()
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	m.Put(one, "/f.bin", data)
	srv := serve(b, m, opts)
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	if !revalidate {
		b.SetBytes(int64(size))
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest("GET", srv.URL+"/f.bin", nil)
		req.Host = one
		if revalidate {
			req.Header.Set("If-None-Match", etagOf(data))
		}
		for pb.Next() {
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if want := map[bool]int{false: 200, true: 304}[revalidate]; resp.StatusCode != want || !revalidate && n != int64(size) {
				b.Errorf("status %d, %d bytes", resp.StatusCode, n)
				return
			}
		}
	})
}

// TestCurl checks a Range and a 304 with a real client, when curl is
// installed.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	srv := serve(t, fixture(), httpserve.Options{})
	run := func(args ...string) string {
		t.Helper()
		args = append([]string{"-sS", "-D", "-", "-H", "Host: " + one}, args...)
		out, err := exec.Command(curl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %q: %v\n%s", args, err, out)
		}
		return strings.ReplaceAll(string(out), "\r\n", "\n")
	}
	out := run("-r", "2-5", srv.URL+"/a.txt")
	if !strings.HasPrefix(out, "HTTP/1.1 206 Partial Content\n") || !strings.Contains(out, "Content-Range: bytes 2-5/9\n") || !strings.HasSuffix(out, "\n\nllo,") {
		t.Errorf("curl -r 2-5:\n%s", out)
	}
	out = run("-H", "If-None-Match: "+etagOf([]byte("hello, a\n")), srv.URL+"/a.txt")
	if !strings.HasPrefix(out, "HTTP/1.1 304 Not Modified\n") || !strings.HasSuffix(out, "\n\n") {
		t.Errorf("curl If-None-Match:\n%s", out)
	}
	t.Logf("curl If-None-Match:\n%s", out)
	out = run("--path-as-is", srv.URL+"/../etc/passwd")
	if !strings.HasPrefix(out, "HTTP/1.1 400 Bad Request\n") {
		t.Errorf("curl --path-as-is /../etc/passwd:\n%s", out)
	}
}
