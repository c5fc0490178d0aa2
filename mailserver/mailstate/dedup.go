package mailstate

// Retried deliveries.
//
// An SMTP or LMTP client that loses the connection (or times out) after
// sending a message but before reading the 250 does not know whether the
// message was stored, and sends it again. MailDeliverOnce remembers, per
// mailbox, a digest of what the client sent (chosen by the proposer; the
// stored bytes differ between attempts because of the Received: header)
// with the UID it got, for a window the proposer chooses. A delivery whose
// (mailbox, digest) is remembered and not expired appends nothing, adds no
// reference, and answers MailOK with the earlier UID: the retry's own
// reference is released like that of a delivery nobody accepted.
//
// Expiry uses only the proposer's times carried in the commands, so every
// node agrees. Each MailDeliverOnce removes a few expired records of the
// users it names, oldest first, so the memory of a user who keeps
// receiving mail stays around one window's worth of deliveries. The
// records live in the user's tenant: MailUserDelete removes them, and
// snapshots carry them like every tenant key.

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"hastore/replica/meta"
)

// MaxMailDedupWindow bounds MailDeliverOnce.Window (7 days).
const MaxMailDedupWindow = int64(7 * 24 * 3600 * 1e9)

// mailDedupExpirePerUser is how many expired retry records one command
// removes per user it names. Each command adds at most one per entry, so
// removing a few more keeps up.
const mailDedupExpirePerUser = 8

// MailDeliverOnce is MailDeliver with a memory of retries: Digests[i]
// identifies what the client sent for Messages[i] (all zero: no memory
// for that message). An entry whose mailbox received the same digest
// through a MailDeliverOnce less than Window nanoseconds before (by the
// proposers' clocks) is answered MailOK with the earlier delivery's UID
// in both UID and SrcUID, and appends nothing; a fresh append has SrcUID
// 0. A retry's outcome counts as accepted for AllOrNothing.
//
// Old nodes do not know this type: propose it only once every node runs a
// release that knows it.
type MailDeliverOnce struct {
	MailDeliver
	Digests [][32]byte
	Window  int64
}

func (MailDeliverOnce) Type() meta.CommandType { return TypeMailDeliverOnce }

func (c MailDeliverOnce) encode(e *encoder) {
	c.MailDeliver.encode(e)
	e.uvarint(uint64(len(c.Digests)))
	for i := range c.Digests {
		e.bytes(c.Digests[i][:])
	}
	e.varint(c.Window)
}

func decodeMailDeliverOnce(d *decoder) MailDeliverOnce {
	c := MailDeliverOnce{MailDeliver: decodeMailDeliver(d)}
	if n := d.count(MaxMailMessages, 33); n > 0 {
		c.Digests = make([][32]byte, n)
		for i := range c.Digests {
			b := d.bytes()
			if d.err == nil && len(b) != 32 {
				d.fail(fmt.Errorf("digest of %d bytes, want 32", len(b)))
			}
			copy(c.Digests[i][:], b)
		}
	}
	c.Window = d.varint()
	return c
}

func (c MailDeliverOnce) applyMail(t *mailTxn) meta.Result {
	if err := c.validate(); err != nil {
		return result(meta.StatusInvalid, "mail deliver once: %v", err)
	}
	if len(c.Digests) != len(c.Messages) {
		return result(meta.StatusInvalid, "mail deliver once: %d digests for %d messages", len(c.Digests), len(c.Messages))
	}
	if c.Window <= 0 || c.Window > MaxMailDedupWindow {
		return result(meta.StatusInvalid, "mail deliver once: window %d ns, want 1..%d", c.Window, MaxMailDedupWindow)
	}
	return c.MailDeliver.apply(t, &c)
}

// digest returns message i's digest, nil without one (or without once).
func (c *MailDeliverOnce) digest(i int) *[32]byte {
	if c == nil || c.Digests[i] == ([32]byte{}) {
		return nil
	}
	return &c.Digests[i]
}

func mailRetryKey(mb uint64, digest *[32]byte) string {
	return fmt.Sprintf("r/%016x/%s", mb, hex.EncodeToString(digest[:]))
}

const mailRetryExpiryPrefix = "x/"

func mailRetryExpiryKey(expires int64, mb uint64, digest *[32]byte) string {
	return fmt.Sprintf("%s%016x/%016x/%s", mailRetryExpiryPrefix, uint64(expires), mb, hex.EncodeToString(digest[:]))
}

const mailRetryRecordV1 = 1

func encodeMailRetry(uid uint32, expires int64) []byte {
	b := []byte{mailRetryRecordV1}
	b = binary.AppendUvarint(b, uint64(uid))
	return binary.AppendVarint(b, expires)
}

func decodeMailRetry(b []byte) (uid uint32, expires int64, err error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != mailRetryRecordV1 {
		return 0, 0, fmt.Errorf("retry record version %d unknown", v)
	}
	uid = d.u32()
	expires = d.varint()
	return uid, expires, d.end()
}

// retried returns the outcome of an earlier delivery of digest to mb that
// has not expired at now.
func (t *mailTxn) retried(addr string, mb *Mailbox, digest *[32]byte, now int64) (MailOutcome, bool) {
	b, ok := t.get(tk(MailUserTenant(addr), mailRetryKey(mb.ID, digest)))
	if !ok {
		return MailOutcome{}, false
	}
	uid, expires, err := decodeMailRetry(b)
	if err != nil {
		panic(fmt.Sprintf("meta: retry record of %q unreadable: %v", addr, err))
	}
	if now >= expires {
		return MailOutcome{}, false
	}
	oc := MailOutcome{Code: MailOK, Mailbox: mb.ID, UIDValidity: mb.UIDValidity, UID: uid, SrcUID: uid}
	if m, ok := t.message(addr, mb.ID, uid); ok { // gone if expunged since: still delivered once
		oc.ModSeq, oc.Flags = m.ModSeq, m.Flags
	}
	return oc, true
}

// remember records that digest was delivered to mb as uid, until expires.
func (t *mailTxn) remember(addr string, mb uint64, digest *[32]byte, uid uint32, expires int64) {
	ut := MailUserTenant(addr)
	k := tk(ut, mailRetryKey(mb, digest))
	if b, ok := t.get(k); ok { // an expired record of the same digest
		if _, old, err := decodeMailRetry(b); err == nil {
			t.del(tk(ut, mailRetryExpiryKey(old, mb, digest)))
		}
	}
	t.put(k, encodeMailRetry(uid, expires))
	t.put(tk(ut, mailRetryExpiryKey(expires, mb, digest)), []byte{})
}

// expireDeliveries removes up to mailDedupExpirePerUser expired retry
// records of each user named by entries.
func (t *mailTxn) expireDeliveries(entries []MailEntry, now int64) {
	done := map[string]bool{}
	for _, e := range entries {
		if done[e.User] {
			continue
		}
		done[e.User] = true
		ut := MailUserTenant(e.User)
		prefix := tk(ut, mailRetryExpiryPrefix)
		end := tk(ut, fmt.Sprintf("%s%016x", mailRetryExpiryPrefix, uint64(now)))
		for _, x := range t.scanRange(prefix, end, mailDedupExpirePerUser) {
			rest := strings.TrimPrefix(x.Key, prefix) // <exp>/<mb>/<digest>
			parts := strings.SplitN(rest, "/", 3)
			t.del(x.Key)
			if len(parts) != 3 {
				continue
			}
			rk := tk(ut, "r/"+parts[1]+"/"+parts[2])
			if b, ok := t.get(rk); ok {
				// Only if it is this record: a newer delivery of the
				// digest replaced it with a later expiry.
				if _, exp, err := decodeMailRetry(b); err == nil && fmt.Sprintf("%016x", uint64(exp)) == parts[0] {
					t.del(rk)
				}
			}
		}
	}
}
