package meta

import (
	"fmt"

	"hastore/storage"
)

// BlobID names a stored object. It is storage.BlobID, re-exported so that
// frontends, which must not import storage, can name it.
type BlobID = storage.BlobID

// Object is the metadata record of one stored blob. Objects are global:
// content addressing deduplicates them across tenants, and Refs counts the
// references from every tenant together.
type Object struct {
	ID     storage.BlobID
	Size   int64 // length of the blob in bytes
	K, M   int   // the scheme; K is 1 for storage.LayoutReplica
	Layout storage.Layout
	// Placement names the node holding each shard, by shard index. An empty
	// string means the shard is lost or not placed yet; repair fills it in
	// with SetPlacement.
	Placement []string
	Refs      int64
	Created   int64 // unix nanoseconds, from the proposer of the first PutObject
	// Deleted is when Refs last reached zero (unix nanoseconds from the
	// proposer of that DecRef), or 0 while the object is referenced. A
	// record with Refs == 0 is a tombstone: its shards stay until Purge
	// removes it after a grace period, so a new put can still revive it.
	Deleted int64
}

// Shards returns how many shards the object has in all.
func (o *Object) Shards() int {
	if o.Layout == storage.LayoutReplica {
		return o.M + 1
	}
	return o.K + o.M
}

// clone returns a deep copy, so a caller may keep or change what a read or
// a result returned without touching state shared with the FSM.
func (o Object) clone() Object {
	if o.Placement != nil {
		o.Placement = append([]string(nil), o.Placement...)
	}
	return o
}

func (o *Object) validate() error {
	switch {
	case o.ID.IsZero():
		return fmt.Errorf("zero blob ID")
	case o.Size < 0:
		return fmt.Errorf("object %s: negative size %d", o.ID, o.Size)
	case o.Layout != storage.LayoutErasure && o.Layout != storage.LayoutReplica:
		return fmt.Errorf("object %s: unknown layout %d", o.ID, o.Layout)
	case o.K < 1 || o.M < 0 || o.K+o.M > storage.MaxShards:
		return fmt.Errorf("object %s: impossible scheme %d+%d", o.ID, o.K, o.M)
	case o.Layout == storage.LayoutReplica && o.K != 1:
		return fmt.Errorf("object %s: replica layout needs k=1, got %d", o.ID, o.K)
	case len(o.Placement) != o.Shards():
		return fmt.Errorf("object %s: placement lists %d nodes for %d shards", o.ID, len(o.Placement), o.Shards())
	}
	for i, p := range o.Placement {
		if len(p) > maxNameLen {
			return fmt.Errorf("object %s: node ID of shard %d longer than %d bytes", o.ID, i, maxNameLen)
		}
	}
	return nil
}

// NodeState is a cluster member's state in the membership records.
type NodeState string

// Node states. A removed node keeps its record so placements that still
// name it can be recognised as lost and repaired.
const (
	NodeActive  NodeState = "active"
	NodeRemoved NodeState = "removed"
)

func (s NodeState) code() uint8 {
	switch s {
	case NodeActive:
		return 1
	case NodeRemoved:
		return 2
	}
	return 0
}

func nodeStateFromCode(c uint8) NodeState {
	switch c {
	case 1:
		return NodeActive
	case 2:
		return NodeRemoved
	}
	return NodeState(fmt.Sprintf("unknown(%d)", c))
}

// Node is a membership record.
type Node struct {
	ID      string
	Address string // where other nodes reach its data-plane API
	State   NodeState
}

// Event describes one applied raft entry (or one restore), delivered to
// Config.OnApply and to subscriptions after the state change is visible to
// reads, in log order.
type Event struct {
	Index uint64
	// Cmd is the applied command (a Request's inner command), or nil for an
	// entry that did not decode (its Result says why), for a repeated
	// Request (nothing changed; Result is the first application's) and for
	// a restore.
	Cmd    Command
	Result Result
	// Restored is set when the FSM state was replaced wholesale from a
	// snapshot: no per-entry events exist for what changed, so a consumer
	// that mirrors state must reload it from reads at Index.
	Restored bool
}

// Limits. They are part of the replicated semantics: a command is judged
// against them inside Apply, so every node must run with the same values.
const (
	// MaxCommandSize bounds one encoded command (one raft entry), so one
	// entry's writes always fit in one badger transaction.
	MaxCommandSize = 1 << 20
	// MaxBatchCommands bounds the commands in one Batch.
	MaxBatchCommands = 4096
	// MaxTenantValueSize bounds one tenant value. It is below badger's value
	// threshold so values stay in the LSM tree and need no value-log GC.
	MaxTenantValueSize = 512 << 10
	// MaxTenantKeySize bounds one tenant key.
	MaxTenantKeySize = 1024
	maxNameLen       = 255
)

// Key layout. Prefixes are single bytes plus '/', so each keyspace is one
// contiguous range that a later change can split by range (objects by ID,
// tenants by name).
const (
	prefixObject = "o/" // o/<32-byte blob ID>      → object record
	prefixTenant = "t/" // t/<tenant>/<key>          → tenant value
	prefixNode   = "n/" // n/<node ID>               → node record
	prefixMeta   = "m/" // FSM bookkeeping, not user state (incl. request memory, request.go)
)

var (
	keyApplied     = []byte("m/applied")      // last applied raft index; written with every change
	keyObjectCount = []byte("m/object-count") // live + tombstoned object records
)

func objectKey(id storage.BlobID) []byte {
	k := make([]byte, 0, len(prefixObject)+len(id))
	k = append(k, prefixObject...)
	return append(k, id[:]...)
}

func nodeKey(id string) []byte { return []byte(prefixNode + id) }

func tenantPrefix(tenant string) []byte { return []byte(prefixTenant + tenant + "/") }

func tenantKey(tenant, key string) []byte { return []byte(prefixTenant + tenant + "/" + key) }

func validTenant(tenant string) error {
	if tenant == "" || len(tenant) > maxNameLen {
		return fmt.Errorf("tenant name must be 1..%d bytes, got %d", maxNameLen, len(tenant))
	}
	for i := 0; i < len(tenant); i++ {
		// A '/' would let tenant "a/b" key "c" alias tenant "a" key "b/c".
		if tenant[i] == '/' || tenant[i] == 0 {
			return fmt.Errorf("tenant name %q contains '/' or NUL", tenant)
		}
	}
	return nil
}

func validTenantKey(key string) error {
	if key == "" || len(key) > MaxTenantKeySize {
		return fmt.Errorf("tenant key must be 1..%d bytes, got %d", MaxTenantKeySize, len(key))
	}
	return nil
}

// TenantKey is the FSM key of key in tenant's keyspace, as command sets
// spell the keys they read and write through a Txn.
func TenantKey(tenant, key string) string { return prefixTenant + tenant + "/" + key }

// TenantsKeyPrefix is the FSM key prefix of every tenant whose name starts
// with namePrefix (a command set's Prefixes entry).
func TenantsKeyPrefix(namePrefix string) string { return prefixTenant + namePrefix }

// TenantReader is the read side of the tenant keyspace; *FSM and *Store
// provide it, and command sets build their read views on it.
type TenantReader interface {
	TenantGet(tenant, key string) ([]byte, bool, error)
	TenantScan(tenant, prefix string, fn func(key string, value []byte) error) error
}
