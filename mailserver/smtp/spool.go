package smtp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
)

// Budget bounds bytes in use at once: the message bytes that SMTP
// sessions hold in memory (Config.Memory), or in spool files
// (Config.Spool), across every listener that shares it. For memory: A message being received
// is kept in memory only while the budget allows (then it goes to a spool
// file); a message being stored must be in memory whole (the object store
// erasure-codes it from one buffer) and is charged twice its size, for the
// shards made from it, until it is stored.
type Budget struct {
	max     int64
	mu      sync.Mutex
	used    int64
	changed chan struct{} // closed and replaced on every release
}

// NewBudget returns a budget of max bytes.
func NewBudget(max int64) *Budget {
	return &Budget{max: max, changed: make(chan struct{})}
}

// InUse returns the bytes currently charged.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

func (b *Budget) clamp(n int64) int64 { return min(n, b.max) }

// tryAcquire charges n bytes if they fit now.
func (b *Budget) tryAcquire(n int64) bool {
	n = b.clamp(n)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

// acquire charges n bytes (at most the whole budget, so one message bigger
// than it waits to be alone), waiting until they fit or ctx ends. It
// returns what was charged.
func (b *Budget) acquire(ctx context.Context, n int64) (int64, error) {
	n = b.clamp(n)
	for {
		b.mu.Lock()
		if b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return n, nil
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (b *Budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// errSpoolFull: the spool files of all sessions reached Config.MaxSpool.
var errSpoolFull = errors.New("spool full")

// spool receives one message: the trace header, then the client's DATA
// bytes (bare LFs become CRLF on the way, so the stored form needs no
// second copy). It holds them in memory up to its reservation from the
// budget, and in a temporary file beyond.
type spool struct {
	budget *Budget
	disk   *Budget // of spool files
	onDisk int64   // charged to disk
	dir    string
	held   int64 // charged to budget
	mem    []byte
	f      *os.File
	size   int64
	lastCR bool
	sum    hash.Hash // of the client's bytes, for retry detection
	tmp    []byte
}

// newSpool starts a spool that may keep up to inMemory bytes in memory if
// the budget has them now.
func newSpool(budget, disk *Budget, dir string, inMemory int64, header string, from string) *spool {
	s := &spool{budget: budget, disk: disk, dir: dir, sum: sha256.New()}
	if budget.tryAcquire(inMemory) {
		s.held = budget.clamp(inMemory)
		s.mem = make([]byte, 0, min(s.held, 64<<10))
	}
	// The envelope sender is part of what a retry repeats.
	fmt.Fprintf(s.sum, "%d:%s\x00", len(from), from)
	_ = s.put([]byte(header))
	return s
}

// Write takes DATA bytes as the client sent them (dot-unstuffed).
func (s *spool) Write(p []byte) (int, error) {
	s.sum.Write(p)
	// Normalize bare LF to CRLF. IndexByte jumps from LF to LF (a message
	// is mostly long lines): a loop over every byte cost more than
	// the rest of receiving.
	out := s.tmp[:0]
	start := 0
	for i := 0; ; i++ {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if !(i > 0 && p[i-1] == '\r' || i == 0 && s.lastCR) {
			out = append(out, p[start:i]...)
			out = append(out, '\r', '\n')
			start = i + 1
		}
	}
	if len(p) > 0 {
		s.lastCR = p[len(p)-1] == '\r'
	}
	var err error
	if start == 0 {
		err = s.put(p)
	} else {
		out = append(out, p[start:]...)
		err = s.put(out)
		s.tmp = out[:0]
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *spool) put(p []byte) error {
	s.size += int64(len(p))
	if s.f == nil && int64(len(s.mem)+len(p)) <= s.held {
		if len(s.mem)+len(p) > cap(s.mem) {
			n := min(max(2*cap(s.mem), len(s.mem)+len(p)), int(s.held))
			m := make([]byte, len(s.mem), n)
			copy(m, s.mem)
			s.mem = m
		}
		s.mem = append(s.mem, p...)
		return nil
	}
	n := int64(len(p))
	if s.f == nil {
		n += int64(len(s.mem))
	}
	if n > s.disk.max || !s.disk.tryAcquire(n) {
		return errSpoolFull
	}
	s.onDisk += n
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "hastore-smtp-*")
		if err != nil {
			return fmt.Errorf("spooling a message: %w", err)
		}
		// Unlinked at once: a crash leaves nothing behind.
		_ = os.Remove(f.Name())
		s.f = f
		if _, err := f.Write(s.mem); err != nil {
			return fmt.Errorf("spooling a message: %w", err)
		}
		s.mem = nil
		s.budget.release(s.held)
		s.held = 0
	}
	if _, err := s.f.Write(p); err != nil {
		return fmt.Errorf("spooling a message: %w", err)
	}
	return nil
}

// Digest returns the digest of the client's bytes (and envelope sender).
func (s *spool) Digest() [32]byte {
	var d [32]byte
	copy(d[:], s.sum.Sum(nil))
	return d
}

// message returns the whole message in memory, charged to the budget
// (twice its size) until close; it waits for the budget until ctx ends.
func (s *spool) message(ctx context.Context) ([]byte, error) {
	// Release the receiving reservation first: waiting while holding it
	// could deadlock sessions that all wait for more.
	s.budget.release(s.held)
	s.held = 0
	got, err := s.budget.acquire(ctx, 2*s.size)
	if err != nil {
		return nil, err
	}
	s.held = got
	if s.f == nil {
		return s.mem, nil
	}
	b := make([]byte, s.size)
	if _, err := s.f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading a spooled message: %w", err)
	}
	return b, nil
}

// head returns up to n bytes from the start of what was spooled (the
// trace header first), for looking at the message's header without
// holding the whole message.
func (s *spool) head(n int) ([]byte, error) {
	n = int(min(int64(n), s.size))
	if s.f == nil {
		return s.mem[:n], nil
	}
	b := make([]byte, n)
	if _, err := s.f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading a spooled message: %w", err)
	}
	return b, nil
}

// close releases the memory charge and the spool file.
func (s *spool) close() {
	s.budget.release(s.held)
	s.held = 0
	s.mem = nil
	s.disk.release(s.onDisk)
	s.onDisk = 0
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
}
