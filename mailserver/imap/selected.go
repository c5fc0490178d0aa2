package imap

import (
	"fmt"
	"sort"

	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/imap/wire"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// selected is a session's view of its selected mailbox: the UIDs the
// client knows, in sequence-number order. It changes only when the
// session tells the client (Poll, Idle), from the mailbox's event stream
// in Raft apply order, so sequence numbers are the client's by
// construction and no shared tracker can disagree with it.
type selected struct {
	id          uint64
	name        string
	uidValidity uint32
	readOnly    bool
	// uids may be the mailbox's shared copy (shared set): own() copies
	// it before a change.
	uids    []uint32
	shared  bool
	w       *mailbox.Watcher
	pending []mailbox.MailboxEvent
	// reported holds, per UID, the modseq of flags this session already
	// sent (its own STORE), so the same change is not announced twice;
	// nil once the event stream is past reportedUntil (the Raft index of
	// the last such STORE).
	reported      map[uint32]uint64
	reportedUntil uint64
	// saved is the last SEARCH RETURN (SAVE) result (SEARCHRES "$").
	saved imap.UIDSet
	// keywords are those the client was told of in FLAGS (keywords.go).
	keywords []string
	// keywordsUntold: a STORE of this session added to keywords; the
	// next poll announces them.
	keywordsUntold bool
	// recent is what is \Recent for this session (recent.go).
	recent sessionRecent
}

// own makes uids the session's own before a change.
func (m *selected) own() {
	if m.shared {
		m.uids = append(make([]uint32, 0, len(m.uids)+16), m.uids...)
		m.shared = false
	}
}

// share swaps the session's own uids for the mailbox's shared copy when
// they are the same (see mailbox.Watcher.ShareUIDs).
func (m *selected) share() {
	if !m.shared {
		m.uids, m.shared = m.w.ShareUIDs(m.uids)
	}
}

// report records flags the session itself told the client (its STORE,
// or \Seen set by FETCH), at Raft index idx.
func (m *selected) report(uid uint32, modSeq, idx uint64) {
	if m.reported == nil {
		m.reported = map[uint32]uint64{}
	}
	m.reported[uid] = max(m.reported[uid], modSeq)
	m.reportedUntil = max(m.reportedUntil, idx)
}

func (m *selected) find(uid uint32) (int, bool) {
	i := sort.Search(len(m.uids), func(i int) bool { return m.uids[i] >= uid })
	return i, i < len(m.uids) && m.uids[i] == uid
}

func allIndexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// checkSeq refuses a message sequence number past the client's EXISTS:
// RFC 9051 9 (seq-number) calls it invalid, and an OK with nothing would
// hide a client that lost track of the mailbox. A range with "*" stays
// valid (it names the last message, or nothing in an empty mailbox), and
// UID sets are exempt: a UID that does not exist is ignored (6.4.9).
func (m *selected) checkSeq(set imap.NumSet) error {
	seqs, ok := set.(imap.SeqSet)
	if !ok {
		return nil
	}
	n := uint32(len(m.uids))
	for _, r := range seqs {
		if r.Start == 0 || r.Stop == 0 {
			continue
		}
		if hi := max(r.Start, r.Stop); hi > n {
			return &imap.Error{Type: imap.StatusResponseTypeBad, Text: fmt.Sprintf("Message sequence number %d is past the last message (%d): use UIDs or re-SELECT", hi, n)}
		}
	}
	return nil
}

// resolve returns the indexes (ascending, distinct) of the view's
// messages a sequence or UID set names; "*" is the last message.
func (m *selected) resolve(set imap.NumSet) []int {
	if imap.IsSearchRes(set) {
		set = m.saved
	}
	n := len(m.uids)
	var out []int
	switch set := set.(type) {
	case imap.SeqSet:
		for _, r := range set {
			a, b := r.Start, r.Stop
			if a == 0 {
				a = uint32(n)
			}
			if b == 0 {
				b = uint32(n)
			}
			if a > b {
				a, b = b, a
			}
			for s := max(a, 1); s <= b && int(s) <= n; s++ {
				out = append(out, int(s-1))
			}
		}
	case imap.UIDSet:
		var last uint32
		if n > 0 {
			last = m.uids[n-1]
		}
		for _, r := range set {
			a, b := uint32(r.Start), uint32(r.Stop)
			if a == 0 {
				a = last
			}
			if b == 0 {
				b = last
			}
			if a > b {
				a, b = b, a
			}
			i, _ := m.find(a)
			for ; i < n && m.uids[i] <= b; i++ {
				out = append(out, i)
			}
		}
	}
	if len(out) > 1 {
		sort.Ints(out)
		j := 1
		for i := 1; i < len(out); i++ {
			if out[i] != out[j-1] {
				out[j] = out[i]
				j++
			}
		}
		out = out[:j]
	}
	return out
}

// forRecords calls fn with the record of each message at the given view
// indexes (ascending); messages already expunged in the store (not yet
// announced) are skipped. Many messages: one range scan; few: lookups.
func (s *session) forRecords(idx []int, fn func(i int, m mailstate.MailMessage) error) error {
	sel := s.mb
	if len(idx) == 0 {
		return nil
	}
	if len(idx) <= 32 {
		for _, i := range idx {
			m, ok, err := s.store().Message(s.user, sel.id, sel.uids[i])
			if err != nil {
				return err
			}
			if ok {
				if err := fn(i, m); err != nil {
					return err
				}
			}
		}
		return nil
	}
	k := 0
	errStop := errStopScan{}
	err := s.store().EachMessage(s.user, sel.id, func(m mailstate.MailMessage) error {
		for k < len(idx) && sel.uids[idx[k]] < m.UID {
			k++
		}
		if k == len(idx) {
			return errStop
		}
		if sel.uids[idx[k]] == m.UID {
			return fn(idx[k], m)
		}
		return nil
	})
	if err == errStop {
		err = nil
	}
	return err
}

type errStopScan struct{}

func (errStopScan) Error() string { return "stop" }

// poll tells the client what changed in the mailbox since it last heard,
// in apply order. Without allowExpunge (during FETCH, STORE, SEARCH) it
// stops before the first expunge and keeps the rest for later.
func (s *session) poll(w *wire.UpdateWriter, allowExpunge bool) error {
	sel := s.mb
	sel.pending = append(sel.pending, sel.w.Next()...)
	exists := false
	flush := func() error {
		if exists {
			exists = false
			if err := w.WriteNumMessages(uint32(len(sel.uids))); err != nil {
				return err
			}
			if n := sel.recentCount(); n != sel.recent.told {
				sel.recent.told = n
				return w.WriteNumRecent(n)
			}
		}
		return nil
	}
	done := 0
	rev2 := s.rev2()
	defer func() {
		if sel.pending = sel.pending[done:]; len(sel.pending) > 0 {
			return
		}
		// Everything heard and told: let go of what an idle session
		// need not hold.
		sel.pending = nil
		sel.share()
		if sel.reported != nil && sel.w.Through() >= sel.reportedUntil {
			sel.reported = nil
		}
	}()
	if err := sel.announceKeywords(w, nil); err != nil {
		return err
	}
	for _, ev := range sel.pending {
		switch ev.Kind {
		case mailbox.EventAppend:
			if err := sel.announceKeywords(w, ev.Flags); err != nil {
				return err
			}
			if n := len(sel.uids); n == 0 || ev.UID > sel.uids[n-1] {
				sel.own()
				sel.uids = append(sel.uids, ev.UID)
				s.arrival(ev.UID)
				exists = true
			}
		case mailbox.EventFlags:
			if i, ok := sel.find(ev.UID); ok && ev.ModSeq > sel.reported[ev.UID] {
				if err := flush(); err != nil {
					return err
				}
				if err := sel.announceKeywords(w, ev.Flags); err != nil {
					return err
				}
				if err := w.WriteMessageFlags(uint32(i+1), imap.UID(ev.UID), s.flagsOf(ev.UID, ev.Flags, rev2), ev.ModSeq); err != nil {
					return err
				}
			}
		case mailbox.EventExpunge:
			i, ok := sel.find(ev.UID)
			if !ok {
				break
			}
			if !allowExpunge {
				return flush()
			}
			if err := flush(); err != nil {
				return err
			}
			sel.own()
			sel.uids = append(sel.uids[:i], sel.uids[i+1:]...)
			delete(sel.reported, ev.UID)
			sel.recent.drop(ev.UID)
			if err := w.WriteExpunge(uint32(i+1), imap.UID(ev.UID)); err != nil {
				return err
			}
		case mailbox.EventReset:
			if !allowExpunge {
				return flush()
			}
			if err := flush(); err != nil {
				return err
			}
			if err := s.resync(w); err != nil {
				return err
			}
		}
		done++
	}
	return flush()
}

// resync reloads the mailbox after lost events and tells the client the
// difference: expunges, new messages, and every message's flags.
func (s *session) resync(w *wire.UpdateWriter) error {
	sel := s.mb
	sel.own()
	type rec struct {
		uid   uint32
		flags []string
	}
	var now []rec
	err := s.store().EachMessage(s.user, sel.id, func(m mailstate.MailMessage) error {
		now = append(now, rec{m.UID, m.Flags})
		return nil
	})
	if err != nil {
		return err
	}
	present := make(map[uint32]bool, len(now))
	for _, r := range now {
		present[r.uid] = true
	}
	for i := len(sel.uids) - 1; i >= 0; i-- {
		if uid := sel.uids[i]; !present[uid] {
			sel.uids = append(sel.uids[:i], sel.uids[i+1:]...)
			if err := w.WriteExpunge(uint32(i+1), imap.UID(uid)); err != nil {
				return err
			}
		}
	}
	grown := false
	for _, r := range now {
		if n := len(sel.uids); n == 0 || r.uid > sel.uids[n-1] {
			sel.uids = append(sel.uids, r.uid)
			grown = true
		}
	}
	if grown {
		if err := w.WriteNumMessages(uint32(len(sel.uids))); err != nil {
			return err
		}
	}
	rev2 := s.rev2()
	for _, r := range now {
		if err := sel.announceKeywords(w, r.flags); err != nil {
			return err
		}
	}
	for _, r := range now {
		if i, ok := sel.find(r.uid); ok {
			if err := w.WriteMessageFlags(uint32(i+1), imap.UID(r.uid), s.flagsOf(r.uid, r.flags, rev2), 0); err != nil {
				return err
			}
		}
	}
	return nil
}
