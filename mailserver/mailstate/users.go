package mailstate

import (
	"hastore/replica/meta"
)

// Commands of accounts and migration (a block of their own, far from the
// 32–46 of the mail commands and the numbers after them that other
// features take next, so that parallel work cannot collide):
//
//	96 MailUserRehash  replace a password hash only if it is still the one read
//	97 MailImport      append migrated messages with their source UIDs (import.go)
const (
	TypeMailUserRehash meta.CommandType = 96
	TypeMailImport     meta.CommandType = 97
)

func migrateTypeName(t meta.CommandType) (string, bool) {
	switch t {
	case TypeMailUserRehash:
		return "MailUserRehash", true
	case TypeMailImport:
		return "MailImport", true
	}
	return "", false
}

func decodeMigrateBody(d *decoder, t meta.CommandType) (meta.Command, bool) {
	switch t {
	case TypeMailUserRehash:
		return MailUserRehash{Address: d.str(), OldHash: d.str(), NewHash: d.str()}, true
	case TypeMailImport:
		return decodeMailImport(d), true
	}
	return nil, false
}

// MailUserRehash replaces a user's password hash by NewHash if it is still
// OldHash (meta.StatusConflict otherwise: the password was changed in the
// meantime, and the new one must not be overwritten by a hash of the old).
// A node proposes it after a good login checked against an imported or
// weaker hash, so that such a hash stays only until its first use.
type MailUserRehash struct {
	Address string
	OldHash string
	NewHash string
}

func (MailUserRehash) Type() meta.CommandType { return TypeMailUserRehash }

func (c MailUserRehash) encode(e *encoder) { e.str(c.Address); e.str(c.OldHash); e.str(c.NewHash) }

// AppendBody implements meta.Command.
func (c MailUserRehash) AppendBody(b []byte) []byte { return appendBody(b, c.encode) }

func (c MailUserRehash) applyMail(t *mailTxn) meta.Result {
	if err := ValidMailAddress(c.Address); err != nil {
		return result(meta.StatusInvalid, "mail user rehash: %v", err)
	}
	if err := validPasswordHash(c.NewHash); err != nil || c.NewHash == "" {
		return result(meta.StatusInvalid, "mail user rehash %q: new hash: %v", c.Address, err)
	}
	u, ok := t.user(c.Address)
	if !ok {
		return result(meta.StatusNotFound, "mail user %q does not exist", c.Address)
	}
	if u.PasswordHash != c.OldHash {
		return result(meta.StatusConflict, "mail user rehash %q: the password changed meanwhile; kept", c.Address)
	}
	u.PasswordHash = c.NewHash
	t.putUser(&u)
	return meta.Result{Status: meta.StatusOK, Found: true}
}
