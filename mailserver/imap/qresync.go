package imap

import (
	"hastore/mailserver/mailstate"
	"sort"

	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/imap/wire"
)

// QRESYNC (RFC 7162): the store keeps no record of expunged UIDs, so
// VANISHED (EARLIER) names every UID of the client's known set (or below
// UIDNEXT) that is not in the mailbox, expunged before or after the
// client's modseq alike, as RFC 7162 3.2.5.2 allows; a client forgets
// UIDs it does not know.

var _ wire.SessionQResync = (*session)(nil)

// topUID is the highest UID the mailbox ever gave (UIDNEXT-1).
func (s *session) topUID() uint32 {
	top := uint32(0)
	if n := len(s.mb.uids); n > 0 {
		top = s.mb.uids[n-1]
	}
	if rec, ok, err := s.store().MailboxByID(s.user, s.mb.id); err == nil && ok && rec.UIDNext > 0 {
		top = max(top, rec.UIDNext-1)
	}
	return top
}

// gone returns the UIDs of set, up to top, that are not in uids (sorted).
// It walks the present UIDs, never the numbers of a range one by one.
func gone(uids []uint32, set imap.UIDSet, top uint32) imap.UIDSet {
	var out imap.UIDSet
	for _, r := range set {
		a, b := uint32(r.Start), uint32(r.Stop)
		if a == 0 {
			a = top
		}
		if b == 0 {
			b = top
		}
		if a > b {
			a, b = b, a
		}
		b = min(b, top)
		if a == 0 || a > b {
			continue
		}
		i := sort.Search(len(uids), func(i int) bool { return uids[i] >= a })
		cur := a
		for ; i < len(uids) && uids[i] <= b; i++ {
			if uids[i] > cur {
				out.AddRange(imap.UID(cur), imap.UID(uids[i]-1))
			}
			cur = uids[i] + 1
		}
		if cur <= b && cur != 0 {
			out.AddRange(imap.UID(cur), imap.UID(b))
		}
	}
	return out
}

func (s *session) SelectQResync(w *wire.UpdateWriter, q *wire.QResync) error {
	sel := s.mb
	if sel == nil || q.UIDValidity != sel.uidValidity {
		return nil // the client starts over
	}
	top := s.topUID()
	known := q.KnownUIDs
	if known == nil {
		known = imap.UIDSet{{Start: 1, Stop: imap.UID(max(top, 1))}}
	}
	if err := w.WriteVanishedEarlier(gone(sel.uids, known, top)); err != nil {
		return err
	}
	rev2 := s.rev2()
	return imapErr(s.forRecords(allIndexes(len(sel.uids)), func(i int, m mailstate.MailMessage) error {
		if m.ModSeq <= q.ModSeq {
			return nil
		}
		return w.WriteMessage(uint32(i+1), imap.UID(m.UID), s.flagsOf(m.UID, m.Flags, rev2), m.ModSeq)
	}))
}
