//go:build linux

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hastore/replica/transport"
	"hastore/testing/cluster"
)

// TestLogFormatFlag: dev and mount write their log as JSON objects with
// --log-format json (serve's is checked in TestServeConfigProcess), and
// serve, dev and mount refuse a format they do not know. The runs stop
// early on purpose (a refused Raft timing, a missing mount point), after
// the log is set up and its first line written: no ports, no FUSE.
func TestLogFormatFlag(t *testing.T) {
	bin := cluster.HastoreBinary(t)
	dir := t.TempDir()
	run := func(args ...string) (lines []string, err error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CRED=", "HASTORE_CLUSTER_KEY_FILE=")
		out, err := cmd.CombinedOutput()
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
		return lines, err
	}
	key, err := transport.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		lastErr string // the command's error, its last line
	}{
		{"dev", []string{"dev", "--dir", filepath.Join(dir, "dev"), "--cluster-tls=false", "--log-format", "json", "--raft-lease", "5s"},
			"hastore dev: --raft-lease 5s exceeds"},
		{"mount", []string{"mount", "--log-format", "json", "--addr", "127.0.0.1:1", "--cluster-key-file", keyFile, "--site", "s.test", filepath.Join(dir, "nosuchdir")},
			"hastore mount: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, err := run(tc.args...)
			if err == nil || len(lines) < 2 {
				t.Fatalf("want a log line and an error; got %v:\n%s", err, strings.Join(lines, "\n"))
			}
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, tc.lastErr) {
				t.Fatalf("last line %q; want the error %q", last, tc.lastErr)
			}
			for _, l := range lines[:len(lines)-1] {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil || m["msg"] == nil || m["level"] == nil || m["time"] == nil {
					t.Fatalf("log line is not a JSON record: %q", l)
				}
			}
		})
	}
	for _, cmd := range [][]string{
		{"serve", "--log-format", "yaml", "--node", "n1", "--data", dir, "--listen", "127.0.0.1:1", "--cluster-key-file", keyFile, "--insecure"},
		{"dev", "--log-format", "yaml", "--dir", filepath.Join(dir, "dev2")},
		{"mount", "--log-format", "yaml", "--addr", "127.0.0.1:1", "--cluster-key-file", keyFile, "--site", "s.test", dir},
	} {
		lines, err := run(cmd...)
		if err == nil || len(lines) == 0 || !strings.Contains(lines[len(lines)-1], `--log-format "yaml": want text or json`) {
			t.Errorf("%s --log-format yaml: %v\n%s", cmd[0], err, strings.Join(lines, "\n"))
		}
	}
}
