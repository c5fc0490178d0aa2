package mailbox

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/mailstate"
)

type mboxWant struct {
	body  string
	flags []string
	date  time.Time
	big   bool
}

func readAllMbox(t *testing.T, in string, max int64) []*MboxMessage {
	t.Helper()
	r := NewMboxReader(strings.NewReader(in), max)
	var out []*MboxMessage
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
}

func TestMboxReader(t *testing.T) {
	d1 := time.Date(2026, 12, 2, 7, 56, 54, 0, time.UTC)
	d2 := time.Date(2025, 1, 15, 23, 1, 2, 0, time.UTC)
	for _, tc := range []struct {
		name string
		in   string
		max  int64
		want []mboxWant
	}{
		{"empty file", "", 1 << 20, nil},
		{"text before the first From is no message", "junk\n\nFrom a@b Wed Dec  2 07:56:54 2026\nSubject: x\n\nhi\n",
			1 << 20, []mboxWant{{body: "Subject: x\r\n\r\nhi\r\n", date: d1}}},
		{"two messages, separator blank line dropped",
			"From a@b Wed Dec  2 07:56:54 2026\nSubject: one\n\nbody one\n\nFrom c@d Wed Jan 15 23:01:02 2025\nSubject: two\n\nbody two\n\n",
			1 << 20, []mboxWant{{body: "Subject: one\r\n\r\nbody one\r\n", date: d1}, {body: "Subject: two\r\n\r\nbody two\r\n", date: d2}}},
		{"mboxrd unquoting",
			"From a@b Wed Dec  2 07:56:54 2026\nSubject: q\n\n>From here\n>>From there\n> From not\nx >From y\n\n",
			1 << 20, []mboxWant{{body: "Subject: q\r\n\r\nFrom here\r\n>From there\r\n> From not\r\nx >From y\r\n", date: d1}}},
		{"an unquoted From in text without a date stays body",
			"From a@b Wed Dec  2 07:56:54 2026\nSubject: u\n\nline\nFrom me to you\n",
			1 << 20, []mboxWant{{body: "Subject: u\r\n\r\nline\r\nFrom me to you\r\n", date: d1}}},
		{"flags from Status, X-Status, X-Keywords; state headers removed",
			"From a@b Wed Dec  2 07:56:54 2026\nSubject: f\nStatus: RO\nX-Status: AFT\nX-Keywords: $Label1 Junk,\n work\nX-UID: 7\nContent-Length: 5\nTo: t@u\n\nbody\nStatus: not a header\n",
			1 << 20, []mboxWant{{body: "Subject: f\r\nTo: t@u\r\n\r\nbody\r\nStatus: not a header\r\n", date: d1,
				flags: []string{mailstate.FlagSeen, mailstate.FlagAnswered, mailstate.FlagFlagged, mailstate.FlagDraft, "$Label1", "Junk", "work"}}}},
		{"O alone is not seen; D is deleted",
			"From a@b Wed Dec  2 07:56:54 2026\nStatus: O\nX-Status: D\nSubject: d\n\nb\n",
			1 << 20, []mboxWant{{body: "Subject: d\r\n\r\nb\r\n", date: d1, flags: []string{mailstate.FlagDeleted}}}},
		{"no trailing newline",
			"From a@b Wed Dec  2 07:56:54 2026\nSubject: n\n\nlast line",
			1 << 20, []mboxWant{{body: "Subject: n\r\n\r\nlast line", date: d1}}},
		{"CRLF input",
			"From a@b Wed Dec  2 07:56:54 2026\r\nSubject: c\r\nStatus: R\r\n\r\n>From x\r\n\r\nFrom c@d Wed Jan 15 23:01:02 2025\r\nSubject: d\r\n\r\ny\r\n",
			1 << 20, []mboxWant{{body: "Subject: c\r\n\r\nFrom x\r\n", date: d1, flags: []string{mailstate.FlagSeen}}, {body: "Subject: d\r\n\r\ny\r\n", date: d2}}},
		{"dates: zone, no sender, unreadable",
			"From a@b Wed Dec  2 07:56:54 2026 +0100\nS: 1\n\nFrom  Wed Dec  2 07:56:54 2026\nS: 2\n\nFrom a@b yesterday\nS: 3\n",
			1 << 20, []mboxWant{
				{body: "S: 1\r\n", date: time.Date(2026, 12, 2, 7, 56, 54, 0, time.FixedZone("", 3600))},
				{body: "S: 2\r\n", date: d1},
				{body: "S: 3\r\n"}}},
		{"UW-IMAP's first pseudo message is skipped",
			"From MAILER-DAEMON Wed Dec  2 07:56:54 2026\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1234 0000000002\nStatus: RO\n\nThis text is part of the internal format\n\nFrom c@d Wed Jan 15 23:01:02 2025\nS: s\n\nok\n",
			1 << 20, []mboxWant{{body: "S: s\r\n\r\nok\r\n", date: d2}}},
		{"a message over the limit is skipped, the next is read",
			"From a@b Wed Dec  2 07:56:54 2026\nSubject: big\n\n0123456789012345678901234567890123456789\n\nFrom c@d Wed Jan 15 23:01:02 2025\nS: s\n\nok\n",
			32, []mboxWant{{big: true, date: d1}, {body: "S: s\r\n\r\nok\r\n", date: d2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := readAllMbox(t, tc.in, tc.max)
			if len(got) != len(tc.want) {
				t.Fatalf("%d messages, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.TooBig != w.big || string(g.Body) != w.body {
					t.Errorf("message %d: big %v body %q, want big %v body %q", i, g.TooBig, g.Body, w.big, w.body)
				}
				if !reflect.DeepEqual(g.Flags, w.flags) {
					t.Errorf("message %d: flags %q, want %q", i, g.Flags, w.flags)
				}
				if !g.InternalDate.Equal(w.date) || g.InternalDate.IsZero() != w.date.IsZero() {
					t.Errorf("message %d: date %v, want %v", i, g.InternalDate, w.date)
				}
				if !w.big && (g.Size != int64(len(w.body)) || !strings.HasPrefix(g.Key, "mbox:")) {
					t.Errorf("message %d: size %d key %q", i, g.Size, g.Key)
				}
			}
		})
	}
}

// The key is stable across reads, also when messages before it move or
// go (Dovecot rewrites the file), and tells apart different messages and
// identical copies.
func TestMboxKeys(t *testing.T) {
	a := "From a@b Wed Dec  2 07:56:54 2026\nSubject: one\n\nx\n"
	b := "From a@b Wed Dec  2 07:56:54 2026\nSubject: two\n\nx\n"
	keys := func(in string) []string {
		var k []string
		for _, m := range readAllMbox(t, in, 1<<20) {
			k = append(k, m.Key)
		}
		return k
	}
	ka, kb := keys(a), keys(b)
	if ka[0] == kb[0] {
		t.Fatalf("two messages, one key %q", ka[0])
	}
	// b before a: a's key is unchanged; a twice: the copy has its own key.
	if k := keys(b + "\n" + a); k[1] != ka[0] || k[0] != kb[0] {
		t.Fatalf("keys %q, want [%q %q]", k, kb[0], ka[0])
	}
	if k := keys(a + "\n" + a); k[0] != ka[0] || k[1] == k[0] {
		t.Fatalf("keys of a message and its copy: %q", k)
	}
}

// What WriteMboxMessage writes, NewMboxReader reads back: bytes (CRLF,
// ending in a line end), flags and date (to the second).
func TestMboxWriteRead(t *testing.T) {
	date := time.Date(2024, 2, 29, 13, 4, 5, 0, time.FixedZone("", -5*3600))
	for _, tc := range []struct {
		name  string
		body  string
		flags []string
	}{
		{"plain", "Subject: a\r\n\r\nhello\r\n", nil},
		{"all flags", "Subject: b\r\n\r\nx\r\n", []string{mailstate.FlagSeen, mailstate.FlagAnswered, mailstate.FlagFlagged, mailstate.FlagDeleted, mailstate.FlagDraft, "$Label1", "Work"}},
		{"From lines quoted", "Subject: c\r\n\r\nFrom here\r\n>From there\r\n\r\nFrom a@b Wed Dec  2 07:56:54 2026\r\n", []string{mailstate.FlagSeen}},
		{"headers only", "Subject: d\r\nTo: e@f\r\n", nil},
		{"no trailing newline in", "Subject: e\r\n\r\nend", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			for range 2 {
				if err := WriteMboxMessage(&buf, []byte(tc.body), tc.flags, date); err != nil {
					t.Fatal(err)
				}
			}
			got := readAllMbox(t, buf.String(), 1<<20)
			want := tc.body
			if !strings.HasSuffix(want, "\r\n") {
				want += "\r\n"
			}
			if len(got) != 2 {
				t.Fatalf("%d messages read back from\n%s", len(got), buf.String())
			}
			for _, m := range got {
				if string(m.Body) != want || !reflect.DeepEqual(m.Flags, tc.flags) || !m.InternalDate.Equal(date) {
					t.Errorf("read back %q %q %v, want %q %q %v\nfrom\n%s", m.Body, m.Flags, m.InternalDate, want, tc.flags, date, buf.String())
				}
			}
		})
	}
}
