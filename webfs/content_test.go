package webfs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"syscall"
	"testing"

	"hastore/webfs"
)

// refs returns the reference count of a chunk's object as node 0 sees it
// (0 for no record or a tombstone).
func (e *env) refs(t *testing.T, id webfs.ObjectID) int64 {
	t.Helper()
	if err := e.c.Nodes[0].Cluster.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	o, ok, err := e.c.Nodes[0].Meta.Object([32]byte(id))
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return 0
	}
	return o.Refs
}

// TestChunkedFile: a 9 MiB file is three chunks; ranged reads read the
// right bytes through both APIs and an open File; a write or truncate
// rebuilds only the chunks it touches; identical content in two sites is
// stored once; deleting drops the references.
func TestChunkedFile(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	s := e.addSite(t, "chunks.test")
	rs := e.client.Site("chunks.test")
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 9<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	a, err := s.PutFile(ctx, webfs.RootIno, "big.bin", bytes.NewReader(data), webfs.NewAttr{Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Chunks) != 3 || a.Chunks[0].Len != webfs.ChunkSize || a.Chunks[2].Len != 1<<20 || a.Size != int64(len(data)) {
		t.Fatalf("chunks %+v, size %d", a.Chunks, a.Size)
	}
	const C = webfs.ChunkSize
	ranges := []struct{ off, n int64 }{
		{0, 10}, {C - 5, 10}, {2*C - 1, 2}, {C, C}, {0, 9 << 20}, {9<<20 - 10, 100}, {9 << 20, 5}, {12345, 3 << 20},
	}
	f, err := s.Open(ctx, a.Ino)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		want := data[min(r.off, int64(len(data))):min(r.off+r.n, int64(len(data)))]
		got, err := s.ReadAt(ctx, a.Ino, r.off, r.n)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "local ReadAt", got, want)
		if got, err = rs.ReadAt(ctx, a.Ino, r.off, r.n); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "remote ReadAt", got, want)
		buf := make([]byte, r.n)
		n, err := f.ReadAt(buf, r.off)
		if n < len(buf) && err != io.EOF || n == len(buf) && err != nil {
			t.Fatalf("File.ReadAt(%d, %d) = %d, %v", r.off, r.n, n, err)
		}
		mustEqual(t, "File.ReadAt", buf[:n], want)
	}
	if _, err := f.Seek(C-3, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "sequential read", rest, data[C-3:])

	// A write inside chunk 1 rebuilds chunk 1 only.
	patch := []byte("patched in the middle")
	copy(data[C+100:], patch)
	b, err := s.WriteAt(ctx, a.Ino, C+100, patch)
	if err != nil {
		t.Fatal(err)
	}
	if b.Chunks[0] != a.Chunks[0] || b.Chunks[2] != a.Chunks[2] || b.Chunks[1] == a.Chunks[1] {
		t.Errorf("write in chunk 1 changed chunks %+v -> %+v", a.Chunks, b.Chunks)
	}
	if e.refs(t, a.Chunks[1].ID) != 0 {
		t.Errorf("the replaced chunk is still referenced")
	}
	got, err := rs.ReadAt(ctx, a.Ino, 0, 10<<20)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "after WriteAt", got, data)
	if b.ContentID == a.ContentID {
		t.Error("content ID did not change with the content")
	}

	// The same bytes in another site share the chunks.
	s2 := e.addSite(t, "chunks2.test")
	c, err := s2.PutFile(ctx, webfs.RootIno, "copy.bin", bytes.NewReader(data), webfs.NewAttr{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.Chunks {
		if c.Chunks[i] != b.Chunks[i] {
			t.Fatalf("chunk %d differs across sites", i)
		}
		if r := e.refs(t, c.Chunks[i].ID); r != 2 {
			t.Errorf("chunk %d: %d references, want 2", i, r)
		}
	}
	if c.ContentID != b.ContentID {
		t.Error("equal content, different content IDs")
	}

	// Truncate into chunk 1 keeps chunk 0, rebuilds a short chunk 1.
	d, err := s.Setattr(ctx, a.Ino, webfs.SetAttr{Valid: webfs.SetSize, Size: C + 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Chunks) != 2 || d.Chunks[0] != b.Chunks[0] || d.Chunks[1].Len != 1000 {
		t.Errorf("truncated chunks %+v", d.Chunks)
	}
	if got, err = s.ReadAt(ctx, a.Ino, 0, 10<<20); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "after truncate", got, data[:C+1000])
	if r := e.refs(t, b.Chunks[2].ID); r != 1 {
		t.Errorf("chunk 2 after the truncate of one copy: %d references, want 1", r)
	}

	// The open File reads the version it opened: its chunk 2 is still
	// there (the other site holds it), its chunk 1 was dropped.
	if _, err := f.ReadAt(make([]byte, 10), 2*C); err != nil {
		t.Errorf("reading an old version's chunk still referenced: %v", err)
	}
	if _, err := f.ReadAt(make([]byte, 10), C+10); errnoOf(err) != syscall.ESTALE {
		t.Errorf("reading an old version's dropped chunk: %v, want ESTALE", err)
	}

	// Unlink and site deletion drop every reference.
	if err := s.Unlink(ctx, webfs.RootIno, "big.bin"); err != nil {
		t.Fatal(err)
	}
	if err := e.sites(1).DelSite(ctx, "chunks2.test"); err != nil {
		t.Fatal(err)
	}
	for _, ch := range append(append(a.Chunks, b.Chunks...), d.Chunks...) {
		if r := e.refs(t, ch.ID); r != 0 {
			t.Errorf("chunk %s still has %d references", ch.ID, r)
		}
	}
	if _, err := rs.GetAttr(ctx, a.Ino); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetAttr of an unlinked file: %v", err)
	}
}
