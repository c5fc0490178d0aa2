//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hastore/replica/transport"
	"hastore/testing/cluster"
)

// nodeLog collects a process's stderr lines as they come.
type nodeLog struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func collectLog(t *testing.T, cmd *exec.Cmd) *nodeLog {
	t.Helper()
	r, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	l := &nodeLog{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *nodeLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// records parses every line as a JSON object; a line that is not one
// fails the test.
func (l *nodeLog) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range l.snapshot() {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON (--log-format json): %q", line)
		}
		out = append(out, m)
	}
	return out
}

// count is how many records have msg and, if key is set, key=value.
func count(recs []map[string]any, msg, key, value string) int {
	n := 0
	for _, r := range recs {
		if r["msg"] == msg && (key == "" || fmt.Sprint(r[key]) == value) {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool, logs *nodeLog) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; the log:\n%s", what, strings.Join(logs.snapshot(), "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServeConfigProcess: `hastore serve --config FILE` runs a node from
// the file (its address, data, metrics listener), takes --log-format from
// the command line over the file's, and on SIGHUP applies a new log level
// at once and names a changed listen address as needing a restart; a file
// that no longer parses changes nothing. A file with an unknown key stops
// serve with an error naming the key and the file.
func TestServeConfigProcess(t *testing.T) {
	bin := cluster.HastoreBinary(t)
	dir := t.TempDir()
	ports := cluster.FreePorts(t, 3)
	key, err := transport.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "hastore.toml")
	writeConfig := func(level, listen string) {
		t.Helper()
		body := fmt.Sprintf(`# hastore serve --config
node = "n1"
data = %q
listen = %q
peers = ["n1=%s"]
cluster-key-file = %q
insecure = true
log-level = %q
log-format = "text"
metrics = %q

[raft]
heartbeat = "500ms"
election = "500ms"
lease = "250ms"
`, filepath.Join(dir, "n1"), listen, ports[0], keyFile, level, ports[1])
		if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("info", ports[0])

	cmd := exec.Command(bin, "serve", "--config", cfgFile, "--log-format", "json")
	cmd.Env = append(os.Environ(), "HASTORE_CLUSTER_KEY_FILE=", "NOTIFY_SOCKET=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs := collectLog(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once serve has exited, with exitErr
	var exitErr error
	go func() { <-logs.done; exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	alive := func() {
		t.Helper()
		select {
		case <-exited:
			t.Fatalf("serve exited: %v\n%s", exitErr, strings.Join(logs.snapshot(), "\n"))
		default:
		}
	}

	// The metrics listener is the file's: /readyz answers there once the
	// node (listening where the file says) is the leader of its cluster.
	waitFor(t, "/readyz on the config file's metrics address", 60*time.Second, func() bool {
		alive()
		resp, err := http.Get("http://" + ports[1] + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, logs)
	recs := logs.records(t)
	if count(recs, "settings read from the config file", "overridden_by_command_line", "log-format") != 1 {
		t.Fatalf("no line saying the command line overrode log-format:\n%s", strings.Join(logs.snapshot(), "\n"))
	}
	for _, r := range recs {
		if r["level"] == "DEBUG" {
			t.Fatalf("a debug line at log-level info: %v", r)
		}
	}

	// SIGHUP with log-level warn and another listen address: the level
	// applies, the address waits for a restart and the log says so.
	writeConfig("warn", ports[2])
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SIGHUP lines", 20*time.Second, func() bool {
		alive()
		recs := logs.records(t)
		return count(recs, "SIGHUP: config setting applied", "key", "log-level") == 1 &&
			count(recs, "SIGHUP: config file changes that take effect only after a restart", "keys", "listen") == 1
	}, logs)
	// At warn, the next SIGHUP's info lines are gone: the level is live.
	// The listen change is still pending, and still said.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second SIGHUP's warning", 20*time.Second, func() bool {
		alive()
		return count(logs.records(t), "SIGHUP: config file changes that take effect only after a restart", "keys", "listen") == 2
	}, logs)
	if n := count(logs.records(t), "SIGHUP: reloading certificates and the log level", "", ""); n != 1 {
		t.Fatalf("%d info lines of SIGHUP; want 1 (the second SIGHUP ran at level warn)", n)
	}

	// A file that does not parse: an error line, and nothing changes.
	if err := os.WriteFile(cfgFile, []byte("node = \"n1\"\ncolour = \"blue\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rejected config file's error", 20*time.Second, func() bool {
		alive()
		for _, r := range logs.records(t) {
			if r["msg"] == "SIGHUP: config file not applied; every setting in effect stays" && strings.Contains(fmt.Sprint(r["err"]), `unknown key "colour"`) {
				return true
			}
		}
		return false
	}, logs)
	resp, err := http.Get("http://" + ports[1] + "/readyz")
	if err != nil {
		t.Fatalf("after a rejected config file: %v", err)
	}
	resp.Body.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("serve after SIGTERM: %v", exitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit within 30 s of SIGTERM")
	}

	// The same file at start: serve refuses it, naming the key and file.
	out, err := exec.Command(bin, "serve", "--config", cfgFile).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("serve with an unknown key: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `unknown key "colour"`) || !strings.Contains(string(out), cfgFile) {
		t.Fatalf("the error does not name the key and the file:\n%s", out)
	}
}
