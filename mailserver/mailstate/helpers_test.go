package mailstate

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"hastore/replica/meta"
	"hastore/storage"
)

// These mirror replica/meta's test helpers, with the mail set registered.

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func smallBadger(o badger.Options) badger.Options {
	return o.WithMemTableSize(16 << 20).WithNumMemtables(2).WithBlockCacheSize(4 << 20).WithValueLogFileSize(16 << 20).WithNumCompactors(2)
}

func openTestFSM(t testing.TB, dir string, onApply func(meta.Event)) *meta.FSM {
	t.Helper()
	f, err := meta.OpenFSM(dir, meta.FSMOptions{Logger: testLogger(t), OnApply: onApply, Badger: smallBadger, CommandSets: []meta.CommandSet{CommandSet()}})
	if err != nil {
		t.Fatalf("OpenFSM: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func mustEncode(t testing.TB, cmd meta.Command) []byte {
	t.Helper()
	b, err := meta.EncodeCommand(cmd)
	if err != nil {
		t.Fatalf("EncodeCommand(%T): %v", cmd, err)
	}
	return b
}

func entry(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

func applyAll(t testing.TB, f *meta.FSM, first uint64, cmds ...meta.Command) []meta.Result {
	t.Helper()
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		logs[i] = entry(first+uint64(i), mustEncode(t, c))
	}
	return results(f.ApplyBatch(logs))
}

func results(out []any) []meta.Result {
	rs := make([]meta.Result, len(out))
	for i, r := range out {
		rs[i] = r.(meta.Result)
	}
	return rs
}

func blobID(s string) storage.BlobID { return storage.Sum([]byte(s)) }

func testObject(name string) meta.Object {
	return meta.Object{ID: blobID(name), Size: 1000, K: 2, M: 1, Layout: storage.LayoutErasure, Placement: []string{"n1", "n2", "n3"}}
}

// dump returns every key and value of the FSM as sorted "key=value" hex
// lines (the applied index, which a backup carries in its header, as
// m/applied when withApplied), for whole-state comparisons.
func dump(t testing.TB, f *meta.FSM, withApplied bool) []string {
	t.Helper()
	var buf bytes.Buffer
	if _, _, err := f.WriteBackup(&buf); err != nil {
		t.Fatalf("WriteBackup: %v", err)
	}
	var out []string
	idx, _, err := meta.ReadSnapshot(&buf, func(k, v []byte) error {
		out = append(out, fmt.Sprintf("%x=%x", k, v))
		return nil
	})
	if err != nil {
		t.Fatalf("ReadSnapshot: %v", err)
	}
	if withApplied {
		out = append(out, fmt.Sprintf("%x=%x", "m/applied", bigEndian(idx)))
	}
	sort.Strings(out)
	return out
}

func bigEndian(i uint64) []byte {
	b := make([]byte, 8)
	for j := 7; j >= 0; j-- {
		b[j] = byte(i)
		i >>= 8
	}
	return b
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

// fileSink is a raft.SnapshotSink writing to a file.
type fileSink struct{ *os.File }

func (s *fileSink) ID() string    { return "test" }
func (s *fileSink) Cancel() error { return s.File.Close() }

func persistToFile(t testing.TB, snap raft.FSMSnapshot, path string) {
	t.Helper()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(&fileSink{File: fh}); err != nil {
		t.Fatalf("Persist: %v", err)
	}
}

func restoreFromFile(f *meta.FSM, path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Restore(fh)
}
