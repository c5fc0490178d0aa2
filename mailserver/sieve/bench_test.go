package sieve

import (
	"context"
	"strings"
	"testing"
)

// BenchmarkHostile parses and runs scripts near the size limit written to
// cost the most (long :matches keys against a long header, thousands of
// keys, tests and flags), to show that each is bounded by Limits:
//
//	go test -run '^$' -bench Hostile -benchtime 3x ./mailserver/sieve/
func BenchmarkHostile(b *testing.B) {
	msg := readMessage(b, "To: me@example.com\nSubject: "+strings.Repeat("a", 60000)+
		"\nReceived: "+strings.Repeat("x", 60000)+"\n\nx\n")
	scripts := []struct{ name, src string }{
		{"matches", strings.Repeat(`if header :matches "subject" "*`+strings.Repeat("a", 200)+`b" {}`+"\n", 250)},
		{"keys", `if header :is ["subject","received"] [` + strings.Repeat(`"a",`, 15000) + `"b"] {}`},
		{"address", strings.Repeat(`if address :contains "subject" "b" {}`, 1700)},
		{"allof", `if allof (` + strings.Repeat("true,", 12000) + `true) {}`},
		{"keeps", `require "imap4flags"; ` + strings.Repeat(`keep :flags "x y z";`, 3000)},
		{"flags", `require "imap4flags"; setflag "` + strings.Repeat("a ", 30000) + `";`},
		{"hasflag", `require "imap4flags"; addflag "` + strings.Repeat("a", 50) + `"; ` + strings.Repeat(`if hasflag :matches "*a*a*a*b" {}`, 1700)},
	}
	in := Input{Envelope: Envelope{From: "a@b.example", To: "me@example.com"}, Message: msg}
	for _, sc := range scripts {
		b.Run(sc.name, func(b *testing.B) {
			for b.Loop() {
				s, err := Parse([]byte(sc.src), Limits{})
				if err != nil {
					b.Fatal(err)
				}
				s.Execute(context.Background(), in) // a RuntimeError (budget spent) is expected for some
			}
		})
	}
}
