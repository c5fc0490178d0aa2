package replica

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"hastore/replica/meta"
	"hastore/replica/transport"
	"hastore/storage"
)

// staleView is metadata a step behind: it still shows an object live
// whose last reference has gone.
type staleView struct {
	*fakeCluster
	live storage.BlobID
}

func (s staleView) Object(id storage.BlobID) (meta.Object, bool, error) {
	o, ok, err := s.fakeCluster.Object(id)
	if ok && id == s.live && o.Refs == 0 {
		o.Refs, o.Deleted = 1, 0
	}
	return o, ok, err
}

// A put of known content whose record turns out to be a tombstone by the
// time its reference lands (this node's view was a step behind) revives
// it, and makes it whole before acknowledging, like a put that knew.
func TestDedupPutRevivesTombstone(t *testing.T) {
	f, h, c := newTestCluster(t, 4)
	ctx := context.Background()
	data := bytes.Repeat([]byte("stale view "), 20000)
	id := putDeleted(t, c, data)
	o, gone := removeShardNode(f, id)
	stale, err := NewCluster("n1", staleView{f, id}, f, f, h, Options{Scheme: storage.Scheme{K: 2, M: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Put(ctx, data); err != nil {
		t.Fatalf("put: %v", err)
	}
	o, _, _ = f.Object(id)
	if o.Refs != 1 || slices.Contains(o.Placement, gone) {
		t.Fatalf("revived object: refs %d, placement %v still names removed %s", o.Refs, o.Placement, gone)
	}
	got, err := c.Get(ctx, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
}

// idProposer is fakeCluster's proposer with request IDs: a repeat of an ID
// gets the first answer. loseNext answers to PutObject are lost after the
// command applied (a leader that committed, then lost its connection).
type idProposer struct {
	*fakeCluster
	idMu     sync.Mutex
	seen     map[meta.RequestID]meta.Result
	loseNext int
}

func (p *idProposer) RequestIDs() bool { return true }

func (p *idProposer) Propose(ctx context.Context, cmd meta.Command) (meta.Result, error) {
	base, seq, ok := transport.NextRequestID(ctx)
	if !ok {
		return p.fakeCluster.Propose(ctx, cmd)
	}
	id := meta.RequestID(base).Sub(seq)
	p.idMu.Lock()
	if r, ok := p.seen[id]; ok {
		p.idMu.Unlock()
		return r, r.Err()
	}
	_, isPut := cmd.(meta.PutObject)
	lose := isPut && p.loseNext > 0
	if lose {
		p.loseNext--
	}
	p.idMu.Unlock()
	res, err := p.fakeCluster.Propose(ctx, cmd)
	if err == nil {
		p.idMu.Lock()
		p.seen[id] = res
		p.idMu.Unlock()
	}
	if lose {
		return meta.Result{}, errors.New("connection to the leader reset")
	}
	return res, err
}

// A put whose reference was taken but whose answer was lost fails, and
// the reference it took — the caller's to drop, had it known — is settled
// and dropped in the background instead of leaking: both for new content
// and for content already stored.
func TestFailedPutDropsItsReference(t *testing.T) {
	f := newFakeCluster(3)
	p := &idProposer{fakeCluster: f, seen: map[meta.RequestID]meta.Result{}}
	h := NewHealth("n1", f, f, nil)
	h.ProbeAll(context.Background())
	c, err := NewCluster("n1", f, p, f, h, Options{Scheme: storage.Scheme{K: 2, M: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	refs := func(id storage.BlobID) int64 {
		o, _, _ := f.Object(id)
		return o.Refs
	}
	waitRefs := func(id storage.BlobID, want int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); refs(id) != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("object %s: %d references, want %d", id, refs(id), want)
			}
		}
	}
	data := bytes.Repeat([]byte("lost answer "), 20000)
	p.loseNext = 1
	if _, err := c.Put(ctx, data); err == nil {
		t.Fatal("a put whose answer was lost succeeded")
	}
	id, _, err := c.codec.Encode(data, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	waitRefs(id, 0)
	// Known content: the put only adds a reference.
	if _, err := c.Put(ctx, data); err != nil {
		t.Fatal(err)
	}
	waitRefs(id, 1)
	p.loseNext = 1
	if _, err := c.Put(ctx, data); err == nil {
		t.Fatal("a put whose answer was lost succeeded")
	}
	waitRefs(id, 1)
	if got, err := c.Get(ctx, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
}

// unsureProposer applies nothing and never gives a verdict (a cluster
// without a leader).
type unsureProposer struct{ *fakeCluster }

func (unsureProposer) RequestIDs() bool { return true }
func (unsureProposer) Propose(ctx context.Context, cmd meta.Command) (meta.Result, error) {
	return meta.Result{}, errors.New("no leader")
}

// ProposeOnce gives up after its bound even for a caller without a
// deadline, with an error of unknown outcome that Settle can take up.
func TestProposeOnceBounded(t *testing.T) {
	defer func(d time.Duration) { proposeOnceBound = d }(proposeOnceBound)
	proposeOnceBound = 300 * time.Millisecond
	f := newFakeCluster(3)
	h := NewHealth("n1", f, f, nil)
	c, err := NewCluster("n1", f, unsureProposer{f}, f, h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ProposeOnce(context.Background(), meta.DecRef{ID: storage.BlobID{1}, Now: 1})
	var u *UnknownOutcomeError
	if !errors.As(err, &u) || u.ID.IsZero() || !errors.Is(err, meta.ErrUnknownOutcome) {
		t.Fatalf("got %v, want an unknown outcome with a request ID", err)
	}
}
