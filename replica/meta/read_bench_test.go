package meta

import (
	"fmt"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// BenchmarkFSMRead measures the metadata read path (TenantGet of one key,
// TenantScan of 100) over 20 000 keys in badger tables, with the FSM's
// block cache and with none (every read parses the table, as after a cache
// miss), and with badger's block verification on (as the FSM runs) or off,
// to show what each check costs.
func BenchmarkFSMRead(b *testing.B) {
	const keys = 20000
	type setup struct {
		name string
		opt  func(badger.Options) badger.Options
	}
	setups := []setup{
		{"cache", smallBadger},
		{"nocache", func(o badger.Options) badger.Options {
			return smallBadger(o).WithBlockCacheSize(0).WithCompression(options.None)
		}},
		{"nocache-noverify", func(o badger.Options) badger.Options {
			return smallBadger(o).WithBlockCacheSize(0).WithCompression(options.None).
				WithChecksumVerificationMode(options.NoVerification)
		}},
	}
	for _, s := range setups {
		dir := b.TempDir()
		f, err := OpenFSM(dir, FSMOptions{Logger: testLogger(b), Badger: s.opt})
		if err != nil {
			b.Fatal(err)
		}
		var cmds []Command
		next := uint64(1)
		for i := range keys {
			cmds = append(cmds, TenantPut{Tenant: "t", Key: fmt.Sprintf("k%06d", i), Value: []byte(fmt.Sprint("value of key ", i))})
			if len(cmds) == 1000 {
				applyAll(b, f, next, cmds...)
				next += uint64(len(cmds))
				cmds = cmds[:0]
			}
		}
		// Reopen, so that the keys are read from tables, not the memtable.
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		if f, err = OpenFSM(dir, FSMOptions{Logger: testLogger(b), Badger: s.opt}); err != nil {
			b.Fatal(err)
		}
		b.Run("get/"+s.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				i = (i + 7919) % keys
				if _, ok, err := f.TenantGet("t", fmt.Sprintf("k%06d", i)); err != nil || !ok {
					b.Fatalf("TenantGet: %v %v", ok, err)
				}
			}
		})
		b.Run("scan100/"+s.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				i = (i + 7919) % (keys / 100)
				n := 0
				err := f.TenantScan("t", fmt.Sprintf("k%04d", i), func(string, []byte) error { n++; return nil })
				if err != nil || n != 100 {
					b.Fatalf("TenantScan: %d keys, %v", n, err)
				}
			}
		})
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnseal is the seal check alone, what every FSM read adds, for a
// typical tenant value and an object record (64 bytes) and a large value.
func BenchmarkUnseal(b *testing.B) {
	key := tenantKey("mail:user@example.test", "m/0000000123")
	for _, size := range []int{16, 64, 4096} {
		stored := seal(key, make([]byte, size))
		b.Run(fmt.Sprint(size, "B"), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := unseal(key, stored); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
