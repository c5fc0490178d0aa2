package main

import (
	"bufio"
	"fmt"
	"hash/fnv"
	"net"
	"strings"
	"testing"
	"time"
)

func TestSummaries(t *testing.T) {
	for _, c := range []struct {
		name  string
		sum   func([]string) string
		lines []string
		want  string
	}{
		{"exists", func(l []string) string { return fmt.Sprint(existsOf(l)) }, []string{"* FLAGS (\\Seen)", "* 7 EXISTS"}, "7"},
		{"fetches", fetches, []string{"* 1 FETCH (UID 1)", "* 2 FETCH (UID 2)", "* 3 EXPUNGE", "* OK [HIGHESTMODSEQ 5]"}, "2 FETCH"},
		{"fetch with a literal naming FETCH", fetches, []string{"* 1 FETCH (BODY[] {9}x FETCH y)"}, "1 FETCH"},
		{"sort", numbers("SORT"), []string{"* SORT 3 1 2"}, "3 (#" + hash("3 1 2") + ")"},
		{"empty search", numbers("SEARCH"), []string{"* SEARCH"}, "0 (#" + hash("") + ")"},
		{"no search", numbers("SEARCH"), nil, "no SEARCH"},
		{"threads", threads, []string{"* THREAD (2)(3 6 (4 23)(44 7 96))((11)(12))"}, "3 threads (#" + hash("(2)(3 6 (4 23)(44 7 96))((11)(12))") + ")"},
	} {
		if got := c.sum(c.lines); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func hash(s string) string {
	h := fnv.New32a()
	h.Write([]byte(s))
	return fmt.Sprintf("%08x", h.Sum32())
}

// TestClientLiteral: a response line with literals is read whole, the
// literal's bytes (CRLF inside included) part of it.
func TestClientLiteral(t *testing.T) {
	srv, cl := net.Pipe()
	defer srv.Close()
	c := &client{nc: cl, br: bufio.NewReader(cl), bw: bufio.NewWriter(cl)}
	go func() {
		r := bufio.NewReader(srv)
		line, _ := r.ReadString('\n')
		tag := strings.Fields(line)[0]
		srv.Write([]byte("* 1 FETCH (BODY[] {7}\r\na\r\nb}\r\n FLAGS (\\Seen))\r\n" + tag + " OK done\r\n"))
	}()
	_ = cl.SetDeadline(time.Now().Add(5 * time.Second))
	lines, err := c.run("FETCH 1 (BODY[] FLAGS)")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || lines[0] != "* 1 FETCH (BODY[] {7}a\r\nb}\r\n FLAGS (\\Seen))" {
		t.Fatalf("lines %q", lines)
	}
}
