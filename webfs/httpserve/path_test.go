package httpserve

import (
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodePath(t *testing.T) {
	for raw, want := range map[string]string{
		"/":                    "/",
		"/a":                   "/a",
		"/a/":                  "/a/",
		"/a/b.html":            "/a/b.html",
		"/a%20b":               "/a b",
		"/a%2520b":             "/a%20b",
		"/caf%C3%A9":           "/caf\u00e9",
		"/caf\u00e9":           "/caf\u00e9",
		"/%3f%23%3B":           "/?#;",
		"/...":                 "/...",
		"/..a/.b/a..":          "/..a/.b/a..",
		"/.well-known/x":       "/.well-known/x",
		"/100%25":              "/100%",
		"/a%25zz":              "/a%zz", // a literal percent not followed by an escape
		"/%ef%bc%8e%ef%bc%8e/": "/\uff0e\uff0e/",
	} {
		got, err := decodePath(raw)
		if err != nil || got != want {
			t.Errorf("decodePath(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	for _, raw := range []string{
		"", "a", "*", "..", "/..", "/../a", "/a/..", "/a/../b", "/.", "/./a", "/a/.", "/a/./", "//", "//a", "/a//b", "/a/b//",
		"/%2e", "/%2E", "/%2e%2e", "/.%2e", "/a%2eb", "/a%2fb", "/a%2F", "/a%5cb", "/a%5C", "/a\\b", "\\a", "/a%00",
		"/a%0a", "/a%0D", "/a%7f", "/a%1f", "/a\x00", "/a\n", "/a\x7f", "/%252e", "/%252E%252e", "/%252f", "/%255c",
		"/%2500", "/%2525", "/%25252e", "/%c0%ae", "/%c0%af", "/%ff", "/%80", "/a%", "/a%2", "/a%zz", "/a%g0",
		"/" + strings.Repeat("a", MaxPath),
	} {
		if got, err := decodePath(raw); err == nil {
			t.Errorf("decodePath(%q) = %q; want an error", raw, got)
		}
	}
}

// FuzzDecodePath checks the promise of decodePath on any input: what it
// accepts is a canonical path that no further decoding turns into a trick.
func FuzzDecodePath(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "/a%2fb", "/%2e%2e/", "/a%252e", "/a\\b", "/caf%C3%A9", "/a%2520b", "/%c0%ae"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := decodePath(raw)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/") || !utf8.ValidString(p) || strings.ContainsAny(p, "\\\x00\r\n") {
			t.Fatalf("decodePath(%q) = %q", raw, p)
		}
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && p != "/" {
			clean += "/"
		}
		if clean != p {
			t.Fatalf("decodePath(%q) = %q, not clean (%q)", raw, p, clean)
		}
		// A second decoding, as a careless proxy might do, yields no
		// dot segment, slash, backslash or NUL that was not there.
		again := lenientUnescape(p)
		if strings.Count(again, "/") != strings.Count(p, "/") || strings.ContainsAny(again, "\\\x00") {
			t.Fatalf("decodePath(%q) = %q decodes again to %q", raw, p, again)
		}
		for _, seg := range strings.Split(again, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("decodePath(%q) = %q decodes again to %q", raw, p, again)
			}
		}
	})
}

// lenientUnescape decodes every valid %XX and leaves the rest.
func lenientUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
