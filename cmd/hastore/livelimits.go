package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"hastore/mailserver"
	"hastore/mailserver/imap"
	"hastore/webfs/httpserve"
)

// liveLimits are the running listeners whose connection caps a SIGHUP
// re-read of the config file changes (liveKeys), with the caps in effect:
// a key names one of a pair, and the listener takes both.
type liveLimits struct {
	mu sync.Mutex

	mail                 *mailserver.Server // nil: no SMTP/LMTP listener
	mailTotal, mailPerIP int

	imap                 *imap.Server // nil: no IMAP listener
	imapTotal, imapPerIP int
	smtpListeners        int // SMTP, submission, LMTP ports open: the IMAP total is fitted below the file limit with them
	log                  *slog.Logger

	http                 *httpserve.Caps // nil: no HTTP(S) port
	httpTotal, httpPerIP int
}

// live is serve's; a process runs one node (dev's nodes take no SIGHUP).
var live liveLimits

func (l *liveLimits) setMail(s *mailserver.Server, total, perIP int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mail, l.mailTotal, l.mailPerIP = s, total, perIP
}

// setIMAP registers the IMAP listeners of mf (s nil: none) with the caps
// they were started with.
func (l *liveLimits) setIMAP(s *imap.Server, mf *mailFlags, log *slog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.imap, l.imapTotal, l.imapPerIP, l.log = s, mf.imapLimits.maxConns, mf.imapLimits.maxConnsIP, log
	l.smtpListeners = 0
	for _, a := range []string{mf.smtp, mf.submission, mf.lmtp} {
		if a != "" {
			l.smtpListeners++
		}
	}
}

// applyIMAP sets the IMAP caps in effect, the total kept below the
// open-file limit as at start (fitFileLimit says so when it lowers it).
func (l *liveLimits) applyIMAP() {
	if l.imap == nil {
		return
	}
	cfg := imap.Config{MaxConnections: l.imapTotal}
	log := l.log
	if log == nil {
		log = slog.Default()
	}
	fitFileLimit(&cfg, l.smtpListeners*l.mailTotal, log)
	l.imap.SetLimits(cfg.MaxConnections, l.imapPerIP)
}

func (l *liveLimits) setHTTP(c *httpserve.Caps, total, perIP int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.http, l.httpTotal, l.httpPerIP = c, total, perIP
}

// limitKey is a liveKeys entry for one cap of a pair: check is the flag's
// rule for a value; set stores it and applies the pair.
func limitKey(check func(int) error, set func(l *liveLimits, v int)) func(string) (func(), error) {
	return func(s string) (func(), error) {
		v, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("%q: want a whole number", s)
		}
		if check != nil {
			if err := check(v); err != nil {
				return nil, err
			}
		}
		return func() {
			live.mu.Lock()
			defer live.mu.Unlock()
			set(&live, v)
		}, nil
	}
}

func positive(v int) error {
	if v <= 0 {
		return fmt.Errorf("%d: want a number of connections above 0", v)
	}
	return nil
}

// mailPerIPCap is --mail-max-connections-per-ip as the listeners take it:
// 0 the default, negative none.
func mailPerIPCap(v int) int {
	if v == 0 {
		return 10
	}
	return v
}

func init() {
	liveKeys["mail-max-connections"] = limitKey(positive, func(l *liveLimits, v int) {
		l.mailTotal = v
		if l.mail != nil {
			l.mail.SetLimits(l.mailTotal, mailPerIPCap(l.mailPerIP))
		}
	})
	liveKeys["mail-max-connections-per-ip"] = limitKey(nil, func(l *liveLimits, v int) {
		l.mailPerIP = v
		if l.mail != nil {
			l.mail.SetLimits(l.mailTotal, mailPerIPCap(l.mailPerIP))
		}
	})
	liveKeys["imap-max-connections"] = limitKey(nil, func(l *liveLimits, v int) {
		l.imapTotal = v
		l.applyIMAP()
	})
	liveKeys["imap-max-connections-per-ip"] = limitKey(nil, func(l *liveLimits, v int) {
		l.imapPerIP = v
		l.applyIMAP()
	})
	liveKeys["http-max-connections"] = limitKey(nil, func(l *liveLimits, v int) {
		l.httpTotal = v
		if l.http != nil {
			l.http.SetLimits(l.httpTotal, l.httpPerIP)
		}
	})
	liveKeys["http-max-connections-per-ip"] = limitKey(nil, func(l *liveLimits, v int) {
		l.httpPerIP = v
		if l.http != nil {
			l.http.SetLimits(l.httpTotal, l.httpPerIP)
		}
	})
}
