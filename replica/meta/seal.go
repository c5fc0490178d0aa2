package meta

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/dgraph-io/badger/v4"
)

// Every value the FSM keeps in badger is sealed: the value followed by a
// CRC-32C of the key and the value (4 bytes, big-endian), checked on every
// read. Badger checks a block's checksum when it reads the block, but it
// then parses the block in place in the mmap'd file (tables without
// compression), and it reads a table's index (block offsets, keys, bloom
// filter) in place with no check after open, so bytes that change under a
// running node can still reach a reader; the seal turns those into
// ErrDamaged instead of a wrong answer. Raft snapshots and backups carry
// the values unsealed (their stream has a CRC of its own), so the seal is
// a property of this node's files only.
//
// What the seal cannot see: a key that badger skips (its block fails
// badger's own check, which badger's Get and iterators swallow) reads as
// absent, or as an older version of itself where one is still kept in a
// lower table. The FSM's tables are re-verified periodically and before
// every snapshot for that (see Store.verifyLoop).
const sealLen = 4

// errSealBroken is the text a broken seal reports; badgerDamage and
// applyPanicIsDamage recognise it (the apply path panics with a string).
const errSealBroken = "record checksum mismatch"

// sealSum is the CRC-32C of key and value, mixed with the key's length so
// that the same bytes split differently between key and value do not match
// (without hashing a length prefix, which would cost an allocation a read).
func sealSum(key, val []byte) uint32 {
	c := crc32.Update(0, castagnoli, key)
	c = crc32.Update(c, castagnoli, val)
	return c ^ uint32(len(key))*0x9e3779b1
}

// seal returns val followed by its seal for key, in a new slice.
func seal(key, val []byte) []byte {
	out := make([]byte, len(val), len(val)+sealLen)
	copy(out, val)
	return binary.BigEndian.AppendUint32(out, sealSum(key, val))
}

// unseal checks the seal of stored, the badger value of key, and returns
// the value without it (a sub-slice of stored).
func unseal(key, stored []byte) ([]byte, error) {
	if len(stored) < sealLen {
		return nil, fmt.Errorf("FSM key %q: value of %d bytes, shorter than its seal: %s", key, len(stored), errSealBroken)
	}
	val := stored[:len(stored)-sealLen]
	if got, want := sealSum(key, val), binary.BigEndian.Uint32(stored[len(val):]); got != want {
		return nil, fmt.Errorf("FSM key %q: computed %08x, stored %08x: %s", key, got, want, errSealBroken)
	}
	return val, nil
}

// itemValue returns a copy of item's value, its seal checked.
func itemValue(item *badger.Item) ([]byte, error) {
	stored, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	return unseal(item.Key(), stored)
}

// viewValue calls fn with item's value, its seal checked, without copying
// it; fn must not keep v.
func viewValue(item *badger.Item, fn func(v []byte) error) error {
	return item.Value(func(stored []byte) error {
		v, err := unseal(item.Key(), stored)
		if err != nil {
			return err
		}
		return fn(v)
	})
}

// setSealed is txn.Set of a sealed value.
func setSealed(txn *badger.Txn, key, val []byte) error {
	return txn.Set(key, seal(key, val))
}
