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
	reply    bool      // the subject had a "Re:", "Fwd:"... (RFC 5256 2.1)
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
		it.subject, it.reply = subjectBase(it.env.Subject)
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

// subjectBase extracts the base subject (RFC 5256 2.1), folded to lower
// case for comparison: without "Re:", "Fw:", "Fwd:", "[list]" leaders,
// "(fwd)" trailers and "[Fwd: ...]" wrapping; and whether a "Re:"/"Fwd:"
// leader, a "(fwd)" trailer or "[Fwd: ...]" wrapping was taken off: the
// message is a reply or forward (used by THREAD=REFERENCES step 5).
func subjectBase(s string) (string, bool) {
	s = strings.Join(strings.Fields(s), " ")
	reply := false
	for {
		prev := s
		if t := subjTrailer.FindString(s); t != "" {
			reply = reply || strings.Contains(strings.ToLower(t), "(fwd)")
			s = s[:len(s)-len(t)]
		}
		for {
			p := s
			if l := subjLeader.FindString(s); l != "" {
				reply = true
				s = s[len(l):]
			}
			if b := subjBlob.ReplaceAllString(s, ""); b != "" {
				s = b
			}
			if s == p {
				break
			}
		}
		if l := strings.ToLower(s); strings.HasPrefix(l, "[fwd:") && strings.HasSuffix(s, "]") {
			s = strings.TrimSpace(s[5 : len(s)-1])
			reply = true
		}
		if s == prev {
			return strings.ToLower(s), reply
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
	return referencesThreads(items, num), nil
}

// container is a node of THREAD=REFERENCES (RFC 5256 3): a message, or
// with it nil a dummy standing for a message that is referenced but not
// among the results.
type container struct {
	it       *sortable
	parent   *container
	children []*container
}

// ancestorOf reports whether a is b or one of b's parents.
func (a *container) ancestorOf(b *container) bool {
	for ; b != nil; b = b.parent {
		if b == a {
			return true
		}
	}
	return false
}

func (c *container) setParent(p *container) {
	if q := c.parent; q != nil {
		for i, ch := range q.children {
			if ch == c {
				q.children = append(q.children[:i], q.children[i+1:]...)
				break
			}
		}
	}
	c.parent = p
	if p != nil {
		p.children = append(p.children, c)
	}
}

// first is the message that stands for c in date order and subject
// merging: c's own, or a dummy's first child's (RFC 5256 3 steps 5, 6).
func (c *container) first() *sortable {
	for c.it == nil && len(c.children) > 0 {
		c = c.children[0]
	}
	return c.it
}

// referencesThreads is the REFERENCES algorithm of RFC 5256 3: messages
// linked by their References (else In-Reply-To) through containers, a
// dummy for each referenced message not among the results; dummies pruned
// (step 4: one with no children goes, its children take its place, except
// that at the root a dummy with two or more keeps them: "((5)(6))"); roots
// of the same base subject gathered (step 5); siblings and threads in
// date order (step 6).
func referencesThreads(items []*sortable, num func(*sortable) uint32) []wire.Thread {
	// Step 1.
	byID := map[string]*container{}
	ref := func(id string) *container {
		c := byID[id]
		if c == nil {
			c = &container{}
			byID[id] = c
		}
		return c
	}
	var all []*container
	for _, it := range items {
		var self *container
		if id := strings.TrimSpace(strings.Trim(it.env.MessageID, "<>")); id != "" {
			switch c := byID[id]; {
			case c == nil:
				self = &container{it: it}
				byID[id] = self
			case c.it == nil:
				self, c.it = c, it
			}
		}
		if self == nil { // no Message-ID, or one already taken: unique
			self = &container{it: it}
		}
		all = append(all, self)
		var prev *container
		for _, id := range it.refs {
			c := ref(id)
			if prev != nil && c.parent == nil && !c.ancestorOf(prev) {
				c.setParent(prev)
			}
			prev = c
		}
		if prev != nil && self.ancestorOf(prev) {
			prev = nil // a loop
		}
		self.setParent(prev)
	}
	// Step 2: the roots, in a stable order (map order would make step 5
	// differ between runs).
	seen := map[*container]bool{}
	var roots []*container
	addRoot := func(c *container) {
		if c.parent == nil && !seen[c] {
			seen[c] = true
			roots = append(roots, c)
		}
	}
	for _, c := range all {
		for r := c; r != nil; r = r.parent {
			addRoot(r)
		}
	}
	// Step 4. A dummy with no message under it is not reachable from
	// all, so it is never a root here.
	roots = pruneDummies(roots, true)
	sortContainers(roots)
	// Step 5.
	bySubject := map[string]*container{}
	for _, c := range roots {
		m := c.first()
		if m == nil || m.subject == "" {
			continue
		}
		t := bySubject[m.subject]
		if t == nil || t.it != nil && (c.it == nil || t.it.reply && !m.reply) {
			bySubject[m.subject] = c
		}
	}
	merged := roots[:0:0]
	for _, c := range roots {
		m := c.first()
		if m == nil || m.subject == "" {
			merged = append(merged, c)
			continue
		}
		t := bySubject[m.subject]
		switch {
		case t == c:
			merged = append(merged, c)
		case t.it == nil && c.it == nil:
			for _, ch := range append([]*container(nil), c.children...) {
				ch.setParent(t)
			}
		case t.it == nil:
			c.setParent(t)
		case c.it != nil && c.it.reply && !t.it.reply:
			c.setParent(t)
		default:
			// A new dummy takes t's place among the roots (t may come
			// after c: then the dummy is at c's place, and t, when its
			// turn comes, finds the dummy and goes under it again).
			d := &container{}
			placed := false
			for i, r := range merged {
				if r == t {
					merged[i], placed = d, true
				}
			}
			if !placed {
				merged = append(merged, d)
			}
			t.setParent(d)
			c.setParent(d)
			bySubject[m.subject] = d
		}
	}
	roots = merged
	// Step 6.
	sortContainers(roots)
	var build func(c *container, depth int) wire.Thread
	build = func(c *container, depth int) wire.Thread {
		var t wire.Thread
		if c.it != nil {
			t.Num = num(c.it)
		}
		for _, ch := range c.children {
			if depth < 1000 {
				t.Children = append(t.Children, build(ch, depth+1))
			}
		}
		return t
	}
	out := make([]wire.Thread, len(roots))
	for i, r := range roots {
		out[i] = build(r, 0)
	}
	return out
}

// pruneDummies is step 4 of RFC 5256 3 REFERENCES for one level.
func pruneDummies(list []*container, root bool) []*container {
	var out []*container
	for _, c := range list {
		c.children = pruneDummies(c.children, false)
		for _, ch := range c.children {
			ch.parent = c
		}
		if c.it == nil && (len(c.children) == 0 || !root || len(c.children) == 1) {
			for _, ch := range c.children {
				ch.parent = c.parent
			}
			out = append(out, c.children...)
			continue
		}
		out = append(out, c)
	}
	return out
}

// sortContainers orders each level by sent date, a dummy by its first
// child's, then by sequence number (RFC 5256 3 step 6).
func sortContainers(list []*container) {
	for _, c := range list {
		sortContainers(c.children)
	}
	sort.SliceStable(list, func(i, j int) bool {
		a, b := list[i].first(), list[j].first()
		if a == nil || b == nil {
			return a != nil
		}
		if d := cmp(a.date.UnixNano(), b.date.UnixNano()); d != 0 {
			return d < 0
		}
		return a.seq < b.seq
	})
}
