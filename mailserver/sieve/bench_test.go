package sieve

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkHostile parses and runs scripts near the size limit written to
// cost the most (long :matches keys against a long header, thousands of
// keys, tests, flags and nested MIME parts), to show that each is bounded by Limits:
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
	// A body of nested multiparts, each level full of short lines.
	var body strings.Builder
	for i := 0; i < 12; i++ {
		fmt.Fprintf(&body, "--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n%s", i, i+1, strings.Repeat("x\n", 20000))
	}
	nested := readMessage(b, "Content-Type: multipart/mixed; boundary=b0\n\n"+body.String())
	scripts = append(scripts, struct{ name, src string }{"body", `require "body"; ` + strings.Repeat(`if body :content "" :contains "zzz" {}`, 1500)})
	in := Input{Envelope: Envelope{From: "a@b.example", To: "me@example.com"}, Message: msg}
	for _, sc := range scripts {
		b.Run(sc.name, func(b *testing.B) {
			in := in
			if sc.name == "body" {
				in.Message = nested
			}
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
