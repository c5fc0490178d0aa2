package imap

import (
	"context"
	"hastore/mailserver/mailstate"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/imap/wire"
	"hastore/mailserver/mailbox"
)

// SORT and THREAD (RFC 5256, SORT=DISPLAY RFC 5957) are served from the
// message records and the Info stored at delivery (envelope: date,
// subject, addresses, Message-ID, In-Reply-To); THREAD=REFERENCES reads
// the References field from the header bytes of each message.

var _ wire.SessionSort = (*session)(nil)

// sortable is one matching message with what sorting and threading use.
type sortable struct {
	seq, uid uint32
	m        mailstate.MailMessage
	env      *mailbox.Envelope
	date     time.Time // the sent date (Date:), else INTERNALDATE (RFC 5256)
	subject  string    // base subject
	refs     []string  // References, then In-Reply-To (THREAD=REFERENCES)
}

// matching returns the selected mailbox's messages that criteria match,
// in sequence order, with their envelopes.
func (s *session) matching(c context.Context, criteria *imap.SearchCriteria, refs bool) ([]*sortable, error) {
	sel := s.mb
	n := uint32(len(sel.uids))
	var last uint32
	if n > 0 {
		last = sel.uids[n-1]
	}
	var out []*sortable
	err := s.forRecords(allIndexes(len(sel.uids)), func(i int, m mailstate.MailMessage) error {
		cand := &candidate{seq: uint32(i + 1), m: m}
		if !s.match(c, cand, criteria, n, last) {
			return cand.err
		}
		it := &sortable{seq: cand.seq, uid: m.UID, m: m, env: &mailbox.Envelope{}}
		info := cand.info
		if info == nil {
			var err error
			if info, err = s.store().Info(s.user, sel.id, m.UID); err != nil {
				info = nil
			}
		}
		if info != nil {
			it.env = &info.Envelope
		}
		it.date = it.env.Date
		if it.date.IsZero() {
			it.date = time.Unix(0, m.InternalDate)
		}
		it.subject = baseSubject(it.env.Subject)
		if refs {
			h := s.header(c, cand)
			if cand.err != nil {
				return cand.err
			}
			it.refs = msgIDs(h.Get("References"))
			for _, id := range it.env.InReplyTo {
				if len(it.refs) == 0 {
					it.refs = append(it.refs, strings.Trim(id, "<>"))
				}
			}
		}
		out = append(out, it)
		return nil
	})
	return out, imapErr(err)
}

func (s *session) Sort(kind wire.NumKind, keys []wire.SortKey, criteria *imap.SearchCriteria) ([]uint32, error) {
	s.touch()
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	items, err := s.matching(c, criteria, false)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i], items[j]
		for _, k := range keys {
			d := compareBy(k.Key, a, b)
			if k.Reverse {
				d = -d
			}
			if d != 0 {
				return d < 0
			}
		}
		return a.seq < b.seq // the final tie-break is the sequence number
	})
	out := make([]uint32, len(items))
	for i, it := range items {
		out[i] = it.seq
		if kind == wire.NumKindUID {
			out[i] = it.uid
		}
	}
	return out, nil
}

func cmp[T int64 | string | uint32](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// compareBy compares two messages by one SORT key.
func compareBy(key string, a, b *sortable) int {
	switch key {
	case "ARRIVAL":
		return cmp(a.m.InternalDate, b.m.InternalDate)
	case "DATE":
		return cmp(a.date.UnixNano(), b.date.UnixNano())
	case "SIZE":
		return cmp(a.m.Size, b.m.Size)
	case "SUBJECT":
		return cmp(a.subject, b.subject)
	case "FROM":
		return cmp(firstMailbox(a.env.From), firstMailbox(b.env.From))
	case "TO":
		return cmp(firstMailbox(a.env.To), firstMailbox(b.env.To))
	case "CC":
		return cmp(firstMailbox(a.env.Cc), firstMailbox(b.env.Cc))
	case "DISPLAYFROM":
		return cmp(display(a.env.From), display(b.env.From))
	case "DISPLAYTO":
		return cmp(display(a.env.To), display(b.env.To))
	}
	return 0
}

// firstMailbox is the local part of the first address (RFC 5256 3).
func firstMailbox(l []mailbox.Address) string {
	a := firstAddress(l)
	if a == nil {
		return ""
	}
	return strings.ToLower(a.Mailbox)
}

// firstAddress is the first address of a list that is not a group marker.
func firstAddress(l []mailbox.Address) *mailbox.Address {
	for i := range l {
		if l[i].Host != "" {
			return &l[i]
		}
	}
	return nil
}

// display is the display name of the first address, else its address
// (RFC 5957).
func display(l []mailbox.Address) string {
	a := firstAddress(l)
	if a == nil {
		return ""
	}
	if a.Name != "" {
		return strings.ToLower(a.Name)
	}
	return strings.ToLower(a.Mailbox + "@" + a.Host)
}

var (
	subjLeader  = regexp.MustCompile(`^(?i)(\[[^\[\]]*\][ \t]*)*(re|fwd?)[ \t]*(\[[^\[\]]*\])?:[ \t]*`)
	subjBlob    = regexp.MustCompile(`^\[[^\[\]]*\][ \t]*`)
	subjTrailer = regexp.MustCompile(`(?i)([ \t]|\(fwd\))+$`)
)

// baseSubject extracts the base subject (RFC 5256 2.1), folded to lower
// case for comparison: without "Re:", "Fw:", "Fwd:", "[list]" leaders,
// "(fwd)" trailers and "[Fwd: ...]" wrapping.
func baseSubject(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	for {
		prev := s
		s = subjTrailer.ReplaceAllString(s, "")
		for {
			p := s
			s = subjLeader.ReplaceAllString(s, "")
			if b := subjBlob.ReplaceAllString(s, ""); b != "" {
				s = b
			}
			if s == p {
				break
			}
		}
		if l := strings.ToLower(s); strings.HasPrefix(l, "[fwd:") && strings.HasSuffix(s, "]") {
			s = strings.TrimSpace(s[5 : len(s)-1])
		}
		if s == prev {
			return strings.ToLower(s)
		}
	}
}

// msgIDs returns the message IDs in a References field, without <>.
func msgIDs(v string) []string {
	var out []string
	for {
		i := strings.IndexByte(v, '<')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return out
		}
		if id := strings.TrimSpace(v[i+1 : i+j]); id != "" {
			out = append(out, id)
		}
		v = v[i+j+1:]
	}
}

func (s *session) Thread(kind wire.NumKind, algorithm string, criteria *imap.SearchCriteria) ([]wire.Thread, error) {
	s.touch()
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	items, err := s.matching(c, criteria, algorithm == "REFERENCES")
	if err != nil {
		return nil, err
	}
	num := func(it *sortable) uint32 {
		if kind == wire.NumKindUID {
			return it.uid
		}
		return it.seq
	}
	byDate := func(l []*sortable) {
		sort.SliceStable(l, func(i, j int) bool {
			if d := cmp(l[i].date.UnixNano(), l[j].date.UnixNano()); d != 0 {
				return d < 0
			}
			return l[i].seq < l[j].seq
		})
	}
	if algorithm == "ORDEREDSUBJECT" {
		// Grouped by base subject; in each, the first by date is the
		// parent, the others its children; threads by their first date.
		groups := map[string][]*sortable{}
		var order []string
		for _, it := range items {
			if _, ok := groups[it.subject]; !ok {
				order = append(order, it.subject)
			}
			groups[it.subject] = append(groups[it.subject], it)
		}
		var roots [][]*sortable
		for _, k := range order {
			g := groups[k]
			byDate(g)
			roots = append(roots, g)
		}
		sort.SliceStable(roots, func(i, j int) bool {
			if d := cmp(roots[i][0].date.UnixNano(), roots[j][0].date.UnixNano()); d != 0 {
				return d < 0
			}
			return roots[i][0].seq < roots[j][0].seq
		})
		out := make([]wire.Thread, len(roots))
		for i, g := range roots {
			out[i] = wire.Thread{Num: num(g[0])}
			for _, ch := range g[1:] {
				out[i].Children = append(out[i].Children, wire.Thread{Num: num(ch)})
			}
		}
		return out, nil
	}
	return referencesThreads(items, num, byDate), nil
}

// referencesThreads links each message to the nearest of its references
// present among the results (RFC 5256 REFERENCES, without the dummy
// containers and subject merging of the full algorithm): a message whose
// references are all absent starts a thread; siblings and threads are in
// date order.
func referencesThreads(items []*sortable, num func(*sortable) uint32, byDate func([]*sortable)) []wire.Thread {
	byID := map[string]*sortable{}
	for _, it := range items {
		if id := strings.Trim(it.env.MessageID, "<>"); id != "" && byID[id] == nil {
			byID[id] = it
		}
	}
	children := map[*sortable][]*sortable{}
	var roots []*sortable
	for _, it := range items {
		var parent *sortable
		for i := len(it.refs) - 1; i >= 0 && parent == nil; i-- {
			if p := byID[it.refs[i]]; p != nil && p != it && !descends(p, it, byID) {
				parent = p
			}
		}
		if parent == nil {
			roots = append(roots, it)
		} else {
			children[parent] = append(children[parent], it)
		}
	}
	var build func(it *sortable, depth int) wire.Thread
	build = func(it *sortable, depth int) wire.Thread {
		t := wire.Thread{Num: num(it)}
		kids := children[it]
		byDate(kids)
		for _, k := range kids {
			if depth < 1000 {
				t.Children = append(t.Children, build(k, depth+1))
			}
		}
		return t
	}
	byDate(roots)
	out := make([]wire.Thread, len(roots))
	for i, r := range roots {
		out[i] = build(r, 0)
	}
	return out
}

// descends reports whether p has it among its own references' chain (a
// loop if p became it's child).
func descends(p, it *sortable, byID map[string]*sortable) bool {
	seen := map[*sortable]bool{}
	for cur := p; cur != nil && !seen[cur]; {
		seen[cur] = true
		if cur == it {
			return true
		}
		var next *sortable
		for i := len(cur.refs) - 1; i >= 0; i-- {
			if n := byID[cur.refs[i]]; n != nil && n != cur {
				next = n
				break
			}
		}
		cur = next
	}
	return false
}
