package mailbox

import (
	"testing"

	"hastore/replica/meta"
)

// fakeSource is an apply stream that never emits (events are added to the
// hub directly in these unit tests).
type fakeSource struct{ applied uint64 }

func (f *fakeSource) Subscribe(int) *meta.Subscription { return nil }
func (f *fakeSource) AppliedIndex() uint64             { return f.applied }

func testHub(t *testing.T) (*Store, *hub) {
	t.Helper()
	h := &hub{src: &fakeSource{}, logs: map[mbKey]*mbLog{}, advanced: make(chan struct{}), log: func(string, ...any) {}, syncReq: make(chan chan struct{})}
	s := &Store{}
	s.hubOnce.Do(func() {})
	s.hub = h
	return s, h
}

func (h *hub) addLocked(user string, id uint64, ev MailboxEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.add(user, id, ev)
}

// TestEventLogReleased: a mailbox's events are kept only until every
// watcher has read them; a watcher that stops reading holds at most
// logMax of them and then gets a reset.
func TestEventLogReleased(t *testing.T) {
	s, h := testHub(t)
	a, _ := s.Watch("u", 1)
	b, _ := s.Watch("u", 1)
	lg := h.logs[mbKey{"u", 1}]
	for i := range 10 {
		h.addLocked("u", 1, MailboxEvent{Index: uint64(i + 1), Kind: EventAppend, UID: uint32(i + 1)})
	}
	if got := len(a.Next()); got != 10 {
		t.Fatalf("a read %d events, want 10", got)
	}
	if len(lg.events) != 10 {
		t.Fatalf("log holds %d events while b has read none, want 10", len(lg.events))
	}
	if got := len(b.Next()); got != 10 {
		t.Fatalf("b read %d events, want 10", got)
	}
	if lg.events != nil {
		t.Fatalf("log holds %d events (cap %d) after every watcher read them, want none", len(lg.events), cap(lg.events))
	}
	// b stops reading: the log grows to logMax, then b gets a reset.
	for i := range logMax + 10 {
		h.addLocked("u", 1, MailboxEvent{Index: uint64(100 + i), Kind: EventAppend, UID: uint32(100 + i)})
		a.Next()
	}
	if len(lg.events) >= logMax {
		t.Fatalf("log holds %d events, bound is %d", len(lg.events), logMax)
	}
	if evs := b.Next(); len(evs) != 1 || evs[0].Kind != EventReset {
		t.Fatalf("lagging watcher got %d events (first %+v), want one reset", len(evs), evs[0])
	}
}

// TestShareUIDs: watchers whose views agree hold one slice; one that has
// unread events does not share.
func TestShareUIDs(t *testing.T) {
	s, h := testHub(t)
	a, _ := s.Watch("u", 1)
	b, _ := s.Watch("u", 1)
	va, ok := a.ShareUIDs([]uint32{1, 2, 3})
	if !ok {
		t.Fatal("a could not publish its view")
	}
	vb, ok := b.ShareUIDs([]uint32{1, 2, 3})
	if !ok || &vb[0] != &va[0] {
		t.Fatal("b did not adopt the shared view equal to its own")
	}
	if cap(va) != len(va) {
		t.Fatalf("shared view has spare capacity %d: an append by its holder would write into it", cap(va)-len(va))
	}
	h.addLocked("u", 1, MailboxEvent{Index: 1, Kind: EventAppend, UID: 4})
	if _, ok := b.ShareUIDs([]uint32{1, 2, 3}); ok {
		t.Fatal("b shared a view with an event it has not read")
	}
	a.Next()
	b.Next()
	va, _ = a.ShareUIDs([]uint32{1, 2, 3, 4})
	if vb, ok := b.ShareUIDs([]uint32{1, 2, 4}); !ok || &vb[0] == &va[0] {
		t.Fatal("b adopted a view different from its own")
	}
}
