package replica

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeLeader answers read-index rounds one at a time, as the test releases
// them: round n answers index n (or the error set for it).
type fakeLeader struct {
	started chan int      // round number, when a round reaches the leader
	release chan struct{} // one per round, to let it answer
	errs    map[int]error // per round number
	mu      sync.Mutex
	n       int
}

func newFakeLeader() *fakeLeader {
	return &fakeLeader{started: make(chan int, 100), release: make(chan struct{}, 100), errs: map[int]error{}}
}

func (f *fakeLeader) readIndex(ctx context.Context) (uint64, error) {
	f.mu.Lock()
	f.n++
	n := f.n
	err := f.errs[n]
	f.mu.Unlock()
	f.started <- n
	select {
	case <-f.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return uint64(n), err
}

// waitQueued waits until want callers wait for the round not yet started.
func waitQueued(t *testing.T, r *readIndexer, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, q := r.stats(); q == want {
			return
		}
		if time.Now().After(deadline) {
			_, q := r.stats()
			t.Fatalf("%d callers queued for the next round, want %d", q, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func expectRound(t *testing.T, f *fakeLeader, want int) {
	t.Helper()
	select {
	case n := <-f.started:
		if n != want {
			t.Fatalf("round %d reached the leader, want %d", n, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("round %d never reached the leader", want)
	}
}

type answer struct {
	idx uint64
	err error
}

// A caller that arrives while a round is in flight must not be answered
// by it (the round may have read the commit index before the caller's
// write was acknowledged): it waits for the next round, which it shares
// with every other caller that arrived meanwhile — one leader round trip
// for all of them.
func TestReadIndexCoalescing(t *testing.T) {
	f := newFakeLeader()
	r := &readIndexer{fn: f.readIndex}
	ctx := context.Background()

	first := make(chan answer, 1)
	go func() { i, err := r.readIndex(ctx); first <- answer{i, err} }()
	expectRound(t, f, 1) // in flight, held by the leader

	const late = 20
	answers := make(chan answer, late)
	for range late {
		go func() { i, err := r.readIndex(ctx); answers <- answer{i, err} }()
	}
	waitQueued(t, r, late)

	f.release <- struct{}{} // round 1 answers
	if a := <-first; a.err != nil || a.idx != 1 {
		t.Fatalf("first caller: index %d, %v; want round 1's index", a.idx, a.err)
	}
	expectRound(t, f, 2) // one round for all the late callers
	select {
	case a := <-answers:
		t.Fatalf("a caller that arrived during round 1 was answered (%d, %v) before round 2 ended", a.idx, a.err)
	default:
	}
	f.release <- struct{}{}
	for range late {
		if a := <-answers; a.err != nil || a.idx != 2 {
			t.Fatalf("late caller: index %d, %v; want round 2's index 2", a.idx, a.err)
		}
	}
	if rounds, _ := r.stats(); rounds != 2 {
		t.Fatalf("%d rounds for %d callers, want 2", rounds, late+1)
	}
	select {
	case n := <-f.started:
		t.Fatalf("round %d started with nobody waiting", n)
	default:
	}
}

// A failed round fails its callers (never an older index in its place);
// a caller that gives up does not cancel the round the others share, and
// the next caller gets a fresh round.
func TestReadIndexRoundErrors(t *testing.T) {
	f := newFakeLeader()
	boom := errors.New("no leader")
	f.errs[1] = boom
	r := &readIndexer{fn: f.readIndex}

	quitter, quit := context.WithCancel(context.Background())
	quitErr := make(chan error, 1)
	go func() { _, err := r.readIndex(quitter); quitErr <- err }()
	expectRound(t, f, 1)
	stay := make(chan answer, 1)
	go func() {
		// Round 1 is in flight: this caller waits for round 2.
		i, err := r.readIndex(context.Background())
		stay <- answer{i, err}
	}()
	waitQueued(t, r, 1)
	quit()
	if err := <-quitErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("caller whose context ended: %v", err)
	}
	f.release <- struct{}{} // round 1 fails; nobody is left waiting for it
	expectRound(t, f, 2)
	f.release <- struct{}{}
	if a := <-stay; a.err != nil || a.idx != 2 {
		t.Fatalf("caller queued behind the failed round: %d, %v; want index 2", a.idx, a.err)
	}

	f.errs[3] = boom
	errc := make(chan error, 1)
	go func() { _, err := r.readIndex(context.Background()); errc <- err }()
	expectRound(t, f, 3)
	f.release <- struct{}{}
	if err := <-errc; !errors.Is(err, boom) {
		t.Fatalf("caller of a failed round: %v, want %v", err, boom)
	}
}
