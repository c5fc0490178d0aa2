package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// corruptTemplate fills a store with shards of every size class (in the
// tree, in the value log), closes it with its tables compacted and returns
// its directory and shards. With crashed, it also returns a copy of the
// store taken while it was open with shards in its memtable log, as a crash
// would leave it.
func corruptTemplate(t *testing.T) (string, []*Shard) {
	dir, _, shards := corruptTemplates(t)
	return dir, shards
}

func corruptTemplates(t *testing.T) (closed, crashed string, shards []*Shard) {
	t.Helper()
	dir := t.TempDir()
	opts := dbTestOptions(t)
	opts.tune = func(bo *badger.Options) { bo.CompactL0OnClose = true }
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}

	sizes := []int{100, 700, 5_000, 40_000}
	for i := range 240 {
		s := dbShard(dbID("corrupt", i), i%4, sizes[i%len(sizes)], 4096)
		if err := db.Put(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		shards = append(shards, s)
		if i == 200 {
			// Flush what came so far into tables, so that the copy has
			// tables, a value log and a memtable log.
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if db, err = Open(dir, opts); err != nil {
				t.Fatal(err)
			}
		}
	}
	crashed = filepath.Join(t.TempDir(), "crashed")
	copyDir(t, dir, crashed)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, crashed, shards
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o750); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
}

// flipBytes inverts bytes of file: the first n bytes of its header, or n
// bytes at offsets drawn from rng.
func flipBytes(t *testing.T, path string, rng *rand.Rand, header bool, n int) []int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		t.Fatalf("%s: empty or unreadable: %v", path, err)
	}
	var offs []int64
	for i := range n {
		off := int64(i) % fi.Size()
		if !header {
			off = rng.Int64N(fi.Size())
		}
		b := []byte{0}
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= byte(1 + rng.IntN(255))
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	return offs
}

// checkServed reads every shard back: each must come back byte-identical or
// be reported corrupt or missing, never wrong. It returns how many were
// served.
func checkServed(t *testing.T, db *DB, shards []*Shard) int {
	t.Helper()
	ctx := t.Context()
	ok := 0
	for _, s := range shards {
		g, err := db.Get(ctx, s.Key())
		switch {
		case err == nil:
			if !bytes.Equal(dbMarshal(t, g), dbMarshal(t, s)) {
				t.Fatalf("shard %v: served bytes differ from those put", s.Key())
			}
			ok++
		case errors.Is(err, ErrCorrupt), errors.Is(err, ErrNotFound):
		default:
			t.Fatalf("shard %v: %v (want the shard, ErrCorrupt or ErrNotFound)", s.Key(), err)
		}
		if b, _, err := db.ReadAt(ctx, s.Key(), 0, 50); err == nil && !bytes.Equal(b, s.Payload[:50]) {
			t.Fatalf("shard %v: ReadAt served wrong bytes", s.Key())
		}
		if _, err := db.Stat(ctx, s.Key()); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound) {
			t.Fatalf("shard %v: Stat: %v", s.Key(), err)
		}
	}
	if err := db.Walk(ctx, func(Header) error { return nil }); err != nil && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Walk: %v", err)
	}
	return ok
}

// TestDBCorruptFiles damages each kind of file of a closed store at its
// header and at seeded random offsets, and checks that Open never panics or
// fails, and that no read serves wrong bytes. A store badger cannot open is
// moved aside and replaced by an empty one.
func TestDBCorruptFiles(t *testing.T) {
	closed, crashed, shards := corruptTemplates(t)
	kinds := []string{"*.sst", "*.vlog", "MANIFEST", "DISCARD", "KEYREGISTRY", "*.mem"}
	for _, kind := range kinds {
		tmpl := closed
		if kind == "*.mem" {
			tmpl = crashed
		}
		files, _ := filepath.Glob(filepath.Join(tmpl, kind))
		if len(files) == 0 {
			t.Fatalf("template store has no %s file", kind)
		}
		for seed := range 5 {
			name := fmt.Sprintf("%s/seed%d", strings.TrimPrefix(kind, "*."), seed)
			t.Run(name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "shards")
				copyDir(t, tmpl, dir)
				rng := rand.New(rand.NewPCG(uint64(seed), 11))
				for _, f := range files {
					// Seed 0 hits the header, the rest random bytes; seed
					// 4 a lot of them.
					n := 3
					if seed == 4 {
						n = 64
					}
					offs := flipBytes(t, filepath.Join(dir, filepath.Base(f)), rng, seed == 0, n)
					t.Logf("%s: flipped bytes at %v", filepath.Base(f), offs)
				}
				db, err := Open(dir, dbTestOptions(t))
				if err != nil {
					t.Fatalf("Open of a damaged store: %v (want it opened, or moved aside and started empty)", err)
				}
				defer db.Close()
				served := checkServed(t, db, shards)
				t.Logf("served %d of %d shards; moved aside: %q, fresh %v", served, len(shards), db.MovedAside(), db.Fresh())
				if db.MovedAside() != "" && (!db.Fresh() || served != 0) {
					t.Fatalf("store moved aside, but Fresh %v and %d shards served", db.Fresh(), served)
				}
				// The store keeps working for new shards.
				s := dbShard(dbID("after", seed), 0, 3000, 4096)
				if err := db.Put(t.Context(), s); err != nil {
					t.Fatalf("put after damage: %v", err)
				}
				if g, err := db.Get(t.Context(), s.Key()); err != nil || !bytes.Equal(g.Payload, s.Payload) {
					t.Fatalf("get after damage: %v", err)
				}
			})
		}
	}
}

// TestDBCorruptLiveTable damages the tables of an open store (badger maps
// them shared, so it reads the damage) and reads every shard through it.
func TestDBCorruptLiveTable(t *testing.T) {
	tmpl, shards := corruptTemplate(t)
	for seed := range 6 {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "shards")
			copyDir(t, tmpl, dir)
			db, err := Open(dir, dbTestOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if n := checkServed(t, db, shards); n != len(shards) {
				t.Fatalf("intact store served %d of %d shards", n, len(shards))
			}
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			files, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
			for _, f := range files {
				flipBytes(t, f, rng, false, 8+seed*16)
			}
			served := checkServed(t, db, shards)
			t.Logf("served %d of %d shards after damaging the tables; %d damage reports", served, len(shards), db.Corruptions())
			// Closing must not panic either, and a restart finds the
			// damage and starts over empty rather than in a crash loop.
			_ = db.Close()
			db2, err := Open(dir, dbTestOptions(t))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer db2.Close()
			checkServed(t, db2, shards)
		})
	}
}
