package mailstate

import (
	"fmt"
	"math"

	"hastore/replica/meta"
)

// CommandSet returns the mail command set, to list in the FSM options
// (replica.NodeConfig.CommandSets) of every node of a cluster that serves
// mail. A node without it answers every mail command StatusInvalid.
func CommandSet() meta.CommandSet {
	types := map[meta.CommandType]string{}
	for t := meta.CommandType(0); t < math.MaxUint8; t++ {
		if name, ok := mailTypeName(t); ok {
			types[t] = name
		}
	}
	return meta.CommandSet{
		Name:  "mail",
		Types: types,
		// t/mail/... (domains, users, aliases) and t/mail.<address>/...
		// (one user's mailboxes); no other tenant name starts with "mail".
		Prefixes: []string{meta.TenantKey(MailTenant, ""), meta.TenantsKeyPrefix(MailUserTenantPrefix)},
		Decode:   decode,
		Apply:    apply,
	}
}

// decode decodes a mail command's body; errors read as the FSM's own
// decoding errors did when the mail commands lived in replica/meta.
func decode(t meta.CommandType, body []byte) (meta.Command, error) {
	d := decoder{b: body}
	cmd, ok := decodeMailBody(&d, t)
	if !ok {
		return nil, fmt.Errorf("unknown command type %d; a newer node proposed it, upgrade this node", uint8(t))
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return cmd, nil
}

func apply(tx *meta.Txn, cmd meta.Command) meta.Result {
	c, ok := cmd.(mailCommand)
	if !ok {
		return result(meta.StatusInvalid, "command %T is not a mail command", cmd)
	}
	return c.applyMail(&mailTxn{tx: tx})
}

func result(status meta.Status, format string, args ...any) meta.Result {
	return meta.Result{Status: status, Message: fmt.Sprintf(format, args...)}
}

func appendBody(b []byte, enc func(*encoder)) []byte {
	e := encoder{b: b}
	enc(&e)
	return e.b
}

func (c MailDomainCreate) AppendBody(b []byte) []byte { return appendBody(b, c.encode) }
func (c MailDomainDelete) AppendBody(b []byte) []byte { return appendBody(b, c.encode) }
func (c MailUserCreate) AppendBody(b []byte) []byte   { return appendBody(b, c.encode) }
func (c MailUserUpdate) AppendBody(b []byte) []byte   { return appendBody(b, c.encode) }
func (c MailUserDelete) AppendBody(b []byte) []byte   { return appendBody(b, c.encode) }
func (c MailboxCreate) AppendBody(b []byte) []byte    { return appendBody(b, c.encode) }
func (c MailboxDelete) AppendBody(b []byte) []byte    { return appendBody(b, c.encode) }
func (c MailboxRename) AppendBody(b []byte) []byte    { return appendBody(b, c.encode) }
func (c MailDeliver) AppendBody(b []byte) []byte      { return appendBody(b, c.encode) }
func (c MailDeliverOnce) AppendBody(b []byte) []byte  { return appendBody(b, c.encode) }
func (c MailStore) AppendBody(b []byte) []byte        { return appendBody(b, c.encode) }
func (c MailExpunge) AppendBody(b []byte) []byte      { return appendBody(b, c.encode) }
func (c MailCopy) AppendBody(b []byte) []byte         { return appendBody(b, c.encode) }
func (c MailAliasAdd) AppendBody(b []byte) []byte     { return appendBody(b, c.encode) }
func (c MailAliasDelete) AppendBody(b []byte) []byte  { return appendBody(b, c.encode) }

// items turns outcomes into the host's result items. The field order is
// the wire order of the outcomes before the move (code, mailbox,
// UIDVALIDITY, UID, source UID, modseq, flags), so results stay
// byte-identical in the request memory and on the forwarding RPC.
func items(out []MailOutcome) []meta.Item {
	if len(out) == 0 {
		return nil
	}
	its := make([]meta.Item, len(out))
	for i, o := range out {
		its[i] = meta.Item{
			Code: uint8(o.Code),
			Nums: [5]uint64{o.Mailbox, uint64(o.UIDValidity), uint64(o.UID), uint64(o.SrcUID), o.ModSeq},
			Strs: o.Flags,
		}
	}
	return its
}

// Outcomes returns a mail command's outcomes from its result, one per
// entry or message (see each command). An item that is no valid outcome
// (only a forged or corrupt result has one) gets the zero code, which no
// caller takes for success.
func Outcomes(r meta.Result) []MailOutcome {
	if len(r.Items) == 0 {
		return nil
	}
	out := make([]MailOutcome, len(r.Items))
	for i, it := range r.Items {
		o := MailOutcome{Code: MailCode(it.Code), Mailbox: it.Nums[0], ModSeq: it.Nums[4], Flags: it.Strs}
		if o.Code >= mailCodeEnd || it.Nums[1] > math.MaxUint32 || it.Nums[2] > math.MaxUint32 || it.Nums[3] > math.MaxUint32 || len(it.Strs) > MaxMailFlags {
			out[i] = MailOutcome{Code: mailCodeUnknown}
			continue
		}
		o.UIDValidity, o.UID, o.SrcUID = uint32(it.Nums[1]), uint32(it.Nums[2]), uint32(it.Nums[3])
		out[i] = o
	}
	return out
}
