package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeConfigFile: serve's --config sets every kind of flag, a flag on
// the command line wins over the file, and a key that is no flag, or a
// value a flag refuses, is an error naming the key and the file.
func TestServeConfigFile(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		args    []string
		check   func(t *testing.T, o *serveOpts)
		wantErr []string // substrings of the error; nil: no error
	}{
		{
			name: "flat keys of every type",
			file: `
node = "n1"
data = "/var/lib/hastore"
listen = "10.0.0.1:7101"
peers = ["n1=10.0.0.1:7101", "n2=10.0.0.2:7101"]
insecure = true
small-object = 4096
grace = "2h"
reserve = 1073741824
log-level = "debug"
log-format = "json"
smtp = ":25"
mail-max-connections = 5000
http = ":80"
metrics = "127.0.0.1:9464"
`,
			check: func(t *testing.T, o *serveOpts) {
				if o.id != "n1" || o.dataDir != "/var/lib/hastore" || o.listen != "10.0.0.1:7101" ||
					o.peers != "n1=10.0.0.1:7101,n2=10.0.0.2:7101" || !o.nf.insecure || o.nf.smallObject != 4096 ||
					o.nf.grace != 2*time.Hour || o.nf.storeReserve != 1<<30 || o.nf.logLevel != "debug" ||
					o.nf.logFormat != "json" || o.mf.smtp != ":25" || o.mf.maxConns != 5000 || o.httpAddr != ":80" ||
					o.of.metrics != "127.0.0.1:9464" {
					t.Errorf("settings: %+v", o)
				}
			},
		},
		{
			name: "tables name the flags' prefixes",
			file: `
node = "n2"
mail-max-connections-per-ip = 3
[raft]
heartbeat = "2s"
election = "3s"
[mail.max]
connections = 7
`,
			check: func(t *testing.T, o *serveOpts) {
				if o.nf.raft.Heartbeat != 2*time.Second || o.nf.raft.Election != 3*time.Second || o.mf.maxConns != 7 || o.mf.maxConnsIP != 3 {
					t.Errorf("raft %+v, mail max %d per ip %d", o.nf.raft, o.mf.maxConns, o.mf.maxConnsIP)
				}
			},
		},
		{
			name: "the command line overrides the file",
			file: `
node = "n1"
log-level = "warn"
listen = "127.0.0.1:1"
`,
			args: []string{"--log-level", "error", "--listen=127.0.0.1:2"},
			check: func(t *testing.T, o *serveOpts) {
				if o.id != "n1" || o.nf.logLevel != "error" || o.listen != "127.0.0.1:2" {
					t.Errorf("node %q log-level %q listen %q", o.id, o.nf.logLevel, o.listen)
				}
				if strings.Join(o.overridden, ",") != "listen,log-level" {
					t.Errorf("overridden %q", o.overridden)
				}
			},
		},
		{name: "unknown key", file: "node = \"n1\"\nlog_level = \"debug\"\n", wantErr: []string{`unknown key "log_level"`, "serve.toml"}},
		{name: "unknown key in a table", file: "[raft]\nheartbeats = \"1s\"\n", wantErr: []string{`unknown key "raft.heartbeats"`, "serve.toml"}},
		{name: "bad value", file: "grace = \"an hour\"\n", wantErr: []string{"key grace", "serve.toml", "an hour"}},
		{name: "bad type", file: "insecure = \"maybe\"\n", wantErr: []string{"key insecure", "serve.toml"}},
		{name: "setting used as a table", file: "[node]\nid = \"n1\"\n", wantErr: []string{`key "node" is a setting, not a table`}},
		{name: "the same flag twice", file: "raft-heartbeat = \"1s\"\n[raft]\nheartbeat = \"2s\"\n", wantErr: []string{"raft-heartbeat", "sets too"}},
		{name: "no nested config", file: "config = \"other.toml\"\n", wantErr: []string{`key "config"`}},
		{name: "syntax error", file: "node = \n", wantErr: []string{"serve.toml", "line 1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "serve.toml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			o, err := parseServe(append([]string{"--config", path}, tc.args...))
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error; want one saying %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

// TestServeConfigKeysAreFlags: every flag of serve is a key of the file
// (the file's keys are made from the flag set; a value for each is taken).
func TestServeConfigKeysAreFlags(t *testing.T) {
	fs, _ := newServeFlags()
	var b strings.Builder
	n := 0
	for name, v := range flagValues(fs) {
		if name == "config" {
			continue
		}
		b.WriteString(name + " = " + tomlQuote(v) + "\n")
		n++
	}
	if n < 50 {
		t.Fatalf("only %d flags: is this serve's flag set?", n)
	}
	path := filepath.Join(t.TempDir(), "all.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	fs2, _ := newServeFlags()
	if _, err := applyConfig(fs2, path); err != nil {
		t.Fatalf("a file naming every flag with its default: %v", err)
	}
}

func tomlQuote(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}

// TestOperationsDocConfigExample: the example file in docs/operations.md
// ("Configuration file") is one serve accepts, with the values it shows.
func TestOperationsDocConfigExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(doc), "\n## Configuration file\n")
	if !ok {
		t.Fatal(`docs/operations.md has no "Configuration file" section`)
	}
	_, block, ok := strings.Cut(sec, "```toml\n")
	if !ok {
		t.Fatal("the section has no toml example")
	}
	block, _, _ = strings.Cut(block, "```")
	path := filepath.Join(t.TempDir(), "hastore.toml")
	if err := os.WriteFile(path, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseServe([]string{"--config", path})
	if err != nil {
		t.Fatalf("the documented example: %v", err)
	}
	if o.id != "n1" || o.peers != "n1=10.0.0.1:7101,n2=10.0.0.2:7101,n3=10.0.0.3:7101" || o.mf.maxConnsIP != 10 ||
		o.nf.raft.Lease != 500*time.Millisecond || o.nf.logFormat != "json" || o.nf.credDir != "/etc/hastore/node" {
		t.Fatalf("the documented example read as %+v", o)
	}
}
