package meta

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"hastore/storage"
)

// testWriter sends log lines to t.Log until the test ends, so only failing
// tests print them and late raft goroutines cannot log into a finished test.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	level := slog.LevelWarn
	if os.Getenv("META_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// smallBadger keeps the many test databases cheap.
func smallBadger(o badger.Options) badger.Options {
	return o.WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(4 << 20).
		WithValueLogFileSize(16 << 20).
		WithNumCompactors(2)
}

func openTestFSM(t testing.TB, dir string, onApply func(Event)) *FSM {
	t.Helper()
	f, err := OpenFSM(dir, FSMOptions{Logger: testLogger(t), OnApply: onApply, Badger: smallBadger})
	if err != nil {
		t.Fatalf("OpenFSM: %v", err)
	}
	return f
}

func mustEncode(t testing.TB, cmd Command) []byte {
	t.Helper()
	b, err := EncodeCommand(cmd)
	if err != nil {
		t.Fatalf("EncodeCommand(%T): %v", cmd, err)
	}
	return b
}

func entry(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// applyAll applies cmds as entries first, first+1, ... in one raft batch.
func applyAll(t testing.TB, f *FSM, first uint64, cmds ...Command) []Result {
	t.Helper()
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		logs[i] = entry(first+uint64(i), mustEncode(t, c))
	}
	return results(f.ApplyBatch(logs))
}

func results(out []any) []Result {
	rs := make([]Result, len(out))
	for i, r := range out {
		rs[i] = r.(Result)
	}
	return rs
}

func blobID(s string) storage.BlobID { return storage.Sum([]byte(s)) }

func testObject(name string) Object {
	return Object{ID: blobID(name), Size: 1000, K: 2, M: 1, Layout: storage.LayoutErasure, Placement: []string{"n1", "n2", "n3"}}
}

// dump returns every key and value of the FSM, bookkeeping included, as
// sorted "key=value" lines, for whole-state comparisons.
func dump(t testing.TB, f *FSM, withApplied bool) []string {
	t.Helper()
	var out []string
	err := f.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			if !withApplied && bytes.Equal(k, keyApplied) {
				continue
			}
			v, err := itemValue(it.Item())
			if err != nil {
				return err
			}
			out = append(out, fmt.Sprintf("%x=%x", k, v))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	sort.Strings(out)
	return out
}

func equalDumps(t testing.TB, what string, a, b []string) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d records vs %d", what, len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("%s: record %d differs:\n%s\n%s", what, i, a[i], b[i])
		}
	}
}

// crashClose closes the FSM's badger without the clean-shutdown marker, as
// a crash would leave it (minus lost writes, which the FSM must not rely
// on anyway).
func crashClose(f *FSM) {
	f.mu.Lock()
	f.closed = true
	close(f.closedCh)
	h := f.cur
	h.retired = true
	f.mu.Unlock()
	f.closeHandle(h)
	f.open.Wait()
}

// fileSink is a raft.SnapshotSink writing to a file.
type fileSink struct {
	*os.File
	cancelled bool
}

func (s *fileSink) ID() string    { return "test" }
func (s *fileSink) Cancel() error { s.cancelled = true; return s.File.Close() }
func (s *fileSink) Close() error  { return s.File.Close() }

func persistToFile(t testing.TB, snap raft.FSMSnapshot, path string) int64 {
	t.Helper()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(&fileSink{File: fh}); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func restoreFromFile(f *FSM, path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Restore(fh)
}

func restoreFromBytes(f *FSM, b []byte) error {
	return f.Restore(io.NopCloser(bytes.NewReader(b)))
}

func genDirs(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, genPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
