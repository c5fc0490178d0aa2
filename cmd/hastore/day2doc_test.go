package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// day2Commands returns every `hastore ...` command in the sh blocks of
// docs/day2.md, continuation lines joined and shell variables left as
// they are.
func day2Commands(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/day2.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	for _, b := range blocks {
		text := strings.ReplaceAll(b[1], "\\\n", " ")
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			// Commands may follow "&&", "(", "<(" or "do" on a line.
			for _, m := range regexp.MustCompile(`(?:^|[;&(|]\s*|<\(|\bdo\s+)(hastore [^;&|)#]*)`).FindAllStringSubmatch(line, -1) {
				cmds = append(cmds, strings.Join(strings.Fields(m[1]), " "))
			}
		}
	}
	if len(cmds) < 10 {
		t.Fatalf("found only %d hastore commands in docs/day2.md: %q", len(cmds), cmds)
	}
	return cmds
}

// TestDay2DocCommands: every hastore command docs/day2.md shows exists:
// serve's flags are serve's, admin's command words are in admin's usage
// with the flags it takes.
func TestDay2DocCommands(t *testing.T) {
	usage := adminUsage
	for _, cmd := range day2Commands(t) {
		args := strings.Fields(cmd)[1:]
		switch args[0] {
		case "serve":
			fs, _ := newServeFlags()
			fs.SetOutput(io.Discard)
			// Shell variables stand for values: any text parses.
			for i, a := range args {
				args[i] = strings.ReplaceAll(a, "$i", "1")
			}
			if err := fs.Parse(args[1:]); err != nil {
				t.Errorf("%s: %v", cmd, err)
			} else if fs.NArg() > 0 {
				t.Errorf("%s: arguments left over: %q", cmd, fs.Args())
			}
		case "admin":
			rest := args[1:]
			for len(rest) > 1 && strings.HasPrefix(rest[0], "--") { // global flags
				if rest[0] != "--addr" && rest[0] != "--cred" && rest[0] != "--timeout" {
					t.Errorf("%s: unknown global flag %s", cmd, rest[0])
				}
				rest = rest[2:]
			}
			if len(rest) == 0 {
				t.Errorf("%s: no admin command", cmd)
				continue
			}
			// The usage lists each command by its first one or two
			// words ("node remove ID", "cred issue node|admin|mount").
			words := rest[0]
			if len(rest) > 1 && !strings.HasPrefix(rest[1], "-") && !strings.ContainsAny(rest[1], "/$.") {
				words += " " + rest[1]
			}
			if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(words) + `\b`).MatchString(usage) {
				t.Errorf("%s: %q is not an admin command (see adminUsage)", cmd, words)
			}
			for _, a := range rest {
				if strings.HasPrefix(a, "--") && !strings.Contains(usage, a) {
					t.Errorf("%s: admin's usage shows no flag %s", cmd, a)
				}
			}
		default:
			t.Errorf("%s: hastore has no command %q", cmd, args[0])
		}
	}
}

// TestDay2DocConfigSnippet: the TOML snippet of "Changing limits without a
// restart" is a setting serve takes, and one SIGHUP applies live.
func TestDay2DocConfigSnippet(t *testing.T) {
	doc, err := os.ReadFile("../../docs/day2.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(string(doc))
	if m == nil {
		t.Fatal("docs/day2.md has no toml snippet")
	}
	path := filepath.Join(t.TempDir(), "hastore.toml")
	if err := os.WriteFile(path, []byte(m[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, _ := newServeFlags()
	vals, err := readConfig(fs, path)
	if err != nil {
		t.Fatalf("the documented snippet: %v", err)
	}
	for name, v := range vals {
		set, ok := liveKeys[name]
		if !ok {
			t.Errorf("%s is shown as applied on SIGHUP but is not a live key", name)
			continue
		}
		if _, err := set(v.value); err != nil {
			t.Errorf("%s = %s: %v", name, v.value, err)
		}
	}
}
