package webfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"hastore/replica"
	"hastore/replica/meta"
	"hastore/webfs"
)

// lateProposer is a node's proposal path with one metadata batch made to
// commit late: the caller is told the outcome is unknown, and the batch
// commits afterwards anyway — what a forwarder that keeps retrying a
// proposal after the caller's attempt ended does for real.
type lateProposer struct {
	n *replica.Node

	mu    sync.Mutex
	armed string // "" or how the next batch is delayed: ctxEnd, replan
	// next is closed when the batch after the delayed one is proposed.
	next   chan struct{}
	landed chan error // the delayed batch's own outcome, once known
}

// Timings of the delayed batch.
const (
	// ctxEnd: the caller waits and its context ends; the batch commits
	// just after.
	ctxEnd = "context ends first"
	// replan: the caller gets an unknown outcome at once; the batch
	// commits when the caller proposes its next batch (a change planned
	// again), or after a moment if there is none.
	replan = "commits while planned again"
)

func (p *lateProposer) arm(how string) chan error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed, p.next, p.landed = how, make(chan struct{}), make(chan error, 1)
	return p.landed
}

func (p *lateProposer) Propose(ctx context.Context, cmd meta.Command) (meta.Result, error) {
	p.mu.Lock()
	how, next, landed := p.armed, p.next, p.landed
	_, isBatch := cmd.(meta.Batch)
	if isBatch {
		p.armed = ""
	}
	p.mu.Unlock()
	if !isBatch {
		return p.n.Cluster.Propose(ctx, cmd)
	}
	switch how {
	case ctxEnd:
		<-ctx.Done()
		go func() {
			time.Sleep(20 * time.Millisecond)
			_, err := p.n.Cluster.Propose(context.Background(), cmd)
			landed <- err
		}()
		return meta.Result{}, fmt.Errorf("forwarding the proposal: %w", ctx.Err())
	case replan:
		go func() {
			select {
			case <-next:
			case <-time.After(300 * time.Millisecond):
			}
			_, err := p.n.Cluster.Propose(context.Background(), cmd)
			landed <- err
		}()
		return meta.Result{}, errors.New("forwarding the proposal: connection reset")
	}
	if next != nil {
		select {
		case <-next:
		default:
			close(next)
			err := <-landed // let the late batch go first
			landed <- err
		}
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

// TestLateCommitKeepsContent: a content change whose metadata batch commits
// after its caller was told the outcome is unknown — its context ended, or
// the answer was lost and the batch lands while the change would be planned
// again — leaves the file readable with the new content on every node: the
// chunks the batch installs keep their references (the old content's may
// leak, never the reverse). Before, the writer released the new chunks on
// the error, or planned the change again on top of itself and dropped
// them, and the acknowledged-elsewhere file read as 'stale file handle'.
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
	rng := rand.New(rand.NewPCG(7, 8))
	random := func(n int) []byte {
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
	for _, op := range []string{"write", "put", "setcontent"} {
		for _, how := range []string{ctxEnd, replan} {
			t.Run(op+"/"+how, func(t *testing.T) {
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
				landed := late.arm(how)
				ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
				want, err := edits[op](ectx, ls, a.Ino, old)
				cancel()
				if err == nil {
					t.Error("the edit succeeded although its batch's outcome was unknown")
				} else {
					t.Logf("edit: %v", err)
				}
				if err := <-landed; err != nil {
					t.Fatalf("the late batch did not commit: %v", err)
				}
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
				}
			})
		}
	}
}
