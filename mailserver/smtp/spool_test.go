package smtp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSpool(t *testing.T) {
	body := "a\nb\r\nc\n\nd" + strings.Repeat("x\n", 3000)
	want := "H: 1\r\n" + strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n")
	for _, tc := range []struct {
		name     string
		inMemory int64 // reservation wanted
		budget   int64
		chunk    int
		onDisk   bool
	}{
		{"in memory, whole", 1 << 20, 4 << 20, len(body), false},
		{"in memory, byte by byte", 1 << 20, 4 << 20, 1, false},
		{"spilled to disk", 1 << 10, 4 << 20, 7, true},
		{"no memory left: disk from the start", 1 << 20, 1 << 10, 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem, disk := NewBudget(tc.budget), NewBudget(1<<20)
			sp := newSpool(mem, disk, t.TempDir(), tc.inMemory, "H: 1\r\n", "from@x")
			for i := 0; i < len(body); i += tc.chunk {
				if _, err := sp.Write([]byte(body[i:min(i+tc.chunk, len(body))])); err != nil {
					t.Fatal(err)
				}
			}
			if (sp.f != nil) != tc.onDisk {
				t.Fatalf("on disk: %v, want %v", sp.f != nil, tc.onDisk)
			}
			msg, err := sp.message(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if string(msg) != want {
				t.Fatalf("stored %q…, want %q…", msg[:min(40, len(msg))], want[:40])
			}
			// The digest is of what the client sent, whatever the chunking.
			h := sha256.New()
			h.Write([]byte("6:from@x\x00" + body))
			if d := sp.Digest(); !bytes.Equal(d[:], h.Sum(nil)) {
				t.Fatal("digest differs")
			}
			if got := mem.InUse(); got != min(2*int64(len(want)), tc.budget) {
				t.Fatalf("memory charged while storing: %d, want %d", got, 2*len(want))
			}
			sp.close()
			if mem.InUse() != 0 || disk.InUse() != 0 {
				t.Fatalf("after close: memory %d, disk %d charged", mem.InUse(), disk.InUse())
			}
		})
	}
}

func TestSpoolDiskBudget(t *testing.T) {
	mem, disk := NewBudget(1<<10), NewBudget(4<<10)
	sp := newSpool(mem, disk, t.TempDir(), 1<<10, "", "")
	defer sp.close()
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		_, err = sp.Write(bytes.Repeat([]byte("y"), 1000))
	}
	if !errors.Is(err, errSpoolFull) {
		t.Fatalf("writing past the spool budget: %v, want errSpoolFull", err)
	}
}

func TestBudgetWaits(t *testing.T) {
	b := NewBudget(100)
	if !b.tryAcquire(80) || b.tryAcquire(30) {
		t.Fatal("tryAcquire ignores the limit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.acquire(ctx, 30); err == nil {
		t.Fatal("acquire beyond the budget did not wait")
	}
	done := make(chan int64)
	go func() { n, _ := b.acquire(context.Background(), 500); done <- n }() // clamped to the budget
	b.release(80)
	if n := <-done; n != 100 {
		t.Fatalf("an over-budget acquire got %d, want the whole budget", n)
	}
}
