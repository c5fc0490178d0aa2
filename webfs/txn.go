package webfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	"hastore/replica"
	"hastore/replica/meta"
)

// A txn is one optimistic read-modify-write of tenant records. Reads come
// from this node's metadata (and the txn's own writes); commit proposes ONE
// atomic meta.Batch that first checks, with meta.TenantCheck, every key the
// txn read — value for value, or absence — and then writes. If anything it
// read changed in between, the batch aborts as a whole and the txn is
// planned again on fresh state. Because every key written was read (and so
// checked), two proposals of the same txn can never both apply, and a late
// one cannot apply stale. This makes each mutation serializable. Planning
// it again after an unknown outcome is NOT safe, though: the second plan
// may build on the first one's late commit and drop what it installed
// (see update).
type txn struct {
	md     MetaReader
	reads  map[tkey]readVal
	rorder []tkey
	writes map[tkey]writeVal
	worder []tkey
	// drop lists object references to release once the txn committed:
	// chunks of content the txn replaced or deleted.
	drop []ObjectID
	// take lists the object references the txn's writes take over from
	// the caller (new content's chunks): if the txn's outcome is unknown
	// and it turns out not to have applied, settle releases them.
	take []ObjectID
	err  error // a read failed; the plan's outcome is meaningless
}

type tkey struct{ tenant, key string }

type readVal struct {
	v  []byte
	ok bool
}

type writeVal struct {
	v   []byte
	del bool
}

func newTxn(md MetaReader) *txn {
	return &txn{md: md, reads: map[tkey]readVal{}, writes: map[tkey]writeVal{}}
}

// get returns the key's value as the txn sees it.
func (t *txn) get(tenant, key string) ([]byte, bool) {
	k := tkey{tenant, key}
	if w, ok := t.writes[k]; ok {
		return w.v, !w.del
	}
	if r, ok := t.reads[k]; ok {
		return r.v, r.ok
	}
	v, ok, err := t.md.TenantGet(tenant, key)
	if err != nil {
		if t.err == nil {
			t.err = err
		}
		return nil, false
	}
	t.reads[k] = readVal{v, ok}
	t.rorder = append(t.rorder, k)
	return v, ok
}

func (t *txn) put(tenant, key string, v []byte) { t.set(tkey{tenant, key}, writeVal{v: v}) }
func (t *txn) del(tenant, key string)           { t.set(tkey{tenant, key}, writeVal{del: true}) }

func (t *txn) set(k tkey, w writeVal) {
	t.get(k.tenant, k.key) // every key written is read, and so checked
	if _, ok := t.writes[k]; !ok {
		t.worder = append(t.worder, k)
	}
	t.writes[k] = w
}

// batch is the atomic command: checks of everything read, then the writes.
// It also returns how many of its commands are checks.
func (t *txn) batch() (meta.Batch, int) {
	b := meta.Batch{Atomic: true, Cmds: make([]meta.Command, 0, len(t.rorder)+len(t.worder))}
	for _, k := range t.rorder {
		r := t.reads[k]
		if r.ok {
			b.Cmds = append(b.Cmds, meta.TenantCheck{Tenant: k.tenant, Key: k.key, Want: r.v})
		} else {
			b.Cmds = append(b.Cmds, meta.TenantCheck{Tenant: k.tenant, Key: k.key, Absent: true})
		}
	}
	checks := len(b.Cmds)
	for _, k := range t.worder {
		w := t.writes[k]
		switch {
		case w.del && !t.reads[k].ok:
			// Deleting what was absent: the check says so already.
		case w.del:
			b.Cmds = append(b.Cmds, meta.TenantDelete{Tenant: k.tenant, Key: k.key})
		default:
			b.Cmds = append(b.Cmds, meta.TenantPut{Tenant: k.tenant, Key: k.key, Value: w.v})
		}
	}
	return b, checks
}

// stale reports whether anything the txn read has changed since.
func (t *txn) stale() bool {
	for _, k := range t.rorder {
		r := t.reads[k]
		v, ok, err := t.md.TenantGet(k.tenant, k.key)
		if err != nil || ok != r.ok || !bytes.Equal(v, r.v) {
			return true
		}
	}
	return false
}

// maxAttempts bounds how often a mutation is planned again after losing to
// concurrent changes; then it fails with EAGAIN.
const maxAttempts = 40

// update runs plan in a txn and commits it, re-planning on conflicts. plan
// must only read through t and record its writes in t; its other effects
// (results in the caller's variables) must be idempotent, because it runs
// once per attempt. An error from plan ends the update — after confirming
// it: if what plan read has changed meanwhile, or this node may be behind
// the cluster, it plans again first, so that ENOENT or EEXIST is never the
// artefact of a stale replica. After the commit the txn's dropped object
// references are released. If the commit's outcome is unknown (ctx ended
// first) update returns an error for which outcomeKnown is false: the
// caller must then release nothing, and the references are settled in the
// background (those in t.drop if the batch applied, those in t.take if not).
func (s *Sites) update(ctx context.Context, plan func(t *txn) error) error {
	caughtUp := false
	wait := time.Millisecond
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := newTxn(s.md)
		err := plan(t)
		if t.err != nil {
			return fmt.Errorf("reading metadata: %w", t.err)
		}
		if err != nil {
			if attempt < maxAttempts && t.stale() {
				continue
			}
			if !caughtUp {
				if cerr := s.catchUp(ctx); cerr != nil {
					return cerr
				}
				caughtUp = true
				continue
			}
			return err
		}
		if len(t.worder) == 0 {
			return nil
		}
		b, checks := t.batch()
		res, err := s.c.ProposeOnce(ctx, b)
		if err == nil {
			s.release(t.drop)
			return nil
		}
		switch {
		case errors.Is(err, meta.ErrAborted) && conflicted(res, checks):
			// Lost to a concurrent change, which this node has applied
			// by now (Propose returns after the local apply).
		case replica.Judged(err):
			return fmt.Errorf("%w: metadata refused the change: %v", syscall.EIO, err)
		default:
			// Outcome unknown (ctx ended first): the batch may still
			// apply. Planning it again could apply its effect twice — a
			// content replacement would then drop the very chunks it
			// installed — and releasing what it drops, or what it would
			// take over, could free chunks in use. So the txn ends here
			// with an error saying the outcome is open, the caller keeps
			// every reference, and settle releases the right ones once
			// the outcome is known (or they leak: never a loss).
			//
			// Not "check whether the writes are visible": another txn
			// making the same writes (a second DelSite of the same keys,
			// say) would pass for this one, and both would drop.
			var u *replica.UnknownOutcomeError
			if errors.As(err, &u) {
				select {
				case s.settling <- struct{}{}:
					go func() {
						defer func() { <-s.settling }()
						s.settle(u, t.drop, t.take)
					}()
				default:
					s.Log.Warn("webfs: too many metadata changes of unknown outcome being settled; this one's content references leak",
						"dropped", len(t.drop), "taken", len(t.take))
				}
			}
			return &unknownOutcomeError{err: err}
		}
		if attempt >= maxAttempts {
			return fmt.Errorf("%w: gave up after %d conflicting attempts", syscall.EAGAIN, attempt)
		}
		// Jittered backoff so that two nodes fighting over one directory
		// do not keep colliding.
		time.Sleep(wait/2 + rand.N(wait))
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// settleFor bounds how long settle keeps asking how a batch of unknown
// outcome ended (well inside meta.RequestWindow); maxSettling bounds how
// many batches (and so how much memory) are being settled at once.
const (
	settleFor   = 2 * time.Minute
	maxSettling = 256
)

// settle finds out, in the background, how a batch of unknown outcome
// ended and releases the references that outcome frees: those the batch
// dropped if it applied, those it would have taken over if it did not.
// Until then (and for ever, if it cannot tell) they leak.
func (s *Sites) settle(u *replica.UnknownOutcomeError, drop, take []ObjectID) {
	ctx, cancel := context.WithTimeout(context.Background(), settleFor)
	defer cancel()
	_, err := s.c.Settle(ctx, u)
	switch {
	case err == nil:
		s.release(drop)
	case replica.Judged(err):
		s.release(take)
	default:
		if len(drop)+len(take) > 0 {
			s.Log.Warn("webfs: outcome of a metadata change still unknown; its content references leak",
				"dropped", len(drop), "taken", len(take), "err", err)
		}
	}
}

// unknownOutcomeError ends an update whose batch may or may not have
// applied. Its caller must not release references the batch would take
// over; errors.Is(err, meta.ErrUnknownOutcome) holds for it.
type unknownOutcomeError struct{ err error }

func (e *unknownOutcomeError) Error() string {
	return "metadata change outcome unknown (it may still apply): " + e.err.Error()
}
func (e *unknownOutcomeError) Unwrap() error { return e.err }

// outcomeKnown reports whether an update that failed with err certainly
// changed nothing, so that what it would have used may be released.
func outcomeKnown(err error) bool {
	var u *unknownOutcomeError
	return !errors.As(err, &u)
}

// conflicted reports whether an aborted batch failed on one of its checks
// (the first checks commands), i.e. lost to a concurrent change.
func conflicted(res meta.Result, checks int) bool {
	for i, r := range res.Batch {
		if r.Status != meta.StatusOK && r.Status != meta.StatusAborted {
			return i < checks && r.Status == meta.StatusConflict
		}
	}
	return false
}
