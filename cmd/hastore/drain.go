package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"hastore/replica"
)

// draining is set once serve has started to shut down: /readyz then says
// so, and load balancers stop sending clients here.
var draining atomic.Bool

// readyUnlessDraining is /readyz's check: not ready while draining, else
// the node's own readiness.
func readyUnlessDraining(n *replica.Node) func() error {
	return func() error {
		if draining.Load() {
			return errors.New("shutting down: draining connections")
		}
		return n.Ready()
	}
}

// stopWithin runs stop with a deadline d from now.
func stopWithin(stop func(context.Context), d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	stop(ctx)
}

// drainNode is the first part of a clean stop, bounded by ctx (--shutdown-grace):
// at once, every client port stops accepting and IMAP clients are told
// BYE once their command in progress is answered (they reconnect, to
// another node); meanwhile Raft
// leadership, if this node holds it, goes to another voter, and SMTP/LMTP
// messages being received and HTTP requests in flight finish. What is
// still running when ctx ends is cut: an unfinished delivery is not
// acknowledged, so its sender retries it. The node itself keeps serving
// the cluster port throughout (the deliveries finishing need it) and is
// closed by the caller afterwards.
func drainNode(ctx context.Context, n *replica.Node, mail *mailListeners, stopHTTP func(context.Context), log *slog.Logger) {
	start := time.Now()
	draining.Store(true)
	_ = sdNotify("STOPPING=1")
	_ = sdNotify("STATUS=draining")
	var wg sync.WaitGroup
	run := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	run(func() {
		to, err := n.HandOverLeadership(ctx)
		switch {
		case err != nil:
			log.Warn("shutdown: Raft leadership not handed over; the other nodes elect a leader once their heartbeat timeout passes", "err", err)
		case to != "":
			log.Info("shutdown: Raft leadership handed over", "to", to)
		}
	})
	if mail != nil {
		run(func() {
			if err := mail.Shutdown(ctx); err != nil {
				log.Warn("shutdown: mail connections cut at the end of the grace period; their unfinished messages were not acknowledged and will be retried by the senders", "err", err)
			}
		})
	}
	run(func() { stopHTTP(ctx) })
	wg.Wait()
	log.Info("shutdown: drained", "took", time.Since(start).Round(time.Millisecond).String(), "cut_short", ctx.Err() != nil)
}

// waitForStop blocks until serve must stop: SIGINT/SIGTERM (sig), or this
// node being removed from the cluster. It returns a context for the drain,
// which ends after grace or at a second signal, and whether the node was
// removed.
func waitForStop(sig <-chan os.Signal, n *replica.Node, grace time.Duration, log *slog.Logger) (ctx context.Context, cancel context.CancelFunc, removed bool) {
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String(), "grace", grace.String())
	case <-n.Removed():
		removed = true
		log.Error(fmt.Sprintf("node %s was removed from the cluster ('hastore admin node remove'): its data is being rebuilt on the other nodes, "+
			"so it closes its mail and HTTP listeners and exits; to use this machine again, empty its data directory and add it as a new node (docs/day2.md)", n.ID()),
			"grace", grace.String())
	}
	ctx, cancel = context.WithTimeout(context.Background(), grace)
	go func() {
		select {
		case s := <-sig:
			log.Warn("second signal: cutting the drain short", "signal", s.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel, removed
}

// Shutdown stops the mail listeners and drains their connections within
// ctx, IMAP and SMTP side by side: IMAP connections end with "* BYE
// [UNAVAILABLE]" once their command in progress is answered (at once when
// idle or in IDLE; clients reconnect, to another node); SMTP, submission
// and LMTP let messages in DATA finish.
func (m *mailListeners) Shutdown(ctx context.Context) error {
	var (
		wg      sync.WaitGroup
		imapErr error
	)
	if m.imap != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			imapErr = m.imap.Shutdown(ctx)
		}()
	}
	var errs []error
	if m.smtp != nil {
		errs = append(errs, m.smtp.Shutdown(ctx))
	}
	wg.Wait()
	return errors.Join(append(errs, imapErr)...)
}
