//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hastore/replica/transport"
	"hastore/testing/cluster"
)

// TestServeLiveLimitsProcess: the SMTP and HTTP per-address connection
// caps in the config file take their new values on SIGHUP: a client over
// the old cap is refused (421, 503), one within the raised cap is served,
// one over the new cap is refused again, and the connections open across
// the SIGHUP keep working.
func TestServeLiveLimitsProcess(t *testing.T) {
	bin := cluster.HastoreBinary(t)
	dir := t.TempDir()
	ports := cluster.FreePorts(t, 4)
	listen, metricsAddr, smtpAddr, httpAddr := ports[0], ports[1], ports[2], ports[3]
	key, err := transport.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "hastore.toml")
	writeConfig := func(mailPerIP, httpPerIP int) {
		t.Helper()
		body := fmt.Sprintf(`node = "n1"
data = %q
listen = %q
cluster-key-file = %q
insecure = true
metrics = %q
smtp = %q
hostname = "mx.test"
http = %q
mail-max-connections-per-ip = %d
http-max-connections-per-ip = %d
`, filepath.Join(dir, "n1"), listen, keyFile, metricsAddr, smtpAddr, httpAddr, mailPerIP, httpPerIP)
		if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(2, 1)
	cmd := exec.Command(bin, "serve", "--config", cfgFile, "--log-format", "json")
	cmd.Env = append(os.Environ(), "HASTORE_CLUSTER_KEY_FILE=", "NOTIFY_SOCKET=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs := collectLog(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { <-logs.done; _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	waitFor(t, "/readyz", 60*time.Second, func() bool {
		resp, err := http.Get("http://" + metricsAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, logs)

	// smtpOpen connects and returns the greeting's first line.
	smtpOpen := func() (*lineConn, string) {
		t.Helper()
		c := dialLines(t, smtpAddr)
		s, err := c.line(10 * time.Second)
		if err != nil {
			t.Fatalf("SMTP greeting: %v", err)
		}
		return c, s
	}
	// httpGet sends a keep-alive request on a new connection and returns
	// the connection and the status code.
	httpGet := func() (net.Conn, int) {
		t.Helper()
		c, err := net.DialTimeout("tcp", httpAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, httpStatus(t, c)
	}

	var smtpKept []*lineConn
	for range 2 {
		c, s := smtpOpen()
		if !strings.HasPrefix(s, "220") {
			t.Fatalf("SMTP connection within the cap of 2: %q", s)
		}
		smtpKept = append(smtpKept, c)
	}
	if _, s := smtpOpen(); !strings.HasPrefix(s, "421") {
		t.Fatalf("third SMTP connection over the cap of 2: %q, want 421", s)
	}
	httpKept, code := httpGet()
	if code == http.StatusServiceUnavailable {
		t.Fatal("first HTTP connection refused")
	}
	if _, code := httpGet(); code != http.StatusServiceUnavailable {
		t.Fatalf("second HTTP connection over the cap of 1: %d, want 503", code)
	}

	writeConfig(3, 2)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the caps applied", 20*time.Second, func() bool {
		recs := logs.records(t)
		return count(recs, "SIGHUP: config setting applied", "key", "mail-max-connections-per-ip") == 1 &&
			count(recs, "SIGHUP: config setting applied", "key", "http-max-connections-per-ip") == 1
	}, logs)

	if c, s := smtpOpen(); !strings.HasPrefix(s, "220") {
		t.Fatalf("third SMTP connection under the raised cap of 3: %q", s)
	} else {
		smtpKept = append(smtpKept, c)
	}
	if _, s := smtpOpen(); !strings.HasPrefix(s, "421") {
		t.Fatalf("fourth SMTP connection over the cap of 3: %q, want 421", s)
	}
	if _, code := httpGet(); code == http.StatusServiceUnavailable {
		t.Fatal("second HTTP connection under the raised cap of 2 refused")
	}
	if _, code := httpGet(); code != http.StatusServiceUnavailable {
		t.Fatalf("third HTTP connection over the cap of 2: %d, want 503", code)
	}
	// The connections open before the SIGHUP still work.
	for i, c := range smtpKept {
		c.send("NOOP\r\n")
		if s, err := c.line(10 * time.Second); err != nil || !strings.HasPrefix(s, "250") {
			t.Fatalf("SMTP connection %d after SIGHUP: %q, %v", i, s, err)
		}
	}
	if code := httpStatus(t, httpKept); code == http.StatusServiceUnavailable || code == 0 {
		t.Fatalf("the HTTP connection kept across SIGHUP: %d", code)
	}
}

// httpStatus sends a GET on c and reads the response's status code.
func httpStatus(t *testing.T, c net.Conn) int {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: nosuchsite.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the HTTP response: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
