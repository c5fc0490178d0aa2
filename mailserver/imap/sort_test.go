package imap

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap/wire"
	"hastore/mailserver/mailbox"
)

// threadString renders threads as a THREAD response does (RFC 5256 4).
func threadString(ts []wire.Thread) string {
	var b strings.Builder
	var one func(t wire.Thread)
	one = func(t wire.Thread) {
		for {
			if t.Num != 0 {
				b.WriteString(strconv.Itoa(int(t.Num)))
			}
			if len(t.Children) == 0 {
				return
			}
			if t.Num != 0 {
				b.WriteByte(' ')
			}
			if len(t.Children) == 1 {
				t = t.Children[0]
				continue
			}
			for _, ch := range t.Children {
				b.WriteByte('(')
				one(ch)
				b.WriteByte(')')
			}
			return
		}
	}
	for _, t := range ts {
		b.WriteByte('(')
		one(t)
		b.WriteByte(')')
	}
	return b.String()
}

// TestReferencesThreads checks the steps of RFC 5256 3 REFERENCES that
// the conformance script does not reach: dummy pruning below the root,
// subject merging, loops and duplicate Message-IDs.
func TestReferencesThreads(t *testing.T) {
	type msg struct {
		id, subject string
		refs        []string
	}
	for _, tc := range []struct {
		name string
		msgs []msg // message n (1-based) is sent on day n
		want string
	}{
		{"chain", []msg{{"a", "x", nil}, {"b", "re: x", []string{"a"}}, {"c", "re: x", []string{"a", "b"}}}, "(1 2 3)"},
		{"two replies", []msg{{"a", "x", nil}, {"b", "re: x", []string{"a"}}, {"c", "re: x", []string{"a"}}}, "(1 (2)(3))"},
		{"root dummy with two children stays", []msg{{"b", "p", []string{"gone"}}, {"c", "q", []string{"gone"}}}, "((1)(2))"},
		{"root dummy with one child goes", []msg{{"b", "p", []string{"gone"}}, {"c", "q", nil}}, "(1)(2)"},
		{"inner dummy goes", []msg{{"a", "x", nil}, {"c", "re: x", []string{"a", "gone"}}, {"d", "re: x", []string{"a", "gone"}}}, "(1 (2)(3))"},
		{"reply without references joins by subject", []msg{{"a", "Lunch", nil}, {"b", "Re: lunch", nil}}, "(1 2)"},
		{"same subject, no reply: a dummy", []msg{{"a", "lunch", nil}, {"b", "lunch", nil}}, "((1)(2))"},
		{"root dummies of one subject merge", []msg{{"b", "s", []string{"g1"}}, {"c", "s", []string{"g1"}}, {"d", "s", []string{"g2"}}, {"e", "s", []string{"g2"}}}, "((1)(2)(3)(4))"},
		{"loop: the later message wins", []msg{{"a", "x", []string{"b"}}, {"b", "y", []string{"a"}}}, "(2 1)"},
		{"duplicate Message-ID", []msg{{"a", "x", nil}, {"a", "y", nil}, {"c", "z", []string{"a"}}}, "(1 3)(2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var items []*sortable
			day := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
			for i, m := range tc.msgs {
				it := &sortable{seq: uint32(i + 1), uid: uint32(i + 1), env: &mailbox.Envelope{MessageID: "<" + m.id + ">"}, date: day.AddDate(0, 0, i), refs: m.refs}
				it.subject, it.reply = subjectBase(m.subject)
				items = append(items, it)
			}
			got := threadString(referencesThreads(items, func(it *sortable) uint32 { return it.seq }))
			if got != tc.want {
				t.Errorf("THREAD REFERENCES = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSubjectBase(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		reply    bool
	}{
		{"Apples", "apples", false},
		{"Re: Apples", "apples", true},
		{"[list] Apples", "apples", false},
		{"[list] Fwd: apples", "apples", true},
		{"Apples (fwd)", "apples", true},
		{"[Fwd: Apples]", "apples", true},
		{"Apples  ", "apples", false},
	} {
		got, reply := subjectBase(tc.in)
		if got != tc.want || reply != tc.reply {
			t.Errorf("subjectBase(%q) = %q, %v; want %q, %v", tc.in, got, reply, tc.want, tc.reply)
		}
	}
}
