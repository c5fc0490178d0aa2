package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// logStore is the Raft log and stable store: one bbolt file, entries keyed
// by big-endian index, every write a fsynced bbolt transaction.
//
// It replaces raft-wal v0.4.0, whose tail truncation (raft's "clearing log
// suffix" after a leader change) seals a segment without writing its index
// block, so the node panics on every later start with "sealed segment has
// no index block" (hashicorp/raft-wal#31, fixed upstream after v0.4.0, the
// last release the module proxy serves). The chaos run hit it.
type logStore struct{ db *bolt.DB }

var (
	bucketLogs   = []byte("logs")
	bucketStable = []byte("stable")
	// errKeyNotFound's text is what hashicorp/raft compares against for a
	// missing stable key.
	errKeyNotFound = errors.New("not found")
)

var (
	_ raft.LogStore    = (*logStore)(nil)
	_ raft.StableStore = (*logStore)(nil)
)

func openLogStore(path string) (*logStore, error) {
	db, err := openBolt(path)
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("meta: open raft log %s: another process has it open (a second hastore on the same data directory?): %w", path, err)
	}
	if err != nil {
		return nil, damagedLogError(path, err)
	}
	err = guardBolt(func() error {
		return db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketLogs, bucketStable} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err == nil {
		err = verifyLog(db)
	}
	if err != nil {
		_ = guardBolt(db.Close)
		return nil, damagedLogError(path, err)
	}
	return &logStore{db: db}, nil
}

func (s *logStore) Close() error { return guardBolt(s.db.Close) }

func indexKey(i uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], i)
	return k[:]
}

func (s *logStore) FirstIndex() (uint64, error) {
	var idx uint64
	err := guardBolt(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			if k, _ := tx.Bucket(bucketLogs).Cursor().First(); k != nil {
				idx = binary.BigEndian.Uint64(k)
			}
			return nil
		})
	})
	return idx, err
}

func (s *logStore) LastIndex() (uint64, error) {
	var idx uint64
	err := guardBolt(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			if k, _ := tx.Bucket(bucketLogs).Cursor().Last(); k != nil {
				idx = binary.BigEndian.Uint64(k)
			}
			return nil
		})
	})
	return idx, err
}

func (s *logStore) GetLog(index uint64, log *raft.Log) error {
	return guardBolt(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			v := tx.Bucket(bucketLogs).Get(indexKey(index))
			if v == nil {
				return raft.ErrLogNotFound
			}
			return decodeLog(v, log)
		})
	})
}

func (s *logStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

func (s *logStore) StoreLogs(logs []*raft.Log) error {
	return guardBolt(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketLogs)
			for _, l := range logs {
				if err := b.Put(indexKey(l.Index), encodeLog(l)); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

func (s *logStore) DeleteRange(min, max uint64) error {
	return guardBolt(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketLogs).Cursor()
			for k, _ := c.Seek(indexKey(min)); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

func (s *logStore) Set(key, val []byte) error {
	return guardBolt(func() error {
		return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketStable).Put(key, val) })
	})
}

func (s *logStore) Get(key []byte) ([]byte, error) {
	var out []byte
	err := guardBolt(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			v := tx.Bucket(bucketStable).Get(key)
			if v == nil {
				return errKeyNotFound
			}
			out = append([]byte(nil), v...)
			return nil
		})
	})
	return out, err
}

func (s *logStore) SetUint64(key []byte, val uint64) error { return s.Set(key, indexKey(val)) }

func (s *logStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("meta: raft stable key %q holds %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// The entry encoding: a format byte, then index, term, type, appended-at
// (unix nanoseconds) as varints, then data and extensions length-prefixed.
// Format 2 appends a CRC-32C of everything before it: bbolt checksums only
// its meta pages, and a flipped bit in an entry's data must not become a
// different command applied on this node alone. Format 1 (no CRC) is still
// read.
const (
	logFormatV1 = 1
	logFormatV2 = 2
)

func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+2*binary.MaxVarintLen32+len(l.Data)+len(l.Extensions)+4)
	b = append(b, logFormatV1)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = binary.AppendUvarint(b, uint64(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.AppendVarint(b, at)
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	b[0] = logFormatV2
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeLog(b []byte, l *raft.Log) error {
	bad := func(what string) error { return fmt.Errorf("meta: raft log entry: bad %s", what) }
	if len(b) == 0 || b[0] != logFormatV1 && b[0] != logFormatV2 {
		return bad("format")
	}
	if b[0] == logFormatV2 {
		if len(b) < 5 {
			return bad("length")
		}
		n := len(b) - 4
		if crc32.Checksum(b[:n], castagnoli) != binary.LittleEndian.Uint32(b[n:]) {
			return fmt.Errorf("%w: raft log entry fails its checksum", ErrDamaged)
		}
		b = b[:n]
	}
	b = b[1:]
	uv := func(what string) (uint64, error) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, bad(what)
		}
		b = b[n:]
		return v, nil
	}
	bytesField := func(what string) ([]byte, error) {
		n, err := uv(what + " length")
		if err != nil || n > uint64(len(b)) {
			return nil, bad(what)
		}
		out := append([]byte(nil), b[:n]...)
		b = b[n:]
		return out, nil
	}
	var err error
	if l.Index, err = uv("index"); err != nil {
		return err
	}
	if l.Term, err = uv("term"); err != nil {
		return err
	}
	t, err := uv("type")
	if err != nil {
		return err
	}
	l.Type = raft.LogType(t)
	at, n := binary.Varint(b)
	if n <= 0 {
		return bad("time")
	}
	b = b[n:]
	l.AppendedAt = time.Time{}
	if at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	if l.Data, err = bytesField("data"); err != nil {
		return err
	}
	if l.Extensions, err = bytesField("extensions"); err != nil {
		return err
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return nil
}

// openBolt opens the bbolt file, turning a panic (bbolt trusts its pages:
// with NoFreelistSync it walks them all at open) into an error.
func openBolt(path string) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: bbolt panicked opening it: %v", ErrDamaged, r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
}

// guardBolt runs fn, turning a panic of bbolt reading a damaged page into
// ErrDamaged. Raft calls the log store from its own goroutines, where a panic
// would end the process.
func guardBolt(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: raft log: bbolt failed reading a damaged page: %v", ErrDamaged, r)
		}
	}()
	return fn()
}

// verifyLog reads every entry and the stable keys once at open, so that a
// damaged log stops the node at start, with an explanation, rather than
// raft panicking on the entry later ("failed to get log").
func verifyLog(db *bolt.DB) error {
	return guardBolt(func() error {
		return db.View(func(tx *bolt.Tx) error {
			var prev uint64
			var l raft.Log
			err := tx.Bucket(bucketLogs).ForEach(func(k, v []byte) error {
				if len(k) != 8 {
					return fmt.Errorf("%w: raft log key %x is not an index", ErrDamaged, k)
				}
				i := binary.BigEndian.Uint64(k)
				if err := decodeLog(v, &l); err != nil {
					return fmt.Errorf("%w: raft log entry %d: %v", ErrDamaged, i, err)
				}
				if l.Index != i || prev != 0 && i != prev+1 {
					return fmt.Errorf("%w: raft log entry under key %d holds index %d (previous key %d)", ErrDamaged, i, l.Index, prev)
				}
				prev = i
				return nil
			})
			if err != nil {
				return err
			}
			return tx.Bucket(bucketStable).ForEach(func(k, v []byte) error {
				if len(v) > 1<<20 {
					return fmt.Errorf("%w: raft stable key %q holds %d bytes", ErrDamaged, k, len(v))
				}
				return nil
			})
		})
	})
}

// damagedLogError explains what to do about a raft log that cannot be
// trusted. The node does not repair it by itself: the entries it holds may
// be the ones that made a write durable on a quorum, so silently starting
// without them could lose acknowledged writes if another node failed too.
func damagedLogError(path string, err error) error {
	return fmt.Errorf("meta: the raft log %s is damaged: %w. This node cannot start on it. "+
		"If the other nodes have a quorum without this one (`hastore admin status` on another node shows a leader), "+
		"stop this node, move its metadata directory aside (mv DATA/meta DATA/meta.corrupt) and start it again: it rejoins and catches up from the leader's snapshot. "+
		"If they do not, do not do that: restore this node's disk or its metadata from a backup first", path, err)
}
