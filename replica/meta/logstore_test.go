package meta

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The scenario that broke raft-wal v0.4.0: raft clears a log suffix after a
// leader change, the process stops, and the next start must read the log.
func TestLogStoreTruncateAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	s, err := openLogStore(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 100; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1 + i/50, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, int(i)),
			Extensions: []byte{byte(i)}, AppendedAt: time.Unix(1700000000, int64(i))})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(91, 100); err != nil { // "clearing log suffix"
		t.Fatal(err)
	}
	if err := s.StoreLog(&raft.Log{Index: 91, Term: 9, Type: raft.LogCommand, Data: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 10); err != nil { // compaction behind a snapshot
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 9); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = openLogStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != 11 || last != 91 {
		t.Fatalf("first, last = %d, %d; want 11, 91", first, last)
	}
	var l raft.Log
	for i := uint64(11); i <= 90; i++ {
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		want := logs[i-1]
		if l.Index != want.Index || l.Term != want.Term || l.Type != want.Type || !bytes.Equal(l.Data, want.Data) ||
			!bytes.Equal(l.Extensions, want.Extensions) || !l.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("GetLog(%d) = %+v, want %+v", i, l, *want)
		}
	}
	if err := s.GetLog(91, &l); err != nil || string(l.Data) != "new" || l.Term != 9 {
		t.Fatalf("GetLog(91) = %+v, %v", l, err)
	}
	for _, i := range []uint64{10, 92} {
		if err := s.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) err = %v, want ErrLogNotFound", i, err)
		}
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 9 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
	// hashicorp/raft recognises a missing stable key by this exact text.
	if _, err := s.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing key: err = %v, want \"not found\"", err)
	}
}

func TestDecodeLogRejectsGarbage(t *testing.T) {
	good := encodeLog(&raft.Log{Index: 5, Term: 2, Data: []byte("abc")})
	for i := range good {
		var l raft.Log
		if err := decodeLog(good[:i], &l); err == nil {
			t.Fatalf("truncated to %d bytes: decoded without error", i)
		}
	}
	if err := decodeLog(append(good, 0), &raft.Log{}); err == nil {
		t.Fatal("trailing byte accepted")
	}
}
