package imap

import (
	"sort"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// \Recent (RFC 3501 2.3.2) is kept per node, not in the cluster's
// metadata: recentBook holds, per mailbox, the highest UID a session on
// this node has been told of. A SELECT, or a session that hears of a new
// message first on this node, claims the messages above it; EXAMINE and
// STATUS only look. Sessions on two nodes can both see a message as
// recent, which RFC 3501 allows when the server cannot tell which was
// first ("SHOULD be considered recent").
//
// A mailbox this node has not seen since it started gets its boundary
// from what the node saw meanwhile (every mailbox's events, watched or
// not: observe) and a scan of the mailbox when first selected (or
// STATUSed): of the messages that were there when the node started,
// those after the last \Seen one are recent (mail the user has not read
// yet); every message appended since is recent, \Seen or not (a sent
// copy, a message moved in), except up to the last one whose flags a
// client changed since (a client on another node had those). hints hold
// that per mailbox without a boundary: one small entry per mailbox that
// changed since the node started, dropped once it has a boundary, at
// most maxRecentHints (past that, the \Seen guess alone).
type recentBook struct {
	mu    sync.Mutex
	high  map[recentKey]uint32
	hints map[recentKey]recentHint
}

type recentKey struct {
	user string
	id   uint64
}

// recentHint is what the node saw of a mailbox without a boundary:
// floor, the first UID appended since it started (0: none); told, the
// highest UID whose flags a client changed since.
type recentHint struct{ floor, told uint32 }

const maxRecentHints = 1 << 20

func newRecentBook() *recentBook {
	return &recentBook{high: map[recentKey]uint32{}, hints: map[recentKey]recentHint{}}
}

// observe takes every mailbox event the node applies
// (mailbox.Store.ObserveMailboxes); it runs with the event stream's lock
// held.
func (b *recentBook) observe(user string, id uint64, ev mailbox.MailboxEvent) {
	k := recentKey{user, id}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.high[k]; ok {
		return // the sessions' claims decide
	}
	h, ok := b.hints[k]
	if !ok && len(b.hints) >= maxRecentHints {
		return
	}
	switch ev.Kind {
	case mailbox.EventAppend:
		if h.floor == 0 || ev.UID < h.floor {
			h.floor = ev.UID
		}
	case mailbox.EventFlags:
		h.told = max(h.told, ev.UID)
	case mailbox.EventReset:
		delete(b.hints, k) // deleted, or reloaded: the scan decides
		return
	default:
		return
	}
	b.hints[k] = h
}

// appended notes that a session of this node appended uid (which observe
// also sees, when the node's event stream is there).
func (b *recentBook) appended(k recentKey, uid uint32) {
	b.observe(k.user, k.id, mailbox.MailboxEvent{Kind: mailbox.EventAppend, UID: uid})
}

// initialFloor returns the first UID appended since the node started to a
// mailbox without a boundary (0: none); the scan that sets the boundary
// counts \Seen only below it.
func (b *recentBook) initialFloor(k recentKey) uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hints[k].floor
}

// boundary returns the mailbox's highest claimed UID, setting it when the
// node has none from initial (the last \Seen message below the floor)
// and the hints; with claimTo above it, raises it.
func (b *recentBook) boundary(k recentKey, initial, claimTo uint32) uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	prev, ok := b.high[k]
	if !ok {
		prev = initial
		h := b.hints[k]
		if h.floor != 0 && h.floor <= prev {
			prev = h.floor - 1 // appended after the scan that computed initial
		}
		prev = max(prev, h.told)
		b.high[k] = prev
		delete(b.hints, k)
	}
	if claimTo > prev {
		b.high[k] = claimTo
	}
	return prev
}

// known returns the mailbox's boundary if the node has one.
func (b *recentBook) known(k recentKey) (uint32, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.high[k]
	return v, ok
}

// forget drops a mailbox (deleted).
func (b *recentBook) forget(k recentKey) {
	b.mu.Lock()
	delete(b.high, k)
	delete(b.hints, k)
	b.mu.Unlock()
}

// sessionRecent is a selected session's \Recent messages: those in the
// view at SELECT with a UID in (above, top], and later arrivals it
// claimed (arrived, ascending).
type sessionRecent struct {
	above, top uint32
	arrived    []uint32
	told       uint32 // the RECENT count the client was last given
}

func (r *sessionRecent) has(uid uint32) bool {
	if uid > r.above && uid <= r.top {
		return true
	}
	i := sort.Search(len(r.arrived), func(i int) bool { return r.arrived[i] >= uid })
	return i < len(r.arrived) && r.arrived[i] == uid
}

// drop forgets an expunged message.
func (r *sessionRecent) drop(uid uint32) {
	i := sort.Search(len(r.arrived), func(i int) bool { return r.arrived[i] >= uid })
	if i < len(r.arrived) && r.arrived[i] == uid {
		r.arrived = append(r.arrived[:i], r.arrived[i+1:]...)
		if len(r.arrived) == 0 {
			r.arrived = nil
		}
	}
}

// count is the number of recent messages in the view.
func (m *selected) recentCount() uint32 {
	r := &m.recent
	lo, _ := m.find(r.above + 1)
	hi, _ := m.find(r.top + 1)
	n := hi - lo
	for _, u := range r.arrived {
		if _, ok := m.find(u); ok {
			n++
		}
	}
	return uint32(n)
}

// arrival decides whether a message new to the view is recent for this
// session (claiming it unless read-only).
func (s *session) arrival(uid uint32) {
	sel := s.mb
	k := recentKey{s.user, sel.id}
	var recent bool
	if sel.readOnly {
		prev, ok := s.srv.recent.known(k)
		recent = !ok || uid > prev
	} else {
		recent = s.srv.recent.boundary(k, uid-1, uid) < uid
	}
	if !recent {
		return
	}
	// The usual case, a session that hears of every new message first,
	// widens its range instead of growing a list.
	r := &sel.recent
	if n := len(sel.uids); len(r.arrived) == 0 && (n < 2 || sel.uids[n-2] <= r.top) {
		r.top = uid
		return
	}
	r.arrived = append(r.arrived, uid)
}

// rev2 reports whether the client enabled IMAP4rev2, which has no \Recent.
func (s *session) rev2() bool {
	return s.conn.Enabled(imap.CapIMAP4rev2)
}

// flagsOf is a message's flags as this session shows them: \Recent added
// when it is recent here (not to IMAP4rev2 clients).
func (s *session) flagsOf(uid uint32, flags []string, rev2 bool) []imap.Flag {
	out := imapFlags(flags)
	if !rev2 && s.mb != nil && s.mb.recent.has(uid) {
		out = append(out, flagRecent)
	}
	return out
}

func isRecentFlag(f imap.Flag) bool { return strings.EqualFold(string(f), string(flagRecent)) }

// statusRecent is STATUS RECENT: the messages above the node's boundary
// (an upper bound when some of them were expunged since). A mailbox the
// node has not seen gets its boundary from a scan, as SELECT would.
func (s *session) statusRecent(mb *mailstate.Mailbox) (uint32, error) {
	k := recentKey{s.user, mb.ID}
	b, ok := s.srv.recent.known(k)
	if !ok {
		var lastSeen uint32
		floor := s.srv.recent.initialFloor(k)
		err := s.store().EachMessage(s.user, mb.ID, func(m mailstate.MailMessage) error {
			if hasFlag(m.Flags, mailstate.FlagSeen) && (floor == 0 || m.UID < floor) {
				lastSeen = m.UID
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		b = s.srv.recent.boundary(k, lastSeen, 0)
	}
	if mb.UIDNext <= b+1 {
		return 0, nil
	}
	return min(mb.UIDNext-1-b, mb.Messages), nil
}

// flagRecent is \Recent, which go-imap/v2's public package does not name
// (IMAP4rev2 dropped it).
const flagRecent imap.Flag = `\Recent`
