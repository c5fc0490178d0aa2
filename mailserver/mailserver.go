// Package mailserver puts hastore's mail service on a node: the SMTP (MX),
// submission and LMTP listeners (mailserver/smtp) over the node's mail
// model (mailserver/mailbox), and the Mail admin gRPC service with its
// client. IMAP joins them in a later release; the model already keeps what
// it needs (UIDs, modseqs, ENVELOPE/BODYSTRUCTURE per message).
package mailserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/smtp"
	"hastore/replica"
)

var (
	storesMu sync.Mutex
	stores   = map[*replica.Node]*mailbox.Store{}
)

// ForNode returns the node's mail model, the same for every caller, so the
// admin service and every listener share the login throttle and cache: the
// one NewStore made, or else one with the default options.
func ForNode(n *replica.Node) *mailbox.Store {
	storesMu.Lock()
	defer storesMu.Unlock()
	s := stores[n]
	if s == nil {
		s = newStore(n, mailbox.Options{})
		stores[n] = s
	}
	return s
}

// Config says which mail listeners a node runs. An empty address leaves
// that listener off.
type Config struct {
	Hostname               string
	SMTP, Submission, LMTP string
	TLS                    *tls.Config // STARTTLS on SMTP and submission
	AllowInsecureAuth      bool        // submission AUTH without TLS (development)
	// AllowLocalSenders: the MX listener accepts local-domain envelope
	// senders without AUTH (smtp.Config.AllowLocalSenders).
	AllowLocalSenders   bool
	MaxMessageBytes     int64 // default 50 MiB
	MaxConnections      int   // per listener; default 1000
	MaxConnectionsPerIP int   // per listener; default 10 (LMTP: none)
	// SMTPTuning tunes what the listeners' smtp.Config leaves to
	// defaults (memory and spool budgets, retry window); the fields set
	// above win. The listeners share one memory and one spool budget.
	SMTPTuning smtp.Config
	Logger     *slog.Logger
	// Store, if set, replaces ForNode's (tests tune its throttle).
	Store *mailbox.Store
}

// Server is a node's running mail listeners.
type Server struct {
	SMTP, Submission, LMTP *smtp.Server // nil when off
}

// Start starts the configured listeners on node n.
func Start(n *replica.Node, cfg Config) (*Server, error) {
	store := cfg.Store
	if store == nil {
		store = ForNode(n)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{}
	tune := cfg.SMTPTuning
	if tune.Memory == nil {
		// One memory budget for all of the node's listeners.
		mem := tune.DataMemory
		if mem == 0 {
			mem = 256 << 20
		}
		tune.Memory = smtp.NewBudget(mem)
	}
	if tune.Spool == nil {
		spool := tune.MaxSpool
		if spool == 0 {
			spool = 4 << 30
		}
		tune.Spool = smtp.NewBudget(spool)
	}
	if tune.Checks != nil {
		// A domain's own DMARC policy (replicated) wins over the node's.
		chk := *tune.Checks
		def := chk.DMARCReject
		chk.DMARCReject = func(d string) bool {
			switch p, err := store.DMARCPolicy(d); {
			case err != nil:
				cfg.Logger.Warn("reading a domain's DMARC policy failed; using the node's", "domain", d, "err", err)
			case p == mailbox.DMARCReject:
				return true
			case p == mailbox.DMARCNone:
				return false
			}
			return def != nil && def(d)
		}
		tune.Checks = &chk
	}
	for _, l := range []struct {
		addr string
		mode smtp.Mode
		dst  **smtp.Server
	}{{cfg.SMTP, smtp.MX, &s.SMTP}, {cfg.Submission, smtp.Submission, &s.Submission}, {cfg.LMTP, smtp.LMTP, &s.LMTP}} {
		if l.addr == "" {
			continue
		}
		sc := tune
		sc.Mode, sc.Hostname, sc.TLS, sc.AllowInsecureAuth = l.mode, cfg.Hostname, cfg.TLS, cfg.AllowInsecureAuth
		sc.AllowLocalSenders = cfg.AllowLocalSenders
		sc.MaxMessageBytes, sc.MaxConnections, sc.MaxConnectionsPerIP = cfg.MaxMessageBytes, cfg.MaxConnections, cfg.MaxConnectionsPerIP
		if l.mode == smtp.LMTP {
			// The MTA in front is one address with many connections: the
			// per-address cap (meant for the internet) does not apply.
			sc.MaxConnectionsPerIP = -1
		}
		sc.Logger = cfg.Logger.With("node", n.ID())
		srv, err := smtp.Listen(l.addr, store, sc)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("mail: %w", err)
		}
		*l.dst = srv
	}
	return s, nil
}

// Addrs returns the listening addresses by mode ("smtp", "submission",
// "lmtp").
func (s *Server) Addrs() map[string]net.Addr {
	out := map[string]net.Addr{}
	for name, srv := range map[string]*smtp.Server{"smtp": s.SMTP, "submission": s.Submission, "lmtp": s.LMTP} {
		if srv != nil {
			out[name] = srv.Addr()
		}
	}
	return out
}

// Close stops every listener.
func (s *Server) Close() error {
	var errs []error
	for _, srv := range []*smtp.Server{s.SMTP, s.Submission, s.LMTP} {
		if srv != nil {
			errs = append(errs, srv.Close())
		}
	}
	return errors.Join(errs...)
}
