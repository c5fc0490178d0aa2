package mailstate

// Mail: accounts, mailboxes and messages, as FSM commands.
//
// # Keys
//
// Mail state lives in the tenant keyspace (so snapshots, TenantScan and
// later range-partitioning treat it like any tenant's), under tenants that
// only these commands write:
//
//	t/mail/d/<domain>                 domain record (created, user count)
//	t/mail/u/<domain>/<local>         user record (password hash, quota, disabled)
//	t/mail.<address>/s                user state (next mailbox ID, last UIDVALIDITY, bytes and messages used)
//	t/mail.<address>/n/<name>         mailbox name → mailbox ID
//	t/mail.<address>/b/<id>           mailbox record (name, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, counts)
//	t/mail.<address>/m/<id>/<uid>     message record (object, size, INTERNALDATE, flags, modseq)
//	t/mail.<address>/i/<id>/<uid>     message info (ENVELOPE/BODYSTRUCTURE, opaque to the FSM)
//	t/mail.<address>/r/<id>/<digest>  retry memory: UID and expiry of a MailDeliverOnce (dedup.go)
//	t/mail.<address>/x/<exp>/<id>/<digest>  the same, ordered by expiry, for expiring it
//
// <id> is 16 and <uid> 8 lowercase hex digits, so keys sort numerically and
// a mailbox's messages are one key range in UID order. Mailbox IDs come from
// a per-user counter and are never reused, so a command naming a mailbox by
// ID can never hit a newer mailbox of the same name.
//
// # Determinism
//
// UIDs, UIDVALIDITY (max(proposed, last assigned + 1) per user), modseqs and
// quota decisions are made inside Apply from the state; times come from
// the proposer. Each mail command stages its writes and commits them only if
// it succeeds, so a failed command (any status but OK) changes nothing, in
// or out of a Batch.
//
// # References
//
// Each message record holds exactly one reference to its object:
//   - MailDeliver: the proposer holds one reference per message (from its
//     Cluster.Put, which adds one even when the content was known) and hands
//     it to the command. When the command applies with meta.StatusOK the held
//     reference is consumed: the object's Refs change by (entries accepted
//     for it − 1), so a body delivered to n recipients ends with n more
//     references than before the Put, and one delivered to nobody (every
//     entry rejected) is released. When the status is not OK nothing
//     changed and the proposer still holds its reference (and drops it with
//     DecRef). When the outcome is unknown the proposer keeps it: a leaked
//     reference only delays garbage collection, a doubled release would
//     free a body still in use.
//   - MailCopy adds one reference per copied entry; a move transfers them.
//   - MailExpunge, MailboxDelete and MailUserDelete release one reference
//     per removed entry, in the same entry that removes it, so storage is
//     freed exactly once per entry (and a raft replay is skipped by the
//     applied index like any other command).

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"

	"hastore/replica/meta"
)

// BlobID names a stored object.
type BlobID = meta.BlobID

// Mail command types: a block of its own (32–47), so that other features
// adding commands at the same time cannot collide with it.
const (
	TypeMailDomainCreate meta.CommandType = 32
	TypeMailDomainDelete meta.CommandType = 33
	TypeMailUserCreate   meta.CommandType = 34
	TypeMailUserUpdate   meta.CommandType = 35
	TypeMailUserDelete   meta.CommandType = 36
	TypeMailboxCreate    meta.CommandType = 37
	TypeMailboxDelete    meta.CommandType = 38
	TypeMailboxRename    meta.CommandType = 39
	TypeMailDeliver      meta.CommandType = 40
	TypeMailStore        meta.CommandType = 41
	TypeMailExpunge      meta.CommandType = 42
	TypeMailCopy         meta.CommandType = 43
	TypeMailDeliverOnce  meta.CommandType = 44 // dedup.go
)

func mailTypeName(t meta.CommandType) (string, bool) {
	switch t {
	case TypeMailDomainCreate:
		return "MailDomainCreate", true
	case TypeMailDomainDelete:
		return "MailDomainDelete", true
	case TypeMailUserCreate:
		return "MailUserCreate", true
	case TypeMailUserUpdate:
		return "MailUserUpdate", true
	case TypeMailUserDelete:
		return "MailUserDelete", true
	case TypeMailboxCreate:
		return "MailboxCreate", true
	case TypeMailboxDelete:
		return "MailboxDelete", true
	case TypeMailboxRename:
		return "MailboxRename", true
	case TypeMailDeliver:
		return "MailDeliver", true
	case TypeMailStore:
		return "MailStore", true
	case TypeMailExpunge:
		return "MailExpunge", true
	case TypeMailCopy:
		return "MailCopy", true
	case TypeMailDeliverOnce:
		return "MailDeliverOnce", true
	}
	if name, ok := mailAliasTypeName(t); ok { // alias.go
		return name, true
	}
	return migrateTypeName(t) // users.go
}

// Mail tenants and limits. Like the other limits they are replicated
// semantics: every node must run with the same values.
const (
	// MailTenant holds domains and users.
	MailTenant = "mail"
	// MailUserTenantPrefix + address is the tenant of one user's mailboxes.
	MailUserTenantPrefix = "mail."
	// MaxMailAddress bounds an address (the user tenant name must fit in
	// 255 bytes).
	MaxMailAddress = 255 - len(MailUserTenantPrefix)
	// MaxMailboxName bounds a mailbox name in bytes (hierarchy included).
	MaxMailboxName = 512
	// MaxMailboxes bounds the mailboxes of one user.
	MaxMailboxes = 10000
	// MaxMailEntries bounds the entries (recipients) of one MailDeliver.
	MaxMailEntries = 1000
	// MaxMailMessages bounds the distinct messages of one MailDeliver.
	MaxMailMessages = 100
	// MaxMailInfo bounds one message's info (ENVELOPE, BODYSTRUCTURE).
	MaxMailInfo = 256 << 10
	// MaxMailFlags bounds the flags of one message, MaxMailFlag one flag.
	MaxMailFlags = 100
	MaxMailFlag  = 128
	// MaxMailUIDs bounds the UIDs one MailStore, MailExpunge or MailCopy
	// names: larger sets are split by the proposer.
	MaxMailUIDs = 20000
	// MaxMailDrop bounds the messages MailboxDelete and MailUserDelete
	// remove in one entry; bigger mailboxes are expunged in chunks first.
	MaxMailDrop = 20000
	// MaxMailPassword bounds a stored password hash.
	MaxMailPassword = 512
)

// System flags, in their canonical spelling. \Recent is per session and
// never stored.
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
)

// Special-use attributes (RFC 6154) a mailbox may carry.
var specialUses = []string{`\All`, `\Archive`, `\Drafts`, `\Flagged`, `\Junk`, `\Sent`, `\Trash`}

// InboxName is the one mailbox name that is case-insensitive.
const InboxName = "INBOX"

// MailboxDelim separates the levels of a mailbox name.
const MailboxDelim = '/'

// ---------------------------------------------------------------------------
// Records.

// MailDomain is a local mail domain.
type MailDomain struct {
	Name    string
	Created int64 // unix nanoseconds, proposer's clock
	Users   int64
}

// MailUser is an account. Address is lowercase local@domain.
type MailUser struct {
	Address string
	// PasswordHash is a PHC-style string ($argon2id$... or $2b$...); the
	// FSM stores it as given and never sees a password.
	PasswordHash string
	Quota        int64 // bytes; 0 means no limit
	Disabled     bool  // refuses logins and deliveries (set while deleting)
	Created      int64
}

// MailUsage is what a user's messages take.
type MailUsage struct {
	Bytes    int64
	Messages int64
}

type mailUserState struct {
	NextMailbox     uint64
	LastUIDValidity uint32
	MailUsage
}

// Mailbox is one mailbox of a user.
type Mailbox struct {
	ID          uint64
	Name        string
	UIDValidity uint32
	// UIDNext is the UID the next message will get; UIDs are assigned in
	// ascending order and never reused.
	UIDNext uint32
	// HighestModSeq is the modseq of the last change in the mailbox
	// (append, flag change, expunge); every change increments it.
	HighestModSeq uint64
	Messages      uint32
	Unseen        uint32
	Size          int64 // bytes of all messages
	SpecialUse    string
	Created       int64
}

// MailMessage is the record of one message in a mailbox.
type MailMessage struct {
	UID          uint32
	Object       BlobID // holds one reference
	Size         int64
	InternalDate int64 // unix nanoseconds
	Zone         int32 // INTERNALDATE's zone, seconds east of UTC
	Flags        []string
	ModSeq       uint64
}

// ---------------------------------------------------------------------------
// Commands.

// MailDomainCreate adds a local domain; meta.StatusConflict if it exists.
type MailDomainCreate struct {
	Domain string
	Now    int64
}

// MailDomainDelete removes a domain; meta.StatusConflict while it has users,
// meta.StatusNotFound if it does not exist.
type MailDomainDelete struct {
	Domain string
}

// MailboxSpec is a mailbox created with a user.
type MailboxSpec struct {
	Name       string
	SpecialUse string
}

// MailUserCreate adds a user to an existing domain (meta.StatusNotFound
// otherwise; meta.StatusConflict if the address exists) together with its
// mailboxes. UIDValidity is the proposer's choice for the first mailbox;
// the others follow it.
type MailUserCreate struct {
	User        MailUser // Created is set from Now
	Mailboxes   []MailboxSpec
	UIDValidity uint32
	Now         int64
}

// MailUserUpdate changes what its Set* fields say; meta.StatusNotFound if the
// user does not exist.
type MailUserUpdate struct {
	Address      string
	SetPassword  bool
	PasswordHash string
	SetQuota     bool
	Quota        int64
	SetDisabled  bool
	Disabled     bool
}

// MailUserDelete removes a user, its mailboxes and messages (releasing one
// reference per message). meta.StatusConflict if the user has more than
// MaxMailDrop messages: expunge in chunks first.
type MailUserDelete struct {
	Address string
	Now     int64
}

// MailboxCreate creates a mailbox (and any missing parents, which get the
// following UIDVALIDITYs). meta.StatusConflict if it exists, meta.StatusNotFound if
// the user does not.
type MailboxCreate struct {
	User        string
	Name        string
	SpecialUse  string
	UIDValidity uint32
	Now         int64
}

// MailboxDelete deletes a mailbox and its messages. INBOX cannot be
// deleted (meta.StatusInvalid); more than MaxMailDrop messages is
// meta.StatusConflict. Children keep existing.
type MailboxDelete struct {
	User    string
	Mailbox uint64
	Now     int64
}

// MailboxRename renames a mailbox and its children (Name/...). Renaming
// INBOX moves its messages into the new mailbox and creates an empty INBOX
// with a new ID and UIDValidity (RFC 3501 6.3.5); INBOX's children stay.
type MailboxRename struct {
	User        string
	Mailbox     uint64
	NewName     string
	UIDValidity uint32 // for the new INBOX
	Now         int64
}

// MailMessageSpec is one body a MailDeliver appends. The proposer holds a
// reference to Object, which the command consumes (see the notes at the top of mail.go).
type MailMessageSpec struct {
	Object       BlobID
	Size         int64 // must equal the object's size
	InternalDate int64
	Zone         int32
	Info         []byte // ENVELOPE/BODYSTRUCTURE, computed once at delivery
}

// MailEntry puts one message into one mailbox (a recipient's, or the
// target of an APPEND).
type MailEntry struct {
	User    string
	Mailbox string // name; "" means INBOX
	Message int    // index into MailDeliver.Messages
	Flags   []string
}

// MailDeliver appends messages to mailboxes, one Raft entry for a whole
// delivery. Each entry is judged alone (no such user, disabled, no such
// mailbox, over quota; see Outcomes, one outcome per entry in order)
// unless AllOrNothing, which turns any rejection into a rejection of
// every entry (MailAborted for those that would have succeeded). The
// status is meta.StatusOK whenever the references were consumed, even if no
// entry was accepted; meta.StatusConflict if a message's object does not hold
// the proposer's reference.
type MailDeliver struct {
	Messages     []MailMessageSpec
	Entries      []MailEntry
	AllOrNothing bool
	Now          int64
}

// MailStoreOp says how MailStore changes flags.
type MailStoreOp uint8

// MailStore operations.
const (
	MailFlagsAdd MailStoreOp = iota + 1
	MailFlagsRemove
	MailFlagsReplace
)

// MailStore changes the flags of messages; one outcome per UID named:
// MailOK (with the resulting flags and modseq; unchanged messages keep
// theirs), MailNoMessage, or MailModified when UnchangedSince (if not 0)
// is below the message's modseq (CONDSTORE).
type MailStore struct {
	User           string
	Mailbox        uint64
	UIDs           []uint32
	Op             MailStoreOp
	Flags          []string
	UnchangedSince uint64
}

// MailExpunge removes messages, releasing one reference each; one outcome
// per UID: MailOK with the modseq of the removal, or MailNoMessage.
type MailExpunge struct {
	User    string
	Mailbox uint64
	UIDs    []uint32
	Now     int64
}

// MailCopy copies (or with Move, moves) messages to another mailbox of the
// same user without touching bodies: one outcome per UID, MailOK with the
// new UID in UID and the source UID in SrcUID, or MailNoMessage. A copy
// that would exceed the quota fails as a whole: meta.StatusConflict with every
// outcome MailOverQuota.
type MailCopy struct {
	User    string
	Mailbox uint64
	UIDs    []uint32
	Dest    uint64
	Move    bool
	Now     int64
}

// MailCode is the outcome of one entry of a mail command.
type MailCode uint8

// Mail outcomes.
const (
	mailCodeUnknown MailCode = iota
	MailOK
	MailNoUser      // no such user
	MailDisabled    // the user is disabled
	MailNoMailbox   // no such mailbox
	MailOverQuota   // the user's quota would be exceeded
	MailMailboxFull // the mailbox has used every UID
	MailNoMessage   // no message with that UID
	MailModified    // changed since UnchangedSince
	MailAborted     // AllOrNothing: another entry was rejected
	mailCodeEnd
)

func (c MailCode) String() string {
	switch c {
	case MailOK:
		return "ok"
	case MailNoUser:
		return "no such user"
	case MailDisabled:
		return "user disabled"
	case MailNoMailbox:
		return "no such mailbox"
	case MailOverQuota:
		return "over quota"
	case MailMailboxFull:
		return "mailbox UIDs exhausted"
	case MailNoMessage:
		return "no such message"
	case MailModified:
		return "modified since"
	case MailAborted:
		return "aborted"
	}
	return fmt.Sprintf("MailCode(%d)", uint8(c))
}

// MailOutcome is what a mail command did to one entry or message. The
// fields set depend on the command; see each command.
type MailOutcome struct {
	Code        MailCode
	Mailbox     uint64
	UIDValidity uint32
	UID         uint32
	SrcUID      uint32
	ModSeq      uint64
	Flags       []string
}

func (MailDomainCreate) Type() meta.CommandType { return TypeMailDomainCreate }
func (MailDomainDelete) Type() meta.CommandType { return TypeMailDomainDelete }
func (MailUserCreate) Type() meta.CommandType   { return TypeMailUserCreate }
func (MailUserUpdate) Type() meta.CommandType   { return TypeMailUserUpdate }
func (MailUserDelete) Type() meta.CommandType   { return TypeMailUserDelete }
func (MailboxCreate) Type() meta.CommandType    { return TypeMailboxCreate }
func (MailboxDelete) Type() meta.CommandType    { return TypeMailboxDelete }
func (MailboxRename) Type() meta.CommandType    { return TypeMailboxRename }
func (MailDeliver) Type() meta.CommandType      { return TypeMailDeliver }
func (MailStore) Type() meta.CommandType        { return TypeMailStore }
func (MailExpunge) Type() meta.CommandType      { return TypeMailExpunge }
func (MailCopy) Type() meta.CommandType         { return TypeMailCopy }

// ---------------------------------------------------------------------------
// Encoding.

func (e *encoder) strs(ss []string) {
	e.uvarint(uint64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
}

func (d *decoder) strs(max int) []string {
	n := d.count(max, 1)
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.str()
	}
	return ss
}

func (e *encoder) uids(u []uint32) {
	e.uvarint(uint64(len(u)))
	for _, v := range u {
		e.uvarint(uint64(v))
	}
}

func (d *decoder) u32() uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail(fmt.Errorf("value %d exceeds 32 bits", v))
		return 0
	}
	return uint32(v)
}

func (d *decoder) uids() []uint32 {
	n := d.count(MaxMailUIDs, 1)
	if n == 0 {
		return nil
	}
	u := make([]uint32, n)
	for i := range u {
		u[i] = d.u32()
	}
	return u
}

func (e *encoder) mailUser(u *MailUser) {
	e.str(u.Address)
	e.str(u.PasswordHash)
	e.varint(u.Quota)
	e.bool(u.Disabled)
	e.varint(u.Created)
}

func (d *decoder) mailUser() MailUser {
	var u MailUser
	u.Address = d.str()
	u.PasswordHash = d.str()
	u.Quota = d.varint()
	u.Disabled = d.bool()
	u.Created = d.varint()
	return u
}

func (c MailDomainCreate) encode(e *encoder) { e.str(c.Domain); e.varint(c.Now) }
func (c MailDomainDelete) encode(e *encoder) { e.str(c.Domain) }
func (c MailUserCreate) encode(e *encoder) {
	e.mailUser(&c.User)
	e.uvarint(uint64(len(c.Mailboxes)))
	for _, m := range c.Mailboxes {
		e.str(m.Name)
		e.str(m.SpecialUse)
	}
	e.uvarint(uint64(c.UIDValidity))
	e.varint(c.Now)
}
func (c MailUserUpdate) encode(e *encoder) {
	e.str(c.Address)
	e.bool(c.SetPassword)
	e.str(c.PasswordHash)
	e.bool(c.SetQuota)
	e.varint(c.Quota)
	e.bool(c.SetDisabled)
	e.bool(c.Disabled)
}
func (c MailUserDelete) encode(e *encoder) { e.str(c.Address); e.varint(c.Now) }
func (c MailboxCreate) encode(e *encoder) {
	e.str(c.User)
	e.str(c.Name)
	e.str(c.SpecialUse)
	e.uvarint(uint64(c.UIDValidity))
	e.varint(c.Now)
}
func (c MailboxDelete) encode(e *encoder) { e.str(c.User); e.uvarint(c.Mailbox); e.varint(c.Now) }
func (c MailboxRename) encode(e *encoder) {
	e.str(c.User)
	e.uvarint(c.Mailbox)
	e.str(c.NewName)
	e.uvarint(uint64(c.UIDValidity))
	e.varint(c.Now)
}
func (c MailDeliver) encode(e *encoder) {
	e.uvarint(uint64(len(c.Messages)))
	for _, m := range c.Messages {
		e.id(m.Object)
		e.varint(m.Size)
		e.varint(m.InternalDate)
		e.varint(int64(m.Zone))
		e.bytes(m.Info)
	}
	e.uvarint(uint64(len(c.Entries)))
	for _, en := range c.Entries {
		e.str(en.User)
		e.str(en.Mailbox)
		e.uvarint(uint64(en.Message))
		e.strs(en.Flags)
	}
	e.bool(c.AllOrNothing)
	e.varint(c.Now)
}
func (c MailStore) encode(e *encoder) {
	e.str(c.User)
	e.uvarint(c.Mailbox)
	e.uids(c.UIDs)
	e.u8(uint8(c.Op))
	e.strs(c.Flags)
	e.uvarint(c.UnchangedSince)
}
func (c MailExpunge) encode(e *encoder) {
	e.str(c.User)
	e.uvarint(c.Mailbox)
	e.uids(c.UIDs)
	e.varint(c.Now)
}
func (c MailCopy) encode(e *encoder) {
	e.str(c.User)
	e.uvarint(c.Mailbox)
	e.uids(c.UIDs)
	e.uvarint(c.Dest)
	e.bool(c.Move)
	e.varint(c.Now)
}

// decodeMailBody decodes the body of a mail command; ok is false for a type
// that is not one.
func decodeMailBody(d *decoder, t meta.CommandType) (cmd meta.Command, ok bool) {
	switch t {
	case TypeMailDomainCreate:
		var c MailDomainCreate
		c.Domain = d.str()
		c.Now = d.varint()
		return c, true
	case TypeMailDomainDelete:
		return MailDomainDelete{Domain: d.str()}, true
	case TypeMailUserCreate:
		var c MailUserCreate
		c.User = d.mailUser()
		if n := d.count(MaxMailboxes, 2); n > 0 {
			c.Mailboxes = make([]MailboxSpec, n)
			for i := range c.Mailboxes {
				c.Mailboxes[i] = MailboxSpec{Name: d.str(), SpecialUse: d.str()}
			}
		}
		c.UIDValidity = d.u32()
		c.Now = d.varint()
		return c, true
	case TypeMailUserUpdate:
		var c MailUserUpdate
		c.Address = d.str()
		c.SetPassword = d.bool()
		c.PasswordHash = d.str()
		c.SetQuota = d.bool()
		c.Quota = d.varint()
		c.SetDisabled = d.bool()
		c.Disabled = d.bool()
		return c, true
	case TypeMailUserDelete:
		var c MailUserDelete
		c.Address = d.str()
		c.Now = d.varint()
		return c, true
	case TypeMailboxCreate:
		var c MailboxCreate
		c.User = d.str()
		c.Name = d.str()
		c.SpecialUse = d.str()
		c.UIDValidity = d.u32()
		c.Now = d.varint()
		return c, true
	case TypeMailboxDelete:
		var c MailboxDelete
		c.User = d.str()
		c.Mailbox = d.uvarint()
		c.Now = d.varint()
		return c, true
	case TypeMailboxRename:
		var c MailboxRename
		c.User = d.str()
		c.Mailbox = d.uvarint()
		c.NewName = d.str()
		c.UIDValidity = d.u32()
		c.Now = d.varint()
		return c, true
	case TypeMailDeliver:
		return decodeMailDeliver(d), true
	case TypeMailDeliverOnce:
		return decodeMailDeliverOnce(d), true
	case TypeMailStore:
		var c MailStore
		c.User = d.str()
		c.Mailbox = d.uvarint()
		c.UIDs = d.uids()
		c.Op = MailStoreOp(d.u8())
		c.Flags = d.strs(MaxMailFlags)
		c.UnchangedSince = d.uvarint()
		return c, true
	case TypeMailExpunge:
		var c MailExpunge
		c.User = d.str()
		c.Mailbox = d.uvarint()
		c.UIDs = d.uids()
		c.Now = d.varint()
		return c, true
	case TypeMailCopy:
		var c MailCopy
		c.User = d.str()
		c.Mailbox = d.uvarint()
		c.UIDs = d.uids()
		c.Dest = d.uvarint()
		c.Move = d.bool()
		c.Now = d.varint()
		return c, true
	}
	if cmd, ok := decodeMailAliasBody(d, t); ok { // alias.go
		return cmd, true
	}
	return decodeMigrateBody(d, t) // users.go
}

// decodeMailDeliver decodes MailDeliver's fields (also the head of
// MailDeliverOnce).
func decodeMailDeliver(d *decoder) MailDeliver {
	var c MailDeliver
	if n := d.count(MaxMailMessages, 36); n > 0 {
		c.Messages = make([]MailMessageSpec, n)
		for i := range c.Messages {
			m := &c.Messages[i]
			m.Object = d.id()
			m.Size = d.varint()
			m.InternalDate = d.varint()
			m.Zone = int32(d.int())
			m.Info = d.bytes()
		}
	}
	if n := d.count(MaxMailEntries, 4); n > 0 {
		c.Entries = make([]MailEntry, n)
		for i := range c.Entries {
			en := &c.Entries[i]
			en.User = d.str()
			en.Mailbox = d.str()
			en.Message = int(d.u32())
			en.Flags = d.strs(MaxMailFlags)
		}
	}
	c.AllOrNothing = d.bool()
	c.Now = d.varint()
	return c
}

// Record encodings.
const (
	mailDomainRecordV1  = 1
	mailUserRecordV1    = 1
	mailStateRecordV1   = 1
	mailboxRecordV1     = 1
	mailMessageRecordV1 = 1
)

func encodeMailDomain(m *MailDomain) []byte {
	e := encoder{}
	e.u8(mailDomainRecordV1)
	e.str(m.Name)
	e.varint(m.Created)
	e.varint(m.Users)
	return e.b
}

func decodeMailDomain(b []byte) (MailDomain, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != mailDomainRecordV1 {
		return MailDomain{}, fmt.Errorf("mail domain record version %d unknown", v)
	}
	var m MailDomain
	m.Name = d.str()
	m.Created = d.varint()
	m.Users = d.varint()
	return m, d.end()
}

func encodeMailUser(u *MailUser) []byte {
	e := encoder{}
	e.u8(mailUserRecordV1)
	e.mailUser(u)
	return e.b
}

func decodeMailUser(b []byte) (MailUser, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != mailUserRecordV1 {
		return MailUser{}, fmt.Errorf("mail user record version %d unknown", v)
	}
	u := d.mailUser()
	return u, d.end()
}

func encodeMailState(s *mailUserState) []byte {
	e := encoder{}
	e.u8(mailStateRecordV1)
	e.uvarint(s.NextMailbox)
	e.uvarint(uint64(s.LastUIDValidity))
	e.varint(s.Bytes)
	e.varint(s.Messages)
	return e.b
}

func decodeMailState(b []byte) (mailUserState, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != mailStateRecordV1 {
		return mailUserState{}, fmt.Errorf("mail user state version %d unknown", v)
	}
	var s mailUserState
	s.NextMailbox = d.uvarint()
	s.LastUIDValidity = d.u32()
	s.Bytes = d.varint()
	s.Messages = d.varint()
	return s, d.end()
}

func encodeMailbox(m *Mailbox) []byte {
	e := encoder{}
	e.u8(mailboxRecordV1)
	e.uvarint(m.ID)
	e.str(m.Name)
	e.uvarint(uint64(m.UIDValidity))
	e.uvarint(uint64(m.UIDNext))
	e.uvarint(m.HighestModSeq)
	e.uvarint(uint64(m.Messages))
	e.uvarint(uint64(m.Unseen))
	e.varint(m.Size)
	e.str(m.SpecialUse)
	e.varint(m.Created)
	return e.b
}

func decodeMailbox(b []byte) (Mailbox, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != mailboxRecordV1 {
		return Mailbox{}, fmt.Errorf("mailbox record version %d unknown", v)
	}
	var m Mailbox
	m.ID = d.uvarint()
	m.Name = d.str()
	m.UIDValidity = d.u32()
	m.UIDNext = d.u32()
	m.HighestModSeq = d.uvarint()
	m.Messages = d.u32()
	m.Unseen = d.u32()
	m.Size = d.varint()
	m.SpecialUse = d.str()
	m.Created = d.varint()
	return m, d.end()
}

func encodeMailMessage(m *MailMessage) []byte {
	e := encoder{b: make([]byte, 0, 64)}
	e.u8(mailMessageRecordV1)
	e.uvarint(uint64(m.UID))
	e.id(m.Object)
	e.varint(m.Size)
	e.varint(m.InternalDate)
	e.varint(int64(m.Zone))
	e.uvarint(m.ModSeq)
	e.strs(m.Flags)
	return e.b
}

// DecodeMailMessage decodes a message record as TenantScan returns it
// under a mailbox's message prefix.
func DecodeMailMessage(b []byte) (MailMessage, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != mailMessageRecordV1 {
		return MailMessage{}, fmt.Errorf("mail message record version %d unknown", v)
	}
	var m MailMessage
	m.UID = d.u32()
	m.Object = d.id()
	m.Size = d.varint()
	m.InternalDate = d.varint()
	m.Zone = int32(d.int())
	m.ModSeq = d.uvarint()
	m.Flags = d.strs(MaxMailFlags)
	return m, d.end()
}

// ---------------------------------------------------------------------------
// Names and keys.

// MailUserTenant returns the tenant holding address's mailboxes.
func MailUserTenant(address string) string { return MailUserTenantPrefix + address }

func mailDomainKey(domain string) string { return "d/" + domain }

func mailUserKey(address string) string {
	local, domain, _ := cutAddress(address)
	return "u/" + domain + "/" + local
}

const (
	mailStateKey = "s"
)

func mailNameKey(name string) string         { return "n/" + name }
func mailboxKey(id uint64) string            { return fmt.Sprintf("b/%016x", id) }
func mailMsgPrefix(mb uint64) string         { return fmt.Sprintf("m/%016x/", mb) }
func mailMsgKey(mb uint64, u uint32) string  { return fmt.Sprintf("m/%016x/%08x", mb, u) }
func mailInfoKey(mb uint64, u uint32) string { return fmt.Sprintf("i/%016x/%08x", mb, u) }

func cutAddress(a string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(a, '@')
	if i < 0 {
		return "", "", false
	}
	return a[:i], a[i+1:], true
}

// ValidMailDomain reports why domain is not a valid lowercase domain name.
func ValidMailDomain(domain string) error {
	if domain == "" || len(domain) > 253 {
		return fmt.Errorf("domain must be 1..253 bytes")
	}
	if domain[0] == '.' || domain[len(domain)-1] == '.' || strings.Contains(domain, "..") {
		return fmt.Errorf("domain %q has an empty label", domain)
	}
	for _, r := range domain {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.':
		case r >= 0x80 && r != utf8.RuneError && r != 0xFFFD:
		default:
			return fmt.Errorf("domain %q: character %q not allowed (lowercase letters, digits, '-' and '.')", domain, r)
		}
	}
	return nil
}

// ValidMailAddress reports why a is not a valid lowercase local@domain
// address that can name a user.
func ValidMailAddress(a string) error {
	if len(a) > MaxMailAddress {
		return fmt.Errorf("address longer than %d bytes", MaxMailAddress)
	}
	local, domain, ok := cutAddress(a)
	if !ok {
		return fmt.Errorf("address %q has no @", a)
	}
	if local == "" || len(local) > 64 {
		return fmt.Errorf("address %q: local part must be 1..64 bytes", a)
	}
	if !utf8.ValidString(local) {
		return fmt.Errorf("address %q: local part is not UTF-8", a)
	}
	for _, r := range local {
		if r <= ' ' || r == 0x7f || r >= 'A' && r <= 'Z' || strings.ContainsRune(`/@"\<>()[],;:`, r) {
			return fmt.Errorf("address %q: character %q not allowed in the local part", a, r)
		}
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return fmt.Errorf("address %q: misplaced '.' in the local part", a)
	}
	if err := ValidMailDomain(domain); err != nil {
		return fmt.Errorf("address %q: %v", a, err)
	}
	return nil
}

// CanonicalMailboxName returns name with a leading INBOX level in its
// canonical case ("inbox/x" → "INBOX/x"); other names are case-sensitive.
func CanonicalMailboxName(name string) string {
	if len(name) >= 5 && strings.EqualFold(name[:5], InboxName) && (len(name) == 5 || name[5] == MailboxDelim) {
		return InboxName + name[5:]
	}
	return name
}

// ValidMailboxName reports why name cannot name a mailbox. Names are UTF-8,
// levels separated by '/', no empty level, no control characters and no
// IMAP wildcards; INBOX must be in canonical case.
func ValidMailboxName(name string) error {
	if name == "" || len(name) > MaxMailboxName {
		return fmt.Errorf("mailbox name must be 1..%d bytes", MaxMailboxName)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("mailbox name %q is not UTF-8", name)
	}
	if CanonicalMailboxName(name) != name {
		return fmt.Errorf("mailbox name %q: INBOX is spelled INBOX", name)
	}
	for _, r := range name {
		if r < ' ' || r == 0x7f || r == '%' || r == '*' {
			return fmt.Errorf("mailbox name %q: character %q not allowed", name, r)
		}
	}
	if name[0] == MailboxDelim || name[len(name)-1] == MailboxDelim || strings.Contains(name, "//") {
		return fmt.Errorf("mailbox name %q has an empty level", name)
	}
	return nil
}

func validSpecialUse(s string) error {
	if s == "" {
		return nil
	}
	for _, u := range specialUses {
		if s == u {
			return nil
		}
	}
	return fmt.Errorf("special-use %q is not one of %v", s, specialUses)
}

var systemFlags = []string{FlagAnswered, FlagDeleted, FlagDraft, FlagFlagged, FlagSeen}

// CanonicalFlags validates flags and returns them canonical: system flags
// in their standard case, keywords deduplicated case-insensitively (the
// first spelling wins), sorted.
func CanonicalFlags(flags []string) ([]string, error) {
	if len(flags) > MaxMailFlags {
		return nil, fmt.Errorf("%d flags exceed %d", len(flags), MaxMailFlags)
	}
	if len(flags) == 0 {
		return nil, nil
	}
	seen := make(map[string]bool, len(flags))
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		if f == "" || len(f) > MaxMailFlag {
			return nil, fmt.Errorf("flag must be 1..%d bytes", MaxMailFlag)
		}
		if f[0] == '\\' {
			canon := ""
			for _, s := range systemFlags {
				if strings.EqualFold(f, s) {
					canon = s
				}
			}
			if canon == "" {
				return nil, fmt.Errorf("flag %q is not a storable system flag", f)
			}
			f = canon
		} else {
			for i := 0; i < len(f); i++ {
				c := f[i]
				if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
					return nil, fmt.Errorf("keyword %q: character %q not allowed", f, c)
				}
			}
		}
		k := strings.ToLower(f)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, f)
	}
	sort.Strings(out)
	return out, nil
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if strings.EqualFold(x, f) {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// Reads.

// TenantReader is the read side of the tenant keyspace (meta.FSM and
// meta.Store provide it).
type TenantReader = meta.TenantReader

// MailView reads the mail state from a node's replica. Each call reads the
// applied state of its moment; for read-your-writes across nodes wait for
// the write's index (or the leader's commit index) first.
type MailView struct{ R TenantReader }

// Domain returns a domain's record.
func (v MailView) Domain(name string) (MailDomain, bool, error) {
	b, ok, err := v.R.TenantGet(MailTenant, mailDomainKey(name))
	if err != nil || !ok {
		return MailDomain{}, false, err
	}
	d, err := decodeMailDomain(b)
	return d, err == nil, err
}

// Domains returns every domain in name order.
func (v MailView) Domains() ([]MailDomain, error) {
	var out []MailDomain
	err := v.R.TenantScan(MailTenant, "d/", func(_ string, b []byte) error {
		d, err := decodeMailDomain(b)
		out = append(out, d)
		return err
	})
	return out, err
}

// User returns a user's record.
func (v MailView) User(address string) (MailUser, bool, error) {
	if _, _, ok := cutAddress(address); !ok {
		return MailUser{}, false, nil
	}
	b, ok, err := v.R.TenantGet(MailTenant, mailUserKey(address))
	if err != nil || !ok {
		return MailUser{}, false, err
	}
	u, err := decodeMailUser(b)
	return u, err == nil, err
}

// Users returns the users of a domain in address order.
func (v MailView) Users(domain string) ([]MailUser, error) {
	var out []MailUser
	err := v.R.TenantScan(MailTenant, "u/"+domain+"/", func(_ string, b []byte) error {
		u, err := decodeMailUser(b)
		out = append(out, u)
		return err
	})
	return out, err
}

// Usage returns what a user's messages take.
func (v MailView) Usage(address string) (MailUsage, error) {
	b, ok, err := v.R.TenantGet(MailUserTenant(address), mailStateKey)
	if err != nil || !ok {
		return MailUsage{}, err
	}
	s, err := decodeMailState(b)
	return s.MailUsage, err
}

// Mailbox returns a mailbox by name.
func (v MailView) Mailbox(address, name string) (Mailbox, bool, error) {
	name = CanonicalMailboxName(name)
	if ValidMailboxName(name) != nil {
		return Mailbox{}, false, nil
	}
	b, ok, err := v.R.TenantGet(MailUserTenant(address), mailNameKey(name))
	if err != nil || !ok {
		return Mailbox{}, false, err
	}
	id, n := binary.Uvarint(b)
	if n <= 0 {
		return Mailbox{}, false, fmt.Errorf("meta: mailbox name record of %q unreadable", name)
	}
	return v.MailboxByID(address, id)
}

// MailboxByID returns a mailbox by ID.
func (v MailView) MailboxByID(address string, id uint64) (Mailbox, bool, error) {
	b, ok, err := v.R.TenantGet(MailUserTenant(address), mailboxKey(id))
	if err != nil || !ok {
		return Mailbox{}, false, err
	}
	m, err := decodeMailbox(b)
	return m, err == nil, err
}

// Mailboxes returns every mailbox of a user in name order.
func (v MailView) Mailboxes(address string) ([]Mailbox, error) {
	var out []Mailbox
	err := v.R.TenantScan(MailUserTenant(address), "b/", func(_ string, b []byte) error {
		m, err := decodeMailbox(b)
		out = append(out, m)
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// Messages calls fn for each message of a mailbox in UID order. A non-nil
// error from fn stops the scan and is returned.
func (v MailView) Messages(address string, mailbox uint64, fn func(MailMessage) error) error {
	return v.R.TenantScan(MailUserTenant(address), mailMsgPrefix(mailbox), func(_ string, b []byte) error {
		m, err := DecodeMailMessage(b)
		if err != nil {
			return err
		}
		return fn(m)
	})
}

// Message returns one message record.
func (v MailView) Message(address string, mailbox uint64, uid uint32) (MailMessage, bool, error) {
	b, ok, err := v.R.TenantGet(MailUserTenant(address), mailMsgKey(mailbox, uid))
	if err != nil || !ok {
		return MailMessage{}, false, err
	}
	m, err := DecodeMailMessage(b)
	return m, err == nil, err
}

// Info returns a message's info bytes as delivered.
func (v MailView) Info(address string, mailbox uint64, uid uint32) ([]byte, bool, error) {
	return v.R.TenantGet(MailUserTenant(address), mailInfoKey(mailbox, uid))
}

// ---------------------------------------------------------------------------
// Apply.

// mailCommand marks the mail commands for the set's Apply.
type mailCommand interface {
	meta.Command
	applyMail(t *mailTxn) meta.Result
}

// mailTxn is the host's transaction with the key spellings of this code.
type mailTxn struct{ tx *meta.Txn }

func (t *mailTxn) get(k string) ([]byte, bool) { return t.tx.Get(k) }
func (t *mailTxn) put(k string, v []byte)      { t.tx.Put(k, v) }
func (t *mailTxn) del(k string)                { t.tx.Delete(k) }
func (t *mailTxn) scan(prefix string) []kv     { return t.tx.Scan(prefix) }
func (t *mailTxn) scanRange(prefix, end string, limit int) []kv {
	return t.tx.ScanRange(prefix, end, limit)
}
func (t *mailTxn) addRefs(id BlobID, delta int64, now int64) bool {
	return t.tx.AddRefs(id, delta, now)
}

type kv = meta.KV

func tk(tenant, key string) string { return meta.TenantKey(tenant, key) }

// Typed accessors. A record that does not decode means the database is
// corrupt; like the host's own records, they panic rather than diverge.

func (t *mailTxn) domain(name string) (MailDomain, bool) {
	b, ok := t.get(tk(MailTenant, mailDomainKey(name)))
	if !ok {
		return MailDomain{}, false
	}
	d, err := decodeMailDomain(b)
	if err != nil {
		panic(fmt.Sprintf("meta: mail domain %q unreadable: %v", name, err))
	}
	return d, true
}

func (t *mailTxn) putDomain(d *MailDomain) {
	t.put(tk(MailTenant, mailDomainKey(d.Name)), encodeMailDomain(d))
}

func (t *mailTxn) user(addr string) (MailUser, bool) {
	if _, _, ok := cutAddress(addr); !ok {
		return MailUser{}, false
	}
	b, ok := t.get(tk(MailTenant, mailUserKey(addr)))
	if !ok {
		return MailUser{}, false
	}
	u, err := decodeMailUser(b)
	if err != nil {
		panic(fmt.Sprintf("meta: mail user %q unreadable: %v", addr, err))
	}
	return u, true
}

func (t *mailTxn) putUser(u *MailUser) {
	t.put(tk(MailTenant, mailUserKey(u.Address)), encodeMailUser(u))
}

func (t *mailTxn) state(addr string) mailUserState {
	b, ok := t.get(tk(MailUserTenant(addr), mailStateKey))
	if !ok {
		return mailUserState{NextMailbox: 1}
	}
	s, err := decodeMailState(b)
	if err != nil {
		panic(fmt.Sprintf("meta: mail state of %q unreadable: %v", addr, err))
	}
	return s
}

func (t *mailTxn) putState(addr string, s *mailUserState) {
	t.put(tk(MailUserTenant(addr), mailStateKey), encodeMailState(s))
}

func (t *mailTxn) mailboxID(addr, name string) (uint64, bool) {
	b, ok := t.get(tk(MailUserTenant(addr), mailNameKey(name)))
	if !ok {
		return 0, false
	}
	id, n := binary.Uvarint(b)
	if n <= 0 {
		panic(fmt.Sprintf("meta: mailbox name record %q of %q unreadable", name, addr))
	}
	return id, true
}

func (t *mailTxn) mailbox(addr string, id uint64) (Mailbox, bool) {
	b, ok := t.get(tk(MailUserTenant(addr), mailboxKey(id)))
	if !ok {
		return Mailbox{}, false
	}
	m, err := decodeMailbox(b)
	if err != nil {
		panic(fmt.Sprintf("meta: mailbox %d of %q unreadable: %v", id, addr, err))
	}
	return m, true
}

func (t *mailTxn) putMailbox(addr string, m *Mailbox) {
	t.put(tk(MailUserTenant(addr), mailboxKey(m.ID)), encodeMailbox(m))
}

func (t *mailTxn) message(addr string, mb uint64, uid uint32) (MailMessage, bool) {
	b, ok := t.get(tk(MailUserTenant(addr), mailMsgKey(mb, uid)))
	if !ok {
		return MailMessage{}, false
	}
	m, err := DecodeMailMessage(b)
	if err != nil {
		panic(fmt.Sprintf("meta: message %d/%d of %q unreadable: %v", mb, uid, addr, err))
	}
	return m, true
}

func (t *mailTxn) putMessage(addr string, mb uint64, m *MailMessage) {
	t.put(tk(MailUserTenant(addr), mailMsgKey(mb, m.UID)), encodeMailMessage(m))
}

// newMailbox creates a mailbox record and its name entry.
func (t *mailTxn) newMailbox(addr string, s *mailUserState, name, specialUse string, uidValidity uint32, now int64) (Mailbox, error) {
	if s.NextMailbox == 0 {
		s.NextMailbox = 1
	}
	uv := uidValidity
	if uv <= s.LastUIDValidity {
		if s.LastUIDValidity == math.MaxUint32 {
			return Mailbox{}, fmt.Errorf("UIDVALIDITY values exhausted")
		}
		uv = s.LastUIDValidity + 1
	}
	s.LastUIDValidity = uv
	m := Mailbox{ID: s.NextMailbox, Name: name, UIDValidity: uv, UIDNext: 1, HighestModSeq: 1, SpecialUse: specialUse, Created: now}
	s.NextMailbox++
	t.putMailbox(addr, &m)
	t.put(tk(MailUserTenant(addr), mailNameKey(name)), binary.AppendUvarint(nil, m.ID))
	return m, nil
}

// appendMessage gives m the next UID of mb and stores it (and its info).
func (t *mailTxn) appendMessage(addr string, mb *Mailbox, m MailMessage, info []byte) MailOutcome {
	if mb.UIDNext == 0 || mb.UIDNext == math.MaxUint32 {
		return MailOutcome{Code: MailMailboxFull, Mailbox: mb.ID, UIDValidity: mb.UIDValidity}
	}
	m.UID = mb.UIDNext
	mb.UIDNext++
	mb.HighestModSeq++
	m.ModSeq = mb.HighestModSeq
	mb.Messages++
	mb.Size += m.Size
	if !hasFlag(m.Flags, FlagSeen) {
		mb.Unseen++
	}
	t.putMessage(addr, mb.ID, &m)
	if info != nil {
		t.put(tk(MailUserTenant(addr), mailInfoKey(mb.ID, m.UID)), info)
	}
	return MailOutcome{Code: MailOK, Mailbox: mb.ID, UIDValidity: mb.UIDValidity, UID: m.UID, ModSeq: m.ModSeq, Flags: m.Flags}
}

// removeMessage deletes a message record and its info and updates the
// mailbox's counters (not its modseq, not the user's usage, not refs).
func (t *mailTxn) removeMessage(addr string, mb *Mailbox, m *MailMessage) {
	t.del(tk(MailUserTenant(addr), mailMsgKey(mb.ID, m.UID)))
	t.del(tk(MailUserTenant(addr), mailInfoKey(mb.ID, m.UID)))
	mb.Messages--
	mb.Size -= m.Size
	if !hasFlag(m.Flags, FlagSeen) {
		mb.Unseen--
	}
}

func validNow(now int64) error {
	if now <= 0 {
		return fmt.Errorf("proposer time %d is not positive", now)
	}
	return nil
}

func (c MailDomainCreate) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailDomain(c.Domain); err != nil {
		return result(meta.StatusInvalid, "mail domain create: %v", err)
	}
	if err := validNow(c.Now); err != nil {
		return result(meta.StatusInvalid, "mail domain create %q: %v", c.Domain, err)
	}
	if _, ok := t.domain(c.Domain); ok {
		return result(meta.StatusConflict, "mail domain %q exists", c.Domain)
	}
	t.putDomain(&MailDomain{Name: c.Domain, Created: c.Now})
	return meta.Result{Status: meta.StatusOK}
}

func (c MailDomainDelete) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailDomain(c.Domain); err != nil {
		return result(meta.StatusInvalid, "mail domain delete: %v", err)
	}
	d, ok := t.domain(c.Domain)
	if !ok {
		return result(meta.StatusNotFound, "mail domain %q does not exist", c.Domain)
	}
	if d.Users > 0 {
		return result(meta.StatusConflict, "mail domain %q still has %d users; delete them first", c.Domain, d.Users)
	}
	t.del(tk(MailTenant, mailDomainKey(c.Domain)))
	return meta.Result{Status: meta.StatusOK, Found: true}
}

func validPasswordHash(h string) error {
	if len(h) > MaxMailPassword {
		return fmt.Errorf("password hash longer than %d bytes", MaxMailPassword)
	}
	if h != "" && h[0] != '$' {
		return fmt.Errorf("password hash is not a $-prefixed hash string (never store a password)")
	}
	return nil
}

func (c MailUserCreate) applyMail(t *mailTxn) meta.Result {
	u := c.User
	if err := ValidMailAddress(u.Address); err != nil {
		return result(meta.StatusInvalid, "mail user create: %v", err)
	}
	if err := validPasswordHash(u.PasswordHash); err != nil {
		return result(meta.StatusInvalid, "mail user create %q: %v", u.Address, err)
	}
	if err := validNow(c.Now); err != nil {
		return result(meta.StatusInvalid, "mail user create %q: %v", u.Address, err)
	}
	if u.Quota < 0 {
		return result(meta.StatusInvalid, "mail user create %q: negative quota", u.Address)
	}
	if len(c.Mailboxes) > MaxMailboxes {
		return result(meta.StatusInvalid, "mail user create %q: %d mailboxes exceed %d", u.Address, len(c.Mailboxes), MaxMailboxes)
	}
	names := map[string]bool{}
	for _, m := range c.Mailboxes {
		if err := ValidMailboxName(m.Name); err != nil {
			return result(meta.StatusInvalid, "mail user create %q: %v", u.Address, err)
		}
		if err := validSpecialUse(m.SpecialUse); err != nil {
			return result(meta.StatusInvalid, "mail user create %q: %v", u.Address, err)
		}
		if names[m.Name] {
			return result(meta.StatusInvalid, "mail user create %q: mailbox %q listed twice", u.Address, m.Name)
		}
		names[m.Name] = true
	}
	_, domain, _ := cutAddress(u.Address)
	d, ok := t.domain(domain)
	if !ok {
		return result(meta.StatusNotFound, "mail user create %q: domain %q does not exist", u.Address, domain)
	}
	if _, ok := t.user(u.Address); ok {
		return result(meta.StatusConflict, "mail user %q exists", u.Address)
	}
	// A user deleted and created again starts with fresh state: its
	// UIDVALIDITYs are the proposer's again (a clock, so above the old
	// ones unless the clock went back).
	s := mailUserState{NextMailbox: 1}
	u.Created = c.Now
	out := make([]MailOutcome, 0, len(c.Mailboxes))
	for i, spec := range c.Mailboxes {
		uv := c.UIDValidity
		if i > 0 {
			uv = 0 // the next after the last assigned
		}
		m, err := t.newMailbox(u.Address, &s, spec.Name, spec.SpecialUse, uv, c.Now)
		if err != nil {
			return result(meta.StatusConflict, "mail user create %q: %v", u.Address, err)
		}
		out = append(out, MailOutcome{Code: MailOK, Mailbox: m.ID, UIDValidity: m.UIDValidity})
	}
	t.putState(u.Address, &s)
	t.putUser(&u)
	d.Users++
	t.putDomain(&d)
	return meta.Result{Status: meta.StatusOK, Items: items(out)}
}

func (c MailUserUpdate) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailAddress(c.Address); err != nil {
		return result(meta.StatusInvalid, "mail user update: %v", err)
	}
	u, ok := t.user(c.Address)
	if !ok {
		return result(meta.StatusNotFound, "mail user %q does not exist", c.Address)
	}
	if c.SetPassword {
		if err := validPasswordHash(c.PasswordHash); err != nil {
			return result(meta.StatusInvalid, "mail user update %q: %v", c.Address, err)
		}
		u.PasswordHash = c.PasswordHash
	}
	if c.SetQuota {
		if c.Quota < 0 {
			return result(meta.StatusInvalid, "mail user update %q: negative quota", c.Address)
		}
		u.Quota = c.Quota
	}
	if c.SetDisabled {
		u.Disabled = c.Disabled
	}
	t.putUser(&u)
	return meta.Result{Status: meta.StatusOK, Found: true}
}

func (c MailUserDelete) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailAddress(c.Address); err != nil {
		return result(meta.StatusInvalid, "mail user delete: %v", err)
	}
	if err := validNow(c.Now); err != nil {
		return result(meta.StatusInvalid, "mail user delete %q: %v", c.Address, err)
	}
	if _, ok := t.user(c.Address); !ok {
		return result(meta.StatusNotFound, "mail user %q does not exist", c.Address)
	}
	s := t.state(c.Address)
	if s.Messages > MaxMailDrop {
		return result(meta.StatusConflict, "mail user %q has %d messages, over %d for one command; expunge in chunks first", c.Address, s.Messages, MaxMailDrop)
	}
	for _, e := range t.scan(tk(MailUserTenant(c.Address), "")) {
		if strings.HasPrefix(e.Key, tk(MailUserTenant(c.Address), "m/")) {
			m, err := DecodeMailMessage(e.Value)
			if err != nil {
				panic(fmt.Sprintf("meta: message %q unreadable: %v", e.Key, err))
			}
			if !t.addRefs(m.Object, -1, c.Now) {
				return result(meta.StatusConflict, "mail user delete %q: object %s of message %q holds no reference", c.Address, m.Object, e.Key)
			}
		}
		t.del(e.Key)
	}
	_, domain, _ := cutAddress(c.Address)
	if d, ok := t.domain(domain); ok {
		d.Users--
		t.putDomain(&d)
	}
	t.del(tk(MailTenant, mailUserKey(c.Address)))
	return meta.Result{Status: meta.StatusOK, Found: true}
}

func (c MailboxCreate) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailAddress(c.User); err != nil {
		return result(meta.StatusInvalid, "mailbox create: %v", err)
	}
	if err := ValidMailboxName(c.Name); err != nil {
		return result(meta.StatusInvalid, "mailbox create for %q: %v", c.User, err)
	}
	if err := validSpecialUse(c.SpecialUse); err != nil {
		return result(meta.StatusInvalid, "mailbox create %q for %q: %v", c.Name, c.User, err)
	}
	if err := validNow(c.Now); err != nil {
		return result(meta.StatusInvalid, "mailbox create %q for %q: %v", c.Name, c.User, err)
	}
	if _, ok := t.user(c.User); !ok {
		return result(meta.StatusNotFound, "mailbox create %q: user %q does not exist", c.Name, c.User)
	}
	if _, ok := t.mailboxID(c.User, c.Name); ok {
		return result(meta.StatusConflict, "mailbox %q of %q exists", c.Name, c.User)
	}
	s := t.state(c.User)
	// Missing parents first (RFC 3501 6.3.3), then the mailbox.
	var names []string
	for i := 0; i < len(c.Name); i++ {
		if c.Name[i] == MailboxDelim {
			if _, ok := t.mailboxID(c.User, c.Name[:i]); !ok {
				names = append(names, c.Name[:i])
			}
		}
	}
	names = append(names, c.Name)
	if n := len(t.scan(tk(MailUserTenant(c.User), "b/"))); n+len(names) > MaxMailboxes {
		return result(meta.StatusConflict, "mailbox create %q: user %q would have more than %d mailboxes", c.Name, c.User, MaxMailboxes)
	}
	var out []MailOutcome
	for i, name := range names {
		uv, su := uint32(0), ""
		if i == len(names)-1 {
			uv, su = c.UIDValidity, c.SpecialUse
		}
		m, err := t.newMailbox(c.User, &s, name, su, uv, c.Now)
		if err != nil {
			return result(meta.StatusConflict, "mailbox create %q for %q: %v", name, c.User, err)
		}
		out = append(out, MailOutcome{Code: MailOK, Mailbox: m.ID, UIDValidity: m.UIDValidity})
	}
	t.putState(c.User, &s)
	// The created mailbox comes first in the outcomes, parents after.
	out = append(out[len(out)-1:], out[:len(out)-1]...)
	return meta.Result{Status: meta.StatusOK, Items: items(out)}
}

// dropMessages removes every message of mailbox mb (at most MaxMailDrop),
// releasing their references and usage.
func (t *mailTxn) dropMessages(addr string, mb *Mailbox, s *mailUserState, now int64) error {
	if mb.Messages > MaxMailDrop {
		return fmt.Errorf("mailbox %q has %d messages, over %d for one command; expunge in chunks first", mb.Name, mb.Messages, MaxMailDrop)
	}
	for _, e := range t.scan(tk(MailUserTenant(addr), mailMsgPrefix(mb.ID))) {
		m, err := DecodeMailMessage(e.Value)
		if err != nil {
			panic(fmt.Sprintf("meta: message %q unreadable: %v", e.Key, err))
		}
		if !t.addRefs(m.Object, -1, now) {
			return fmt.Errorf("object %s of message %q holds no reference", m.Object, e.Key)
		}
		t.removeMessage(addr, mb, &m)
		s.Bytes -= m.Size
		s.Messages--
	}
	return nil
}

func (c MailboxDelete) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailAddress(c.User); err != nil {
		return result(meta.StatusInvalid, "mailbox delete: %v", err)
	}
	if err := validNow(c.Now); err != nil {
		return result(meta.StatusInvalid, "mailbox delete for %q: %v", c.User, err)
	}
	mb, ok := t.mailbox(c.User, c.Mailbox)
	if !ok {
		return result(meta.StatusNotFound, "mailbox %d of %q does not exist", c.Mailbox, c.User)
	}
	if mb.Name == InboxName {
		return result(meta.StatusInvalid, "INBOX cannot be deleted")
	}
	s := t.state(c.User)
	if err := t.dropMessages(c.User, &mb, &s, c.Now); err != nil {
		return result(meta.StatusConflict, "mailbox delete for %q: %v", c.User, err)
	}
	t.putState(c.User, &s)
	t.del(tk(MailUserTenant(c.User), mailboxKey(mb.ID)))
	t.del(tk(MailUserTenant(c.User), mailNameKey(mb.Name)))
	return meta.Result{Status: meta.StatusOK, Found: true, Items: items([]MailOutcome{{Code: MailOK, Mailbox: mb.ID, UIDValidity: mb.UIDValidity, ModSeq: mb.HighestModSeq}})}
}

func (c MailboxRename) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailAddress(c.User); err != nil {
		return result(meta.StatusInvalid, "mailbox rename: %v", err)
	}
	if err := ValidMailboxName(c.NewName); err != nil {
		return result(meta.StatusInvalid, "mailbox rename for %q: %v", c.User, err)
	}
	if err := validNow(c.Now); err != nil {
		return result(meta.StatusInvalid, "mailbox rename for %q: %v", c.User, err)
	}
	mb, ok := t.mailbox(c.User, c.Mailbox)
	if !ok {
		return result(meta.StatusNotFound, "mailbox %d of %q does not exist", c.Mailbox, c.User)
	}
	if c.NewName == mb.Name {
		return result(meta.StatusConflict, "mailbox %q of %q already has that name", mb.Name, c.User)
	}
	if c.NewName == InboxName || strings.HasPrefix(c.NewName, mb.Name+string(MailboxDelim)) {
		return result(meta.StatusInvalid, "mailbox rename %q to %q: not into INBOX or into itself", mb.Name, c.NewName)
	}
	if _, ok := t.mailboxID(c.User, c.NewName); ok {
		return result(meta.StatusConflict, "mailbox %q of %q exists", c.NewName, c.User)
	}
	ut := MailUserTenant(c.User)
	type move struct {
		id       uint64
		old, new string
	}
	moves := []move{{mb.ID, mb.Name, c.NewName}}
	if mb.Name != InboxName {
		prefix := tk(ut, mailNameKey(mb.Name+string(MailboxDelim)))
		for _, e := range t.scan(prefix) {
			old := strings.TrimPrefix(e.Key, tk(ut, "n/"))
			nn := c.NewName + old[len(mb.Name):]
			if ValidMailboxName(nn) != nil {
				return result(meta.StatusInvalid, "mailbox rename: child %q would be named %q, too long", old, nn)
			}
			if _, ok := t.mailboxID(c.User, nn); ok {
				return result(meta.StatusConflict, "mailbox rename: child %q would replace existing %q", old, nn)
			}
			id, n := binary.Uvarint(e.Value)
			if n <= 0 {
				panic(fmt.Sprintf("meta: mailbox name record %q unreadable", e.Key))
			}
			moves = append(moves, move{id, old, nn})
		}
	}
	for _, m := range moves {
		t.del(tk(ut, mailNameKey(m.old)))
	}
	for _, m := range moves {
		rec, ok := t.mailbox(c.User, m.id)
		if !ok {
			panic(fmt.Sprintf("meta: mailbox %q of %q has a name but no record", m.old, c.User))
		}
		rec.Name = m.new
		t.putMailbox(c.User, &rec)
		t.put(tk(ut, mailNameKey(m.new)), binary.AppendUvarint(nil, m.id))
	}
	out := []MailOutcome{{Code: MailOK, Mailbox: mb.ID, UIDValidity: mb.UIDValidity}}
	if mb.Name == InboxName {
		s := t.state(c.User)
		inbox, err := t.newMailbox(c.User, &s, InboxName, "", c.UIDValidity, c.Now)
		if err != nil {
			return result(meta.StatusConflict, "mailbox rename INBOX for %q: %v", c.User, err)
		}
		t.putState(c.User, &s)
		out = append(out, MailOutcome{Code: MailOK, Mailbox: inbox.ID, UIDValidity: inbox.UIDValidity})
	}
	return meta.Result{Status: meta.StatusOK, Items: items(out)}
}

func (c MailDeliver) validate() error {
	if err := validNow(c.Now); err != nil {
		return err
	}
	if len(c.Messages) == 0 || len(c.Messages) > MaxMailMessages {
		return fmt.Errorf("%d messages, want 1..%d", len(c.Messages), MaxMailMessages)
	}
	if len(c.Entries) == 0 || len(c.Entries) > MaxMailEntries {
		return fmt.Errorf("%d entries, want 1..%d", len(c.Entries), MaxMailEntries)
	}
	seen := map[BlobID]bool{}
	for i, m := range c.Messages {
		switch {
		case m.Object.IsZero():
			return fmt.Errorf("message %d: zero object ID", i)
		case seen[m.Object]:
			return fmt.Errorf("message %d: object %s listed twice (the proposer holds one reference per message)", i, m.Object)
		case m.Size < 0:
			return fmt.Errorf("message %d: negative size", i)
		case len(m.Info) > MaxMailInfo:
			return fmt.Errorf("message %d: info of %d bytes exceeds %d", i, len(m.Info), MaxMailInfo)
		}
		seen[m.Object] = true
	}
	for i, e := range c.Entries {
		if e.Message < 0 || e.Message >= len(c.Messages) {
			return fmt.Errorf("entry %d: message %d out of range", i, e.Message)
		}
		if err := ValidMailAddress(e.User); err != nil {
			return fmt.Errorf("entry %d: %v", i, err)
		}
		if e.Mailbox != "" {
			if err := ValidMailboxName(e.Mailbox); err != nil {
				return fmt.Errorf("entry %d: %v", i, err)
			}
		}
		if _, err := CanonicalFlags(e.Flags); err != nil {
			return fmt.Errorf("entry %d: %v", i, err)
		}
	}
	return nil
}

func (c MailDeliver) applyMail(t *mailTxn) meta.Result {
	if err := c.validate(); err != nil {
		return result(meta.StatusInvalid, "mail deliver: %v", err)
	}
	return c.apply(t, nil)
}

// apply delivers a validated MailDeliver; with once (MailDeliverOnce),
// entries repeating a remembered delivery are answered from memory.
func (c MailDeliver) apply(t *mailTxn, once *MailDeliverOnce) meta.Result {
	for i, m := range c.Messages {
		o, ok := t.tx.Object(m.Object)
		if !ok {
			return result(meta.StatusConflict, "mail deliver: message %d: object %s has no record", i, m.Object)
		}
		if o.Refs < 1 {
			return result(meta.StatusConflict, "mail deliver: message %d: object %s holds no reference (tombstone)", i, m.Object)
		}
		if o.Size != m.Size {
			return result(meta.StatusConflict, "mail deliver: message %d: object %s has %d bytes, message says %d", i, m.Object, o.Size, m.Size)
		}
	}
	out := make([]MailOutcome, len(c.Entries))
	accepted := make([]int64, len(c.Messages))
	rejected := false
	for i, e := range c.Entries {
		var appended bool
		out[i], appended = t.deliverOne(e, &c.Messages[e.Message], once, e.Message)
		switch {
		case appended:
			accepted[e.Message]++
		case out[i].Code != MailOK:
			rejected = true
		}
	}
	if c.AllOrNothing && rejected {
		// Drop the staged entries; only the reference release below stays.
		t.tx.Rollback()
		for i := range out {
			if out[i].Code == MailOK {
				out[i] = MailOutcome{Code: MailAborted}
			}
		}
		clear(accepted)
	}
	if once != nil {
		t.expireDeliveries(c.Entries, c.Now)
	}
	for i, m := range c.Messages {
		if !t.addRefs(m.Object, accepted[i]-1, c.Now) {
			// Checked above: cannot happen.
			panic(fmt.Sprintf("meta: mail deliver: reference count of %s went wrong", m.Object))
		}
	}
	return meta.Result{Status: meta.StatusOK, Items: items(out)}
}

// deliverOne appends one entry; appended says whether it added a message
// (false for a rejection and for a retry answered from memory).
func (t *mailTxn) deliverOne(e MailEntry, m *MailMessageSpec, once *MailDeliverOnce, msgIdx int) (MailOutcome, bool) {
	u, ok := t.user(e.User)
	if !ok {
		return MailOutcome{Code: MailNoUser}, false
	}
	if u.Disabled {
		return MailOutcome{Code: MailDisabled}, false
	}
	name := e.Mailbox
	if name == "" {
		name = InboxName
	}
	id, ok := t.mailboxID(e.User, name)
	if !ok {
		return MailOutcome{Code: MailNoMailbox}, false
	}
	mb, ok := t.mailbox(e.User, id)
	if !ok {
		panic(fmt.Sprintf("meta: mailbox %q of %q has a name but no record", name, e.User))
	}
	digest := once.digest(msgIdx)
	if digest != nil {
		if oc, ok := t.retried(e.User, &mb, digest, once.Now); ok {
			return oc, false
		}
	}
	s := t.state(e.User)
	if u.Quota > 0 && s.Bytes+m.Size > u.Quota {
		return MailOutcome{Code: MailOverQuota, Mailbox: mb.ID, UIDValidity: mb.UIDValidity}, false
	}
	flags, _ := CanonicalFlags(e.Flags) // validated
	oc := t.appendMessage(e.User, &mb, MailMessage{Object: m.Object, Size: m.Size, InternalDate: m.InternalDate, Zone: m.Zone, Flags: flags}, nonNil(m.Info))
	if oc.Code != MailOK {
		return oc, false
	}
	s.Bytes += m.Size
	s.Messages++
	t.putState(e.User, &s)
	t.putMailbox(e.User, &mb)
	if digest != nil {
		t.remember(e.User, mb.ID, digest, oc.UID, once.Now+once.Window)
	}
	return oc, true
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (c MailStore) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailAddress(c.User); err != nil {
		return result(meta.StatusInvalid, "mail store: %v", err)
	}
	if c.Op < MailFlagsAdd || c.Op > MailFlagsReplace {
		return result(meta.StatusInvalid, "mail store: operation %d unknown", c.Op)
	}
	if len(c.UIDs) > MaxMailUIDs {
		return result(meta.StatusInvalid, "mail store: %d UIDs exceed %d", len(c.UIDs), MaxMailUIDs)
	}
	flags, err := CanonicalFlags(c.Flags)
	if err != nil {
		return result(meta.StatusInvalid, "mail store: %v", err)
	}
	mb, ok := t.mailbox(c.User, c.Mailbox)
	if !ok {
		return result(meta.StatusNotFound, "mailbox %d of %q does not exist", c.Mailbox, c.User)
	}
	out := make([]MailOutcome, len(c.UIDs))
	changed := false
	for i, uid := range c.UIDs {
		m, ok := t.message(c.User, mb.ID, uid)
		if !ok {
			out[i] = MailOutcome{Code: MailNoMessage, Mailbox: mb.ID, UID: uid}
			continue
		}
		if c.UnchangedSince > 0 && m.ModSeq > c.UnchangedSince {
			out[i] = MailOutcome{Code: MailModified, Mailbox: mb.ID, UID: uid, ModSeq: m.ModSeq, Flags: m.Flags}
			continue
		}
		var next []string
		switch c.Op {
		case MailFlagsReplace:
			next = flags
		case MailFlagsAdd:
			next, _ = CanonicalFlags(append(append([]string(nil), m.Flags...), flags...))
		case MailFlagsRemove:
			for _, f := range m.Flags {
				if !hasFlag(flags, f) {
					next = append(next, f)
				}
			}
		}
		if len(next) > MaxMailFlags {
			return result(meta.StatusInvalid, "mail store: message %d would have %d flags, over %d", uid, len(next), MaxMailFlags)
		}
		if !equalStrings(next, m.Flags) {
			wasSeen, isSeen := hasFlag(m.Flags, FlagSeen), hasFlag(next, FlagSeen)
			if wasSeen && !isSeen {
				mb.Unseen++
			} else if !wasSeen && isSeen {
				mb.Unseen--
			}
			mb.HighestModSeq++
			m.ModSeq = mb.HighestModSeq
			m.Flags = next
			t.putMessage(c.User, mb.ID, &m)
			changed = true
		}
		out[i] = MailOutcome{Code: MailOK, Mailbox: mb.ID, UIDValidity: mb.UIDValidity, UID: uid, ModSeq: m.ModSeq, Flags: m.Flags}
	}
	if changed {
		t.putMailbox(c.User, &mb)
	}
	return meta.Result{Status: meta.StatusOK, Items: items(out)}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (c MailExpunge) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailAddress(c.User); err != nil {
		return result(meta.StatusInvalid, "mail expunge: %v", err)
	}
	if err := validNow(c.Now); err != nil {
		return result(meta.StatusInvalid, "mail expunge: %v", err)
	}
	if len(c.UIDs) > MaxMailUIDs {
		return result(meta.StatusInvalid, "mail expunge: %d UIDs exceed %d", len(c.UIDs), MaxMailUIDs)
	}
	mb, ok := t.mailbox(c.User, c.Mailbox)
	if !ok {
		return result(meta.StatusNotFound, "mailbox %d of %q does not exist", c.Mailbox, c.User)
	}
	s := t.state(c.User)
	out := make([]MailOutcome, len(c.UIDs))
	for i, uid := range c.UIDs {
		m, ok := t.message(c.User, mb.ID, uid)
		if !ok {
			out[i] = MailOutcome{Code: MailNoMessage, Mailbox: mb.ID, UID: uid}
			continue
		}
		if !t.addRefs(m.Object, -1, c.Now) {
			return result(meta.StatusConflict, "mail expunge: object %s of message %d holds no reference", m.Object, uid)
		}
		t.removeMessage(c.User, &mb, &m)
		s.Bytes -= m.Size
		s.Messages--
		mb.HighestModSeq++
		out[i] = MailOutcome{Code: MailOK, Mailbox: mb.ID, UIDValidity: mb.UIDValidity, UID: uid, ModSeq: mb.HighestModSeq}
	}
	t.putMailbox(c.User, &mb)
	t.putState(c.User, &s)
	return meta.Result{Status: meta.StatusOK, Items: items(out)}
}

func (c MailCopy) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailAddress(c.User); err != nil {
		return result(meta.StatusInvalid, "mail copy: %v", err)
	}
	if err := validNow(c.Now); err != nil {
		return result(meta.StatusInvalid, "mail copy: %v", err)
	}
	if len(c.UIDs) > MaxMailUIDs {
		return result(meta.StatusInvalid, "mail copy: %d UIDs exceed %d", len(c.UIDs), MaxMailUIDs)
	}
	u, ok := t.user(c.User)
	if !ok {
		return result(meta.StatusNotFound, "mail copy: user %q does not exist", c.User)
	}
	src, ok := t.mailbox(c.User, c.Mailbox)
	if !ok {
		return result(meta.StatusNotFound, "mailbox %d of %q does not exist", c.Mailbox, c.User)
	}
	dstRec, ok := t.mailbox(c.User, c.Dest)
	if !ok {
		return result(meta.StatusNotFound, "mailbox %d of %q does not exist", c.Dest, c.User)
	}
	dst := &dstRec
	if src.ID == dst.ID {
		if c.Move {
			return result(meta.StatusInvalid, "mail copy: moving within one mailbox")
		}
		dst = &src // one record, changed through either name
	}
	s := t.state(c.User)
	out := make([]MailOutcome, len(c.UIDs))
	var added int64
	for i, uid := range c.UIDs {
		m, ok := t.message(c.User, src.ID, uid)
		if !ok {
			out[i] = MailOutcome{Code: MailNoMessage, Mailbox: src.ID, SrcUID: uid}
			continue
		}
		info, _ := t.get(tk(MailUserTenant(c.User), mailInfoKey(src.ID, uid)))
		if c.Move {
			t.removeMessage(c.User, &src, &m)
			src.HighestModSeq++
		} else {
			added += m.Size
			if !t.addRefs(m.Object, 1, c.Now) {
				return result(meta.StatusConflict, "mail copy: object %s of message %d has no record", m.Object, uid)
			}
		}
		oc := t.appendMessage(c.User, dst, MailMessage{Object: m.Object, Size: m.Size, InternalDate: m.InternalDate, Zone: m.Zone, Flags: m.Flags}, nonNil(info))
		if oc.Code != MailOK {
			return meta.Result{Status: meta.StatusConflict, Message: fmt.Sprintf("mail copy: mailbox %q: %s", dst.Name, oc.Code), Items: items([]MailOutcome{oc})}
		}
		oc.SrcUID = uid
		out[i] = oc
	}
	if u.Quota > 0 && added > 0 && s.Bytes+added > u.Quota {
		for i := range out {
			out[i] = MailOutcome{Code: MailOverQuota, Mailbox: dst.ID}
		}
		return meta.Result{Status: meta.StatusConflict, Message: fmt.Sprintf("mail copy: %q would exceed its quota", c.User), Items: items(out)}
	}
	s.Bytes += added
	for _, o := range out {
		if o.Code == MailOK && !c.Move {
			s.Messages++
		}
	}
	t.putMailbox(c.User, &src)
	if dst != &src {
		t.putMailbox(c.User, dst)
	}
	t.putState(c.User, &s)
	return meta.Result{Status: meta.StatusOK, Items: items(out)}
}
