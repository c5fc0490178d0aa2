package mailbox

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"hastore/mailserver/mailstate"
	"hastore/replica/meta"
)

// Per-mailbox change streams for IMAP sessions (unilateral EXISTS, EXPUNGE
// and FETCH FLAGS responses, IDLE).
//
// One goroutine per Store follows the FSM's apply stream (meta.Subscribe)
// and turns each applied mail command into per-mailbox events, in the Raft
// apply order, which is the same on every node: a message delivered through
// node 2 shows up in the stream of node 1 as soon as node 1 applies it.
// Only mailboxes someone watches keep a log; a watcher reads the log from
// its own cursor, so catching up costs O(changes), never a rescan.

// EventKind says what a MailboxEvent is.
type EventKind uint8

// Mailbox event kinds.
const (
	// EventAppend: message UID was appended (Flags are its flags).
	EventAppend EventKind = iota + 1
	// EventFlags: message UID now has Flags (at ModSeq).
	EventFlags
	// EventExpunge: message UID was removed.
	EventExpunge
	// EventReset: per-entry events were lost (snapshot restore, lagging
	// stream, mailbox or user deleted): reload the mailbox and diff.
	EventReset
)

// MailboxEvent is one change of one mailbox.
type MailboxEvent struct {
	Index  uint64 // Raft index of the command
	Kind   EventKind
	UID    uint32
	ModSeq uint64
	Flags  []string
}

type eventSource interface {
	Subscribe(buffer int) *meta.Subscription
	AppliedIndex() uint64
}

type mbKey struct {
	user string
	id   uint64
}

type mbLog struct {
	base     uint64 // sequence number of events[0]
	events   []MailboxEvent
	watchers map[*Watcher]struct{}
	// snap is the mailbox's UIDs as of sequence number snapAt, shared
	// read-only by every watcher whose view is the same (ShareUIDs): idle
	// sessions of one mailbox hold one copy, not one each.
	snap   []uint32
	snapAt uint64
}

// logMax bounds a mailbox's log: a watcher that falls this far behind
// (selected but silent while mail flows) gets a reset instead.
const logMax = 1 << 13

type hub struct {
	src eventSource
	log func(msg string, args ...any)

	mu        sync.Mutex
	logs      map[mbKey]*mbLog
	processed uint64
	advanced  chan struct{} // closed and replaced when processed advances
	closed    bool
	// syncReq asks the hub goroutine to process every event already
	// emitted, then close the channel sent.
	syncReq chan chan struct{}
	// observers see every mailbox's events, watched or not (observe.go).
	observers map[*observer]struct{}
}

// Watcher follows one mailbox's events from the moment Watch was called.
type Watcher struct {
	h     *hub
	key   mbKey
	lg    *mbLog
	next  uint64 // sequence number of the next event to read
	since uint64 // events at or below this index are already in the state read after Watch
	c     chan struct{}
	reset bool
	// through is the applied index up to which Next returned everything.
	through uint64
	// notify, when set, is called (with the hub locked: it must not
	// block) whenever C is signalled.
	notify func()
}

func (s *Store) events() (*hub, error) {
	s.hubOnce.Do(func() {
		src, ok := s.view.R.(eventSource)
		if !ok {
			s.hubErr = fmt.Errorf("mailbox: the metadata reader %T has no apply stream", s.view.R)
			return
		}
		h := &hub{src: src, logs: map[mbKey]*mbLog{}, advanced: make(chan struct{}), log: s.log.Warn, syncReq: make(chan chan struct{})}
		sub := src.Subscribe(1 << 12)
		h.processed = src.AppliedIndex()
		go h.run(sub)
		s.hub = h
	})
	return s.hub, s.hubErr
}

// Watch starts following a mailbox's changes. Read the mailbox's state
// after Watch returns: events already reflected in it are skipped (Index
// at or below the applied index Watch saw), and applying the others is
// idempotent for the reader (append above the last UID, expunge of a
// present UID, flags).
func (s *Store) Watch(user string, mailbox uint64) (*Watcher, error) {
	h, err := s.events()
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	k := mbKey{user, mailbox}
	lg := h.logs[k]
	if lg == nil {
		lg = &mbLog{watchers: map[*Watcher]struct{}{}}
		h.logs[k] = lg
	}
	w := &Watcher{h: h, key: k, lg: lg, next: lg.base + uint64(len(lg.events)), since: h.src.AppliedIndex(), c: make(chan struct{}, 1), reset: h.closed}
	lg.watchers[w] = struct{}{}
	return w, nil
}

// C is signalled (without blocking Apply) when new events may be waiting.
func (w *Watcher) C() <-chan struct{} { return w.c }

// SetNotify sets (nil: clears) a function called whenever C is
// signalled, so that a watcher can be followed without a goroutine
// waiting on C. fn runs with the event hub locked: it must return at once
// and not call the Watcher.
func (w *Watcher) SetNotify(fn func()) {
	w.h.mu.Lock()
	w.notify = fn
	w.h.mu.Unlock()
}

// Next returns the events since the last call, in apply order.
func (w *Watcher) Next() []MailboxEvent {
	h := w.h
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []MailboxEvent
	w.through = h.processed
	if w.reset || w.next < w.lg.base {
		w.reset = false
		out = append(out, MailboxEvent{Kind: EventReset, Index: h.processed})
		w.next = w.lg.base + uint64(len(w.lg.events))
		h.trim(w.lg)
		return out
	}
	for _, ev := range w.lg.events[w.next-w.lg.base:] {
		if ev.Index > w.since || ev.Kind == EventReset {
			out = append(out, ev)
		}
	}
	w.next = w.lg.base + uint64(len(w.lg.events))
	h.trim(w.lg)
	return out
}

// Through returns the Raft index up to which the last Next returned every
// event of the mailbox.
func (w *Watcher) Through() uint64 {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	return w.through
}

// ShareUIDs offers the caller's view of the mailbox (its UIDs in order,
// with every event Next returned applied) for sharing. When no event
// arrived since the last Next, it returns the shared copy equal to view
// (adopting it, or publishing view as it) and true: the caller then must
// not modify the slice returned, and copies it before its next change.
// Otherwise it returns view and false.
func (w *Watcher) ShareUIDs(view []uint32) ([]uint32, bool) {
	h := w.h
	h.mu.Lock()
	defer h.mu.Unlock()
	lg := w.lg
	head := lg.base + uint64(len(lg.events))
	if w.reset || w.next != head {
		return view, false
	}
	if lg.snap != nil && lg.snapAt == head && slices.Equal(lg.snap, view) {
		return lg.snap, true
	}
	lg.snap, lg.snapAt = view[:len(view):len(view)], head
	return lg.snap, true
}

// Close stops following.
func (w *Watcher) Close() {
	h := w.h
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(w.lg.watchers, w)
	if len(w.lg.watchers) == 0 && h.logs[w.key] == w.lg {
		delete(h.logs, w.key)
	}
}

// WaitEvents waits until the event stream of this node has processed
// every command up to Raft index (e.g. a Propose result's), so that a
// session sees its own change in the next Next. The index may be one of
// a non-command entry (configuration), which has no event: once this
// node has applied it, the hub is asked to drain what was emitted.
func (s *Store) WaitEvents(ctx context.Context, index uint64) error {
	h, err := s.events()
	if err != nil {
		return err
	}
	for {
		h.mu.Lock()
		done, ch, closed := h.processed >= index, h.advanced, h.closed
		h.mu.Unlock()
		if done || closed {
			return nil
		}
		if h.src.AppliedIndex() >= index {
			drained := make(chan struct{})
			select {
			case h.syncReq <- drained:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case <-drained:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// CatchUp waits until this node has applied everything acknowledged
// anywhere before the call (a read-index barrier, coalesced).
func (s *Store) CatchUp(ctx context.Context) error { return s.catchUp(ctx) }

// trim drops events every watcher has read; h.mu is held. The log is
// released as soon as everyone has read it (an idle mailbox holds no
// events), and compacted once the read part is at least half of it.
func (h *hub) trim(lg *mbLog) {
	head := lg.base + uint64(len(lg.events))
	low := head
	for w := range lg.watchers {
		if w.next >= lg.base { // one behind base already has its reset coming
			low = min(low, w.next)
		}
	}
	if len(lg.events) >= logMax {
		low = head // laggards get a reset
	}
	n := low - lg.base
	switch {
	case n == 0:
		return
	case low == head:
		lg.events = nil
	case n >= uint64(len(lg.events))/2:
		lg.events = append([]MailboxEvent(nil), lg.events[n:]...)
	default:
		return
	}
	lg.base = low
}

func (h *hub) run(sub *meta.Subscription) {
	for {
		h.follow(sub)
		if sub.Err() != meta.ErrLagged {
			h.mu.Lock()
			h.closed = true
			h.resetAll("", ^uint64(0))
			h.advance(^uint64(0))
			h.mu.Unlock()
			return
		}
		h.log("mailbox event stream lagged; sessions reload their mailboxes")
		sub = h.src.Subscribe(1 << 12)
		h.mu.Lock()
		idx := h.src.AppliedIndex()
		h.resetAll("", idx)
		h.advance(idx)
		h.mu.Unlock()
	}
}

// follow handles sub's events until it ends, answering sync requests.
func (h *hub) follow(sub *meta.Subscription) {
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				return
			}
			h.handle(ev)
		case drained := <-h.syncReq:
		drain:
			for {
				select {
				case ev, ok := <-sub.Events():
					if !ok {
						break drain // the outer receive sees the close
					}
					h.handle(ev)
				default:
					break drain
				}
			}
			close(drained)
		}
	}
}

func (h *hub) advance(idx uint64) {
	if idx > h.processed {
		h.processed = idx
		close(h.advanced)
		h.advanced = make(chan struct{})
	}
}

// add appends an event to a watched mailbox's log; h.mu is held.
func (h *hub) add(user string, id uint64, ev MailboxEvent) {
	for o := range h.observers {
		o.fn(user, id, ev)
	}
	lg := h.logs[mbKey{user, id}]
	if lg == nil {
		return
	}
	lg.events = append(lg.events, ev)
	for w := range lg.watchers {
		select {
		case w.c <- struct{}{}:
		default:
		}
		if w.notify != nil {
			w.notify()
		}
	}
	h.trim(lg)
}

// resetAll queues a reset for every watched mailbox of user ("" all).
func (h *hub) resetAll(user string, idx uint64) {
	for k := range h.logs {
		if user == "" || k.user == user {
			h.add(k.user, k.id, MailboxEvent{Index: idx, Kind: EventReset})
		}
	}
}

func (h *hub) handle(ev meta.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev.Restored {
		h.resetAll("", ev.Index)
	} else if ev.Cmd != nil && (len(h.logs) > 0 || len(h.observers) > 0) {
		h.command(ev.Index, ev.Cmd, &ev.Result)
	}
	h.advance(ev.Index)
}

func (h *hub) command(idx uint64, cmd meta.Command, res *meta.Result) {
	if res.Status != meta.StatusOK {
		return
	}
	outs := mailstate.Outcomes(*res)
	switch c := cmd.(type) {
	case meta.Batch:
		for i, sub := range c.Cmds {
			if i < len(res.Batch) {
				h.command(idx, sub, &res.Batch[i])
			}
		}
	case mailstate.MailDeliverOnce:
		h.command(idx, c.MailDeliver, res)
	case mailstate.MailDeliver:
		for i, e := range c.Entries {
			// SrcUID is set on a retry MailDeliverOnce answered from memory.
			if i < len(outs) && outs[i].Code == mailstate.MailOK && outs[i].SrcUID == 0 {
				o := outs[i]
				h.add(e.User, o.Mailbox, MailboxEvent{Index: idx, Kind: EventAppend, UID: o.UID, ModSeq: o.ModSeq, Flags: o.Flags})
			}
		}
	case mailstate.MailStore:
		for _, o := range outs {
			if o.Code == mailstate.MailOK {
				h.add(c.User, c.Mailbox, MailboxEvent{Index: idx, Kind: EventFlags, UID: o.UID, ModSeq: o.ModSeq, Flags: o.Flags})
			}
		}
	case mailstate.MailExpunge:
		for _, o := range outs {
			if o.Code == mailstate.MailOK {
				h.add(c.User, c.Mailbox, MailboxEvent{Index: idx, Kind: EventExpunge, UID: o.UID, ModSeq: o.ModSeq})
			}
		}
	case mailstate.MailCopy:
		for _, o := range outs {
			if o.Code != mailstate.MailOK {
				continue
			}
			if c.Move {
				h.add(c.User, c.Mailbox, MailboxEvent{Index: idx, Kind: EventExpunge, UID: o.SrcUID})
			}
			h.add(c.User, c.Dest, MailboxEvent{Index: idx, Kind: EventAppend, UID: o.UID, ModSeq: o.ModSeq, Flags: o.Flags})
		}
	case mailstate.MailboxDelete:
		h.add(c.User, c.Mailbox, MailboxEvent{Index: idx, Kind: EventReset})
	case mailstate.MailImport:
		// The mailbox may have taken the source's UIDVALIDITY: sessions
		// that have it selected read it again (import.go).
		for _, o := range outs {
			if o.Code == mailstate.MailOK && o.SrcUID == 0 {
				h.add(c.User, o.Mailbox, MailboxEvent{Index: idx, Kind: EventReset})
				break
			}
		}
	case mailstate.MailUserDelete:
		h.resetAll(c.Address, idx)
	}
}

// eventsTimeout bounds how long a session waits for its own change to
// reach the local event stream.
const eventsTimeout = 10 * time.Second

// WaitEventsFor is WaitEvents with a default timeout.
func (s *Store) WaitEventsFor(index uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), eventsTimeout)
	defer cancel()
	return s.WaitEvents(ctx, index)
}

// SyncEvents waits until the local event stream has processed everything
// this node has applied so far (after a Propose whose Raft index is not at
// hand, such as a Delivery's Commit).
func (s *Store) SyncEvents() error {
	h, err := s.events()
	if err != nil {
		return err
	}
	return s.WaitEventsFor(h.src.AppliedIndex())
}
