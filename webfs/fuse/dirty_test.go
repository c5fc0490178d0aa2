package fuse

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// TestDirtyModel checks the write buffer against a plain byte slice:
// random writes and truncations of a committed file, in memory and
// spilled to a temporary file, then reading through the buffer, a whole
// commit (when it applies), and a commit by ranges applied to the old
// content.
func TestDirtyModel(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 1))
		base := make([]byte, rng.IntN(5000))
		for i := range base {
			base[i] = byte(rng.Uint32())
		}
		memMax := int64(1 << 20)
		if seed%2 == 0 {
			memMax = int64(rng.IntN(3000) + 1) // spills early
		}
		d := newDirty(int64(len(base)), memMax, t.TempDir())
		model := bytes.Clone(base)
		for range rng.IntN(12) + 1 {
			if rng.IntN(4) == 0 {
				size := rng.IntN(8000)
				if err := d.truncate(int64(size)); err != nil {
					t.Fatal(err)
				}
				if size < len(model) {
					model = model[:size]
				} else {
					model = append(model, make([]byte, size-len(model))...)
				}
				continue
			}
			off := rng.IntN(8000)
			data := make([]byte, rng.IntN(3000)+1)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			if err := d.write(int64(off), data); err != nil {
				t.Fatal(err)
			}
			if end := off + len(data); end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[off:], data)
		}
		if d.size != int64(len(model)) {
			t.Fatalf("seed %d: size %d, want %d", seed, d.size, len(model))
		}
		// Reads through the buffer, the committed content below minSize.
		for range 20 {
			off, n := int64(rng.IntN(9000)), int64(rng.IntN(4000))
			got := make([]byte, 0, n)
			for _, p := range d.pieces(off, n) {
				buf := make([]byte, p.n)
				switch p.kind {
				case pieceLocal:
					if err := d.readLocal(buf, p.off); err != nil {
						t.Fatal(err)
					}
				case pieceRemote:
					copy(buf, base[p.off:])
				}
				got = append(got, buf...)
			}
			want := []byte{}
			if off < int64(len(model)) {
				want = model[off:min(off+n, int64(len(model)))]
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("seed %d: read [%d,+%d): %d bytes differ from the %d expected", seed, off, n, len(got), len(want))
			}
		}
		if d.whole() {
			r := &wholeReader{d: d}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, model) {
				t.Fatalf("seed %d: whole content: %d bytes, %v; want %d", seed, len(got), err, len(model))
			}
			// Sent again from the start, as a retry does.
			if _, err := r.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if again, _ := io.ReadAll(r); !bytes.Equal(again, model) {
				t.Fatalf("seed %d: whole content read again differs", seed)
			}
		}
		// A commit by ranges: truncate, write the extents, set the size.
		file := bytes.Clone(base)
		if d.minSize < d.base {
			file = file[:d.minSize]
		}
		for _, e := range d.ext {
			buf := make([]byte, e.end-e.off)
			if err := d.readLocal(buf, e.off); err != nil {
				t.Fatal(err)
			}
			if int64(len(file)) < e.end {
				file = append(file, make([]byte, e.end-int64(len(file)))...)
			}
			copy(file[e.off:], buf)
		}
		if int64(len(file)) > d.size {
			file = file[:d.size]
		} else {
			file = append(file, make([]byte, d.size-int64(len(file)))...)
		}
		if !bytes.Equal(file, model) {
			t.Fatalf("seed %d: commit by ranges gives other content", seed)
		}
		d.close()
	}
}

func TestAddExtent(t *testing.T) {
	d := &dirty{}
	for _, e := range []extent{{10, 20}, {30, 40}, {20, 25}, {0, 5}, {5, 10}, {50, 60}, {35, 55}} {
		d.addExtent(e.off, e.end)
	}
	want := []extent{{0, 25}, {30, 60}}
	if len(d.ext) != len(want) || d.ext[0] != want[0] || d.ext[1] != want[1] {
		t.Fatalf("extents %v, want %v", d.ext, want)
	}
}
