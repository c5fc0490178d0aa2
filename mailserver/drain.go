package mailserver

import (
	"context"
	"errors"
	"sync"

	"hastore/mailserver/smtp"
)

// Shutdown stops every listener accepting and lets the sessions in DATA
// finish within ctx (smtp.Server.Shutdown); the others get 421.
func (s *Server) Shutdown(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, srv := range []*smtp.Server{s.SMTP, s.Submission, s.LMTP} {
		if srv == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// SetLimits changes the connection caps of the running SMTP and submission
// listeners (Config.MaxConnections and MaxConnectionsPerIP); LMTP takes
// the total only, as at start (its one client, the MTA in front, has no
// per-address cap).
func (s *Server) SetLimits(total, perIP int) {
	for _, srv := range []*smtp.Server{s.SMTP, s.Submission} {
		if srv != nil {
			srv.SetLimits(total, perIP)
		}
	}
	if s.LMTP != nil {
		s.LMTP.SetLimits(total, -1)
	}
}
