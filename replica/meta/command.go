package meta

import (
	"fmt"

	"hastore/storage"
)

// CommandType is the type byte of an encoded command.
//
// Built-in commands (objects, membership, tenant keys, Batch, Request) are
// decoded and applied here; to add one, give it the next free type below
// 32, an encode method and a case in decodeBody and in apply. Every other
// type belongs to a [CommandSet] registered when the FSM opens. Nodes
// answer StatusInvalid to a type they do not know (deterministically, so
// they agree with each other but not with nodes that know it): propose a
// new type only once every node runs a release that knows it.
type CommandType uint8

// Command types. The values are part of the log format and never change.
const (
	TypePutObject    CommandType = 1
	TypeDecRef       CommandType = 2
	TypeSetPlacement CommandType = 3
	TypePurge        CommandType = 4
	TypeNodeSet      CommandType = 5
	TypeTenantPut    CommandType = 6
	TypeTenantDelete CommandType = 7
	TypeBatch        CommandType = 8
	TypeTenantCheck  CommandType = 9
)

func (t CommandType) String() string {
	switch t {
	case TypePutObject:
		return "PutObject"
	case TypeDecRef:
		return "DecRef"
	case TypeSetPlacement:
		return "SetPlacement"
	case TypePurge:
		return "Purge"
	case TypeNodeSet:
		return "NodeSet"
	case TypeTenantPut:
		return "TenantPut"
	case TypeTenantDelete:
		return "TenantDelete"
	case TypeBatch:
		return "Batch"
	case TypeTenantCheck:
		return "TenantCheck"
	case TypeRequest:
		return "Request"
	}
	return fmt.Sprintf("CommandType(%d)", uint8(t))
}

// Command is one state change, replicated through the raft log: a built-in
// command of this package or one of a registered [CommandSet]. Every node
// must decode and apply each command the same way, so the encoding is the
// command's own, fixed forever for its type.
type Command interface {
	Type() CommandType
	// AppendBody appends the command's encoding after its type byte.
	AppendBody(b []byte) []byte
}

// PutObject adds a reference to an object, creating its record with Refs 1
// if the ID is new. If the record exists, Refs is incremented and a
// tombstone is revived; the stored placement wins and Result.Created is
// false, telling the caller not to write shards of its own.
type PutObject struct {
	// Object is the record to create. Refs, Created and Deleted are ignored:
	// Apply sets them.
	Object Object
	Now    int64 // proposer's clock, unix nanoseconds; becomes Created
}

// DecRef drops one reference. At zero the record becomes a tombstone with
// Deleted = Now; the shards stay until Purge.
type DecRef struct {
	ID  storage.BlobID
	Now int64 // proposer's clock, unix nanoseconds
}

// SetPlacement moves one shard: Placement[Index] becomes New if it is Old
// now (compare-and-set), so two repairs of the same shard cannot both win.
type SetPlacement struct {
	ID       storage.BlobID
	Index    int
	Old, New string
}

// Purge removes a tombstone whose grace period is over: the record goes if
// Refs is 0 and Deleted <= OlderThan. Result.Purged says whether it went;
// only then may the caller delete the shards.
type Purge struct {
	ID        storage.BlobID
	OlderThan int64 // unix nanoseconds
}

// NodeSet creates or replaces the membership record of a node.
type NodeSet struct {
	ID      string
	Address string
	State   NodeState
}

// TenantPut sets a key in a tenant's keyspace, the generic store that
// per-tenant features build on.
type TenantPut struct {
	Tenant string
	Key    string
	Value  []byte
}

// TenantDelete deletes a key from a tenant's keyspace. Deleting a missing
// key is not an error; Result.Found tells.
type TenantDelete struct {
	Tenant string
	Key    string
}

// Batch applies several commands in one raft entry, in order, so they
// share a round-trip and an fsync, and a restart or crash never splits
// them. Batches do not nest.
//
// Without Atomic, each command succeeds or fails on its own (Result.Batch
// has each outcome). With Atomic, any command whose status is not OK rolls
// the whole batch back and the batch's status is StatusAborted.
type Batch struct {
	Cmds   []Command
	Atomic bool
}

func (PutObject) Type() CommandType    { return TypePutObject }
func (DecRef) Type() CommandType       { return TypeDecRef }
func (SetPlacement) Type() CommandType { return TypeSetPlacement }
func (Purge) Type() CommandType        { return TypePurge }
func (NodeSet) Type() CommandType      { return TypeNodeSet }
func (TenantPut) Type() CommandType    { return TypeTenantPut }
func (TenantDelete) Type() CommandType { return TypeTenantDelete }
func (Batch) Type() CommandType        { return TypeBatch }

func (c PutObject) encode(e *encoder) { e.object(&c.Object); e.varint(c.Now) }
func (c DecRef) encode(e *encoder)    { e.id(c.ID); e.varint(c.Now) }
func (c SetPlacement) encode(e *encoder) {
	e.id(c.ID)
	e.varint(int64(c.Index))
	e.str(c.Old)
	e.str(c.New)
}
func (c Purge) encode(e *encoder) { e.id(c.ID); e.varint(c.OlderThan) }
func (c NodeSet) encode(e *encoder) {
	e.str(c.ID)
	e.str(c.Address)
	e.str(string(c.State))
}
func (c TenantPut) encode(e *encoder)    { e.str(c.Tenant); e.str(c.Key); e.bytes(c.Value) }
func (c TenantDelete) encode(e *encoder) { e.str(c.Tenant); e.str(c.Key) }
func (c Batch) encode(e *encoder) {
	e.bool(c.Atomic)
	e.uvarint(uint64(len(c.Cmds)))
	for _, sub := range c.Cmds {
		var se encoder
		se.u8(uint8(sub.Type()))
		se.b = sub.AppendBody(se.b)
		e.bytes(se.b)
	}
}

func appendBody(b []byte, enc func(*encoder)) []byte {
	e := encoder{b: b}
	enc(&e)
	return e.b
}

func (c PutObject) AppendBody(b []byte) []byte    { return appendBody(b, c.encode) }
func (c DecRef) AppendBody(b []byte) []byte       { return appendBody(b, c.encode) }
func (c SetPlacement) AppendBody(b []byte) []byte { return appendBody(b, c.encode) }
func (c Purge) AppendBody(b []byte) []byte        { return appendBody(b, c.encode) }
func (c NodeSet) AppendBody(b []byte) []byte      { return appendBody(b, c.encode) }
func (c TenantPut) AppendBody(b []byte) []byte    { return appendBody(b, c.encode) }
func (c TenantDelete) AppendBody(b []byte) []byte { return appendBody(b, c.encode) }
func (c TenantCheck) AppendBody(b []byte) []byte  { return appendBody(b, c.encode) }
func (c Batch) AppendBody(b []byte) []byte        { return appendBody(b, c.encode) }
func (c Request) AppendBody(b []byte) []byte      { return appendBody(b, c.encode) }

// builtinCommand reports whether cmd is one of this package's command
// types, which alone may carry a built-in type byte.
func builtinCommand(cmd Command) bool {
	switch cmd.(type) {
	case PutObject, DecRef, SetPlacement, Purge, NodeSet, TenantPut, TenantDelete, TenantCheck, Batch, Request:
		return true
	}
	return false
}

// commandFormatV1 is the first byte of every encoded command. A change to
// an existing command's fields needs a new format version (or a new type);
// nodes refuse versions they do not know.
const commandFormatV1 = 1

// EncodeCommand encodes cmd as it goes into the raft log and over the
// forwarding RPC. It fails for a nil command, a nested Batch or Request, a
// Request inside a Batch or an encoding over MaxCommandSize (a Request's
// envelope does not count).
func EncodeCommand(cmd Command) ([]byte, error) {
	if cmd == nil {
		return nil, fmt.Errorf("%w: nil command", ErrInvalid)
	}
	if builtinType(cmd.Type()) != builtinCommand(cmd) {
		return nil, fmt.Errorf("%w: %T claims command type %d", ErrInvalid, cmd, cmd.Type())
	}
	limit := MaxCommandSize
	if r, ok := cmd.(Request); ok {
		if r.Cmd == nil {
			return nil, fmt.Errorf("%w: request %s carries no command", ErrInvalid, r.ID)
		}
		if r.Cmd.Type() == TypeRequest {
			return nil, fmt.Errorf("%w: request %s wraps a request; requests do not nest", ErrInvalid, r.ID)
		}
		inner, err := EncodeCommand(r.Cmd)
		if err != nil {
			return nil, err
		}
		limit = len(inner) + requestOverhead
	}
	if b, ok := cmd.(Batch); ok {
		if len(b.Cmds) > MaxBatchCommands {
			return nil, fmt.Errorf("%w: batch of %d commands exceeds %d; split it", ErrInvalid, len(b.Cmds), MaxBatchCommands)
		}
		for i, sub := range b.Cmds {
			if sub == nil {
				return nil, fmt.Errorf("%w: batch command %d is nil", ErrInvalid, i)
			}
			if sub.Type() == TypeBatch {
				return nil, fmt.Errorf("%w: batch command %d is a batch; batches do not nest", ErrInvalid, i)
			}
			if sub.Type() == TypeRequest {
				return nil, fmt.Errorf("%w: batch command %d is a request; wrap the batch instead", ErrInvalid, i)
			}
		}
	}
	e := encoder{b: make([]byte, 0, 128)}
	e.u8(commandFormatV1)
	e.u8(uint8(cmd.Type()))
	e.b = cmd.AppendBody(e.b)
	if len(e.b) > limit {
		name := cmd.Type().String()
		if !builtinType(cmd.Type()) {
			name = fmt.Sprintf("%T", cmd) // a command set's: its Go type names it
		}
		return nil, fmt.Errorf("%w: %s encodes to %d bytes, over the %d-byte limit; split it", ErrInvalid, name, len(e.b), MaxCommandSize)
	}
	return e.b, nil
}

// DecodeCommand decodes an encoded command of the built-in types or of
// the given command sets. Unknown format versions and types, truncated or
// over-long input are errors wrapping ErrInvalid; it never panics.
func DecodeCommand(b []byte, sets ...CommandSet) (Command, error) {
	reg, err := newCommandSets(sets)
	if err != nil {
		return nil, err
	}
	return reg.decode(b)
}

// decode is DecodeCommand with the registry already built.
func (r *commandSets) decode(b []byte) (Command, error) {
	cmd, err := decodeCommand(b, r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return cmd, nil
}

// decodeCommand is DecodeCommand without the ErrInvalid wrapping, for Apply,
// whose results carry the kind in their status.
func decodeCommand(b []byte, sets *commandSets) (Command, error) {
	if len(b) > MaxCommandSize+requestOverhead {
		return nil, fmt.Errorf("command of %d bytes exceeds %d", len(b), MaxCommandSize)
	}
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != commandFormatV1 {
		return nil, fmt.Errorf("command format version %d unknown; upgrade this node", v)
	}
	cmd, err := decodeBody(&d, false, sets)
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return nil, fmt.Errorf("decode command: %v", err)
	}
	return cmd, nil
}

func decodeBody(d *decoder, inBatch bool, sets *commandSets) (Command, error) {
	t := CommandType(d.u8())
	if d.err != nil {
		return nil, d.err
	}
	switch t {
	case TypePutObject:
		var c PutObject
		c.Object = d.object()
		c.Now = d.varint()
		return c, nil
	case TypeDecRef:
		var c DecRef
		c.ID = d.id()
		c.Now = d.varint()
		return c, nil
	case TypeSetPlacement:
		var c SetPlacement
		c.ID = d.id()
		c.Index = d.int()
		c.Old = d.str()
		c.New = d.str()
		return c, nil
	case TypePurge:
		var c Purge
		c.ID = d.id()
		c.OlderThan = d.varint()
		return c, nil
	case TypeNodeSet:
		var c NodeSet
		c.ID = d.str()
		c.Address = d.str()
		c.State = NodeState(d.str())
		return c, nil
	case TypeTenantPut:
		var c TenantPut
		c.Tenant = d.str()
		c.Key = d.str()
		c.Value = d.bytes()
		return c, nil
	case TypeTenantDelete:
		var c TenantDelete
		c.Tenant = d.str()
		c.Key = d.str()
		return c, nil
	case TypeTenantCheck:
		return decodeTenantCheck(d), nil
	case TypeRequest:
		if inBatch {
			return nil, fmt.Errorf("request envelope inside a batch")
		}
		return decodeRequest(d, sets)
	case TypeBatch:
		if inBatch {
			return nil, fmt.Errorf("nested batch")
		}
		var c Batch
		c.Atomic = d.bool()
		n := d.count(MaxBatchCommands, 2)
		c.Cmds = make([]Command, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			sd := decoder{b: d.bytes()}
			if d.err != nil {
				break
			}
			sub, err := decodeBody(&sd, true, sets)
			if err == nil {
				err = sd.end()
			}
			if err != nil {
				return nil, fmt.Errorf("batch command %d: %w", i, err)
			}
			c.Cmds = append(c.Cmds, sub)
		}
		return c, nil
	}
	return decodeSetBody(d, t, sets)
}

// TenantCheck is a condition on a tenant key: it succeeds, changing
// nothing, if the key holds exactly Want (or, with Absent, does not exist),
// and fails with StatusConflict otherwise; Result.Found says whether the
// key exists. Inside an atomic Batch it guards the commands after it, so a
// read-modify-write proposes "check what I read, then write" and loses,
// rolled back as a whole, to any change committed since the read:
// rename over an existing file and exclusive create stay atomic under
// concurrent writers. An empty Want without Absent means the key holds an
// empty value. Absent with a non-empty Want is StatusInvalid.
type TenantCheck struct {
	Tenant string
	Key    string
	Want   []byte
	Absent bool
}

func (TenantCheck) Type() CommandType { return TypeTenantCheck }

func (c TenantCheck) encode(e *encoder) {
	e.str(c.Tenant)
	e.str(c.Key)
	e.bytes(c.Want)
	e.bool(c.Absent)
}

func decodeTenantCheck(d *decoder) TenantCheck {
	var c TenantCheck
	c.Tenant = d.str()
	c.Key = d.str()
	c.Want = d.bytes()
	c.Absent = d.bool()
	return c
}
