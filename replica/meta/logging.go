package meta

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter lets raft log through the caller's slog.Logger,
// so hastore has one log stream with one format.
// Levels are left to the slog handler; SetLevel is ignored. Raft's own
// levels are re-mapped first (raftLevels) and its repeating lines are
// rate-limited (see relevel).
type hclogAdapter struct {
	l    *slog.Logger
	name string
	args []any
	rl   *repeatLimiter
}

func newHCLog(l *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{l: l.With("component", name), name: name, rl: newRepeatLimiter(30 * time.Second)}
}

// raftLevels re-levels hashicorp/raft's messages (v1.8.0) for an operator.
// Raft logs at ERROR every failed RPC to a peer that is down, restarting or
// shutting down: one line per heartbeat, vote and append. That was 777 of
// 1,757 lines on one node of a cluster that lost a member, and ~15 ERROR
// lines on a clean Ctrl-C of a dev cluster, all saying nothing a human
// must act on: the health prober already logs "node unreachable" once
// per member and state change, and the metrics show it. Such lines go to
// DEBUG. Errors of this node's own log, snapshots and state stay ERROR.
var raftLevels = map[string]hclog.Level{
	// A peer down, restarting or shutting down.
	"failed to make requestVote RPC":    hclog.Debug,
	"failed to appendEntries to":        hclog.Debug,
	"failed to heartbeat to":            hclog.Debug,
	"failed to pipeline appendEntries":  hclog.Debug,
	"failed to contact":                 hclog.Debug,
	"failed to decode incoming command": hclog.Debug, // a peer closed its connection
	"failed to flush response":          hclog.Debug,
	"failed to accept connection":       hclog.Warn,
	"failed to send snapshot to":        hclog.Warn,
	"installSnapshot rejected to":       hclog.Warn,
	// Routine consensus bookkeeping.
	"appendEntries rejected, sending older logs":                 hclog.Debug,
	"previous log term mis-match":                                hclog.Debug,
	"peer has newer term, stopping replication":                  hclog.Info,
	"rejecting vote request since we have a leader":              hclog.Debug,
	"rejecting pre-vote request since we have a leader":          hclog.Debug,
	"rejecting vote request since our last term is greater":      hclog.Debug,
	"rejecting pre-vote request since our last term is greater":  hclog.Debug,
	"rejecting vote request since our last index is greater":     hclog.Debug,
	"rejecting pre-vote request since our last index is greater": hclog.Debug,
	"duplicate requestVote from":                                 hclog.Debug,
	"Election timeout reached, restarting election":              hclog.Debug,
	"pre-vote campaign failed, waiting for election timeout":     hclog.Debug,
	"pipelining replication":                                     hclog.Debug,
	"starting stability test":                                    hclog.Debug,
	"skipping application of old log":                            hclog.Debug,
}

// raftRepeats are raft's lines that stay visible but repeat for as long as
// a condition lasts (every election timeout without a quorum): the first in
// each window is logged at its level, the rest at DEBUG, and the next one
// shown says how many were held back.
var raftRepeats = map[string]bool{
	"heartbeat timeout reached, starting election":     true,
	"entering candidate state":                         true,
	"entering follower state":                          true,
	"failed to contact quorum of nodes, stepping down": true,
	"peer has newer term, stopping replication":        true,
	"failed to accept connection":                      true,
	"failed to send snapshot to":                       true,
}

// repeatLimiter lets one line per message through per window.
type repeatLimiter struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

func newRepeatLimiter(every time.Duration) *repeatLimiter {
	return &repeatLimiter{every: every, now: time.Now, last: map[string]time.Time{}, held: map[string]int{}}
}

// allow reports whether msg may be logged now and how many were held
// back since the last one that was.
func (r *repeatLimiter) allow(msg string) (ok bool, held int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if t, seen := r.last[msg]; seen && now.Sub(t) < r.every {
		r.held[msg]++
		return false, 0
	}
	r.last[msg] = now
	held = r.held[msg]
	delete(r.held, msg)
	return true, held
}

// relevel returns the level and extra arguments msg is logged with.
func (a *hclogAdapter) relevel(level hclog.Level, msg string) (hclog.Level, []any) {
	if l, ok := raftLevels[msg]; ok && level > hclog.Debug {
		level = l
	}
	if raftRepeats[msg] && level > hclog.Debug && a.rl != nil {
		ok, held := a.rl.allow(msg)
		if !ok {
			return hclog.Debug, nil
		}
		if held > 0 {
			return level, []any{"repeats_held_back", held}
		}
	}
	return level, nil
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error, hclog.Off:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	level, extra := a.relevel(level, msg)
	if !a.enabled(level) {
		return
	}
	args = append(args, extra...)
	for i, v := range args {
		// raft passes some values as hclog.Fmt(format, args): render them.
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				args[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	a.l.Log(context.Background(), slogLevel(level), msg, args...)
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) enabled(level hclog.Level) bool {
	return a.l.Enabled(context.Background(), slogLevel(level))
}

func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.args }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	b := *a
	b.args = append(append([]any(nil), a.args...), args...)
	b.l = a.l.With(args...)
	return &b
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	b := *a
	if a.name != "" {
		name = a.name + "." + name
	}
	b.name = name
	b.l = a.l.With("subsystem", name)
	return &b
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	b := *a
	b.name = name
	b.l = a.l.With("subsystem", name)
	return &b
}

func (a *hclogAdapter) SetLevel(hclog.Level) {}

func (a *hclogAdapter) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn} {
		if a.enabled(l) {
			return l
		}
	}
	return hclog.Error
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		a.l.Info(strings.TrimRight(string(p), "\n"))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

// badgerLogger sends badger's logs to slog. Badger's Info is routine
// (compactions, flushes), so it goes to Debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, args ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, args...)), "component", "badger")
}
func (b badgerLogger) Warningf(f string, args ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, args...)), "component", "badger")
}
func (b badgerLogger) Infof(f string, args ...any) {
	if b.l.Enabled(context.Background(), slog.LevelDebug) {
		b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, args...)), "component", "badger")
	}
}
func (b badgerLogger) Debugf(f string, args ...any) {
	if b.l.Enabled(context.Background(), slog.LevelDebug-4) {
		b.l.Log(context.Background(), slog.LevelDebug-4, strings.TrimSpace(fmt.Sprintf(f, args...)), "component", "badger")
	}
}
