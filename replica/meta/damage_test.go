package meta

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

func putTenantKeys(t *testing.T, s *Store, from, to int) {
	t.Helper()
	ctx := ctxFor(t, 20*time.Second)
	for i := from; i < to; i++ {
		if _, err := s.Propose(ctx, TenantPut{Tenant: "t", Key: fmt.Sprintf("k%04d", i), Value: []byte(fmt.Sprint("value ", i))}); err != nil {
			t.Fatal(err)
		}
	}
}

func waitSnapshot(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m, _ := s.snaps.List(); len(m) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no raft snapshot taken")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func snapshotTune(c *Config) {
	c.SnapshotThreshold = 32
	c.SnapshotInterval = 50 * time.Millisecond
}

// A read that meets damaged FSM files gets the state rebuilt from the raft
// snapshot and log while the node runs, at the same applied index.
func TestFSMRebuildWhileRunning(t *testing.T) {
	c := newTestCluster(t, snapshotTune)
	n := c.start("n1", c.servers("n1"))
	c.leader()
	putTenantKeys(t, n.store, 0, 100)
	waitSnapshot(t, n.store)
	putTenantKeys(t, n.store, 100, 150)
	f := n.store.fsm
	before := dump(t, f, true)
	restores := n.restores.Load()

	if err := f.damagedRead(errors.New("test: checksum mismatch")); !errors.Is(err, ErrDamaged) {
		t.Fatalf("damagedRead: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.Damaged() {
		if time.Now().After(deadline) {
			t.Fatal("FSM not rebuilt")
		}
		time.Sleep(20 * time.Millisecond)
	}
	equalDumps(t, "state after the rebuild", before, dump(t, f, true))
	if n.restores.Load() == restores {
		t.Fatal("no Restored event after the rebuild")
	}
	if aside, _ := filepath.Glob(filepath.Join(n.dir, "fsm.corrupt-*")); len(aside) == 0 {
		t.Fatal("damaged generation not moved aside")
	}
	putTenantKeys(t, n.store, 150, 160)
	if v, ok, err := n.store.TenantGet("t", "k0155"); err != nil || !ok || string(v) != "value 155" {
		t.Fatalf("read after the rebuild: %q %v %v", v, ok, err)
	}
}

// Damaged FSM files found at open: the generation is moved aside and raft
// rebuilds the same state, instead of a panic or a node that stays down.
func TestFSMDamagedAtOpen(t *testing.T) {
	for seed := range 4 {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := newTestCluster(t, snapshotTune)
			n := c.start("n1", c.servers("n1"))
			c.leader()
			putTenantKeys(t, n.store, 0, 120)
			waitSnapshot(t, n.store)
			putTenantKeys(t, n.store, 120, 140)
			before := dump(t, n.store.fsm, false)
			c.stop("n1")
			files, _ := filepath.Glob(filepath.Join(n.dir, "fsm", "gen-*", "*"))
			rng := rand.New(rand.NewPCG(uint64(seed), 5))
			hit := 0
			for _, name := range files {
				base := filepath.Base(name)
				if filepath.Ext(base) != ".sst" && base != "MANIFEST" && (seed < 2 || filepath.Ext(base) != ".vlog") {
					continue
				}
				b, err := os.ReadFile(name)
				if err != nil || len(b) == 0 {
					continue
				}
				for i := range 8 {
					off := i
					if seed%2 == 1 {
						off = rng.IntN(len(b))
					}
					b[off%len(b)] ^= byte(1 + rng.IntN(255))
				}
				if err := os.WriteFile(name, b, 0o644); err != nil {
					t.Fatal(err)
				}
				hit++
			}
			if hit == 0 {
				t.Fatalf("no FSM files to damage among %v", files)
			}
			n = c.start("n1", nil)
			c.leader()
			deadline := time.Now().Add(10 * time.Second)
			for {
				after := dump(t, n.store.fsm, false)
				if fmt.Sprint(after) == fmt.Sprint(before) {
					break
				}
				if time.Now().After(deadline) {
					equalDumps(t, "state after reopening damaged files", before, after)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// FSM tables damaged under a running node: reads answer right or fail with
// ErrDamaged, never panic or answer wrong, and the state is rebuilt.
func TestFSMDamagedWhileRunning(t *testing.T) {
	for seed := range 3 {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := newTestCluster(t, func(cfg *Config) {
				snapshotTune(cfg)
				cfg.VerifyEvery = 200 * time.Millisecond
				// No block cache, so that every read goes to the file.
				cfg.Badger = func(o badger.Options) badger.Options {
					return smallBadger(o).WithBlockCacheSize(0).WithCompression(options.None)
				}
			})
			n := c.start("n1", c.servers("n1"))
			c.leader()
			putTenantKeys(t, n.store, 0, 300)
			waitSnapshot(t, n.store)
			c.stop("n1") // flushes the memtable into a table
			n = c.start("n1", nil)
			c.leader()
			want := map[string]string{}
			for i := range 300 {
				want[fmt.Sprintf("k%04d", i)] = fmt.Sprint("value ", i)
			}
			check := func() (bad int) {
				for k, v := range want {
					got, ok, err := n.store.TenantGet("t", k)
					if err != nil {
						if !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrClosed) {
							t.Fatalf("TenantGet %s: %v", k, err)
						}
						bad++
						continue
					}
					if !ok {
						// A damaged table index (its bloom filter)
						// can make a key read as absent until the
						// periodic verification notices: counted,
						// and it must end with the rebuild.
						bad++
						continue
					}
					if string(got) != v {
						t.Fatalf("TenantGet %s: WRONG value %q", k, got)
					}
				}
				seen := 0
				err := n.store.TenantScan("t", "", func(k string, v []byte) error {
					if want[k] != string(v) {
						t.Fatalf("TenantScan: WRONG answer %s=%q", k, v)
					}
					seen++
					return nil
				})
				if err == nil && seen != len(want) {
					bad++
				}
				if err != nil && !errors.Is(err, ErrDamaged) {
					t.Fatalf("TenantScan: %v", err)
				}
				return bad
			}
			if bad := check(); bad != 0 {
				t.Fatalf("%d reads failed before any damage", bad)
			}
			files, _ := filepath.Glob(filepath.Join(n.dir, "fsm", "gen-*", "*.sst"))
			if len(files) == 0 {
				t.Fatal("no FSM tables")
			}
			rng := rand.New(rand.NewPCG(uint64(seed), 9))
			for _, name := range files {
				fh, err := os.OpenFile(name, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				fi, _ := fh.Stat()
				for range 16 {
					off := rng.Int64N(fi.Size())
					b := []byte{0}
					fh.ReadAt(b, off)
					b[0] ^= byte(1 + rng.IntN(255))
					fh.WriteAt(b, off)
				}
				fh.Close()
			}
			t.Logf("%d reads failed right after the damage; damaged %v", check(), n.store.fsm.Damaged())
			deadline := time.Now().Add(15 * time.Second)
			for check() != 0 || n.store.fsm.Damaged() {
				if time.Now().After(deadline) {
					v, ok, err := n.store.TenantGet("t", "k0001")
					all, _ := filepath.Glob(filepath.Join(n.dir, "fsm", "*", "*"))
					t.Fatalf("state not rebuilt: %d reads fail (k0001: %q %v %v; applied %d); verify: %v; files %v", check(), v, ok, err, n.store.fsm.AppliedIndex(), n.store.verifyFSM(), all)
				}
				time.Sleep(50 * time.Millisecond)
			}
			putTenantKeys(t, n.store, 300, 310)
		})
	}
}
