package smtp

import (
	"context"
	"errors"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// Shutdown stops accepting connections at once and lets the open ones end
// within ctx: a message being received or stored (DATA) is finished and
// answered; a connection outside DATA is ended with a 421 reply (go-smtp's
// own idle-timeout reply, written in turn, never into another reply), and
// its client tries again later or at another server. Connections still
// open when ctx ends are cut as Close cuts them: their messages are not
// acknowledged, so the sender keeps and retries them. It returns ctx's
// error if it had to cut any.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.srv.Shutdown(ctx) }()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		// Again every tick: go-smtp renews the read deadline before each
		// command it reads, and a connection leaves DATA at some point.
		s.l.endIdle()
		select {
		case err := <-done:
			if ctx.Err() != nil {
				s.l.closeAll()
			}
			<-s.done
			if errors.Is(err, gosmtp.ErrServerClosed) {
				err = nil
			}
			return err
		case <-t.C:
		}
	}
}

// endIdle makes the pending read of every connection outside DATA fail
// with a timeout, which go-smtp answers with 421 and a close.
func (l *limitListener) endIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	past := time.Unix(1, 0)
	for c := range l.conns {
		if !c.busy.Load() {
			_ = c.Conn.SetReadDeadline(past)
		}
	}
}

// closeAll cuts every connection.
func (l *limitListener) closeAll() {
	l.mu.Lock()
	conns := make([]*countedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// SetLimits changes the connection caps of a running listener: total and
// per client address (IPv6: per /64); a total of zero or less is Config's
// default, a per-address cap of zero or less means none. Connections
// already open stay; new ones count against the new caps.
func (s *Server) SetLimits(total, perIP int) {
	if total <= 0 {
		total = 1000
	}
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	s.l.max, s.l.perIP = total, perIP
}
