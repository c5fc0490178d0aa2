package wire

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

func TestUTF7(t *testing.T) {
	for _, c := range []struct{ wire, utf8 string }{
		{"INBOX", "INBOX"},
		{"Entw&APw-rfe", "Entwürfe"},
		{"&-", "&"},
		{"a&-b", "a&b"},
		{"&ZeVnLIqe-", "日本語"},
		{"&2D3eAA-", "😀"},
	} {
		got, err := decodeUTF7(c.wire)
		if err != nil || got != c.utf8 {
			t.Errorf("decode %q = %q, %v; want %q", c.wire, got, err, c.utf8)
		}
		if enc := encodeUTF7(c.utf8); enc != c.wire {
			t.Errorf("encode %q = %q, want %q", c.utf8, enc, c.wire)
		}
	}
	for _, bad := range []string{"&Jjo", "&-x&", "&AGE-", "&APw-&APw-", "a\x01", "&2D0-", "é"} {
		if got, err := decodeUTF7(bad); err == nil {
			t.Errorf("decode %q = %q, want an error", bad, got)
		}
	}
}

func TestMatchList(t *testing.T) {
	for _, c := range []struct {
		name, ref, pattern string
		want               bool
	}{
		{"INBOX", "", "*", true},
		{"a/b/c", "", "*", true},
		{"a/b", "", "a/%", true},
		{"a/b/c", "", "a/%", false},
		{"a/b/c", "", "a/%/c", true},
		{"a", "", "%", true},
		{"a/b", "", "%", false},
		{"a/b", "a/", "b", true},
		{"a/b", "a/", "/b", true},
		{"ab", "", "a", false},
		{"", "", "", true},
	} {
		if got := MatchList(c.name, '/', c.ref, c.pattern); got != c.want {
			t.Errorf("MatchList(%q, %q, %q) = %v", c.name, c.ref, c.pattern, got)
		}
	}
}

func TestWriteThread(t *testing.T) {
	for _, c := range []struct {
		t    Thread
		want string
	}{
		{Thread{Num: 1}, "(1)"},
		{Thread{Num: 3, Children: []Thread{{Num: 2, Children: []Thread{{Num: 4}}}}}, "(3 2 4)"},
		{Thread{Num: 3, Children: []Thread{{Num: 2}, {Num: 4}}}, "(3 (2)(4))"},
		{Thread{Children: []Thread{{Num: 2}, {Num: 4}}}, "((2)(4))"},
		{Thread{Children: []Thread{{Num: 2}}}, "(2)"},
		{Thread{Num: 1, Children: []Thread{{Num: 2, Children: []Thread{{Num: 3}, {Num: 5}}}}}, "(1 2 (3)(5))"},
	} {
		var b bytes.Buffer
		e := &enc{w: bufio.NewWriter(&b)}
		e.raw("(")
		writeThread(e, c.t)
		e.raw(")")
		e.w.Flush()
		if b.String() != c.want {
			t.Errorf("%+v: %q, want %q", c.t, b.String(), c.want)
		}
	}
}

// TestLineReader: lines end at LF (CRLF stripped), an over-long line is
// read to its end and reported, and an idle reader holds no buffer.
func TestLineReader(t *testing.T) {
	in := "a1 NOOP\r\nb2 " + strings.Repeat("x", MaxLine) + "\r\nc3 LOGOUT\n"
	lr := &lineReader{src: strings.NewReader(in)}
	if err := lr.wait(); err != nil {
		t.Fatal(err)
	}
	l, err := lr.readLine(nil, MaxLine)
	if string(l) != "a1 NOOP" || err != nil {
		t.Fatalf("line 1: %q %v", l, err)
	}
	if l, err = lr.readLine(nil, MaxLine); err != errLineTooLong || !strings.HasPrefix(string(l), "b2 ") {
		t.Fatalf("line 2: %v", err)
	}
	if l, err = lr.readLine(nil, MaxLine); string(l) != "c3 LOGOUT" || err != nil {
		t.Fatalf("line 3: %q %v", l, err)
	}
	lr.release()
	if lr.buf != nil {
		t.Error("an idle reader holds its buffer")
	}
}
