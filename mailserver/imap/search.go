package imap

import (
	"bufio"
	"bytes"
	"context"
	netmail "net/mail"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"hastore/mailserver/imap/wire"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// SEARCH: flags, dates, sizes and UID/sequence sets come from the records;
// HEADER and SENTSINCE/SENTBEFORE read the header bytes; TEXT and BODY read
// the body (once per message per SEARCH).

type candidate struct {
	seq  uint32
	m    mailstate.MailMessage
	hdr  *textproto.Header
	info *mailbox.Info
	body []byte
	err  error
}

func (s *session) Search(kind wire.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	s.touch()
	sel := s.mb
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var data imap.SearchData
	var seqs imap.SeqSet
	var uids imap.UIDSet
	var firstUID, lastUID imap.UID // the matches in order: the saved MIN and MAX
	n := uint32(len(sel.uids))
	var last uint32
	if n > 0 {
		last = sel.uids[n-1]
	}
	err := s.forRecords(allIndexes(len(sel.uids)), func(i int, m mailstate.MailMessage) error {
		cand := &candidate{seq: uint32(i + 1), m: m}
		if !s.match(c, cand, criteria, n, last) {
			return cand.err
		}
		num := cand.seq
		uids.AddNum(imap.UID(m.UID))
		if data.Count == 0 {
			firstUID = imap.UID(m.UID)
		}
		lastUID = imap.UID(m.UID)
		if kind == wire.NumKindUID {
			num = m.UID
		} else {
			seqs.AddNum(cand.seq)
		}
		data.ModSeq = max(data.ModSeq, m.ModSeq)
		if data.Min == 0 || num < data.Min {
			data.Min = num
		}
		data.Max = max(data.Max, num)
		data.Count++
		return nil
	})
	if err != nil {
		return nil, imapErr(err)
	}
	if criteria.ModSeq == nil {
		data.ModSeq = 0 // only a MODSEQ search reports it (RFC 7162 3.1.5)
	}
	if options != nil && options.ReturnSave {
		sel.saved = savedResult(uids, firstUID, lastUID, options)
	}
	if kind == wire.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	return &data, nil
}

// savedResult is what SEARCH RETURN (SAVE ...) keeps as "$": with MIN
// and/or MAX but neither ALL nor COUNT, only the lowest and/or highest
// match; else every match (RFC 5182 2.1). Sequence and UID order agree,
// so the extremes are the same messages either way.
func savedResult(uids imap.UIDSet, first, last imap.UID, options *imap.SearchOptions) imap.UIDSet {
	if !options.ReturnMin && !options.ReturnMax || options.ReturnAll || options.ReturnCount || len(uids) == 0 {
		return uids
	}
	var out imap.UIDSet
	if options.ReturnMin {
		out.AddNum(first)
	}
	if options.ReturnMax {
		out.AddNum(last)
	}
	return out
}

func inSeqSet(set imap.SeqSet, n, max uint32) bool {
	for _, r := range set {
		a, b := r.Start, r.Stop
		if a == 0 {
			a = max
		}
		if b == 0 {
			b = max
		}
		if a > b {
			a, b = b, a
		}
		if n >= a && n <= b {
			return true
		}
	}
	return false
}

func inUIDSet(set imap.UIDSet, uid, last uint32) bool {
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
		if uid >= a && uid <= b {
			return true
		}
	}
	return false
}

func dateOnly(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func matchDate(t, since, before time.Time) bool {
	t = dateOnly(t)
	if !since.IsZero() && t.Before(dateOnly(since)) {
		return false
	}
	if !before.IsZero() && !t.Before(dateOnly(before)) {
		return false
	}
	return true
}

func (s *session) header(c context.Context, cand *candidate) *textproto.Header {
	if cand.hdr != nil {
		return cand.hdr
	}
	info, err := s.store().Info(s.user, s.mb.id, cand.m.UID)
	if err != nil {
		cand.err = err
		return &textproto.Header{}
	}
	cand.info = info
	b, err := s.read(c, cand.m, 0, min(info.Body.Body, cand.m.Size))
	if err != nil {
		cand.err = err
		return &textproto.Header{}
	}
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(b)))
	cand.hdr = &h
	return cand.hdr
}

func (s *session) body(c context.Context, cand *candidate) []byte {
	if cand.body == nil {
		b, err := s.read(c, cand.m, 0, cand.m.Size)
		if err != nil {
			cand.err = err
		}
		cand.body = b
	}
	return cand.body
}

func containsFold(hay, needle string) bool {
	return strings.Contains(strings.ToLower(hay), strings.ToLower(needle))
}

func (s *session) match(c context.Context, cand *candidate, cr *imap.SearchCriteria, n, last uint32) bool {
	m := &cand.m
	for _, set := range cr.SeqNum {
		if imap.IsSearchRes(set) {
			if !s.mb.saved.Contains(imap.UID(m.UID)) {
				return false
			}
		} else if !inSeqSet(set, cand.seq, n) {
			return false
		}
	}
	for _, set := range cr.UID {
		if imap.IsSearchRes(set) {
			set = s.mb.saved
		}
		if !inUIDSet(set, m.UID, last) {
			return false
		}
	}
	for _, f := range cr.Flag {
		if isRecentFlag(f) && !s.mb.recent.has(m.UID) || !isRecentFlag(f) && !hasFlag(m.Flags, string(f)) {
			return false
		}
	}
	for _, f := range cr.NotFlag {
		if isRecentFlag(f) && s.mb.recent.has(m.UID) || !isRecentFlag(f) && hasFlag(m.Flags, string(f)) {
			return false
		}
	}
	if cr.ModSeq != nil && m.ModSeq < cr.ModSeq.ModSeq {
		return false
	}
	if cr.Larger != 0 && m.Size <= cr.Larger || cr.Smaller != 0 && m.Size >= cr.Smaller {
		return false
	}
	if !matchDate(time.Unix(0, m.InternalDate).In(time.FixedZone("", int(m.Zone))), cr.Since, cr.Before) {
		return false
	}
	if !cr.SentSince.IsZero() || !cr.SentBefore.IsZero() {
		t, err := netmail.ParseDate(s.header(c, cand).Get("Date"))
		if err != nil || !matchDate(t, cr.SentSince, cr.SentBefore) {
			return false
		}
	}
	for _, hf := range cr.Header {
		h := gomessage.Header{Header: *s.header(c, cand)}
		found := false
		for f := h.FieldsByKey(hf.Key); f.Next(); {
			v, _ := f.Text()
			if hf.Value == "" || containsFold(v, hf.Value) {
				found = true
				break
			}
		}
		if !found && hf.Value != "" && cand.info != nil {
			found = matchAddresses(envelopeField(&cand.info.Envelope, hf.Key), hf.Value)
		}
		if !found {
			return false
		}
	}
	for _, t := range cr.Body {
		s.header(c, cand)
		b := s.body(c, cand)
		start := int64(0)
		if cand.info != nil {
			start = min(cand.info.Body.Body, int64(len(b)))
		}
		if !bytes.Contains(bytes.ToLower(b[start:]), bytes.ToLower([]byte(t))) {
			return false
		}
	}
	for _, t := range cr.Text {
		if !bytes.Contains(bytes.ToLower(s.body(c, cand)), bytes.ToLower([]byte(t))) {
			return false
		}
	}
	for i := range cr.Not {
		if s.match(c, cand, &cr.Not[i], n, last) {
			return false
		}
	}
	for i := range cr.Or {
		if !s.match(c, cand, &cr.Or[i][0], n, last) && !s.match(c, cand, &cr.Or[i][1], n, last) {
			return false
		}
	}
	return cand.err == nil
}

// envelopeField is the parsed address list of an address header, nil for
// other fields.
func envelopeField(env *mailbox.Envelope, key string) []mailbox.Address {
	switch strings.ToLower(key) {
	case "from":
		return env.From
	case "sender":
		return env.Sender
	case "reply-to":
		return env.ReplyTo
	case "to":
		return env.To
	case "cc":
		return env.Cc
	case "bcc":
		return env.Bcc
	}
	return nil
}

// matchAddresses: SEARCH FROM/TO/CC/BCC (and HEADER on those fields) also
// match the addresses as parsed (RFC 3501 6.4.4 searches the envelope's
// field), so that "john@example.com" finds "john(work)@example.com" and a
// display name found in a comment or encoded word matches in UTF-8.
func matchAddresses(l []mailbox.Address, needle string) bool {
	for _, a := range l {
		var text string
		switch {
		case a.Host != "":
			text = a.Name + " <" + a.Mailbox + "@" + a.Host + ">"
		case a.Mailbox != "":
			text = a.Mailbox // a group's name
		default:
			continue
		}
		if containsFold(text, needle) {
			return true
		}
	}
	return false
}
