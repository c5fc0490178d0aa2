package main

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The corpus: one mailbox of messages that look like a mail user's INBOX —
// senders from a few hundred people, subjects drawn from a vocabulary,
// a quarter of them replies that form threads (In-Reply-To, References,
// "Re: "), Date: headers out of arrival order in several time zones, plain
// text, some HTML alternatives and some attachments, 70% seen. It is
// written as a Dovecot maildir with a dovecot-uidlist, so that both
// systems number the messages alike: Dovecot reads the maildir itself,
// hastore imports it (`hastore admin import`, which keeps those UIDs), and
// the results of SORT, THREAD and SEARCH can be compared between them.

var (
	firstNames = strings.Fields("Alice Bob Carol Dave Eve Frank Grace Heidi Ivan Judy Karl Laura Mallory Nina Oscar Peggy Quentin Rupert Sybil Trent Ursula Victor Wendy Xavier Yvonne Zoe Anna Bernd Chloé Dmitri Élodie Fatima Günter Hiroshi Ingrid Jörg Kenji Lucía Mehmet Noor")
	lastNames  = strings.Fields("Adams Baker Clark Davis Evans Fischer Garcia Hughes Ito Jensen Kowalski Lopez Müller Nakamura Olsen Patel Quinn Rossi Schmidt Tanaka Ueda Vogel Weber Xu Yilmaz Zimmermann Andersson Brown Costa Dubois")
	domains    = strings.Fields("example.com example.org mail.example.net corp.example agency.example shop.example")
	words      = strings.Fields("meeting budget project report invoice schedule review update proposal contract release server migration backup deadline travel lunch feedback design customer support order delivery payment account password security holiday office team plan draft agenda minutes notes question answer issue ticket website hosting domain certificate renewal newsletter offer discount event webinar training")
	zones      = []string{"+0000", "+0100", "+0200", "-0500", "-0800", "+0530", "+0900"}
)

// SearchWord is the word the TEXT search looks for: in about one message
// of thirty, in its body only.
const SearchWord = "quarterly"

type corpusMsg struct {
	name  string // maildir base name (before ":2,")
	flags string // maildir flags, e.g. "S", "FS"
	data  []byte
	uid   int
}

type corpus struct {
	msgs        []corpusMsg
	uidValidity uint32
	bytes       int64
	unseen      int
	withWord    int
}

type thread struct {
	subject string
	refs    []string
}

// makeCorpus generates n messages from a fixed seed (the same corpus on
// every run and for both systems).
func makeCorpus(n int) *corpus {
	r := rand.New(rand.NewPCG(12, 2026))
	c := &corpus{uidValidity: 1700000000}
	var recent []thread // threads a reply may continue
	start := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		first, last := firstNames[r.IntN(len(firstNames))], lastNames[r.IntN(len(lastNames))]
		// A few hundred senders, some writing often.
		if r.IntN(3) == 0 {
			first, last = firstNames[r.IntN(6)], lastNames[r.IntN(4)]
		}
		dom := domains[r.IntN(len(domains))]
		addr := strings.ToLower(asciiOnly(first) + "." + asciiOnly(last) + "@" + dom)
		from := fmt.Sprintf("%s %s <%s>", first, last, addr)
		if r.IntN(10) == 0 {
			from = addr // some senders without a display name
		}
		msgID := fmt.Sprintf("<%d.%x@%s>", i, r.Uint32(), dom)
		var subject string
		var refs []string
		if len(recent) > 0 && r.IntN(4) == 0 {
			t := &recent[r.IntN(len(recent))]
			subject = "Re: " + t.subject
			refs = append([]string(nil), t.refs...)
			t.refs = append(t.refs, msgID)
		} else {
			k := 2 + r.IntN(4)
			var ws []string
			for range k {
				ws = append(ws, words[r.IntN(len(words))])
			}
			ws[0] = strings.ToUpper(ws[0][:1]) + ws[0][1:]
			subject = strings.Join(ws, " ")
			if r.IntN(15) == 0 {
				subject += " – " + firstNames[26+r.IntN(14)] // non-ASCII: an encoded word
			}
			recent = append(recent, thread{subject: subject, refs: []string{msgID}})
			if len(recent) > 300 {
				recent = recent[1:]
			}
		}
		// Date: within two years, not in arrival order.
		date := start.Add(time.Duration(r.Int64N(int64(2 * 365 * 24 * time.Hour))))
		zone := zones[r.IntN(len(zones))]
		var h strings.Builder
		fmt.Fprintf(&h, "Return-Path: <%s>\r\n", addr)
		fmt.Fprintf(&h, "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\r\n\tby mail.bench.test with ESMTPS id %X\r\n\tfor <%s>; %s\r\n",
			r.IntN(4), dom, r.IntN(4), dom, 1+r.IntN(250), r.Uint64(), benchUser, date.Format(time.RFC1123Z))
		fmt.Fprintf(&h, "From: %s\r\nTo: Bench User <%s>\r\n", encodeHeader(from), benchUser)
		if r.IntN(5) == 0 {
			fmt.Fprintf(&h, "Cc: %s <%s@%s>\r\n", firstNames[r.IntN(26)], strings.ToLower(firstNames[r.IntN(26)]), domains[r.IntN(len(domains))])
		}
		fmt.Fprintf(&h, "Subject: %s\r\nDate: %s %s\r\nMessage-ID: %s\r\n", encodeHeader(subject), date.Format("Mon, 02 Jan 2006 15:04:05"), zone, msgID)
		if len(refs) > 0 {
			fmt.Fprintf(&h, "In-Reply-To: %s\r\nReferences: %s\r\n", refs[len(refs)-1], strings.Join(refs, "\r\n "))
		}
		fmt.Fprintf(&h, "MIME-Version: 1.0\r\nX-Mailer: BenchMail %d.%d\r\n", 1+r.IntN(5), r.IntN(10))
		withWord := r.IntN(30) == 0
		text := bodyText(r, 8+r.IntN(50), withWord)
		if withWord {
			c.withWord++
		}
		var body string
		switch k := r.IntN(20); {
		case k < 2: // HTML alternative
			b := fmt.Sprintf("alt-%d", i)
			body = "Content-Type: multipart/alternative; boundary=\"" + b + "\"\r\n\r\n--" + b +
				"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "--" + b +
				"\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>" +
				strings.ReplaceAll(text, "\r\n\r\n", "</p>\r\n<p>") + "</p></body></html>\r\n--" + b + "--\r\n"
		case k < 3: // an attachment
			b := fmt.Sprintf("mix-%d", i)
			att := make([]byte, 8000+r.IntN(30000))
			for j := range att {
				att[j] = byte(r.Uint32())
			}
			body = "Content-Type: multipart/mixed; boundary=\"" + b + "\"\r\n\r\n--" + b +
				"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "--" + b +
				"\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
				wrap(base64.StdEncoding.EncodeToString(att)) + "--" + b + "--\r\n"
		default:
			body = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text
		}
		data := []byte(h.String() + body)
		flags := ""
		if r.IntN(10) == 0 {
			flags += "F"
		}
		if r.IntN(10) == 0 {
			flags += "R"
		}
		if r.IntN(10) < 7 {
			flags += "S"
		} else {
			c.unseen++
		}
		name := fmt.Sprintf("%d.M%dP%d.bench,S=%d", 1700000000+i*60, i, 1000+i, len(data))
		c.msgs = append(c.msgs, corpusMsg{name: name, flags: flags, data: data, uid: i + 1})
		c.bytes += int64(len(data))
	}
	return c
}

func bodyText(r *rand.Rand, lines int, withWord bool) string {
	var b strings.Builder
	wordAt := -1
	if withWord {
		wordAt = r.IntN(lines)
	}
	for l := range lines {
		n := 6 + r.IntN(9)
		for w := range n {
			if w > 0 {
				b.WriteByte(' ')
			}
			if l == wordAt && w == n/2 {
				b.WriteString(SearchWord)
				continue
			}
			b.WriteString(fillerWord(r))
		}
		b.WriteString("\r\n")
		if r.IntN(6) == 0 {
			b.WriteString("\r\n")
		}
	}
	return b.String()
}

var filler = strings.Fields("the of and to in is that for it as was with be by on not this are or from at which but have an they you were there been one all we their has would when if so no will can more other what about up out them into just time some could these two may then do first any now such like our over even most made after also did many before must through back years where much your way well down should because each those people how too little good very make world still own see work long get here between both life being under never day same another know while last might great old year off come since against go came right used take three")

func fillerWord(r *rand.Rand) string {
	if r.IntN(4) == 0 {
		return words[r.IntN(len(words))]
	}
	return filler[r.IntN(len(filler))]
}

func wrap(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	return b.String() + s + "\r\n"
}

func asciiOnly(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c < 128 {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// encodeHeader writes a header value with non-ASCII text as an RFC 2047
// encoded word (the whole value: good enough for display-name and Subject).
func encodeHeader(s string) string {
	if asciiOnly(s) == s {
		return s
	}
	if i := strings.LastIndex(s, " <"); i > 0 && strings.HasSuffix(s, ">") {
		return "=?utf-8?b?" + base64.StdEncoding.EncodeToString([]byte(s[:i])) + "?=" + s[i:]
	}
	return "=?utf-8?b?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
}

// writeMaildir writes the corpus as a maildir (cur/ files, each with its
// arrival time as mtime, which both systems take as INTERNALDATE) with a
// dovecot-uidlist naming every file's UID.
func (c *corpus) writeMaildir(dir string) error {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	arrival := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var list strings.Builder
	fmt.Fprintf(&list, "3 V%d N%d\n", c.uidValidity, len(c.msgs)+1)
	for i, m := range c.msgs {
		p := filepath.Join(dir, "cur", m.name+":2,"+m.flags)
		if err := os.WriteFile(p, m.data, 0o644); err != nil {
			return err
		}
		t := arrival.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, t, t); err != nil {
			return err
		}
		fmt.Fprintf(&list, "%d :%s\n", m.uid, m.name)
	}
	return os.WriteFile(filepath.Join(dir, "dovecot-uidlist"), []byte(list.String()), 0o644)
}

// appendMsg is the i-th message of the APPEND test: about size bytes, each
// one distinct (hastore stores bodies by content hash).
func appendMsg(i, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender <sender@example.com>\r\nTo: Bench User <%s>\r\nSubject: append %d\r\nDate: Mon, 06 Jan 2025 10:00:00 +0000\r\nMessage-ID: <append-%d@bench.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", benchUser, i, i)
	line := fmt.Sprintf("append %d: %s\r\n", i, strings.Repeat("0123456789", 7))
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}
