package imap

import "sync"

// AccountChangedText is the BYE a session gets when its user is disabled,
// deleted or given a new password: the client logs in again (and cannot,
// or asks for the new password).
const AccountChangedText = "[UNAVAILABLE] Account disabled, removed or password changed; log in again"

// accountWatch follows one user's account for all of the user's sessions
// on this node: one goroutine per logged-in user, not per connection.
type accountWatch struct {
	sessions map[*session]struct{}
	stop     func()        // mailbox.Store.AccountChanged's
	quit     chan struct{} // closed when the last session ends
}

type accountWatches struct {
	mu sync.Mutex
	m  map[string]*accountWatch
}

// watchAccount ends sess (BYE, at once if it waits for a command or
// idles, else after its command in progress) when its user's account
// changes.
func (s *Server) watchAccount(sess *session) {
	a := &s.accts
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]*accountWatch{}
	}
	w := a.m[sess.user]
	if w == nil {
		changed, stop := s.store.AccountChanged(sess.user)
		w = &accountWatch{sessions: map[*session]struct{}{}, stop: stop, quit: make(chan struct{})}
		a.m[sess.user] = w
		go s.followAccount(sess.user, w, changed)
	}
	w.sessions[sess] = struct{}{}
	sess.watched = true
}

// unwatchAccount runs when sess ends.
func (s *Server) unwatchAccount(sess *session) {
	if !sess.watched {
		return
	}
	sess.watched = false
	a := &s.accts
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.m[sess.user]
	if w == nil {
		return
	}
	delete(w.sessions, sess)
	if len(w.sessions) == 0 {
		delete(a.m, sess.user)
		w.stop()
		close(w.quit)
	}
}

func (s *Server) followAccount(user string, w *accountWatch, changed <-chan struct{}) {
	select {
	case <-w.quit:
		return
	case <-changed:
	}
	a := &s.accts
	a.mu.Lock()
	if a.m[user] == w {
		delete(a.m, user) // the next login watches afresh
	}
	sessions := make([]*session, 0, len(w.sessions))
	for sess := range w.sessions {
		sessions = append(sessions, sess)
	}
	w.sessions = map[*session]struct{}{}
	a.mu.Unlock()
	w.stop()
	if len(sessions) > 0 {
		s.log.Info("imap: ending the sessions of a user whose account was disabled, removed or given a new password", "user", user, "sessions", len(sessions))
	}
	for _, sess := range sessions {
		sess.conn.End(AccountChangedText)
	}
}
