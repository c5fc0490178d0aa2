package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
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
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("meta: open raft log %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLogs, bucketStable} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("meta: init raft log %s: %w", path, err)
	}
	return &logStore{db: db}, nil
}

func (s *logStore) Close() error { return s.db.Close() }

func indexKey(i uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], i)
	return k[:]
}

func (s *logStore) FirstIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().First(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

func (s *logStore) LastIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().Last(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

func (s *logStore) GetLog(index uint64, log *raft.Log) error {
	return s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLogs).Get(indexKey(index))
		if v == nil {
			return raft.ErrLogNotFound
		}
		return decodeLog(v, log)
	})
}

func (s *logStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

func (s *logStore) StoreLogs(logs []*raft.Log) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			if err := b.Put(indexKey(l.Index), encodeLog(l)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *logStore) DeleteRange(min, max uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		for k, _ := c.Seek(indexKey(min)); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *logStore) Set(key, val []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketStable).Put(key, val) })
}

func (s *logStore) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketStable).Get(key)
		if v == nil {
			return errKeyNotFound
		}
		out = append([]byte(nil), v...)
		return nil
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
const logFormatV1 = 1

func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+2*binary.MaxVarintLen32+len(l.Data)+len(l.Extensions))
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
	return append(b, l.Extensions...)
}

func decodeLog(b []byte, l *raft.Log) error {
	bad := func(what string) error { return fmt.Errorf("meta: raft log entry: bad %s", what) }
	if len(b) == 0 || b[0] != logFormatV1 {
		return bad("format")
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
