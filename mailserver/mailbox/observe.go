package mailbox

type observer struct {
	fn func(user string, mailbox uint64, ev MailboxEvent)
}

// ObserveMailboxes calls fn with every change of every mailbox this node
// applies from now on, in the apply order: the events a Watcher gets,
// for all mailboxes, watched or not (an IMAP server's per-node \Recent
// bookkeeping). fn runs on the event goroutine with its lock held: it
// must be quick, must not block and must not call into the Store. The
// returned function stops the calls.
func (s *Store) ObserveMailboxes(fn func(user string, mailbox uint64, ev MailboxEvent)) (stop func(), err error) {
	h, err := s.events()
	if err != nil {
		return nil, err
	}
	o := &observer{fn: fn}
	h.mu.Lock()
	if h.observers == nil {
		h.observers = map[*observer]struct{}{}
	}
	h.observers[o] = struct{}{}
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		delete(h.observers, o)
		h.mu.Unlock()
	}, nil
}
