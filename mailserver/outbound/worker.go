package outbound

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"hastore/metrics"
)

// Start starts the node's workers; Close stops them.
func (q *Queue) Start() error {
	res, err := newResolver(q.cfg.DNS)
	if err != nil && q.cfg.Relay == "" {
		return err
	}
	snd := &sender{cfg: &q.cfg, res: res}
	q.unmetric = metrics.AddQueue(q.snapshot)
	q.done.Add(1)
	go func() {
		defer q.done.Done()
		q.loop(snd)
	}()
	return nil
}

// Close stops the workers and waits for the entries being worked (their
// SMTP transactions are cut off; the leases are left to expire).
func (q *Queue) Close() error {
	select {
	case <-q.stop:
	default:
		close(q.stop)
	}
	q.done.Wait()
	if q.unmetric != nil {
		q.unmetric()
	}
	return nil
}

func (q *Queue) loop(snd *sender) {
	t := time.NewTicker(q.cfg.Poll)
	defer t.Stop()
	// Retry records are collected about once a minute per node, at
	// jittered times so that nodes rarely collide.
	nextGC := time.Now().Add(time.Minute/2 + rand.N(time.Minute))
	for {
		q.scan(snd)
		if time.Now().After(nextGC) {
			ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
			q.collectRetryRecords(ctx)
			cancel()
			nextGC = time.Now().Add(time.Minute/2 + rand.N(time.Minute))
		}
		select {
		case <-q.stop:
			return
		case <-t.C:
		case <-q.kick:
		}
	}
}

// scan claims due entries, as many as there are free worker slots.
func (q *Queue) scan(snd *sender) {
	now := q.cfg.Now()
	es, raw, err := q.rec.list()
	if err != nil {
		q.log.Warn("reading the queue failed; trying again at the next poll", "err", err)
		return
	}
	// Shuffled, so that nodes scanning at once tend to claim different
	// entries instead of racing for the same one.
	idx := rand.Perm(len(es))
	for _, i := range idx {
		e := es[i]
		if e.Next > now.UnixNano() || e.leasedByOther(q.cfg.Node, now) {
			continue
		}
		if _, busy := q.running.Load(e.ID); busy {
			continue
		}
		select {
		case q.slots <- struct{}{}:
		default:
			return // all workers busy; the rest waits for the next poll
		}
		q.running.Store(e.ID, struct{}{})
		q.done.Add(1)
		go func(e *Entry, old []byte) {
			defer q.done.Done()
			defer func() { <-q.slots; q.running.Delete(e.ID) }()
			q.work(snd, e, old)
		}(e, raw[i])
	}
}

// work claims one entry and, if this node wins it, attempts its pending
// recipients, domain by domain.
func (q *Queue) work(snd *sender, e *Entry, old []byte) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-q.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	log := q.log.With("queue_id", e.ID, "msgid", e.MsgID)
	now := q.cfg.Now()
	e.Lease = Lease{Node: q.cfg.Node, Until: now.Add(q.cfg.Lease).UnixNano()}
	cur, err := q.put(e, old)
	if err != nil {
		if !errors.Is(err, ErrConflict) {
			log.Warn("claiming a queue entry failed", "err", err)
		}
		return // another node has it
	}
	old = cur
	expired := now.Sub(time.Unix(0, e.Created)) >= q.cfg.Lifetime
	tempFailed := false
	if expired {
		for i := range e.Rcpts {
			if e.Rcpts[i].State == StateQueued {
				e.Rcpts[i].State = StateFailed
				e.Rcpts[i].Reply = "4.4.7 delivery time expired after " + q.cfg.Lifetime.String() + "; last: " + e.Rcpts[i].Reply
			}
		}
	} else {
		var body []byte
		var held int64
		if id, perr := parseBody(e.Body); perr != nil {
			err = perr
		} else if held, err = q.mem.take(ctx, 2*e.Size+64<<10); err == nil {
			defer q.mem.give(held)
			body, err = q.rec.c.Get(ctx, id)
		}
		if err != nil {
			log.Warn("reading a queued message failed; retrying later", "object", e.Body, "err", err)
			tempFailed = true
		} else {
			body = withoutReturnPath(body)
			for _, dom := range e.domains() {
				if ctx.Err() != nil {
					tempFailed = true
					break
				}
				// Renewed before each transaction, which must end
				// within half the lease: the lease then still holds when
				// its outcome is recorded.
				e.Lease.Until = q.cfg.Now().Add(q.cfg.Lease).UnixNano()
				if cur, err = q.put(e, old); err != nil {
					log.Warn("renewing a queue lease failed; leaving the entry", "err", err)
					return
				}
				old = cur
				if q.attempt(ctx, snd, e, dom, body, log) {
					tempFailed = true
				}
				if cur, err = q.put(e, old); err != nil {
					log.Warn("recording a delivery failed; it may be sent again", "domain", dom, "err", err)
					return
				}
				old = cur
			}
		}
	}
	q.finish(ctx, e, old, tempFailed, log)
}

// attempt delivers e to the pending recipients of dom, recording each
// one's result in e. It reports whether any failed temporarily.
func (q *Queue) attempt(ctx context.Context, snd *sender, e *Entry, dom string, body []byte, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) bool {
	var rcpts []string
	var at []int
	for i, r := range e.Rcpts {
		if r.State == StateQueued && domainOf(r.Addr) == dom {
			rcpts = append(rcpts, r.Addr)
			at = append(at, i)
		}
	}
	release, ok := q.domainSlot(ctx, dom)
	if !ok {
		return true
	}
	defer release()
	signed, didSign, err := DKIMKeys{C: q.rec.c, KV: q.rec.kv}.sign(domainOf(e.From), body)
	if err != nil {
		log.Warn("DKIM signing failed; sending unsigned", "domain", domainOf(e.From), "err", err)
		signed = body
	}
	tctx, cancel := context.WithTimeout(ctx, q.cfg.Lease/2)
	defer cancel()
	start := time.Now()
	res, err := snd.send(tctx, dom, e.From, rcpts, signed)
	if err != nil {
		var de *deliveryError
		r := result{state: StateQueued, reply: err.Error()}
		if errors.As(err, &de) {
			r.reply, r.remote = de.reply, de.remote
			if de.perm {
				r.state = StateFailed
			}
		}
		res = make([]result, len(rcpts))
		for i := range res {
			res[i] = r
		}
	}
	temp := false
	for i, r := range res {
		rc := &e.Rcpts[at[i]]
		rc.State, rc.Reply, rc.Remote = r.state, r.reply, r.remote
		if r.state == StateQueued {
			temp = true
		}
		log.Info("delivery attempt", "to", rc.Addr, "result", r.state, "remote", r.remote, "reply", r.reply, "dkim", didSign,
			"attempt", e.Attempts+1, "took", time.Since(start).Round(time.Millisecond))
	}
	return temp
}

// finish bounces what failed, then deletes the entry if nothing is left
// or schedules the next attempt.
func (q *Queue) finish(ctx context.Context, e *Entry, old []byte, tempFailed bool, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) {
	var failed []Rcpt
	for _, r := range e.Rcpts {
		if r.State == StateFailed && !r.Notified {
			failed = append(failed, r)
		}
	}
	if len(failed) > 0 {
		// Before the entry records it: a crash in between bounces twice
		// (recognized by the mailbox's retry memory) rather than never.
		if err := q.bounce(ctx, e, failed); err != nil {
			log.Warn("delivering a DSN failed; retrying later", "to", e.From, "err", err)
			tempFailed = true
		} else {
			for i := range e.Rcpts {
				if e.Rcpts[i].State == StateFailed {
					e.Rcpts[i].Notified = true
				}
			}
		}
	}
	if len(e.Pending()) == 0 && !tempFailed {
		if err := q.remove(e, old); err != nil {
			log.Warn("removing a finished queue entry failed; it is tried again", "err", err)
			return
		}
		if id, err := parseBody(e.Body); err == nil {
			q.release(id)
		}
		log.Info("queue entry done", "recipients", len(e.Rcpts), "bounced", countState(e, StateFailed))
		return
	}
	e.Attempts++
	now := q.cfg.Now()
	e.Next = now.Add(q.cfg.backoff(e.Attempts)).UnixNano()
	if end := time.Unix(0, e.Created).Add(q.cfg.Lifetime); time.Unix(0, e.Next).After(end) {
		e.Next = end.UnixNano() // claimed then only to bounce what is left
	}
	e.Lease = Lease{}
	if _, err := q.put(e, old); err != nil {
		log.Warn("scheduling a retry failed; the entry is tried when its lease expires", "err", err)
		return
	}
	log.Info("delivery deferred", "pending", len(e.Pending()), "next", time.Unix(0, e.Next).UTC().Format(time.RFC3339), "attempts", e.Attempts)
}

func countState(e *Entry, state string) int {
	n := 0
	for _, r := range e.Rcpts {
		if r.State == state {
			n++
		}
	}
	return n
}

// recordTimeout bounds one change of an entry. Changes do not end with
// the worker's context: an attempt cut off by Close still records its
// outcome and gives the lease back, so another node need not wait for
// it to expire.
const recordTimeout = 15 * time.Second

// put writes e over the record old and returns the new record.
func (q *Queue) put(e *Entry, old []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	return q.rec.swap(ctx, e.ID, old, e)
}

// remove deletes e's record if it is still old.
func (q *Queue) remove(e *Entry, old []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	_, err := q.rec.swap(ctx, e.ID, old, nil)
	return err
}

// domains returns the domains of e's pending recipients, in order.
func (e *Entry) domains() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range e.Rcpts {
		if d := domainOf(r.Addr); r.State == StateQueued && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// domainSlot waits for one of the domain's PerDomain transaction slots
// (at most a quarter of the lease). The map holds busy domains only.
func (q *Queue) domainSlot(ctx context.Context, dom string) (func(), bool) {
	release := func() {
		q.domMu.Lock()
		defer q.domMu.Unlock()
		if q.domains[dom]--; q.domains[dom] <= 0 {
			delete(q.domains, dom)
		}
	}
	deadline := time.Now().Add(q.cfg.Lease / 4)
	for {
		q.domMu.Lock()
		if q.domains[dom] < q.cfg.PerDomain {
			q.domains[dom]++
			q.domMu.Unlock()
			return release, true
		}
		q.domMu.Unlock()
		if time.Now().After(deadline) {
			return nil, false
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(50 * time.Millisecond):
		}
	}
}
