package webfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"hastore/replica"
	"hastore/replica/meta"
	"hastore/storage"
	"hastore/webfs"
)

// lateProposer is a node's proposal path with one metadata batch made to
// commit late, or not at all: the caller is told the outcome is unknown,
// and the batch commits afterwards anyway — what a forwarder that keeps
// retrying a proposal after the caller's attempt ended does for real.
type lateProposer struct {
	n *replica.Node

	mu  sync.Mutex
	ids bool // proposals keep the request ID their context names
	// how the next batch is delayed: ctxEnd, replan, lost; "" none.
	armed string
	// next is closed when a batch after the delayed one is proposed; it
	// then waits until the delayed one has landed.
	next      chan struct{}
	landed    chan struct{} // closed when the delayed batch has committed
	landedErr error
	held      meta.Command  // lost: sending this batch again waits for hold
	hold      chan struct{} // closed by the test
	puts      []storage.BlobID
	// skip is how many batches pass before the armed one; before runs
	// (once) just before the delayed batch's caller gets its error.
	skip   int
	before func()
}

// Timings of the delayed batch.
const (
	// ctxEnd: the caller waits and its context ends; the batch commits
	// just after.
	ctxEnd = "context ends first"
	// replan: the caller gets an unknown outcome at once; the batch
	// commits when the caller proposes its next batch (the same one again,
	// or a change planned again), or after a moment if there is none.
	replan = "commits while planned again"
	// lost: the caller's context ends and the batch never reached the
	// leader; sending it again waits for hold.
	lost = "lost, then overtaken"
)

func (p *lateProposer) RequestIDs() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids
}

func (p *lateProposer) arm(how string, ids bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed, p.ids, p.held, p.puts, p.skip, p.before = how, ids, nil, nil, 0, nil
	p.next, p.landed, p.hold = make(chan struct{}), make(chan struct{}), make(chan struct{})
	if how == lost {
		p.next = nil
	}
}

// land commits a delayed batch in the background, under the caller's
// request ID (if its context names one).
func (p *lateProposer) land(ctx context.Context, cmd meta.Command, after <-chan struct{}, wait time.Duration) {
	landed := p.landed
	go func() {
		select {
		case <-after:
		case <-time.After(wait):
		}
		_, err := p.n.Cluster.Propose(context.WithoutCancel(ctx), cmd)
		p.mu.Lock()
		p.landedErr = err
		p.mu.Unlock()
		close(landed)
	}()
}

func (p *lateProposer) Propose(ctx context.Context, cmd meta.Command) (meta.Result, error) {
	p.mu.Lock()
	how, next, landed, held, hold := p.armed, p.next, p.landed, p.held, p.hold
	_, isBatch := cmd.(meta.Batch)
	if isBatch && how != "" && p.skip > 0 {
		p.skip--
		p.mu.Unlock()
		return p.n.Cluster.Propose(ctx, cmd)
	}
	if isBatch && how != "" {
		p.armed = ""
		if how == lost {
			p.held = cmd
		}
	}
	if po, ok := cmd.(meta.PutObject); ok {
		p.puts = append(p.puts, po.Object.ID)
	}
	p.mu.Unlock()
	if !isBatch {
		return p.n.Cluster.Propose(ctx, cmd)
	}
	switch how {
	case ctxEnd:
		<-ctx.Done()
		p.land(ctx, cmd, nil, 20*time.Millisecond)
		return meta.Result{}, fmt.Errorf("forwarding the proposal: %w", ctx.Err())
	case replan:
		p.land(ctx, cmd, next, 300*time.Millisecond)
		p.mu.Lock()
		before := p.before
		p.before = nil
		p.mu.Unlock()
		if before != nil {
			before()
		}
		return meta.Result{}, errors.New("forwarding the proposal: connection reset")
	case lost:
		<-ctx.Done()
		return meta.Result{}, fmt.Errorf("forwarding the proposal: %w", ctx.Err())
	}
	if held != nil && reflect.DeepEqual(cmd, held) {
		select {
		case <-hold:
		case <-ctx.Done():
			return meta.Result{}, fmt.Errorf("forwarding the proposal: %w", ctx.Err())
		}
	}
	if next != nil {
		p.mu.Lock()
		select {
		case <-next:
		default:
			close(next)
		}
		p.mu.Unlock()
		<-landed // the late batch goes first
	}
	return p.n.Cluster.Propose(ctx, cmd)
}

// ReadIndex: after CatchUp this node has applied the leader's commit index.
func (p *lateProposer) ReadIndex(ctx context.Context) (uint64, error) {
	if err := p.n.Cluster.CatchUp(ctx); err != nil {
		return 0, err
	}
	return p.n.Meta.AppliedIndex(), nil
}

// eventually polls cond for up to 15 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: %s", what)
		}
	}
}

// TestLateCommitKeepsContent: a content change whose metadata batch commits
// after its caller was told the outcome is unknown — its context ended, or
// the answer was lost and the batch lands while the change would be planned
// again — leaves the file readable with the new content on every node: the
// chunks the batch installs keep their references. Before 17eeb58 the
// writer released the new chunks on the error, or planned the change again
// on top of itself and dropped them, and the file read as 'stale file
// handle' everywhere.
//
// With request IDs (every node but one rolling an upgrade) the outcome is
// then settled in the background, and the references that outcome frees
// are released rather than leaked: the replaced content's when the batch
// applied; the new content's when the batch never did and another change
// overtook it (lost).
func TestLateCommitKeepsContent(t *testing.T) {
	e := newEnv(t)
	n := e.c.Nodes[1]
	late := &lateProposer{n: n}
	c, err := replica.NewCluster(n.ID(), n.Meta, late, n.Peers, n.Health, replica.Options{Scheme: n.Cluster.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	lateSites := webfs.NewSites(c, n.Meta)
	e.addSite(t, "late.test")
	var rngMu sync.Mutex
	rng := rand.New(rand.NewPCG(7, 8))
	random := func(n int) []byte {
		rngMu.Lock()
		defer rngMu.Unlock()
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	type edit func(ctx context.Context, s *webfs.Site, ino uint64, old []byte) ([]byte, error)
	edits := map[string]edit{
		"write": func(ctx context.Context, s *webfs.Site, ino uint64, old []byte) ([]byte, error) {
			data := random(64 << 10)
			_, err := s.WriteAt(ctx, ino, 1000, data)
			return append(append(old[:1000:1000], data...), old[1000+len(data):]...), err
		},
		"put": func(ctx context.Context, s *webfs.Site, ino uint64, old []byte) ([]byte, error) {
			data := random(len(old) + 5000)
			_, err := s.PutFile(ctx, webfs.RootIno, fmt.Sprint(ino), bytes.NewReader(data), webfs.NewAttr{Mode: 0o644})
			return data, err
		},
		"setcontent": func(ctx context.Context, s *webfs.Site, ino uint64, old []byte) ([]byte, error) {
			data := random(300 << 10)
			_, err := s.SetContent(ctx, ino, bytes.NewReader(data), time.Time{})
			return data, err
		},
	}
	type tc struct {
		op, how string
		ids     bool
	}
	var cases []tc
	for _, op := range []string{"write", "put", "setcontent"} {
		for _, ids := range []bool{false, true} {
			for _, how := range []string{ctxEnd, replan} {
				cases = append(cases, tc{op, how, ids})
			}
		}
	}
	// Only a content edit hands settle the chunks it would take over;
	// PutFile and SetContent leave them leaked when overtaken.
	cases = append(cases, tc{"write", lost, true})
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%s/ids=%v", tc.op, tc.how, tc.ids), func(t *testing.T) {
			ctx := ctxT(t)
			s0, err := e.sites(0).Site(ctx, "late.test")
			if err != nil {
				t.Fatal(err)
			}
			old := random(200 << 10)
			a, err := s0.PutFile(ctx, webfs.RootIno, "tmp", bytes.NewReader(old), webfs.NewAttr{Mode: 0o644})
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprint(a.Ino)
			if err := s0.Rename(ctx, webfs.RootIno, "tmp", webfs.RootIno, name); err != nil {
				t.Fatal(err)
			}
			ls, err := lateSites.Site(ctx, "late.test")
			if err != nil {
				t.Fatal(err)
			}
			if err := ls.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			late.arm(tc.how, tc.ids)
			ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
			want, err := edits[tc.op](ectx, ls, a.Ino, old)
			cancel()
			switch {
			case tc.ids && tc.how == replan:
				// Sent again under its ID, the batch gets its first answer.
				if err != nil {
					t.Errorf("edit: %v", err)
				}
			case err == nil:
				t.Error("the edit succeeded although its batch's outcome was unknown")
			default:
				t.Logf("edit: %v", err)
			}
			if tc.how == lost {
				// Another writer overtakes the lost batch, which then
				// aborts when settle sends it again.
				want = random(100 << 10)
				if _, err := s0.PutFile(ctx, webfs.RootIno, name, bytes.NewReader(want), webfs.NewAttr{Mode: 0o644}); err != nil {
					t.Fatal(err)
				}
				close(late.hold)
			} else {
				<-late.landed
				late.mu.Lock()
				err := late.landedErr
				late.mu.Unlock()
				if err != nil {
					t.Fatalf("the late batch did not commit: %v", err)
				}
			}
			var final webfs.Attr
			for i := range 3 {
				s, err := e.sites(i).Site(ctx, "late.test")
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				ino, st, err := s.Walk(ctx, "/"+name)
				if err != nil {
					t.Fatal(err)
				}
				got, err := s.ReadAt(ctx, ino, 0, st.Size+1)
				if err != nil {
					t.Fatalf("node %d: reading the file after the late commit: %v", i, err)
				}
				mustEqual(t, fmt.Sprintf("node %d content", i), got, want)
				for _, ch := range st.Chunks {
					if r := e.refs(t, ch.ID); r < 1 {
						t.Fatalf("chunk %s of the file has %d references", ch.ID, r)
					}
				}
				final = st
			}
			if !tc.ids {
				return // the unsettled references leak
			}
			inUse := map[webfs.ObjectID]bool{}
			for _, ch := range final.Chunks {
				inUse[ch.ID] = true
			}
			var freed []webfs.ObjectID
			switch tc.how {
			case lost:
				late.mu.Lock()
				for _, id := range late.puts {
					freed = append(freed, webfs.ObjectID(id))
				}
				late.mu.Unlock()
				if len(freed) == 0 {
					t.Fatal("the edit stored no chunk")
				}
			default:
				for _, ch := range a.Chunks {
					freed = append(freed, ch.ID)
				}
			}
			for _, id := range freed {
				if inUse[id] {
					continue
				}
				eventually(t, fmt.Sprintf("object %s, no longer used, still has references", id), func() bool {
					return e.refs(t, id) == 0
				})
			}
		})
	}
}

// TestDelSiteTwiceDropsOnce: a site deleted from two nodes at once — the
// first node's batch of tree records is in flight, its outcome unknown,
// when the second node deletes the same records — drops each content
// reference once. Identical content in another site, stored once with two
// references, stays readable. Before, the first node took "its deletions
// are visible" for "its batch applied" and dropped the references again.
func TestDelSiteTwiceDropsOnce(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	n := e.c.Nodes[1]
	late := &lateProposer{n: n}
	c, err := replica.NewCluster(n.ID(), n.Meta, late, n.Peers, n.Health, replica.Options{Scheme: n.Cluster.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	lateSites := webfs.NewSites(c, n.Meta)
	data := bytes.Repeat([]byte("the same page in two sites "), 2000)
	for _, name := range []string{"gone.test", "kept.test"} {
		s := e.addSite(t, name)
		if _, err := s.PutFile(ctx, webfs.RootIno, "index.html", bytes.NewReader(data), webfs.NewAttr{Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
	}
	if err := lateSites.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	late.arm(replan, false)
	late.mu.Lock()
	late.skip = 1 // the registry change; then the tree records' batch
	late.before = func() {
		if err := e.sites(0).DelSite(ctx, "gone.test"); err != nil {
			t.Errorf("deleting the site from node 0: %v", err)
		}
	}
	late.mu.Unlock()
	err = lateSites.DelSite(ctx, "gone.test")
	t.Logf("deleting the site from node 1: %v", err)
	<-late.landed
	kept, err := e.sites(2).Site(ctx, "kept.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := kept.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := e.sites(2).ContentRefs(ctx, "kept.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 0 || r.Objects != 1 {
		t.Errorf("kept.test after deleting gone.test twice: %+v", r)
	}
	if got, err := read(ctx, kept, "/index.html"); err != nil || got != string(data) {
		t.Errorf("kept.test/index.html: %d bytes, %v", len(got), err)
	}
}
