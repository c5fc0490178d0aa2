package mailstate

// MailImport: messages migrated from another server (a Dovecot maildir),
// appended with the UIDs and UIDVALIDITY they had there, so that clients
// keep their caches, and remembered by a source key, so that running the
// import again appends nothing twice.
//
// Keys, in the user's tenant beside the mailbox's messages:
//
//	t/mail.<address>/x/<mailbox id>/<source key>   UID the message got (uvarint)
//
// The memory stays when the message is expunged (a re-run must not bring
// back what the user deleted) and goes with the mailbox's user; a deleted
// mailbox leaves it behind under an ID never used again.

import (
	"encoding/binary"
	"fmt"
	"math"

	"hastore/replica/meta"
)

// MaxMailImportKey bounds a source key.
const MaxMailImportKey = 200

// MailImportMessage is one message of a MailImport. The proposer holds a
// reference to Object, which the command consumes (kept by the message,
// or released if it is not appended).
type MailImportMessage struct {
	Key          string // the message's name at the source, unique in the mailbox
	UID          uint32 // its UID at the source; 0: none, take the next
	Object       BlobID
	Size         int64
	InternalDate int64
	Zone         int32
	Info         []byte
	Flags        []string
}

// MailImport appends migrated messages to one mailbox of User (by name;
// "" is INBOX). meta.StatusNotFound if the user or the mailbox does not
// exist. Quota is not applied: the operator moves mail that exists.
//
// UIDVALIDITY: if UIDValidity is set and the mailbox never held a message
// (UIDNEXT 1), the mailbox takes it. UIDs are then kept: a message whose
// UID is at or above UIDNEXT gets it (UIDs must ascend within the
// command); otherwise, or when the mailbox's UIDVALIDITY differs from
// UIDValidity (it held mail before the import), the message gets the next
// UID, and its outcome's UID says which.
//
// One outcome per message, in order: MailOK with the UID (SrcUID equal to
// UID when the key was imported before and nothing was appended),
// MailMailboxFull when UIDs ran out. Without messages it only gives an
// empty mailbox the source's UIDVALIDITY.
type MailImport struct {
	User        string
	Mailbox     string
	UIDValidity uint32
	Messages    []MailImportMessage
	Now         int64
}

func (MailImport) Type() meta.CommandType { return TypeMailImport }

// AppendBody implements meta.Command.
func (c MailImport) AppendBody(b []byte) []byte { return appendBody(b, c.encode) }

func (c MailImport) encode(e *encoder) {
	e.str(c.User)
	e.str(c.Mailbox)
	e.uvarint(uint64(c.UIDValidity))
	e.uvarint(uint64(len(c.Messages)))
	for _, m := range c.Messages {
		e.str(m.Key)
		e.uvarint(uint64(m.UID))
		e.id(m.Object)
		e.varint(m.Size)
		e.varint(m.InternalDate)
		e.varint(int64(m.Zone))
		e.bytes(m.Info)
		e.strs(m.Flags)
	}
	e.varint(c.Now)
}

func decodeMailImport(d *decoder) MailImport {
	var c MailImport
	c.User = d.str()
	c.Mailbox = d.str()
	c.UIDValidity = d.u32()
	if n := d.count(MaxMailMessages, 38); n > 0 {
		c.Messages = make([]MailImportMessage, n)
		for i := range c.Messages {
			m := &c.Messages[i]
			m.Key = d.str()
			m.UID = d.u32()
			m.Object = d.id()
			m.Size = d.varint()
			m.InternalDate = d.varint()
			m.Zone = int32(d.int())
			m.Info = d.bytes()
			m.Flags = d.strs(MaxMailFlags)
		}
	}
	c.Now = d.varint()
	return c
}

// MailImportKey is the key of the memory of an imported message.
func MailImportKey(mailbox uint64, key string) string { return fmt.Sprintf("x/%016x/", mailbox) + key }

func (c MailImport) validate() error {
	if err := ValidMailAddress(c.User); err != nil {
		return err
	}
	if c.Mailbox != "" {
		if err := ValidMailboxName(c.Mailbox); err != nil {
			return err
		}
	}
	if err := validNow(c.Now); err != nil {
		return err
	}
	if len(c.Messages) > MaxMailMessages {
		return fmt.Errorf("%d messages, want at most %d", len(c.Messages), MaxMailMessages)
	}
	keys := map[string]bool{}
	var last uint32
	for i, m := range c.Messages {
		switch {
		case m.Key == "" || len(m.Key) > MaxMailImportKey:
			return fmt.Errorf("message %d: source key of %d bytes, want 1..%d", i, len(m.Key), MaxMailImportKey)
		case keys[m.Key]:
			return fmt.Errorf("message %d: source key %q listed twice", i, m.Key)
		case m.Object.IsZero():
			return fmt.Errorf("message %d: zero object ID", i)
		case m.Size < 0:
			return fmt.Errorf("message %d: negative size", i)
		case len(m.Info) > MaxMailInfo:
			return fmt.Errorf("message %d: info of %d bytes exceeds %d", i, len(m.Info), MaxMailInfo)
		case m.UID != 0 && m.UID <= last:
			return fmt.Errorf("message %d: UID %d does not ascend", i, m.UID)
		}
		if _, err := CanonicalFlags(m.Flags); err != nil {
			return fmt.Errorf("message %d: %v", i, err)
		}
		keys[m.Key] = true
		if m.UID != 0 {
			last = m.UID
		}
	}
	return nil
}

func (c MailImport) applyMail(t *mailTxn) meta.Result {
	if err := c.validate(); err != nil {
		return result(meta.StatusInvalid, "mail import: %v", err)
	}
	for i, m := range c.Messages {
		o, ok := t.tx.Object(m.Object)
		switch {
		case !ok:
			return result(meta.StatusConflict, "mail import: message %d: object %s has no record", i, m.Object)
		case o.Refs < 1:
			return result(meta.StatusConflict, "mail import: message %d: object %s holds no reference (tombstone)", i, m.Object)
		case o.Size != m.Size:
			return result(meta.StatusConflict, "mail import: message %d: object %s has %d bytes, message says %d", i, m.Object, o.Size, m.Size)
		}
	}
	if _, ok := t.user(c.User); !ok {
		return result(meta.StatusNotFound, "mail import: user %q does not exist", c.User)
	}
	name := c.Mailbox
	if name == "" {
		name = InboxName
	}
	id, ok := t.mailboxID(c.User, name)
	if !ok {
		return result(meta.StatusNotFound, "mail import: mailbox %q of %q does not exist", name, c.User)
	}
	mb, ok := t.mailbox(c.User, id)
	if !ok {
		panic(fmt.Sprintf("meta: mailbox %q of %q has a name but no record", name, c.User))
	}
	s := t.state(c.User)
	if c.UIDValidity != 0 && mb.UIDValidity != c.UIDValidity && mb.UIDNext == 1 && mb.Messages == 0 {
		// Never held a message: no client can hold a UID of it. Mailboxes
		// created later still get UIDVALIDITYs above every one used.
		mb.UIDValidity = c.UIDValidity
		s.LastUIDValidity = max(s.LastUIDValidity, c.UIDValidity)
	}
	keep := c.UIDValidity != 0 && mb.UIDValidity == c.UIDValidity
	out := make([]MailOutcome, len(c.Messages))
	tenant := MailUserTenant(c.User)
	for i, m := range c.Messages {
		k := tk(tenant, MailImportKey(mb.ID, m.Key))
		if v, ok := t.get(k); ok {
			uid, n := binary.Uvarint(v)
			if n <= 0 || uid > math.MaxUint32 {
				panic(fmt.Sprintf("meta: import memory %q unreadable", k))
			}
			out[i] = MailOutcome{Code: MailOK, Mailbox: mb.ID, UIDValidity: mb.UIDValidity, UID: uint32(uid), SrcUID: uint32(uid)}
			if !t.addRefs(m.Object, -1, c.Now) {
				panic(fmt.Sprintf("meta: mail import: reference count of %s went wrong", m.Object))
			}
			continue
		}
		if keep && m.UID != 0 && m.UID >= mb.UIDNext && m.UID < math.MaxUint32 {
			mb.UIDNext = m.UID
		}
		flags, _ := CanonicalFlags(m.Flags) // validated
		oc := t.appendMessage(c.User, &mb, MailMessage{Object: m.Object, Size: m.Size, InternalDate: m.InternalDate, Zone: m.Zone, Flags: flags}, nonNil(m.Info))
		out[i] = oc
		if oc.Code != MailOK {
			if !t.addRefs(m.Object, -1, c.Now) {
				panic(fmt.Sprintf("meta: mail import: reference count of %s went wrong", m.Object))
			}
			continue
		}
		t.put(k, binary.AppendUvarint(nil, uint64(oc.UID)))
		s.Bytes += m.Size
		s.Messages++
	}
	t.putState(c.User, &s)
	t.putMailbox(c.User, &mb)
	return meta.Result{Status: meta.StatusOK, Items: items(out)}
}

// Imported returns the UID a message imported under key got in a mailbox,
// if it was imported.
func (v MailView) Imported(address string, mailbox uint64, key string) (uint32, bool, error) {
	b, ok, err := v.R.TenantGet(MailUserTenant(address), MailImportKey(mailbox, key))
	if err != nil || !ok {
		return 0, false, err
	}
	uid, n := binary.Uvarint(b)
	if n <= 0 || uid > math.MaxUint32 {
		return 0, false, fmt.Errorf("import memory of %q in mailbox %d unreadable", key, mailbox)
	}
	return uint32(uid), true, nil
}
